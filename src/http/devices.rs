//! Satellite devices: queueing messages to a modem
//! (`POST /v1/devices/{imei}/messages`) and the provider's webhook for
//! messages from one (`POST /v1/rockblock/mo`).
//!
//! The webhook does the least it can before answering: parse, verify the
//! provider's RS256 JWT against the body, append `DeviceMessageReceived`
//! (once per `(imei, momsn, transmit_time)`), and answer 200 as soon as the
//! append committed. Everything else happens in projectors.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use taskledger_events::device::{
    self, DeviceCommand, Devices, Imei, QueueDeviceMessage, ReceiveDeviceMessage,
};
use taskledger_events::{Aggregate, AppendError, EventStore, ExpectedVersion, Metadata};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Authorized, WriteDevices};
use super::problem::{ApiBytes, ApiJson, ApiPath, Problem};
use super::responses::{Authenticated, JsonBody, Malformed};
use super::AppState;
use crate::adapters::rockblock::{self, MoError, MoVerifier};
use crate::commands::execute;

/// How mobile-originated webhooks are checked.
#[derive(Debug, Clone, Default)]
pub enum MoPolicy {
    /// No `[rockblock]` configuration: the webhook answers 503.
    #[default]
    NotConfigured,
    /// Every webhook's JWT is verified with this key.
    Verify(Arc<MoVerifier>),
    /// `verify_mo_jwt = false`: webhooks are accepted unsigned.
    Unverified,
}

/// A message for a device: text or base64 (exactly one), at most 270 bytes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    /// The payload as UTF-8 text.
    pub text: Option<String>,
    /// Or the payload as standard base64.
    pub base64: Option<String>,
    /// Ask the provider to drop the device's queued messages first.
    #[serde(default)]
    pub flush: bool,
}

/// A queued message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueuedMessage {
    /// The message's id.
    pub message_id: Uuid,
    /// The device.
    pub imei: String,
    /// `queued`: the gateway sends it.
    pub status: &'static str,
    /// The device stream's version after queueing.
    pub stream_version: u64,
    /// The global position of the queueing event.
    pub position: u64,
}

fn imei_of(text: &str) -> Result<Imei, Problem> {
    Imei::new(text).map_err(Problem::bad_request)
}

/// Queues a message for a device; the device gateway sends it.
#[utoipa::path(
    post,
    path = "/v1/devices/{imei}/messages",
    tag = "devices",
    params(("imei" = String, Path, description = "The modem's IMEI: 15 digits", pattern = "^[0-9]{15}$")),
    request_body = SendMessageRequest,
    responses(
        (status = 202, description = "Queued", body = QueuedMessage),
        Authenticated,
        JsonBody,
        (status = 400, description = "A malformed IMEI, or a body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The device's messages kept changing; retry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body of the wrong shape, neither or both of text and base64, bad base64, or a payload of 0 or over 270 bytes", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["devices:write"]))
)]
pub async fn send_message(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteDevices>,
    ApiPath(imei): ApiPath<String>,
    ApiJson(request): ApiJson<SendMessageRequest>,
) -> Result<Response, Problem> {
    let imei = imei_of(&imei)?;
    let payload = match (request.text, request.base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|error| {
                Problem::unprocessable(format!("base64 is not valid base64: {error}"))
            })?,
        _ => {
            return Err(Problem::unprocessable(
                "give exactly one of text and base64",
            ))
        }
    };
    let message_id = Uuid::now_v7();
    let command = DeviceCommand::Queue(QueueDeviceMessage {
        message_id,
        payload,
        flush: request.flush,
        queued_at: Utc::now().trunc_subsecs(6),
        queued_by: Some(caller.key_id.to_string()),
    });
    let metadata = Metadata {
        actor: Some(caller.key_id.to_string()),
        ..Metadata::default()
    };
    let executed = execute::<Devices>(
        &state.store,
        &imei.stream_id(),
        (imei.clone(), command),
        Uuid::new_v4(),
        metadata,
    )
    .await?;
    let body = QueuedMessage {
        message_id,
        imei: imei.as_str().to_owned(),
        status: "queued",
        stream_version: executed.stream_version,
        position: executed.position,
    };
    Ok((StatusCode::ACCEPTED, ApiJson(body)).into_response())
}

