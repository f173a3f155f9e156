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
//!   so a consumer may safely send a confirmation again;
//! - a range confirmation may carry the chain hash the ledger saw at its
//!   last position (an **anchor**): it is refused unless it equals the hash
//!   stored there (which the caller looks up and passes in), and an anchor
//!   past the ledger's last one is recorded even when the range itself was
//!   already confirmed. The newest anchor is `anchored_through`: the last
//!   position whose hash an outside ledger holds (`docs/verification.md`).
//!
//! The command is in `commands.rs`, the event in `events.rs`, the state it
//! folds to in `state.rs` and the rules in `decide.rs`.

use serde::{Deserialize, Serialize};

use crate::snapshot::SnapshotPolicy;
use crate::{Aggregate, StreamId};

mod commands;
mod decide;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{
    AnchorCheck, ConfirmLedgerEntries, ConfirmationKind, MAX_RANGES, MAX_REFERENCE_BYTES,
};
pub use decide::decide;
pub use events::{LedgerEntriesConfirmed, LedgerEvent};
pub use state::{apply, LedgerState};

/// The longest ledger name, in bytes.
pub const MAX_LEDGER_NAME_BYTES: usize = 100;
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

crate::aggregate::aggregate_of_module_functions! {
    /// The ledger aggregate, for [`crate::command::execute`] and the tests'
    /// given/when/then.
    pub struct Ledgers;
    NAME = "ledgers", STREAM_PREFIX = "ledger-";
    /// Every confirmation is an event, for as long as the ledger syncs.
    SNAPSHOTS = Some(SnapshotPolicy::json(100, 1));
    State = LedgerState, Event = LedgerEvent;
    // The ledger has one command (a struct, not an enum): `Confirm`.
    Command = ConfirmLedgerEntries as "Confirm"
}

/// An inclusive range of global positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PositionRange {
    /// The first position.
    pub from: u64,
    /// The last position (at least `from`).
    pub to: u64,
}

/// A chain hash an outside ledger holds for a position of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainAnchor {
    /// The position.
    pub position: u64,
    /// The hash at it, 64 lowercase hex digits.
    pub chain_hash: String,
}
