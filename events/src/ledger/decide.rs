//! The ledger's rules: what a confirmation makes happen ([`decide`]).

use super::state::merge;
use super::{
    ConfirmLedgerEntries, ConfirmationKind, LedgerEntriesConfirmed, LedgerEvent, LedgerState,
    PositionRange, MAX_RANGES, MAX_REFERENCE_BYTES,
};
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
