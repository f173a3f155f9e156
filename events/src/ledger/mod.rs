//! The ledger aggregate: what an outside ledger (a blockchain mirror, a
//! warehouse) confirmed it recorded, as ranges of global positions, each
//! with the ledger's own transaction reference. One stream per ledger,
//! `ledger-{name}`.
//!
//! Rules ([`decide`]):
//! - every confirmed position exists: at most the log's head, which the
//!   caller looks up and passes in the command;
//! - a **range** confirmation continues the ledger's contiguous prefix: it
//!   starts at most one past `confirmed_through` (confirming `10..=20` when
//!   only `1..=5` is confirmed would skip the hole `6..=9`);
//! - confirmations of single **events** (by id) may land anywhere; the holes
//!   they leave are what reconciliation ([`LedgerState::holes`]) lists;
//! - confirming only what is already confirmed changes nothing (no event),
//!   so a consumer may safely send a confirmation again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::{Aggregate, Refusal, StreamId};

/// The longest ledger name, in bytes.
pub const MAX_LEDGER_NAME_BYTES: usize = 100;
/// The longest transaction reference, in bytes.
pub const MAX_REFERENCE_BYTES: usize = 500;
/// The most ranges one confirmation may carry.
pub const MAX_RANGES: usize = 10_000;

/// A ledger's name: 1 to [`MAX_LEDGER_NAME_BYTES`] of `a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LedgerName(String);

impl LedgerName {
    /// Checks `name`.
    ///
    /// # Errors
    /// What is wrong with it, in words.
    pub fn new(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= MAX_LEDGER_NAME_BYTES
            && name
                .bytes()
                .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "a ledger name is 1 to {MAX_LEDGER_NAME_BYTES} characters of a-z, 0-9, '.', '_' and '-'; got {name:?}"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ledger's stream: `ledger-{name}`.
    pub fn stream_id(&self) -> StreamId {
        StreamId::new(format!("{}{}", Ledgers::STREAM_PREFIX, self.0))
            .expect("a checked ledger name makes a valid stream id")
    }
}

/// The ledger aggregate, for [`crate::command::execute`] and the tests'
/// given/when/then.
#[derive(Debug, Clone, Copy)]
pub struct Ledgers;

impl Aggregate for Ledgers {
    const NAME: &'static str = "ledgers";
    const STREAM_PREFIX: &'static str = "ledger-";

    type State = LedgerState;
    type Command = ConfirmLedgerEntries;
    type Event = LedgerEvent;

    /// The ledger has one command (a struct, not an enum): `Confirm`.
    fn command_name(_: &ConfirmLedgerEntries) -> &'static str {
        "Confirm"
    }

    fn decide(
        state: &LedgerState,
        command: ConfirmLedgerEntries,
    ) -> Result<Vec<LedgerEvent>, Refusal> {
        decide(state, command)
    }

    fn apply(state: LedgerState, event: &LedgerEvent) -> LedgerState {
        apply(state, event)
    }
}

/// An inclusive range of global positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PositionRange {
    /// The first position.
    pub from: u64,
    /// The last position (at least `from`).
    pub to: u64,
}

/// How the positions of a confirmation were named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmationKind {
    /// One range, which must continue the confirmed prefix.
    Range,
    /// Single events by id, anywhere.
    Events,
}

/// Record that the ledger holds these positions.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmLedgerEntries {
    /// The ledger.
    pub ledger: LedgerName,
    /// How the positions were named.
    pub kind: ConfirmationKind,
    /// The positions (for [`ConfirmationKind::Range`], exactly one range).
    pub ranges: Vec<PositionRange>,
    /// The ledger's transaction reference: 1 to [`MAX_REFERENCE_BYTES`]
    /// bytes without control characters.
    pub reference: String,
    /// The log's head when the command was made (looked up by the caller).
    pub head: u64,
    /// When the confirmation was accepted.
    pub confirmed_at: DateTime<Utc>,
    /// The API key that sent it.
    pub confirmed_by: Option<String>,
}

/// What happened to a ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LedgerEvent {
    /// See [`LedgerEntriesConfirmed`].
    #[serde(rename = "LedgerEntriesConfirmed")]
    Confirmed(LedgerEntriesConfirmed),
}

/// The ledger confirmed it holds these positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntriesConfirmed {
    /// The ledger.
    pub ledger: LedgerName,
    /// The positions newly confirmed (sorted, disjoint, none confirmed
    /// before).
    pub ranges: Vec<PositionRange>,
    /// The ledger's transaction reference.
    pub reference: String,
    /// When it was accepted.
    pub confirmed_at: DateTime<Utc>,
    /// The API key that sent it.
    pub confirmed_by: Option<String>,
}

codec::stored_events!(LedgerEvent: "a ledger", schema version 1, {
    Confirmed => "LedgerEntriesConfirmed",
});

/// A ledger as its events leave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// Confirmed positions: sorted, disjoint, non-adjacent ranges.
    pub confirmed: Vec<PositionRange>,
}

impl LedgerState {
    /// The state confirming exactly `ranges` (in any order, overlapping or
    /// not).
    pub fn from_ranges(ranges: Vec<PositionRange>) -> Self {
        Self {
            confirmed: merge(ranges),
        }
    }

