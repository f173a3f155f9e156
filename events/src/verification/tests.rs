//! Given these records, when this one, expect this event or this refusal.

use super::*;
use crate::testing::{self, Given};
use crate::RefusalKind;

fn given(history: impl IntoIterator<Item = VerificationEvent>) -> Given<Verifications> {
    testing::given(history)
}

fn record(from: u64, through: u64) -> RecordVerification {
    RecordVerification {
        from_position: from,
        through_position: through,
        chain_hash: "ab".repeat(32),
        verified_by: "auditor".into(),
        verified_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    }
}

fn verified(from: u64, through: u64) -> VerificationEvent {
    let command = record(from, through);
    VerificationEvent::Verified(ChainVerified {
        from_position: command.from_position,
        through_position: command.through_position,
        chain_hash: command.chain_hash,
        verified_by: command.verified_by,
        verified_at: command.verified_at,
    })
}

#[test]
fn records_move_forward_and_a_record_reaching_no_further_changes_nothing() {
    let state = given([])
        .when(record(1, 100))
        .then_expect(vec![verified(1, 100)]);
    assert_eq!(state.last.unwrap().through_position, 100);
    let state = given([verified(1, 100)])
        .when(record(100, 250))
        .then_expect(vec![verified(100, 250)]);
    assert_eq!(state.last.unwrap().from_position, 100);
    given([verified(1, 100), verified(100, 250)])
        .when(record(1, 250))
        .then_expect(vec![]);
    given([verified(1, 100)])
        .when(record(1, 40))
        .then_expect(vec![]);
}

#[test]
fn positions_out_of_order_and_malformed_hashes_are_refused() {
    given([])
        .when(record(0, 10))
        .then_error(RefusalKind::Invalid, "from 1 on");
    given([])
        .when(record(11, 10))
        .then_error(RefusalKind::Invalid, "11..=10");
    let mut upper = record(1, 10);
    upper.chain_hash = "AB".repeat(32);
    given([])
        .when(upper)
        .then_error(RefusalKind::Invalid, "64 lowercase hex digits");
    assert_eq!(VerificationEvent::EVENT_TYPES, ["ChainVerified"]);
}
