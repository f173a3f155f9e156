//! What a ledger can be asked to do: confirm that it holds positions of
//! the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ChainAnchor, LedgerName, PositionRange};

/// The longest transaction reference, in bytes.
pub const MAX_REFERENCE_BYTES: usize = 500;
/// The most ranges one confirmation may carry.
pub const MAX_RANGES: usize = 10_000;

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
    /// The chain hash the ledger saw at the end of its range, if it sent
    /// one, with the hash stored there (looked up by the caller).
    pub anchor: Option<AnchorCheck>,
}

/// A ledger's claim about the chain hash at a position, and what the log
/// holds there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorCheck {
    /// What the ledger says: the position (the end of its range) and the
    /// hash it saw there.
    pub claimed: ChainAnchor,
    /// The hash stored at `claimed.position` (64 lowercase hex digits;
    /// `None` when the position is not in the log).
    pub stored_hash: Option<String>,
}
