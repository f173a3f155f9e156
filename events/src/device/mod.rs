//! The device aggregate: one RockBLOCK modem, stream `device-{imei}`.
//!
//! Outbound (mobile-terminated) messages move
//! `queued → sending(attempt n) → sent | queued (retry) | failed`: the
//! gateway records each attempt *before* it calls the provider
//! ([`AttemptSend`]) and the provider's answer after ([`RecordSendResult`]),
//! so a message is sent at most once per attempt record, and an attempt whose
//! answer never came is resolved as a failure of unknown outcome and tried
//! again under a new record. Inbound (mobile-originated) messages are
//! recorded once per `(momsn, transmit_time)`; a redelivered webhook changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec;
use crate::{Aggregate, Refusal, StreamId};

/// The largest mobile-terminated payload RockBLOCK accepts, in bytes.
pub const MAX_MT_BYTES: usize = 270;
/// The largest mobile-originated payload, in bytes.
pub const MAX_MO_BYTES: usize = 340;
/// The longest failure text kept, in bytes.
pub const MAX_FAILURE_TEXT_BYTES: usize = 1_000;

/// A modem's IMEI: exactly 15 ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Imei(String);

impl Imei {
    /// Checks `imei`.
    ///
    /// # Errors
    /// When it is not exactly 15 digits.
    pub fn new(imei: &str) -> Result<Self, String> {
        if imei.len() == 15 && imei.bytes().all(|byte| byte.is_ascii_digit()) {
            Ok(Self(imei.to_owned()))
        } else {
            Err(format!("an IMEI is exactly 15 digits; got {imei:?}"))
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The device's stream: `device-{imei}`.
    pub fn stream_id(&self) -> StreamId {
        StreamId::new(format!("{}{}", Devices::STREAM_PREFIX, self.0))
            .expect("an IMEI makes a valid stream id")
    }

    /// The device whose stream is `stream_id`, if it is one.
    pub fn from_stream_id(stream_id: &str) -> Option<Self> {
        Self::new(stream_id.strip_prefix(Devices::STREAM_PREFIX)?).ok()
    }
}

/// The device aggregate, for [`crate::command::execute`] and the tests'
/// given/when/then. Its commands carry the device's IMEI, which the state
/// does not know (its events name the device).
#[derive(Debug, Clone, Copy)]
pub struct Devices;

impl Aggregate for Devices {
    const NAME: &'static str = "devices";
    const STREAM_PREFIX: &'static str = "device-";

    type State = DeviceState;
    type Command = (Imei, DeviceCommand);
    type Event = DeviceEvent;

    fn command_name((_, command): &Self::Command) -> &'static str {
        match command {
            DeviceCommand::Queue(_) => "Queue",
            DeviceCommand::AttemptSend(_) => "AttemptSend",
            DeviceCommand::RecordSendResult(_) => "RecordSendResult",
            DeviceCommand::Receive(_) => "Receive",
        }
    }

    fn decide(
        state: &DeviceState,
        (imei, command): Self::Command,
    ) -> Result<Vec<DeviceEvent>, Refusal> {
        decide(&imei, state, command)
    }

    fn apply(state: DeviceState, event: &DeviceEvent) -> DeviceState {
        apply(state, event)
    }
}

/// Any command to a device.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceCommand {
    /// See [`QueueDeviceMessage`].
    Queue(QueueDeviceMessage),
    /// See [`AttemptSend`].
    AttemptSend(AttemptSend),
    /// See [`RecordSendResult`].
    RecordSendResult(RecordSendResult),
    /// See [`ReceiveDeviceMessage`].
    Receive(ReceiveDeviceMessage),
}

/// Queue a message for the device.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDeviceMessage {
    /// The new message's id.
    pub message_id: Uuid,
    /// 1 to [`MAX_MT_BYTES`] bytes.
    pub payload: Vec<u8>,
    /// Ask the provider to flush the device's queue first.
    pub flush: bool,
    /// When it was accepted.
    pub queued_at: DateTime<Utc>,
    /// The API key that queued it.
    pub queued_by: Option<String>,
}

