//! What happened to a device: one struct per event, the [`DeviceEvent`]
//! enum over them, and their stored form (explicit serde renames and
//! `codec::stored_events!`, never Rust type names).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Imei;
use crate::codec;
use crate::tenant::TenantName;

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
    /// A platform admin gave the device to a tenant.
    #[serde(rename = "DeviceAssigned")]
    Assigned(DeviceAssigned),
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

/// See [`DeviceEvent::Assigned`]: from now on the device is `tenant`'s (its
/// keys send to it and read it; other tenants' keys are told it does not
/// exist). A device never assigned is seen by platform keys only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceAssigned {
    /// The device.
    pub imei: Imei,
    /// Its tenant from now on.
    pub tenant: TenantName,
    /// When.
    pub assigned_at: DateTime<Utc>,
    /// The platform key that assigned it.
    pub assigned_by: Option<String>,
}

codec::stored_events!(DeviceEvent: "a device", schema version 1, {
    Queued => "DeviceMessageQueued",
    SendAttempted => "DeviceMessageSendAttempted",
    Sent => "DeviceMessageSent",
    Failed => "DeviceMessageFailed",
    Received => "DeviceMessageReceived",
    Assigned => "DeviceAssigned",
});
