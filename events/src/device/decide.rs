//! The device's rules: what a command makes happen ([`decide`]).

use uuid::Uuid;

use super::{
    DeviceAssigned, DeviceCommand, DeviceEvent, DeviceMessageFailed, DeviceMessageQueued,
    DeviceMessageReceived, DeviceMessageSent, DeviceState, Imei, Outbound, OutboundStatus,
    SendResult, MAX_FAILURE_TEXT_BYTES, MAX_MO_BYTES, MAX_MT_BYTES,
};
use crate::Refusal;

/// What `command` makes happen to the device `imei` (see the
/// [aggregate's documentation](super)).
///
/// # Errors
/// `Invalid` for a payload out of bounds; `NotFound` for an unknown
/// message (or one finished before the state's window,
/// [`super::state::FINISHED_WINDOW`]); `AlreadyExists` for a reused message
/// id; `InvalidTransition`
/// for an attempt that is not the next one or a result for an attempt not
/// under way.
pub fn decide(
    imei: &Imei,
    state: &DeviceState,
    command: DeviceCommand,
) -> Result<Vec<DeviceEvent>, Refusal> {
    match command {
        DeviceCommand::Queue(queue) => {
            if queue.payload.is_empty() || queue.payload.len() > MAX_MT_BYTES {
                return Err(Refusal::invalid(format!(
                    "a message to a device is 1 to {MAX_MT_BYTES} bytes; got {}",
                    queue.payload.len()
                )));
            }
            if state.message(queue.message_id).is_some() {
                return Err(Refusal::already_exists(format!(
                    "message {} already exists",
                    queue.message_id
                )));
            }
            Ok(vec![DeviceEvent::Queued(DeviceMessageQueued {
                imei: imei.clone(),
                message_id: queue.message_id,
                payload_hex: hex::encode(&queue.payload),
                flush: queue.flush,
                queued_at: queue.queued_at,
                queued_by: queue.queued_by,
            })])
        }
        DeviceCommand::AttemptSend(attempt) => {
            let message = outbound(state, attempt.message_id)?;
            if message.status != OutboundStatus::Queued || attempt.attempt != message.attempts + 1 {
                return Err(Refusal::invalid_transition(format!(
                    "message {} cannot start attempt {}: it is {:?} after {} attempts",
                    attempt.message_id, attempt.attempt, message.status, message.attempts
                )));
            }
            Ok(vec![DeviceEvent::SendAttempted(attempt)])
        }
        DeviceCommand::RecordSendResult(record) => {
            let message = outbound(state, record.message_id)?;
            if message.status != OutboundStatus::Sending || record.attempt != message.attempts {
                return Err(Refusal::invalid_transition(format!(
                    "message {} has no attempt {} under way",
                    record.message_id, record.attempt
                )));
            }
            Ok(vec![match record.result {
                SendResult::Sent { mt_id } => DeviceEvent::Sent(DeviceMessageSent {
                    message_id: record.message_id,
                    attempt: record.attempt,
                    mt_id,
                    sent_at: record.recorded_at,
                }),
                SendResult::Failed {
                    code,
                    text,
                    permanent,
                } => {
                    let mut text = text.replace('\0', "");
                    if text.len() > MAX_FAILURE_TEXT_BYTES {
                        let mut end = MAX_FAILURE_TEXT_BYTES;
                        while !text.is_char_boundary(end) {
                            end -= 1;
                        }
                        text.truncate(end);
                    }
                    let final_failure = permanent || record.attempt >= record.max_attempts;
                    DeviceEvent::Failed(DeviceMessageFailed {
                        message_id: record.message_id,
                        attempt: record.attempt,
                        code,
                        text,
                        permanent,
                        final_failure,
                        failed_at: record.recorded_at,
                        retry_at: (!final_failure).then_some(record.retry_at),
                    })
                }
            }])
        }
        DeviceCommand::Receive(receive) => {
            if receive.payload.len() > MAX_MO_BYTES {
                return Err(Refusal::invalid(format!(
                    "a message from a device is at most {MAX_MO_BYTES} bytes; got {}",
                    receive.payload.len()
                )));
            }
            if receive.transmit_time.is_empty()
                || receive.transmit_time.len() > 64
                || receive.transmit_time.chars().any(char::is_control)
            {
                return Err(Refusal::invalid(
                    "transmit_time must be 1 to 64 characters without control characters",
                ));
            }
            if state.has_received(receive.momsn, &receive.transmit_time) {
                return Ok(Vec::new());
            }
            Ok(vec![DeviceEvent::Received(DeviceMessageReceived {
                imei: imei.clone(),
                momsn: receive.momsn,
                transmit_time: receive.transmit_time,
                payload_hex: hex::encode(&receive.payload),
                serial: receive.serial,
                latitude: receive.latitude,
                longitude: receive.longitude,
                cep: receive.cep,
                received_at: receive.received_at,
            })])
        }
        DeviceCommand::Assign(assign) => {
            if state.tenant.as_ref() == Some(&assign.tenant) {
                return Ok(Vec::new());
            }
            Ok(vec![DeviceEvent::Assigned(DeviceAssigned {
                imei: imei.clone(),
                tenant: assign.tenant,
                assigned_at: assign.assigned_at,
                assigned_by: assign.assigned_by,
            })])
        }
    }
}

fn outbound(state: &DeviceState, message_id: Uuid) -> Result<Outbound, Refusal> {
    state
        .message(message_id)
        .ok_or_else(|| Refusal::not_found(format!("message {message_id} does not exist")))
}
