//! What a device can be asked to do: queue a message for it, record an
//! attempt to send one and the provider's answer, record a message it sent,
//! give it to a tenant.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::DeviceMessageSendAttempted;
use crate::tenant::TenantName;

/// The largest mobile-terminated payload RockBLOCK accepts, in bytes.
pub const MAX_MT_BYTES: usize = 270;
/// The largest mobile-originated payload, in bytes.
pub const MAX_MO_BYTES: usize = 340;
/// The longest failure text kept, in bytes.
pub const MAX_FAILURE_TEXT_BYTES: usize = 1_000;

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
    /// See [`AssignDevice`].
    Assign(AssignDevice),
}

/// Give the device to a tenant (a platform admin's decision; the caller
/// checks that). Assigning it to the tenant it already has changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignDevice {
    /// Its tenant from now on.
    pub tenant: TenantName,
    /// When.
    pub assigned_at: DateTime<Utc>,
    /// The platform key that assigns it.
    pub assigned_by: Option<String>,
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

/// The gateway is about to call the provider for `attempt`, one more than
/// the attempts made so far.
///
/// The command is the [`DeviceMessageSendAttempted`] event it asks for:
/// [`decide`](super::decide) checks the message is queued and the attempt
/// is the next one, and records it as given.
pub type AttemptSend = DeviceMessageSendAttempted;

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
