//! Given these events, when this confirmation, expect these events or this
//! refusal (the harness of `crate::testing`).

use chrono::{DateTime, Utc};

use super::*;
use crate::testing::{self, Given};
use crate::RefusalKind;

fn given(history: impl IntoIterator<Item = LedgerEvent>) -> Given<Ledgers> {
    testing::given(history)
}

fn given_state(state: LedgerState) -> Given<Ledgers> {
    testing::given_state(state)
}

fn range(from: u64, to: u64) -> PositionRange {
    PositionRange { from, to }
}

fn confirmed_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn confirm(kind: ConfirmationKind, ranges: Vec<PositionRange>, head: u64) -> ConfirmLedgerEntries {
    ConfirmLedgerEntries {
        ledger: LedgerName::new("chain-a").unwrap(),
        kind,
        ranges,
        reference: "tx-1".into(),
        head,
        confirmed_at: confirmed_at(),
        confirmed_by: None,
    }
}

/// What [`confirm`] decides when `ranges` are all new.
fn confirmed(ranges: Vec<PositionRange>) -> LedgerEvent {
    LedgerEvent::Confirmed(LedgerEntriesConfirmed {
        ledger: LedgerName::new("chain-a").unwrap(),
        ranges,
        reference: "tx-1".into(),
        confirmed_at: confirmed_at(),
        confirmed_by: None,
    })
}

#[test]
fn ranges_continue_the_prefix_and_events_may_leave_holes() {
    let state = given([])
        .when(confirm(ConfirmationKind::Range, vec![range(1, 5)], 100))
        .then_expect(vec![confirmed(vec![range(1, 5)])]);
    let state = given_state(state)
        .when(confirm(
            ConfirmationKind::Events,
            vec![range(9, 9), range(12, 12)],
            100,
        ))
        .then_expect(vec![confirmed(vec![range(9, 9), range(12, 12)])]);
    assert_eq!(state.confirmed_through(), 5);
    assert_eq!(state.max_confirmed(), 12);
    assert_eq!(state.count(), 7);
    assert_eq!(state.holes(), vec![range(6, 8), range(10, 11)]);
    assert!(state.contains(9) && !state.contains(10));

    given_state(state.clone())
        .when(confirm(ConfirmationKind::Range, vec![range(7, 20)], 100))
        .then_error(RefusalKind::Invalid, "skip the hole 6..=6");
    // Filling up to and past the events merges everything.
    let state = given_state(state)
        .when(confirm(ConfirmationKind::Range, vec![range(6, 20)], 100))
        .then_expect(vec![confirmed(vec![
            range(6, 8),
            range(10, 11),
            range(13, 20),
        ])]);
    assert_eq!(state.confirmed, vec![range(1, 20)]);
    assert!(state.holes().is_empty());
}

#[test]
fn what_does_not_exist_is_refused_and_repeats_change_nothing() {
    given([])
        .when(confirm(ConfirmationKind::Range, vec![range(1, 5)], 5))
        .then_expect(vec![confirmed(vec![range(1, 5)])]);
    let history = [confirmed(vec![range(1, 5)])];
    given(history.clone())
        .when(confirm(ConfirmationKind::Range, vec![range(6, 9)], 8))
        .then_error(RefusalKind::Invalid, "sequence 9 does not exist");
    given(history.clone())
        .when(confirm(ConfirmationKind::Events, vec![range(0, 0)], 8))
        .then_error(RefusalKind::Invalid, "start at 1");
    given(history.clone())
        .when(confirm(ConfirmationKind::Range, vec![range(1, 5)], 8))
        .then_expect(vec![]);
    let mut bad = confirm(ConfirmationKind::Range, vec![range(6, 6)], 8);
    bad.reference = String::new();
    given(history)
        .when(bad)
        .then_error(RefusalKind::Invalid, "reference must be 1 to 500 bytes");
    assert!(LedgerName::new("Chain A").is_err());
    assert!(LedgerName::new("chain-a.v2_x").is_ok());
}