/// The gateway is about to call the provider for `attempt`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptSend {
    /// The message.
    pub message_id: Uuid,
    /// One more than the attempts made so far.
    pub attempt: u32,
    /// When.
    pub attempted_at: DateTime<Utc>,
}

/// What the provider answered (or that no answer came).
#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    /// `OK,<mt id>`.
    Sent {
        /// The provider's id of the message.
        mt_id: u64,
    },
    /// `FAILED,<code>,<text>`, a network failure, or an unknown outcome.
    Failed {
        /// The provider's code, when it gave one.
        code: Option<u16>,
        /// What went wrong.
        text: String,
        /// Whether retrying cannot help (codes 10–16).
        permanent: bool,
    },
}

/// Record the provider's answer to the current attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSendResult {
    /// The message.
    pub message_id: Uuid,
    /// The attempt answered.
    pub attempt: u32,
    /// The answer.
    pub result: SendResult,
    /// Attempts allowed in all; a transient failure at this many is final.
    pub max_attempts: u32,
    /// When.
    pub recorded_at: DateTime<Utc>,
    /// After a transient failure, the earliest time of the next attempt
    /// (the gateway's backoff).
    pub retry_at: DateTime<Utc>,
}

/// Record a message the device sent (a webhook from the provider).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiveDeviceMessage {
    /// The modem's message sequence number.
    pub momsn: u64,
    /// When the satellite network received it, as the provider wrote it.
    pub transmit_time: String,
    /// At most [`MAX_MO_BYTES`] bytes.
    pub payload: Vec<u8>,
    /// The modem's serial, if given.
    pub serial: Option<u64>,
    /// The network's position estimate.
    pub latitude: Option<f64>,
    /// The network's position estimate.
    pub longitude: Option<f64>,
    /// The estimate's radius, in km.
    pub cep: Option<f64>,
    /// When the webhook was accepted.
    pub received_at: DateTime<Utc>,
}

/// What happened to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeviceEvent {
    /// A message was queued for the device.
    #[serde(rename = "DeviceMessageQueued")]
    Queued(DeviceMessageQueued),
    /// The gateway began an attempt.
    #[serde(rename = "DeviceMessageSendAttempted")]
    SendAttempted(DeviceMessageSendAttempted),
    /// The provider accepted the message.
    #[serde(rename = "DeviceMessageSent")]
    Sent(DeviceMessageSent),
    /// An attempt failed (`final_failure`: no more attempts).
    #[serde(rename = "DeviceMessageFailed")]
    Failed(DeviceMessageFailed),
    /// The device sent a message.
    #[serde(rename = "DeviceMessageReceived")]
    Received(DeviceMessageReceived),
}

/// See [`DeviceEvent::Queued`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMessageQueued {
    /// The device.
    pub imei: Imei,
    /// The message.
    pub message_id: Uuid,
    /// The payload, hexadecimal.
    pub payload_hex: String,
    /// Flush the device's queue first.
    pub flush: bool,
    /// When.
    pub queued_at: DateTime<Utc>,
    /// Who.
    pub queued_by: Option<String>,
}

/// See [`DeviceEvent::SendAttempted`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMessageSendAttempted {
    /// The message.
    pub message_id: Uuid,
    /// The attempt, from 1.
    pub attempt: u32,
    /// When.
    pub attempted_at: DateTime<Utc>,
}

/// See [`DeviceEvent::Sent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMessageSent {
    /// The message.
    pub message_id: Uuid,
    /// The attempt that succeeded.
    pub attempt: u32,
    /// The provider's id.
    pub mt_id: u64,
    /// When.
    pub sent_at: DateTime<Utc>,
}

/// See [`DeviceEvent::Failed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMessageFailed {
    /// The message.
    pub message_id: Uuid,
    /// The attempt that failed.
    pub attempt: u32,
    /// The provider's code, when it gave one.
    pub code: Option<u16>,
    /// What went wrong.
    pub text: String,
    /// Whether the provider's code means retrying cannot help.
    pub permanent: bool,
    /// Whether the message is given up (else it is queued for another
    /// attempt).
    pub final_failure: bool,
    /// When.
    pub failed_at: DateTime<Utc>,
    /// When the next attempt may start (absent when final).
    pub retry_at: Option<DateTime<Utc>>,
}