    /// Every position from 1 to this is confirmed (0: not even 1).
    pub fn confirmed_through(&self) -> u64 {
        match self.confirmed.first() {
            Some(range) if range.from == 1 => range.to,
            _ => 0,
        }
    }

    /// The highest confirmed position (0 when none).
    pub fn max_confirmed(&self) -> u64 {
        self.confirmed.last().map_or(0, |range| range.to)
    }

    /// How many positions up to `limit` are confirmed.
    pub fn count_through(&self, limit: u64) -> u64 {
        self.confirmed
            .iter()
            .filter(|range| range.from <= limit)
            .map(|range| range.to.min(limit) - range.from + 1)
            .sum()
    }

    /// How many positions are confirmed.
    pub fn count(&self) -> u64 {
        self.confirmed
            .iter()
            .map(|range| range.to - range.from + 1)
            .sum()
    }

    /// The unconfirmed ranges between 1 and [`LedgerState::max_confirmed`].
    pub fn holes(&self) -> Vec<PositionRange> {
        let mut holes = Vec::new();
        let mut next = 1;
        for range in &self.confirmed {
            if range.from > next {
                holes.push(PositionRange {
                    from: next,
                    to: range.from - 1,
                });
            }
            next = range.to + 1;
        }
        holes
    }

    /// Whether `position` is confirmed.
    pub fn contains(&self, position: u64) -> bool {
        self.confirmed
            .binary_search_by(|range| {
                if range.to < position {
                    std::cmp::Ordering::Less
                } else if range.from > position {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }
}

/// The state after `event`.
pub fn apply(mut state: LedgerState, event: &LedgerEvent) -> LedgerState {
    let LedgerEvent::Confirmed(confirmed) = event;
    state.confirmed = merge(
        state
            .confirmed
            .iter()
            .chain(&confirmed.ranges)
            .copied()
            .collect(),
    );
    state
}

/// Sorted, disjoint, non-adjacent ranges covering the same positions.
fn merge(mut ranges: Vec<PositionRange>) -> Vec<PositionRange> {
    ranges.sort_unstable();
    let mut merged: Vec<PositionRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.from <= last.to.saturating_add(1) => {
                last.to = last.to.max(range.to)
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// Positions of `ranges` not yet in `state`, as ranges.
fn new_positions(state: &LedgerState, ranges: &[PositionRange]) -> Vec<PositionRange> {
    let mut fresh = Vec::new();
    for range in merge(ranges.to_vec()) {
        let mut start = range.from;
        for confirmed in &state.confirmed {
            if confirmed.to < start || confirmed.from > range.to {
                continue;
            }
            if confirmed.from > start {
                fresh.push(PositionRange {
                    from: start,
                    to: confirmed.from - 1,
                });
            }
            start = confirmed.to.saturating_add(1);
            if start > range.to {
                break;
            }
        }
        if start <= range.to {
            fresh.push(PositionRange {
                from: start,
                to: range.to,
            });
        }
    }
    fresh
}

/// What a confirmation makes happen (see the module documentation).
///
/// # Errors
/// [`RefusalKind::Invalid`](crate::RefusalKind::Invalid) for positions that do not exist, a range
/// that would skip a hole, or a bad reference.
pub fn decide(
    state: &LedgerState,
    command: ConfirmLedgerEntries,
) -> Result<Vec<LedgerEvent>, Refusal> {
    let reference = command.reference.as_str();
    if reference.is_empty()
        || reference.len() > MAX_REFERENCE_BYTES
        || reference.chars().any(char::is_control)
    {
        return Err(Refusal::invalid(format!(
            "reference must be 1 to {MAX_REFERENCE_BYTES} bytes without control characters"
        )));
    }
    if command.ranges.is_empty() || command.ranges.len() > MAX_RANGES {
        return Err(Refusal::invalid(format!(
            "a confirmation names 1 to {MAX_RANGES} ranges or events"
        )));
    }
    for range in &command.ranges {
        if range.from == 0 || range.from > range.to {
            return Err(Refusal::invalid(format!(
                "sequence range {}..={} is empty or starts at 0; sequences start at 1",
                range.from, range.to
            )));
        }
        if range.to > command.head {
            return Err(Refusal::invalid(format!(
                "sequence {} does not exist; the log ends at {}",
                range.to, command.head
            )));
        }
    }
    if command.kind == ConfirmationKind::Range {
        let [range] = command.ranges.as_slice() else {
            return Err(Refusal::invalid("a range confirmation names one range"));
        };
        let through = state.confirmed_through();
        if range.from > through + 1 {
            return Err(Refusal::invalid(format!(
                "confirming {}..={} would skip the hole {}..={} after the confirmed sequences; confirm from {} on",
                range.from,
                range.to,
                through + 1,
                range.from - 1,
                through + 1
            )));
        }
    }
    let fresh = new_positions(state, &command.ranges);
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![LedgerEvent::Confirmed(LedgerEntriesConfirmed {
        ledger: command.ledger,
        ranges: fresh,
        reference: command.reference,
        confirmed_at: command.confirmed_at,
        confirmed_by: command.confirmed_by,
    })])
}

#[cfg(test)]
mod tests;
