//! What a webhook can ask for: the kinds of events ([`KNOWN_KINDS`]), which
//! stored event type is which kind ([`kind_of`]), whether a webhook's list
//! wants one ([`wants`]), and the stable id of one event's delivery to one
//! webhook ([`message_id`]).

use std::collections::BTreeSet;

use uuid::Uuid;

use super::WebhookId;

/// Every kind a webhook can name, with the wildcards (`task.*`, `device.*`).
pub const KNOWN_KINDS: [&str; 12] = [
    "task.submitted",
    "task.started",
    "task.succeeded",
    "task.failed",
    "task.timed_out",
    "task.canceled",
    "task.retried",
    "task.*",
    "device.message.received",
    "device.message.sent",
    "device.message.failed",
    "device.*",
];

/// The kind of the stored event type `event_type`, or `None` for an event
/// no webhook can ask for (progress, API keys, ledgers, webhooks).
pub fn kind_of(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "TaskSubmitted" => "task.submitted",
        "TaskStarted" => "task.started",
        "TaskSucceeded" => "task.succeeded",
        "TaskFailed" => "task.failed",
        "TaskTimedOut" => "task.timed_out",
        "TaskCanceled" => "task.canceled",
        "TaskRetried" => "task.retried",
        "DeviceMessageReceived" => "device.message.received",
        "DeviceMessageSent" => "device.message.sent",
        "DeviceMessageFailed" => "device.message.failed",
        _ => return None,
    })
}

/// Whether a webhook asking for `kinds` wants events of `kind` (a name
/// from [`kind_of`]): named exactly, or by its family's wildcard.
pub fn wants(kinds: &BTreeSet<String>, kind: &str) -> bool {
    kinds.contains(kind)
        || kind
            .split_once('.')
            .is_some_and(|(family, _)| kinds.contains(&format!("{family}.*")))
}

/// Kinds a webhook named that are not in [`KNOWN_KINDS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kinds {}; the known kinds are {}", .0.join(", "), KNOWN_KINDS.join(", "))]
pub struct UnknownKinds(pub Vec<String>);

impl UnknownKinds {
    /// The names in `kinds` that are not known kinds, if any.
    ///
    /// # Errors
    /// [`UnknownKinds`] listing them.
    pub fn check<'a>(kinds: impl IntoIterator<Item = &'a String>) -> Result<(), Self> {
        let unknown: Vec<String> = kinds
            .into_iter()
            .filter(|kind| !KNOWN_KINDS.contains(&kind.as_str()))
            .cloned()
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Self(unknown))
        }
    }
}

/// The `webhook-id` of the delivery of the event `event_id` to `webhook`:
/// `msg_` and a UUID derived from both (version 5), so every attempt, every
/// replay and every restart of the deliverer sends the same id, and a
/// receiver can drop what it already has.
pub fn message_id(webhook: WebhookId, event_id: Uuid) -> String {
    let derived = Uuid::new_v5(&webhook.0, event_id.as_bytes());
    format!("msg_{}", derived.simple())
}