// The webhook's fields as `rockblock::parse_mo_form` and `parse_mo_json`
// read them, for the OpenAPI document only: the body is parsed by hand, so
// that an empty or repeated field is handled as the provider means it.
/// An MO webhook: the message a device sent, as the provider delivers it.
/// Other fields (such as `device_type`) are ignored; an empty one counts as
/// absent.
#[derive(ToSchema)]
#[allow(dead_code)]
struct MoWebhook {
    /// The sending device's IMEI.
    #[schema(pattern = "^[0-9]{15}$")]
    imei: String,
    /// The device's RockBLOCK serial number.
    #[schema(required = false)]
    serial: u64,
    /// The device's MO message sequence number.
    momsn: u64,
    /// When the message was sent, in the provider's format (UTC,
    /// `YY-MM-DD HH:MM:SS`); 1 to 64 characters, kept as given.
    #[schema(min_length = 1, max_length = 64, example = "26-01-31 12:00:00")]
    transmit_time: String,
    /// Iridium's estimate of the device's latitude, in degrees.
    #[schema(required = false, minimum = -90, maximum = 90)]
    iridium_latitude: f64,
    /// Iridium's estimate of the device's longitude, in degrees.
    #[schema(required = false, minimum = -180, maximum = 180)]
    iridium_longitude: f64,
    /// The radius of that estimate, in km.
    #[schema(required = false)]
    iridium_cep: f64,
    /// The payload, hex (at most 340 bytes); empty or absent when none.
    #[schema(required = false, pattern = "^([0-9a-fA-F]{2}){0,340}$")]
    data: String,
    /// The provider's RS256 JWT over the same fields (required unless the
    /// server is configured with `verify_mo_jwt = false`).
    #[schema(required = false, rename = "JWT")]
    jwt: String,
}

/// The provider's webhook for a message a device sent: its form-encoded
/// body (or the JSON variant) with an RS256 JWT over the same fields.
#[utoipa::path(
    post,
    path = "/v1/rockblock/mo",
    tag = "devices",
    request_body(description = "The webhook's fields, form-encoded as the provider sends them, or as a JSON object (numbers as JSON numbers or strings)",
        content((MoWebhook = "application/x-www-form-urlencoded"), (MoWebhook = "application/json"))),
    responses(
        (status = 200, description = "Recorded (or already recorded)", body = String, content_type = "text/plain"),
        (status = 400, description = "A malformed webhook: missing field, bad hex, bad IMEI, payload too long", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The JWT is missing, invalid, or disagrees with the body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the 256 KiB any route accepts", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither form-encoded nor JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "RockBLOCK is not configured on this server (`[rockblock]`), or the event store is unavailable; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn rockblock_mo(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let parsed = match content_type.as_str() {
        "application/x-www-form-urlencoded" => rockblock::parse_mo_form(&body),
        "application/json" => rockblock::parse_mo_json(&body),
        _ => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the webhook form-encoded or as JSON",
            ))
        }
    }
    .map_err(|error| mo_problem(&error))?;
    let message = match &state.mo {
        MoPolicy::NotConfigured => {
            return Err(Problem::unavailable(
                "RockBLOCK is not configured on this server ([rockblock] in TASKLEDGER_CONFIG)",
                60,
            ))
        }
        MoPolicy::Verify(verifier) => verifier
            .verify_webhook(parsed)
            .map_err(|error| mo_problem(&error))?,
        MoPolicy::Unverified => parsed.0,
    };
    let imei = imei_of(&message.imei)?;
    let command = DeviceCommand::Receive(ReceiveDeviceMessage {
        momsn: message.momsn,
        transmit_time: message.transmit_time.clone(),
        payload: message.data,
        serial: message.serial,
        latitude: message.iridium_latitude,
        longitude: message.iridium_longitude,
        cep: message.iridium_cep,
        received_at: Utc::now().trunc_subsecs(6),
    });
    // Receiving depends on the device's state only for deduplication, and
    // the event id does that here: the same delivery always gets the same
    // id, and the store answers a repeated id at the same stream with the
    // original result. So the append needs neither the device's stream nor
    // an expected version, and concurrent webhooks of one device never
    // conflict.
    let event = device::decide(&imei, &device::DeviceState::default(), command)
        .map_err(|error| Problem::bad_request(error.message()))?
        .pop()
        .ok_or_else(Problem::internal)?;
    let event_id = Uuid::new_v5(
        &MO_NAMESPACE,
        format!(
            "{}:{}:{}",
            imei.as_str(),
            message.momsn,
            message.transmit_time
        )
        .as_bytes(),
    );
    let metadata = Metadata {
        actor: Some("rockblock".into()),
        command_id: Some(event_id),
        ..Metadata::default()
    };
    // The same metrics as a command through `commands::execute`.
    let appended = crate::metrics::timed_append(state.store.append(
        &imei.stream_id(),
        ExpectedVersion::Any,
        vec![event.to_new_event(event_id, metadata)],
    ))
    .await;
    let outcome = match &appended {
        Ok(_) | Err(AppendError::DuplicateEventId { .. }) => crate::metrics::CommandOutcome::Ok,
        Err(_) => crate::metrics::CommandOutcome::Error,
    };
    crate::metrics::record_command(<Devices as Aggregate>::NAME, "Receive", outcome);
    match appended {
        Ok(_) => Ok((StatusCode::OK, "OK").into_response()),
        Err(AppendError::DuplicateEventId { .. }) => Ok((StatusCode::OK, "OK").into_response()),
        Err(error) => {
            tracing::error!(%error, "recording an MO message failed");
            Err(Problem::unavailable(
                "the message could not be stored right now; the provider retries",
                1,
            ))
        }
    }
}

