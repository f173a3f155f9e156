//! The ledger's rules: what a confirmation makes happen ([`decide`]).

use super::state::merge;
use super::{
    AnchorCheck, ChainAnchor, ConfirmLedgerEntries, ConfirmationKind, LedgerEntriesConfirmed,
    LedgerEvent, LedgerState, PositionRange, MAX_RANGES, MAX_REFERENCE_BYTES,
};
use crate::verification::is_chain_hash;
use crate::Refusal;

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

/// What a confirmation makes happen (the rules are in the
/// [aggregate's documentation](super)).
///
/// # Errors
/// [`RefusalKind::Invalid`](crate::RefusalKind::Invalid) for positions that do not exist, a range
/// that would skip a hole, a bad reference, or a chain hash that is not the
/// one stored at the range's end.
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
    let anchor = match command.anchor {
        Some(check) => Some(checked_anchor(&command.kind, &command.ranges, check)?),
        None => None,
    };
    let fresh = new_positions(state, &command.ranges);
    let new_anchor = anchor.filter(|anchor| anchor.position > state.anchored_through());
    if fresh.is_empty() && new_anchor.is_none() {
        return Ok(Vec::new());
    }
    Ok(vec![LedgerEvent::Confirmed(LedgerEntriesConfirmed {
        ledger: command.ledger,
        ranges: fresh,
        reference: command.reference,
        confirmed_at: command.confirmed_at,
        confirmed_by: command.confirmed_by,
        anchor: new_anchor,
    })])
}

/// The ledger's anchor, once it is at the end of a range confirmation and
/// equal to the hash the log stores there.
fn checked_anchor(
    kind: &ConfirmationKind,
    ranges: &[PositionRange],
    check: AnchorCheck,
) -> Result<ChainAnchor, Refusal> {
    let claimed = check.claimed;
    let end = match (kind, ranges) {
        (ConfirmationKind::Range, [range]) => range.to,
        _ => {
            return Err(Refusal::invalid(
                "chain_hash goes with a range confirmation: the hash at to_sequence",
            ))
        }
    };
    if claimed.position != end {
        return Err(Refusal::invalid(format!(
            "the chain hash is for sequence {}, but the range ends at {end}",
            claimed.position
        )));
    }
    if !is_chain_hash(&claimed.chain_hash) {
        return Err(Refusal::invalid(
            "chain_hash must be 64 lowercase hex digits (the SHA-256 chain hash)",
        ));
    }
    if check.stored_hash.as_deref() != Some(claimed.chain_hash.as_str()) {
        return Err(Refusal::invalid(format!(
            "chain_hash is not the hash this log stores at sequence {}: the ledger and the log \
             disagree about the chain up to sequence {}; nothing was recorded",
            claimed.position, claimed.position
        )));
    }
    Ok(claimed)
}
