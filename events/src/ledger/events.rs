//! What happened to a ledger: [`LedgerEvent`] and its stored form
//! (explicit serde renames and `codec::stored_events!`, never Rust type
//! names).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ChainAnchor, LedgerName, PositionRange};
use crate::codec;

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
    /// The chain hash the ledger holds for a position, checked against the
    /// log when it was accepted (absent in confirmations without one, and
    /// in every one written before anchors existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<ChainAnchor>,
}

codec::stored_events!(LedgerEvent: "a ledger", schema version 1, {
    Confirmed => "LedgerEntriesConfirmed",
});