/// The namespace of MO event ids (fixed: changing it would make redelivered
/// webhooks look new).
const MO_NAMESPACE: Uuid = Uuid::from_u128(0x0b3c_51e2_7d4a_4f0e_9a61_5c2d_8e7f_1a90);

fn mo_problem(error: &MoError) -> Problem {
    match error {
        MoError::MissingJwt
        | MoError::JwtAlgorithm(_)
        | MoError::BadJwt(_)
        | MoError::JwtMismatch(_) => Problem::unauthorized(error.to_string()),
        _ => Problem::bad_request(error.to_string()),
    }
}

/// A modem, as the `devices` read model holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceView {
    /// Its IMEI.
    pub imei: String,
    /// When it first appeared (a message to or from it).
    pub first_seen_at: chrono::DateTime<Utc>,
    /// When its last message arrived.
    pub last_seen_at: Option<chrono::DateTime<Utc>>,
    /// The network's last position estimate.
    pub last_latitude: Option<f64>,
    /// The network's last position estimate.
    pub last_longitude: Option<f64>,
    /// That estimate's radius, in km.
    pub last_cep: Option<f64>,
    /// Messages received from it.
    pub received_count: i64,
    /// Messages queued for it.
    pub queued_count: i64,
    /// Messages the provider accepted for it.
    pub sent_count: i64,
    /// Messages given up.
    pub failed_count: i64,
    /// Its stream's version.
    pub stream_version: i64,
}

/// A page of devices, by IMEI.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DevicePage {
    /// The devices.
    pub items: Vec<DeviceView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A message to or from a device.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceMessageView {
    /// Its id.
    pub message_id: Uuid,
    /// The device.
    pub imei: String,
    /// `mt` (to the device) or `mo` (from it).
    pub direction: String,
    /// mt: `queued`, `sending`, `sent`, `failed`; mo: `received`.
    pub status: String,
    /// The payload, base64.
    pub payload_base64: String,
    /// Attempts made (mt).
    pub attempts: i32,
    /// The provider's id (mt, once sent).
    pub mt_id: Option<i64>,
    /// The provider's error code of the last failure (mt).
    pub error_code: Option<i32>,
    /// The last failure's text (mt).
    pub error_text: Option<String>,
    /// The modem's sequence number (mo).
    pub momsn: Option<i64>,
    /// When the network received it (mo), as the provider wrote it.
    pub transmit_time: Option<String>,
    /// Position estimate (mo).
    pub latitude: Option<f64>,
    /// Position estimate (mo).
    pub longitude: Option<f64>,
    /// When it was queued (mt) or received (mo).
    pub created_at: chrono::DateTime<Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

/// A page of messages, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceMessagePage {
    /// The messages.
    pub items: Vec<DeviceMessageView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of devices.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// Devices per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters and paging of a device's messages.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageListQuery {
    /// `mt` or `mo`.
    #[param(pattern = "^(mt|mo)$")]
    pub direction: Option<String>,
    /// One status (`queued`, `sending`, `sent`, `failed`, `received`).
    #[param(pattern = "^(queued|sending|sent|failed|received)$")]
    pub status: Option<String>,
    /// Messages per page, 1 to 1000 (default 100). For CSV: the most rows,
    /// 1 or more.
    #[param(minimum = 1)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn page_limit(limit: Option<u32>) -> Result<i64, Problem> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be from 1 to 1000; got {limit}"
        )));
    }
    Ok(i64::from(limit))
}

