//! `/console/devices` and `/console/devices/{imei}`: the satellite modems a
//! key may see (`GET /v1/devices`), one device with its messages both ways
//! (`GET /v1/devices/{imei}/messages`), and a map of where they were last
//! ([`WorldMap`]): dots on the world's outline (`assets/world.svg`), drawn
//! on the server, so the page needs no tiles and no script.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use taskledger_events::device::Imei;
use uuid::Uuid;

use super::pages::{self, render, Chrome};
use super::session::SignedIn;
use super::views::when;
use super::ConsoleState;

/// Devices per page of the list.
const DEVICES_PAGE: u32 = 100;
/// Messages per page of a device.
const MESSAGES_PAGE: u32 = 100;

/// A page of `GET /v1/devices`.
#[derive(Debug, Deserialize)]
struct DevicePage {
    items: Vec<Device>,
    next_cursor: Option<String>,
}

/// A device (`DeviceView`).
#[derive(Debug, Deserialize)]
struct Device {
    imei: String,
    first_seen_at: DateTime<Utc>,
    last_seen_at: Option<DateTime<Utc>>,
    last_latitude: Option<f64>,
    last_longitude: Option<f64>,
    last_cep: Option<f64>,
    received_count: i64,
    queued_count: i64,
    sent_count: i64,
    failed_count: i64,
    tenant: Option<String>,
}

impl Device {
    fn first_seen(&self) -> String {
        when(&self.first_seen_at)
    }

    fn last_seen(&self) -> String {
        self.last_seen_at.as_ref().map_or_else(String::new, when)
    }

    /// The last position in words (`52.3867, -0.2938 ± 8 km`), empty when
    /// none.
    fn position(&self) -> String {
        let (Some(latitude), Some(longitude)) = (self.last_latitude, self.last_longitude) else {
            return String::new();
        };
        let within = self
            .last_cep
            .map(|cep| format!(" ± {cep} km"))
            .unwrap_or_default();
        format!("{latitude:.4}, {longitude:.4}{within}")
    }

    /// The device's dot on the map, when it has a last position.
    fn dot(&self) -> Option<Dot> {
        Dot::at(
            self.last_latitude?,
            self.last_longitude?,
            &self.imei,
            format!("{} · last seen {}", self.imei, self.last_seen()),
            false,
        )
    }
}

/// A page of `GET /v1/devices/{imei}/messages`.
#[derive(Debug, Deserialize)]
struct MessagePage {
    items: Vec<Message>,
    next_cursor: Option<String>,
}

/// A message to or from a device (`DeviceMessageView`).
#[derive(Debug, Deserialize)]
struct Message {
    message_id: Uuid,
    direction: String,
    status: String,
    payload_base64: String,
    attempts: i32,
    mt_id: Option<i64>,
    error_code: Option<i32>,
    error_text: Option<String>,
    momsn: Option<i64>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Message {
    /// `→ to` the device (mt) or `← from` it (mo).
    fn way(&self) -> &'static str {
        if self.direction == "mo" {
            "← from"
        } else {
            "→ to"
        }
    }

    fn created(&self) -> String {
        when(&self.created_at)
    }

    fn updated(&self) -> String {
        when(&self.updated_at)
    }

    /// The payload as text when it is printable UTF-8, else its base64.
    fn payload(&self) -> String {
        let text = base64::engine::general_purpose::STANDARD
            .decode(&self.payload_base64)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|text| !text.chars().any(|c| c.is_control() && c != '\n'));
        text.unwrap_or_else(|| format!("base64 {}", self.payload_base64))
    }

    /// What else there is to say: the modem's or the provider's number,
    /// attempts, the last failure.
    fn details(&self) -> String {
        let mut parts = Vec::new();
        if let Some(momsn) = self.momsn {
            parts.push(format!("MOMSN {momsn}"));
        }
        if let Some(mt_id) = self.mt_id {
            parts.push(format!("MT id {mt_id}"));
        }
        if self.direction == "mt" {
            parts.push(format!("{} attempts", self.attempts));
        }
        match (self.error_code, &self.error_text) {
            (Some(code), Some(text)) => parts.push(format!("error {code}: {text}")),
            (Some(code), None) => parts.push(format!("error {code}")),
            (None, Some(text)) => parts.push(format!("error: {text}")),
            (None, None) => {}
        }
        parts.join(" · ")
    }

    fn position(&self) -> String {
        match (self.latitude, self.longitude) {
            (Some(latitude), Some(longitude)) => format!("{latitude:.4}, {longitude:.4}"),
            _ => String::new(),
        }
    }
}

/// A point on the map: `x` is the longitude and `y` the latitude turned
/// down (the equirectangular projection of `assets/world.svg`).
#[derive(Debug)]
struct Dot {
    x: String,
    y: String,
    imei: String,
    /// The dot's tooltip.
    label: String,
    /// An earlier position (a message's), drawn smaller.
    trail: bool,
}

impl Dot {
    /// The dot at `latitude`, `longitude`, when that is a place on Earth.
    fn at(latitude: f64, longitude: f64, imei: &str, label: String, trail: bool) -> Option<Self> {
        let on_earth = (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude);
        on_earth.then(|| Self {
            x: format!("{longitude:.3}"),
            y: format!("{:.3}", -latitude),
            imei: imei.to_owned(),
            label,
            trail,
        })
    }
}

/// The world's outline with a dot per position.
#[derive(Debug)]
struct WorldMap {
    dots: Vec<Dot>,
    /// What the map shows, in words.
    caption: String,
}

/// `?cursor=`: the page of a listing.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    #[serde(default)]
    cursor: String,
}