/// See [`DeviceEvent::Received`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMessageReceived {
    /// The device.
    pub imei: Imei,
    /// The modem's message sequence number.
    pub momsn: u64,
    /// When the network received it, as the provider wrote it.
    pub transmit_time: String,
    /// The payload, hexadecimal.
    pub payload_hex: String,
    /// The modem's serial.
    pub serial: Option<u64>,
    /// Position estimate.
    pub latitude: Option<f64>,
    /// Position estimate.
    pub longitude: Option<f64>,
    /// The estimate's radius, in km.
    pub cep: Option<f64>,
    /// When the webhook was accepted.
    pub received_at: DateTime<Utc>,
}

codec::stored_events!(DeviceEvent: "a device", schema version 1, {
    Queued => "DeviceMessageQueued",
    SendAttempted => "DeviceMessageSendAttempted",
    Sent => "DeviceMessageSent",
    Failed => "DeviceMessageFailed",
    Received => "DeviceMessageReceived",
});

/// Where an outbound message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundStatus {
    /// Waiting for its next attempt.
    Queued,
    /// An attempt is under way.
    Sending,
    /// The provider accepted it (final).
    Sent,
    /// Given up (final).
    Failed,
}

/// An outbound message as its events leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbound {
    /// Where it is.
    pub status: OutboundStatus,
    /// Attempts begun.
    pub attempts: u32,
}

/// A device as its events leave it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceState {
    /// Outbound messages by id.
    pub outbound: BTreeMap<Uuid, Outbound>,
    /// Inbound messages seen: `(momsn, transmit_time)`.
    pub received: BTreeSet<(u64, String)>,
}

/// The state after `event`.
pub fn apply(mut state: DeviceState, event: &DeviceEvent) -> DeviceState {
    match event {
        DeviceEvent::Queued(queued) => {
            state.outbound.insert(
                queued.message_id,
                Outbound {
                    status: OutboundStatus::Queued,
                    attempts: 0,
                },
            );
        }
        DeviceEvent::SendAttempted(attempted) => {
            if let Some(message) = state.outbound.get_mut(&attempted.message_id) {
                message.status = OutboundStatus::Sending;
                message.attempts = attempted.attempt;
            }
        }
        DeviceEvent::Sent(sent) => {
            if let Some(message) = state.outbound.get_mut(&sent.message_id) {
                message.status = OutboundStatus::Sent;
            }
        }
        DeviceEvent::Failed(failed) => {
            if let Some(message) = state.outbound.get_mut(&failed.message_id) {
                message.status = if failed.final_failure {
                    OutboundStatus::Failed
                } else {
                    OutboundStatus::Queued
                };
            }
        }
        DeviceEvent::Received(received) => {
            state
                .received
                .insert((received.momsn, received.transmit_time.clone()));
        }
    }
    state
}

/// What `command` makes happen to the device `imei` (see the module
/// documentation).
///
/// # Errors
/// `Invalid` for a payload out of bounds; `NotFound` for an unknown
/// message; `AlreadyExists` for a reused message id; `InvalidTransition`
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
            if state.outbound.contains_key(&queue.message_id) {
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
            Ok(vec![DeviceEvent::SendAttempted(
                DeviceMessageSendAttempted {
                    message_id: attempt.message_id,
                    attempt: attempt.attempt,
                    attempted_at: attempt.attempted_at,
                },
            )])
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
            if state
                .received
                .contains(&(receive.momsn, receive.transmit_time.clone()))
            {
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
    }
}

fn outbound(state: &DeviceState, message_id: Uuid) -> Result<Outbound, Refusal> {
    state
        .outbound
        .get(&message_id)
        .copied()
        .ok_or_else(|| Refusal::not_found(format!("message {message_id} does not exist")))
}

#[cfg(test)]
mod tests;
