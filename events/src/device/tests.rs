//! Given these events, when this command, expect these events or this
//! refusal (the harness of `crate::testing`).

use uuid::Uuid;

use super::*;
use crate::testing::{self, at, given_state, Given};
use crate::Aggregate;
use crate::RefusalKind;

fn given(history: impl IntoIterator<Item = DeviceEvent>) -> Given<Devices> {
    testing::given(history)
}

fn imei() -> Imei {
    Imei::new("300234010753370").unwrap()
}

const ID: Uuid = Uuid::from_u128(7);

// ---- commands ------------------------------------------------------------------

fn queue() -> (Imei, DeviceCommand) {
    (
        imei(),
        DeviceCommand::Queue(QueueDeviceMessage {
            message_id: ID,
            payload: b"hello".to_vec(),
            flush: false,
            queued_at: at(0),
            queued_by: None,
        }),
    )
}

fn attempt(n: u32) -> (Imei, DeviceCommand) {
    (
        imei(),
        DeviceCommand::AttemptSend(AttemptSend {
            message_id: ID,
            attempt: n,
            attempted_at: at(1),
        }),
    )
}

fn result(n: u32, result: SendResult) -> (Imei, DeviceCommand) {
    (
        imei(),
        DeviceCommand::RecordSendResult(RecordSendResult {
            message_id: ID,
            attempt: n,
            result,
            max_attempts: 2,
            recorded_at: at(2),
            retry_at: at(10),
        }),
    )
}

fn transient() -> SendResult {
    SendResult::Failed {
        code: Some(99),
        text: "System Error".into(),
        permanent: false,
    }
}

fn receive(momsn: u64, payload: Vec<u8>) -> (Imei, DeviceCommand) {
    (
        imei(),
        DeviceCommand::Receive(ReceiveDeviceMessage {
            momsn,
            transmit_time: "21-10-31 10:41:50".into(),
            payload,
            serial: Some(1234),
            latitude: Some(52.1),
            longitude: Some(0.1),
            cep: Some(3.0),
            received_at: at(5),
        }),
    )
}

// ---- events (what the commands above decide) -----------------------------------

fn queued() -> DeviceEvent {
    DeviceEvent::Queued(DeviceMessageQueued {
        imei: imei(),
        message_id: ID,
        payload_hex: hex::encode(b"hello"),
        flush: false,
        queued_at: at(0),
        queued_by: None,
    })
}

fn attempted(n: u32) -> DeviceEvent {
    DeviceEvent::SendAttempted(DeviceMessageSendAttempted {
        message_id: ID,
        attempt: n,
        attempted_at: at(1),
    })
}

/// A transient failure of attempt `n`; final at the limit (2).
fn failed(n: u32, final_failure: bool) -> DeviceEvent {
    DeviceEvent::Failed(DeviceMessageFailed {
        message_id: ID,
        attempt: n,
        code: Some(99),
        text: "System Error".into(),
        permanent: false,
        final_failure,
        failed_at: at(2),
        retry_at: (!final_failure).then_some(at(10)),
    })
}

/// The message `message_id` given up at its first attempt: the provider's
/// code said retrying cannot help.
fn failed_permanently(message_id: Uuid) -> DeviceEvent {
    DeviceEvent::Failed(DeviceMessageFailed {
        message_id,
        attempt: 1,
        code: Some(10),
        text: "Invalid login credentials".into(),
        permanent: true,
        final_failure: true,
        failed_at: at(2),
        retry_at: None,
    })
}

fn sent(n: u32, mt_id: u64) -> DeviceEvent {
    DeviceEvent::Sent(DeviceMessageSent {
        message_id: ID,
        attempt: n,
        mt_id,
        sent_at: at(2),
    })
}

fn received(momsn: u64) -> DeviceEvent {
    DeviceEvent::Received(DeviceMessageReceived {
        imei: imei(),
        momsn,
        transmit_time: "21-10-31 10:41:50".into(),
        payload_hex: "01".into(),
        serial: Some(1234),
        latitude: Some(52.1),
        longitude: Some(0.1),
        cep: Some(3.0),
        received_at: at(5),
    })
}