const DEVICE_COLUMNS: &str = "imei, first_seen_at, last_seen_at, last_latitude, last_longitude,
    last_cep, received_count, queued_count, sent_count, failed_count, stream_version";

fn device_view(row: &tokio_postgres::Row) -> DeviceView {
    DeviceView {
        imei: row.get(0),
        first_seen_at: row.get(1),
        last_seen_at: row.get(2),
        last_latitude: row.get(3),
        last_longitude: row.get(4),
        last_cep: row.get(5),
        received_count: row.get(6),
        queued_count: row.get(7),
        sent_count: row.get(8),
        failed_count: row.get(9),
        stream_version: row.get(10),
    }
}

/// Lists devices by IMEI.
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "devices",
    params(DeviceListQuery),
    responses(
        (status = 200, description = "A page of devices", body = DevicePage),
        Authenticated,
        Malformed,
    ),
    security(("api_key" = ["devices:read"]))
)]
pub async fn list_devices(
    State(state): State<AppState>,
    _: Authorized<super::auth::ReadDevices>,
    super::problem::ApiQuery(query): super::problem::ApiQuery<DeviceListQuery>,
) -> Result<ApiJson<DevicePage>, Problem> {
    let limit = page_limit(query.limit)?;
    let after = query.cursor.unwrap_or_default();
    let client = super::connection(&state).await?;
    let rows = client
        .query(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE imei > $1 ORDER BY imei LIMIT $2"),
            &[&after, &(limit + 1)],
        )
        .await
        .map_err(super::database_error("reading devices"))?;
    let mut items: Vec<DeviceView> = rows.iter().map(device_view).collect();
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        items.last().map(|device| device.imei.clone())
    } else {
        None
    };
    Ok(ApiJson(DevicePage { items, next_cursor }))
}

/// One device.
#[utoipa::path(
    get,
    path = "/v1/devices/{imei}",
    tag = "devices",
    params(("imei" = String, Path, description = "The modem's IMEI: 15 digits", pattern = "^[0-9]{15}$")),
    responses(
        (status = 200, description = "The device", body = DeviceView),
        Authenticated,
        Malformed,
        (status = 404, description = "No message to or from it yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["devices:read"]))
)]
pub async fn get_device(
    State(state): State<AppState>,
    _: Authorized<super::auth::ReadDevices>,
    ApiPath(imei): ApiPath<String>,
) -> Result<ApiJson<DeviceView>, Problem> {
    let imei = imei_of(&imei)?;
    let client = super::connection(&state).await?;
    let row = client
        .query_opt(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE imei = $1"),
            &[&imei.as_str()],
        )
        .await
        .map_err(super::database_error("reading devices"))?
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no message to or from device {} yet",
                imei.as_str()
            ))
        })?;
    Ok(ApiJson(device_view(&row)))
}