impl PageQuery {
    /// `path` with this page's cursor and `limit`.
    fn api_path(&self, path: &str, limit: u32) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", &limit.to_string());
        if !self.cursor.is_empty() {
            query.append_pair("cursor", &self.cursor);
        }
        format!("{path}?{}", query.finish())
    }
}

/// The links of a listing's paging: to its first page (empty on it) and
/// to the next (empty on the last).
#[derive(Debug)]
struct Paging {
    first: String,
    next: String,
}

impl Paging {
    /// The links of `path`'s page `query`, whose next page starts at
    /// `next_cursor`.
    fn of(path: &str, query: &PageQuery, next_cursor: Option<String>) -> Self {
        let first = if query.cursor.is_empty() {
            String::new()
        } else {
            path.to_owned()
        };
        let next = next_cursor.map_or_else(String::new, |cursor| {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("cursor", &cursor)
                .finish();
            format!("{path}?{query}")
        });
        Self { first, next }
    }
}

/// The device list.
#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    chrome: Option<Chrome>,
    devices: Vec<Device>,
    map: WorldMap,
    paging: Paging,
}

/// `GET /console/devices`.
pub(super) async fn list(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Query(query): Query<PageQuery>,
) -> Response {
    let chrome = || Some(Chrome::of(&signed_in));
    let path = query.api_path("/v1/devices", DEVICES_PAGE);
    let page: DevicePage = match state.api.get(&signed_in.secret, &path).await {
        Ok(page) => page,
        Err(refusal) => {
            return pages::message(refusal.status, chrome(), &refusal.title, &refusal.detail)
        }
    };
    let dots: Vec<Dot> = page.items.iter().filter_map(Device::dot).collect();
    let caption = format!(
        "{} of {} devices on this page have a last position.",
        dots.len(),
        page.items.len()
    );
    render(&DevicesPage {
        chrome: chrome(),
        map: WorldMap { dots, caption },
        paging: Paging::of("/console/devices", &query, page.next_cursor),
        devices: page.items,
    })
}

/// One device's page.
#[derive(Template)]
#[template(path = "device.html")]
struct DevicePageView {
    chrome: Option<Chrome>,
    device: Device,
    messages: Vec<Message>,
    map: WorldMap,
    paging: Paging,
}

/// `GET /console/devices/{imei}`.
pub(super) async fn show(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(imei): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let chrome = || Some(Chrome::of(&signed_in));
    // Anything but an IMEI is a device that does not exist.
    let Ok(imei) = Imei::new(&imei) else {
        return pages::not_found(chrome(), "This device");
    };
    let imei = imei.as_str();
    let secret = &signed_in.secret;
    let device: Device = match state.api.get(secret, &format!("/v1/devices/{imei}")).await {
        Ok(device) => device,
        Err(refusal) => return pages::refused(chrome(), &refusal, "This device"),
    };
    let path = query.api_path(&format!("/v1/devices/{imei}/messages"), MESSAGES_PAGE);
    let page: MessagePage = match state.api.get(secret, &path).await {
        Ok(page) => page,
        Err(refusal) => return pages::refused(chrome(), &refusal, "This device"),
    };
    // Where its messages came from (oldest first, so the last dot drawn,
    // on top, is the device's last position).
    let mut dots: Vec<Dot> = page
        .items
        .iter()
        .rev()
        .filter_map(|message| {
            Dot::at(
                message.latitude?,
                message.longitude?,
                imei,
                format!("{} · {}", message.created(), message.position()),
                true,
            )
        })
        .collect();
    let caption = match device.dot() {
        Some(last) => {
            dots.push(last);
            format!(
                "Last position {}; the smaller dots are where the messages below came from.",
                device.position()
            )
        }
        None => "No position known yet.".to_owned(),
    };
    let here = format!("/console/devices/{imei}");
    render(&DevicePageView {
        chrome: chrome(),
        map: WorldMap { dots, caption },
        paging: Paging::of(&here, &query, page.next_cursor),
        device,
        messages: page.items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dot_is_drawn_where_the_projection_puts_it_and_only_on_earth() {
        let dot = Dot::at(52.3867, -0.2938, "300434065197640", String::new(), false).unwrap();
        assert_eq!((dot.x.as_str(), dot.y.as_str()), ("-0.294", "-52.387"));
        assert!(Dot::at(91.0, 0.0, "", String::new(), false).is_none());
        assert!(Dot::at(0.0, -180.5, "", String::new(), false).is_none());
    }

    #[test]
    fn paging_links_to_the_first_page_only_from_a_later_one() {
        let first = Paging::of(
            "/console/devices",
            &PageQuery::default(),
            Some("a b".into()),
        );
        assert_eq!(first.first, "");
        assert_eq!(first.next, "/console/devices?cursor=a+b");
        let later = PageQuery {
            cursor: "a b".to_owned(),
        };
        let last = Paging::of("/console/devices", &later, None);
        assert_eq!(
            (last.first.as_str(), last.next.as_str()),
            ("/console/devices", "")
        );
    }

    #[test]
    fn a_payload_is_shown_as_text_when_it_is_text() {
        let message = |payload: &[u8]| Message {
            message_id: Uuid::nil(),
            direction: "mo".to_owned(),
            status: "received".to_owned(),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(payload),
            attempts: 0,
            mt_id: None,
            error_code: None,
            error_text: None,
            momsn: Some(7),
            latitude: None,
            longitude: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert_eq!(message(b"hello from orbit").payload(), "hello from orbit");
        assert_eq!(message(&[0, 159, 1]).payload(), "base64 AJ8B");
        assert_eq!(message(b"x").details(), "MOMSN 7");
    }
}
