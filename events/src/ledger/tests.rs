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
        anchor: None,
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
        anchor: None,
    })
}

/// A range confirmation of `from..=to` claiming `claimed` as the hash at
/// `to`, where the log stores `stored`.
fn anchored(from: u64, to: u64, claimed: &str, stored: &str) -> ConfirmLedgerEntries {
    let mut command = confirm(ConfirmationKind::Range, vec![range(from, to)], 100);
    command.anchor = Some(AnchorCheck {
        claimed: ChainAnchor {
            position: to,
            chain_hash: claimed.into(),
        },
        stored_hash: Some(stored.into()),
    });
    command
}

#[test]
fn an_anchor_is_recorded_only_when_it_is_the_stored_hash() {
    let right = "ab".repeat(32);
    let wrong = "cd".repeat(32);
    given([]).when(anchored(1, 5, &wrong, &right)).then_error(
        RefusalKind::Invalid,
        "not the hash this log stores at sequence 5",
    );
    given([])
        .when(anchored(1, 5, "AB", "AB"))
        .then_error(RefusalKind::Invalid, "64 lowercase hex digits");
    let mut off_end = anchored(1, 5, &right, &right);
    off_end.anchor.as_mut().unwrap().claimed.position = 4;
    given([])
        .when(off_end)
        .then_error(RefusalKind::Invalid, "the range ends at 5");
    let mut by_events = anchored(1, 5, &right, &right);
    by_events.kind = ConfirmationKind::Events;
    given([])
        .when(by_events)
        .then_error(RefusalKind::Invalid, "goes with a range confirmation");

    let mut first = confirmed(vec![range(1, 5)]);
    let LedgerEvent::Confirmed(inner) = &mut first;
    inner.anchor = Some(ChainAnchor {
        position: 5,
        chain_hash: right.clone(),
    });
    let state = given([])
        .when(anchored(1, 5, &right, &right))
        .then_expect(vec![first.clone()]);
    assert_eq!(state.anchored_through(), 5);
    // The same anchor again changes nothing; an anchor further on over
    // ranges already confirmed is still recorded.
    given([first.clone()])
        .when(anchored(1, 5, &right, &right))
        .then_expect(vec![]);
    let history = [first, confirmed(vec![range(6, 9)])];
    let state = given(history)
        .when(anchored(1, 9, &right, &right))
        .then_expect_any();
    assert_eq!(state.anchored_through(), 9);
    assert_eq!(state.confirmed, vec![range(1, 9)]);
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
