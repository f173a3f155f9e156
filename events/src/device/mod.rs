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
//! nothing (the state remembers a window of the newest pairs and of the
//! newest finished outbound messages, so its size does not grow with the
//! device's history: see `state.rs`). A platform admin assigns the device to a tenant
//! ([`AssignDevice`]); until then only platform keys see it.
//!
//! The device's commands are in `commands.rs`, its events in `events.rs`,
//! the state they fold to in `state.rs` and the rules in `decide.rs`.

use serde::{Deserialize, Serialize};

use crate::snapshot::SnapshotPolicy;
use crate::{Aggregate, Refusal, StreamId};

mod commands;
mod decide;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{
    AssignDevice, AttemptSend, DeviceCommand, QueueDeviceMessage, ReceiveDeviceMessage,
    RecordSendResult, SendResult, MAX_FAILURE_TEXT_BYTES, MAX_MO_BYTES, MAX_MT_BYTES,
};
pub use decide::decide;
pub use events::{
    DeviceAssigned, DeviceEvent, DeviceMessageFailed, DeviceMessageQueued, DeviceMessageReceived,
    DeviceMessageSendAttempted, DeviceMessageSent,
};
pub use state::{apply, DeviceState, Outbound, OutboundStatus, FINISHED_WINDOW, RECEIVED_WINDOW};

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
    /// A modem's stream grows with every message, for as long as it
    /// reports. State schema 2: finished messages and the received pairs
    /// are bounded windows (schema 1 kept every one in a set).
    const SNAPSHOTS: Option<SnapshotPolicy<DeviceState>> = Some(SnapshotPolicy::json(100, 2));

    type State = DeviceState;
    type Command = (Imei, DeviceCommand);
    type Event = DeviceEvent;

    fn command_name((_, command): &Self::Command) -> &'static str {
        crate::aggregate::variant_name!(
            command,
            DeviceCommand {
                Queue,
                AttemptSend,
                RecordSendResult,
                Receive,
                Assign
            }
        )
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
