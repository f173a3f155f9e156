//! `/console/ledgers`: every ledger that confirmed anything, with where it
//! stands against the log — confirmed through, pending, and its holes
//! (`GET /v1/ledgers`, `GET /v1/ledgers/{ledger}/holes`; platform keys with
//! `audit:read` or `ledger:write`, as `/v1` requires).

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::pages::{self, render, Chrome};
use super::session::SignedIn;
use super::views::path_segment;
use super::ConsoleState;

/// The holes of one ledger the page lists (the bar draws them all).
const HOLES_LISTED: usize = 20;
/// The width of a ledger's bar, in the units of its `viewBox`.
const BAR_WIDTH: f64 = 1000.0;

/// `GET /v1/ledgers`.
#[derive(Debug, Deserialize)]
struct LedgerPage {
    items: Vec<LedgerStatus>,
}

/// A ledger's status (`LedgerStatus`).
#[derive(Debug, Deserialize)]
struct LedgerStatus {
    ledger: String,
    head: u64,
    confirmed_through: u64,
    max_confirmed: u64,
    confirmed: u64,
    pending: u64,
    in_sync: bool,
    holes: u64,
    last_reference: Option<String>,
    anchored_through: u64,
}

/// `GET /v1/ledgers/{ledger}/holes`.
#[derive(Debug, Deserialize)]
struct HolePage {
    items: Vec<Range>,
}

/// An inclusive range of sequences (`SequenceRange`).
#[derive(Debug, Clone, Copy, Deserialize)]
struct Range {
    from: u64,
    to: u64,
}

impl Range {
    fn text(&self) -> String {
        if self.from == self.to {
            self.from.to_string()
        } else {
            format!("{}–{}", self.from, self.to)
        }
    }
}

/// A stretch of a ledger's bar: from `x`, `width` wide.
#[derive(Debug)]
struct Stretch {
    x: String,
    width: String,
}

/// One ledger's row.
#[derive(Debug)]
struct Ledger {
    status: LedgerStatus,
    holes: Vec<Range>,
    /// Why the holes are not listed, when they are not.
    holes_refused: String,
}

impl Ledger {
    /// The stretch of the bar from sequence `from` to `to` (inclusive) of
    /// the `head` the ledger owes.
    fn stretch(&self, from: u64, to: u64) -> Stretch {
        let scale = BAR_WIDTH / self.status.head.max(self.status.max_confirmed).max(1) as f64;
        let start = from.saturating_sub(1) as f64 * scale;
        let width = (to.saturating_sub(from) + 1) as f64 * scale;
        Stretch {
            x: format!("{start:.2}"),
            width: format!("{:.2}", width.max(1.0)),
        }
    }

    /// The confirmed part of the bar (holes are drawn over it).
    fn confirmed_bar(&self) -> Option<Stretch> {
        (self.status.max_confirmed > 0).then(|| self.stretch(1, self.status.max_confirmed))
    }

    fn hole_bars(&self) -> Vec<Stretch> {
        self.holes
            .iter()
            .map(|hole| self.stretch(hole.from, hole.to))
            .collect()
    }

    /// The holes the page lists, in words.
    fn listed_holes(&self) -> Vec<String> {
        self.holes
            .iter()
            .take(HOLES_LISTED)
            .map(Range::text)
            .collect()
    }

    /// How many holes are not listed.
    fn unlisted_holes(&self) -> usize {
        self.holes.len().saturating_sub(HOLES_LISTED)
    }
}

/// The ledgers page.
#[derive(Template)]
#[template(path = "ledgers.html")]
struct LedgersPage {
    chrome: Option<Chrome>,
    ledgers: Vec<Ledger>,
}

/// `GET /console/ledgers`.
pub(super) async fn list(State(state): State<ConsoleState>, signed_in: SignedIn) -> Response {
    let chrome = || Some(Chrome::of(&signed_in));
    let secret = &signed_in.secret;
    let page: LedgerPage = match state.api.get(secret, "/v1/ledgers").await {
        Ok(page) => page,
        Err(refusal) => {
            return pages::message(refusal.status, chrome(), &refusal.title, &refusal.detail)
        }
    };
    let mut ledgers = Vec::with_capacity(page.items.len());
    for status in page.items {
        let (holes, holes_refused) = if status.holes == 0 {
            (Vec::new(), String::new())
        } else {
            let path = format!("/v1/ledgers/{}/holes", path_segment(&status.ledger));
            match state.api.get::<HolePage>(secret, &path).await {
                Ok(holes) => (holes.items, String::new()),
                Err(refusal) => (Vec::new(), refusal.detail),
            }
        };
        ledgers.push(Ledger {
            status,
            holes,
            holes_refused,
        });
    }
    render(&LedgersPage {
        chrome: chrome(),
        ledgers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(head: u64, max_confirmed: u64, holes: Vec<Range>) -> Ledger {
        Ledger {
            status: LedgerStatus {
                ledger: "bank".to_owned(),
                head,
                confirmed_through: 0,
                max_confirmed,
                confirmed: 0,
                pending: 0,
                in_sync: false,
                holes: holes.len() as u64,
                last_reference: None,
                anchored_through: 0,
            },
            holes,
            holes_refused: String::new(),
        }
    }

    #[test]
    fn the_bar_scales_sequences_to_its_width() {
        let ledger = ledger(10, 8, vec![Range { from: 3, to: 4 }]);
        let confirmed = ledger.confirmed_bar().unwrap();
        assert_eq!(
            (confirmed.x.as_str(), confirmed.width.as_str()),
            ("0.00", "800.00")
        );
        let holes = ledger.hole_bars();
        assert_eq!(
            (holes[0].x.as_str(), holes[0].width.as_str()),
            ("200.00", "200.00")
        );
        assert_eq!(ledger.listed_holes(), ["3–4"]);
        assert!(self::ledger(0, 0, Vec::new()).confirmed_bar().is_none());
    }
}