/// A device's messages, newest first, as JSON pages or (with
/// `Accept: text/csv`) one CSV export.
#[utoipa::path(
    get,
    path = "/v1/devices/{imei}/messages",
    tag = "devices",
    params(("imei" = String, Path, description = "The modem's IMEI: 15 digits", pattern = "^[0-9]{15}$"), MessageListQuery),
    responses(
        (status = 200, description = "A page of messages, or the CSV export", content(
            (DeviceMessagePage = "application/json"),
            (String = "text/csv")
        )),
        Authenticated,
        (status = 400, description = "A malformed IMEI, filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["devices:read"]))
)]
pub async fn list_messages(
    State(state): State<AppState>,
    _: Authorized<super::auth::ReadDevices>,
    ApiPath(imei): ApiPath<String>,
    headers: HeaderMap,
    super::problem::ApiQuery(query): super::problem::ApiQuery<MessageListQuery>,
) -> Result<Response, Problem> {
    let imei = imei_of(&imei)?;
    if let Some(direction) = &query.direction {
        if !matches!(direction.as_str(), "mt" | "mo") {
            return Err(Problem::bad_request("direction is mt or mo"));
        }
    }
    if let Some(status) = &query.status {
        if !matches!(
            status.as_str(),
            "queued" | "sending" | "sent" | "failed" | "received"
        ) {
            return Err(Problem::bad_request(
                "status is one of queued, sending, sent, failed, received",
            ));
        }
    }
    let csv = super::tasks::wants_csv(&headers);
    let limit = if csv {
        if query.limit == Some(0) {
            return Err(Problem::bad_request("limit must be 1 or more"));
        }
        i64::from(query.limit.unwrap_or(u32::MAX).min(1_000_000))
    } else {
        page_limit(query.limit)?
    };
    let cursor = match &query.cursor {
        None => None,
        Some(text) => {
            let bad = || Problem::bad_request("cursor must be the next_cursor of an earlier page");
            let (micros, id) = text.split_once('_').ok_or_else(bad)?;
            let micros: i64 = micros.parse().map_err(|_| bad())?;
            let at = chrono::DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(bad)?;
            Some((at, Uuid::parse_str(id).map_err(|_| bad())?))
        }
    };
    let client = super::connection(&state).await?;
    let rows = client
        .query(
            "SELECT message_id, imei, direction, status, payload, attempts, mt_id, error_code,
                    error_text, momsn, transmit_time, latitude, longitude, created_at, updated_at
             FROM device_messages
             WHERE imei = $1
               AND ($2::text IS NULL OR direction = $2)
               AND ($3::text IS NULL OR status = $3)
               AND ($4::timestamptz IS NULL OR (created_at, message_id) < ($4, $5))
             ORDER BY created_at DESC, message_id DESC
             LIMIT $6",
            &[
                &imei.as_str(),
                &query.direction,
                &query.status,
                &cursor.map(|(at, _)| at),
                &cursor.map_or(Uuid::nil(), |(_, id)| id),
                &(limit + 1),
            ],
        )
        .await
        .map_err(super::database_error("reading devices"))?;
    let mut items: Vec<DeviceMessageView> = rows
        .iter()
        .map(|row| DeviceMessageView {
            message_id: row.get(0),
            imei: row.get(1),
            direction: row.get(2),
            status: row.get(3),
            payload_base64: base64::engine::general_purpose::STANDARD
                .encode(row.get::<_, Vec<u8>>(4)),
            attempts: row.get(5),
            mt_id: row.get(6),
            error_code: row.get(7),
            error_text: row.get(8),
            momsn: row.get(9),
            transmit_time: row.get(10),
            latitude: row.get(11),
            longitude: row.get(12),
            created_at: row.get(13),
            updated_at: row.get(14),
        })
        .collect();
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    if csv {
        return csv_messages(&items);
    }
    let next_cursor = more
        .then(|| {
            items.last().map(|m| {
                format!(
                    "{}_{}",
                    m.created_at.timestamp_micros(),
                    m.message_id.simple()
                )
            })
        })
        .flatten();
    Ok(ApiJson(DeviceMessagePage { items, next_cursor }).into_response())
}

fn csv_messages(items: &[DeviceMessageView]) -> Result<Response, Problem> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |_| Problem::internal();
    writer
        .write_record([
            "message_id",
            "imei",
            "direction",
            "status",
            "payload_base64",
            "attempts",
            "mt_id",
            "error_code",
            "error_text",
            "momsn",
            "transmit_time",
            "latitude",
            "longitude",
            "created_at",
            "updated_at",
        ])
        .map_err(failed)?;
    let text = |value: &Option<String>| {
        super::tasks::spreadsheet_safe(value.as_deref().unwrap_or_default())
    };
    let number = |value: Option<String>| value.unwrap_or_default();
    for message in items {
        writer
            .write_record([
                message.message_id.to_string(),
                message.imei.clone(),
                message.direction.clone(),
                message.status.clone(),
                message.payload_base64.clone(),
                message.attempts.to_string(),
                number(message.mt_id.map(|id| id.to_string())),
                number(message.error_code.map(|code| code.to_string())),
                text(&message.error_text),
                number(message.momsn.map(|momsn| momsn.to_string())),
                text(&message.transmit_time),
                number(message.latitude.map(|value| value.to_string())),
                number(message.longitude.map(|value| value.to_string())),
                message.created_at.to_rfc3339(),
                message.updated_at.to_rfc3339(),
            ])
            .map_err(failed)?;
    }
    let bytes = writer.into_inner().map_err(|_| Problem::internal())?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"messages.csv\"",
            ),
        ],
        bytes,
    )
        .into_response())
}
