//! Given these events, when this command, expect these events or this
//! refusal (the harness of `crate::testing`).

use uuid::Uuid;

use super::*;
use crate::testing::{self, at, Given};
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
    assert_eq!(state.outbound[&ID].status, OutboundStatus::Queued);
    given([queued(), attempted(1), failed(1, false)])
        .when(attempt(2))
        .then_expect(vec![attempted(2)]);
    let gave_up = [queued(), attempted(1), failed(1, false), attempted(2)];
    let state = given(gave_up.clone())
        .when(result(2, transient()))
        .then_expect(vec![failed(2, true)]);
    assert_eq!(state.outbound[&ID].status, OutboundStatus::Failed);
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
        .then_expect(vec![DeviceEvent::Failed(DeviceMessageFailed {
            message_id: ID,
            attempt: 1,
            code: Some(10),
            text: "Invalid login credentials".into(),
            permanent: true,
            final_failure: true,
            failed_at: at(2),
            retry_at: None,
        })]);
    assert_eq!(failed.outbound[&ID].status, OutboundStatus::Failed);
    let state = given(sending.clone())
        .when(result(1, SendResult::Sent { mt_id: 42 }))
        .then_expect(vec![sent(1, 42)]);
    assert_eq!(state.outbound[&ID].status, OutboundStatus::Sent);
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