// ---- tests ---------------------------------------------------------------------

#[test]
fn outbound_messages_retry_transient_failures_up_to_the_limit() {
    given([]).when(queue()).then_expect(vec![queued()]);
    given([queued()])
        .when(attempt(1))
        .then_expect(vec![attempted(1)]);
    // A second attempt cannot start while one is under way.
    given([queued(), attempted(1)])
        .when(attempt(2))
        .then_error(RefusalKind::InvalidTransition, "cannot start attempt 2");
    let state = given([queued(), attempted(1)])
        .when(result(1, transient()))
        .then_expect(vec![failed(1, false)]);
    assert_eq!(state.message(ID).unwrap().status, OutboundStatus::Queued);
    given([queued(), attempted(1), failed(1, false)])
        .when(attempt(2))
        .then_expect(vec![attempted(2)]);
    let gave_up = [queued(), attempted(1), failed(1, false), attempted(2)];
    let state = given(gave_up.clone())
        .when(result(2, transient()))
        .then_expect(vec![failed(2, true)]);
    assert_eq!(state.message(ID).unwrap().status, OutboundStatus::Failed);
    given(gave_up.into_iter().chain([failed(2, true)]))
        .when(attempt(3))
        .then_error(RefusalKind::InvalidTransition, "cannot start attempt 3");
}

#[test]
fn permanent_failures_and_success_are_final() {
    let sending = [queued(), attempted(1)];
    let permanent = SendResult::Failed {
        code: Some(10),
        text: "Invalid login credentials".into(),
        permanent: true,
    };
    let failed = given(sending.clone())
        .when(result(1, permanent))
        .then_expect(vec![failed_permanently(ID)]);
    assert_eq!(failed.message(ID).unwrap().status, OutboundStatus::Failed);
    let state = given(sending.clone())
        .when(result(1, SendResult::Sent { mt_id: 42 }))
        .then_expect(vec![sent(1, 42)]);
    assert_eq!(state.message(ID).unwrap().status, OutboundStatus::Sent);
    let was_sent = [queued(), attempted(1), sent(1, 42)];
    given(was_sent.clone())
        .when(result(1, SendResult::Sent { mt_id: 43 }))
        .then_error(RefusalKind::InvalidTransition, "has no attempt 1 under way");
    given(was_sent)
        .when(queue())
        .then_error(RefusalKind::AlreadyExists, "already exists");
}

#[test]
fn inbound_messages_are_recorded_once_and_payloads_are_bounded() {
    given([])
        .when(receive(1, vec![1]))
        .then_expect(vec![received(1)]);
    // A redelivered webhook changes nothing.
    given([received(1)])
        .when(receive(1, vec![1]))
        .then_expect(vec![]);
    given([received(1)])
        .when(receive(2, vec![1]))
        .then_expect(vec![received(2)]);
    given([received(1)])
        .when(receive(3, vec![0; MAX_MO_BYTES + 1]))
        .then_error(RefusalKind::Invalid, "at most 340 bytes");
    let empty = DeviceCommand::Queue(QueueDeviceMessage {
        message_id: Uuid::from_u128(8),
        payload: Vec::new(),
        flush: false,
        queued_at: at(0),
        queued_by: None,
    });
    given([received(1)])
        .when((imei(), empty))
        .then_error(RefusalKind::Invalid, "1 to 270 bytes");
    assert!(Imei::new("30023401075337").is_err());
    assert!(Imei::new("30023401075337x").is_err());
}

fn assign(tenant: &str) -> (Imei, DeviceCommand) {
    (
        imei(),
        DeviceCommand::Assign(AssignDevice {
            tenant: tenant.parse().unwrap(),
            assigned_at: at(20),
            assigned_by: Some("admin".into()),
        }),
    )
}

