//! The verification aggregate: the record an auditor leaves after a
//! verification of the chain succeeded, so the next one can resume there.
//! One stream, `verification-chain`; each [`ChainVerified`] says "positions
//! up to `through_position` verified, and the hash stored there was
//! `chain_hash`". Being an event, a record is itself in the chain: altering
//! it breaks the hash at its own position, which every later verification
//! (also one resumed from it) re-checks. `docs/verification.md` argues why
//! an event and not a row.
//!
//! Rules ([`decide`]):
//! - `through_position` is at least 1, `from_position` at most it, and the
//!   hash is 32 bytes as 64 lowercase hex digits;
//! - a record that reaches no further than the last one changes nothing (no
//!   event): it anchors nothing new, so a repeated `--record` is harmless.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{codec, Refusal, StreamId};

#[cfg(test)]
mod tests;

/// The one verification stream.
pub const VERIFICATION_STREAM: &str = "verification-chain";

/// The verification stream's id.
pub fn stream_id() -> StreamId {
    StreamId::new(VERIFICATION_STREAM).expect("a constant, valid stream id")
}

/// Record that a verification found the chain sound up to a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordVerification {
    /// The first position this verification recomputed (1 for a full one;
    /// the anchor's position for one resumed from a record or a ledger).
    pub from_position: u64,
    /// The last position it verified.
    pub through_position: u64,
    /// The hash stored (and recomputed) at `through_position`, as 64
    /// lowercase hex digits.
    pub chain_hash: String,
    /// Who verified (the command line's user, or an API key id).
    pub verified_by: String,
    /// When the verification finished.
    pub verified_at: DateTime<Utc>,
}

/// What happened to the verification stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum VerificationEvent {
    /// See [`ChainVerified`].
    #[serde(rename = "ChainVerified")]
    Verified(ChainVerified),
}

/// Positions `from_position..=through_position` verified (with everything
/// before `from_position` taken on trust from an earlier record or a
/// ledger's anchor when it is more than 1), and the hash at
/// `through_position` was `chain_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerified {
    /// The first position recomputed.
    pub from_position: u64,
    /// The last position verified.
    pub through_position: u64,
    /// The hash at `through_position`, 64 lowercase hex digits.
    pub chain_hash: String,
    /// Who verified.
    pub verified_by: String,
    /// When.
    pub verified_at: DateTime<Utc>,
}

codec::stored_events!(VerificationEvent: "a verification", schema version 1, {
    Verified => "ChainVerified",
});

/// The verification stream as its events leave it: the newest record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerificationState {
    /// The record reaching furthest (the newest: records only move forward).
    pub last: Option<ChainVerified>,
}

crate::aggregate::aggregate_of_module_functions! {
    /// The verification aggregate, for [`crate::command::execute`].
    pub struct Verifications;
    NAME = "verifications", STREAM_PREFIX = "verification-";
    State = VerificationState, Event = VerificationEvent;
    Command = RecordVerification as "Record"
}

/// Whether `text` is a chain hash as records and anchors write it: 64
/// lowercase hex digits.
pub fn is_chain_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// What recording a verification makes happen (the rules are in the
/// module's documentation).
///
/// # Errors
/// [`RefusalKind::Invalid`](crate::RefusalKind::Invalid) for positions out
/// of order or a malformed hash.
pub fn decide(
    state: &VerificationState,
    command: RecordVerification,
) -> Result<Vec<VerificationEvent>, Refusal> {
    if command.through_position == 0
        || command.from_position == 0
        || command.from_position > command.through_position
    {
        return Err(Refusal::invalid(format!(
            "a verification covers positions from 1 on, from at most through; got {}..={}",
            command.from_position, command.through_position
        )));
    }
    if !is_chain_hash(&command.chain_hash) {
        return Err(Refusal::invalid(
            "chain_hash must be 64 lowercase hex digits (32 bytes)",
        ));
    }
    if state
        .last
        .as_ref()
        .is_some_and(|last| last.through_position >= command.through_position)
    {
        return Ok(Vec::new());
    }
    Ok(vec![VerificationEvent::Verified(ChainVerified {
        from_position: command.from_position,
        through_position: command.through_position,
        chain_hash: command.chain_hash,
        verified_by: command.verified_by,
        verified_at: command.verified_at,
    })])
}

/// The state after `event`.
pub fn apply(mut state: VerificationState, event: &VerificationEvent) -> VerificationState {
    let VerificationEvent::Verified(verified) = event;
    if state
        .last
        .as_ref()
        .is_none_or(|last| last.through_position < verified.through_position)
    {
        state.last = Some(verified.clone());
    }
    state
}