fn assigned(tenant: &str) -> DeviceEvent {
    DeviceEvent::Assigned(DeviceAssigned {
        imei: imei(),
        tenant: tenant.parse().unwrap(),
        assigned_at: at(20),
        assigned_by: Some("admin".into()),
    })
}

#[test]
fn a_device_is_assigned_to_a_tenant_once_and_may_be_reassigned() {
    // A device that only sent messages (never assigned) can be assigned.
    given([received(1)])
        .when(assign("acme"))
        .then_expect(vec![assigned("acme")]);
    // Assigning it to the tenant it has changes nothing.
    given([assigned("acme")])
        .when(assign("acme"))
        .then_expect(vec![]);
    given([assigned("acme")])
        .when(assign("globex"))
        .then_expect(vec![assigned("globex")]);
    let state = [received(1), assigned("acme")]
        .iter()
        .fold(DeviceState::default(), apply);
    assert_eq!(state.tenant.unwrap().as_str(), "acme");
    assert_eq!(DeviceState::default().tenant, None);
}

// ---- bounded state -------------------------------------------------------------

/// The `n`th message a modem sent, with its wrapping 16-bit `momsn` and a
/// transmit time a second apart from the one before.
fn received_nth(n: u64) -> DeviceEvent {
    DeviceEvent::Received(DeviceMessageReceived {
        imei: imei(),
        momsn: n % 65_536,
        transmit_time: at(n as i64).format("%y-%m-%d %H:%M:%S").to_string(),
        payload_hex: "01".into(),
        serial: None,
        latitude: None,
        longitude: None,
        cep: None,
        received_at: at(n as i64),
    })
}

fn receive_again(event: &DeviceEvent) -> (Imei, DeviceCommand) {
    let DeviceEvent::Received(received) = event else {
        panic!("not a received message: {event:?}")
    };
    (
        imei(),
        DeviceCommand::Receive(ReceiveDeviceMessage {
            momsn: received.momsn,
            transmit_time: received.transmit_time.clone(),
            payload: vec![1],
            serial: None,
            latitude: None,
            longitude: None,
            cep: None,
            received_at: received.received_at,
        }),
    )
}

#[test]
fn a_redelivery_within_the_window_is_ignored_and_the_state_stays_bounded() {
    // 100,000 messages: the momsn counter wraps, and the state keeps only
    // the newest window.
    let history: Vec<DeviceEvent> = (0..100_000).map(received_nth).collect();
    let state = Devices::fold(&history);
    assert_eq!(state.received.len(), RECEIVED_WINDOW);
    // The newest message and the oldest one still in the window are
    // redeliveries: nothing is recorded.
    for inside in [99_999, 100_000 - RECEIVED_WINDOW] {
        given_state::<Devices>(state.clone())
            .when(receive_again(&history[inside]))
            .then_expect(vec![]);
    }
    // The same momsn a wrap later (another transmit time) is a new message.
    let wrapped = received_nth(99_999 + 65_536);
    given_state::<Devices>(state.clone())
        .when(receive_again(&wrapped))
        .then_expect(vec![wrapped]);
    // A pair older than the window is recorded again (the provider
    // redelivers within minutes, not a thousand messages later).
    let forgotten = &history[100_000 - RECEIVED_WINDOW - 1];
    given_state::<Devices>(state.clone())
        .when(receive_again(forgotten))
        .then_expect(vec![forgotten.clone()]);
    // The snapshot of 100,000 messages is no larger than that of the
    // window's worth.
    let policy = Devices::SNAPSHOTS.unwrap();
    let small = Devices::fold(&history[..RECEIVED_WINDOW]);
    let (long, short) = (
        policy.encode(&state).unwrap(),
        policy.encode(&small).unwrap(),
    );
    assert!(
        long.len() <= short.len() + short.len() / 10,
        "{} bytes after 100,000 messages against {} after {RECEIVED_WINDOW}",
        long.len(),
        short.len()
    );
}

/// Message `n`'s whole life: queued, attempted, then sent (or, for every
/// third one, given up).
fn finished_message(n: u128) -> [DeviceEvent; 3] {
    let message_id = Uuid::from_u128(1_000 + n);
    let DeviceEvent::Queued(mut queued) = queued() else {
        unreachable!()
    };
    queued.message_id = message_id;
    let end = if n % 3 == 0 {
        failed_permanently(message_id)
    } else {
        DeviceEvent::Sent(DeviceMessageSent {
            message_id,
            attempt: 1,
            mt_id: n as u64,
            sent_at: at(2),
        })
    };
    [
        DeviceEvent::Queued(queued),
        DeviceEvent::SendAttempted(DeviceMessageSendAttempted {
            message_id,
            attempt: 1,
            attempted_at: at(1),
        }),
        end,
    ]
}

#[test]
fn finished_messages_leave_the_state_after_a_window_and_in_flight_ones_stay() {
    let count = 30_000_u128;
    let mut history: Vec<DeviceEvent> = vec![queued()];
    history.extend((0..count).flat_map(finished_message));
    let state = Devices::fold(&history);
    // Message ID, queued before all of them, is still in flight.
    assert_eq!(state.outbound.len(), 1);
    assert_eq!(state.message(ID).unwrap().status, OutboundStatus::Queued);
    given_state::<Devices>(state.clone())
        .when(attempt(1))
        .then_expect(vec![attempted(1)]);
    assert_eq!(state.finished.len(), FINISHED_WINDOW);
    let id = |n: u128| Uuid::from_u128(1_000 + n);
    let late = |n: u128| {
        (
            imei(),
            DeviceCommand::RecordSendResult(RecordSendResult {
                message_id: id(n),
                attempt: 1,
                result: SendResult::Sent { mt_id: 1 },
                max_attempts: 2,
                recorded_at: at(3),
                retry_at: at(10),
            }),
        )
    };
    let requeue = |n: u128| {
        (
            imei(),
            DeviceCommand::Queue(QueueDeviceMessage {
                message_id: id(n),
                payload: b"again".to_vec(),
                flush: false,
                queued_at: at(4),
                queued_by: None,
            }),
        )
    };
    // A finished message in the window: refused as today.
    let recent = count - 1;
    assert_eq!(
        state.message(id(recent)).unwrap().status,
        OutboundStatus::Sent
    );
    given_state::<Devices>(state.clone())
        .when(late(recent))
        .then_error(RefusalKind::InvalidTransition, "has no attempt 1 under way");
    given_state::<Devices>(state.clone())
        .when(requeue(count - FINISHED_WINDOW as u128))
        .then_error(RefusalKind::AlreadyExists, "already exists");
    // One finished before the window is forgotten: still refused.
    given_state::<Devices>(state.clone())
        .when(late(0))
        .then_error(RefusalKind::NotFound, "does not exist");
}

/// A snapshot (the state encoded and decoded again) at any version, folded
/// on with the rest of the history, is the fold of the whole history:
/// the windows evict the same entries either way.
#[test]
fn snapshot_and_tail_equal_the_full_fold_past_both_windows() {
    let history: Vec<DeviceEvent> = testing::DeviceHistory::new(imei(), 11)
        .take(12_000)
        .collect();
    let full = Devices::fold(&history);
    assert_eq!(
        full.received.len(),
        RECEIVED_WINDOW,
        "the history fills the window"
    );
    assert_eq!(
        full.finished.len(),
        FINISHED_WINDOW,
        "the history fills the window"
    );
    let policy = Devices::SNAPSHOTS.unwrap();
    for at in (0..=history.len()).step_by(331) {
        let snapshot = policy
            .decode(&policy.encode(&Devices::fold(&history[..at])).unwrap())
            .unwrap();
        let resumed = history[at..].iter().fold(snapshot, apply);
        assert_eq!(resumed, full, "from a snapshot at {at}");
    }
}
