//! What happened to a webhook: one struct per event, the [`WebhookEvent`]
//! enum over them, and their stored form (`codec::stored_events!`; the
//! stored names are the explicit serde renames, never Rust type names).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::WebhookId;
use crate::codec;
use crate::tenant::TenantName;

/// Anything that can happen to a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WebhookEvent {
    /// See [`WebhookCreated`].
    #[serde(rename = "WebhookCreated")]
    Created(WebhookCreated),
    /// See [`WebhookDisabled`].
    #[serde(rename = "WebhookDisabled")]
    Disabled(WebhookDisabled),
    /// See [`WebhookEnabled`].
    #[serde(rename = "WebhookEnabled")]
    Enabled(WebhookEnabled),
    /// See [`WebhookDeleted`].
    #[serde(rename = "WebhookDeleted")]
    Deleted(WebhookDeleted),
    /// See [`WebhookReplayRequested`].
    #[serde(rename = "WebhookReplayRequested")]
    ReplayRequested(WebhookReplayRequested),
    /// See [`WebhookDeliveryAttempted`].
    #[serde(rename = "WebhookDeliveryAttempted")]
    DeliveryAttempted(WebhookDeliveryAttempted),
}

/// A webhook was created, enabled; also the command that asks for it
/// ([`CreateWebhook`](super::CreateWebhook)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookCreated {
    /// Its id.
    pub webhook_id: WebhookId,
    /// The tenant whose events it receives (and only those).
    pub tenant: TenantName,
    /// Where deliveries are POSTed: `http` or `https`, no credentials, at
    /// most [`MAX_URL_BYTES`](super::MAX_URL_BYTES) bytes. Whether its
    /// address is allowed is the caller's check (it needs the network).
    pub url: String,
    /// The kinds it wants ([`KNOWN_KINDS`](super::KNOWN_KINDS)); at least
    /// one, at most [`MAX_KINDS`](super::MAX_KINDS).
    pub event_kinds: BTreeSet<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The API key that created it.
    pub created_by: Option<String>,
}

/// A webhook stopped receiving deliveries: by hand, or because deliveries
/// kept failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDisabled {
    /// Why, in words.
    pub reason: String,
    /// When.
    pub disabled_at: DateTime<Utc>,
    /// Who: an API key, or the deliverer.
    pub disabled_by: Option<String>,
}

/// A disabled webhook receives new events again (earlier ones only by a
/// replay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEnabled {
    /// When.
    pub enabled_at: DateTime<Utc>,
    /// Who.
    pub enabled_by: Option<String>,
}

/// A webhook was deleted; it is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDeleted {
    /// When.
    pub deleted_at: DateTime<Utc>,
    /// Who.
    pub deleted_by: Option<String>,
}

/// Deliver again every event it wants from `from_position` of the log on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookReplayRequested {
    /// The first global position to deliver again.
    pub from_position: u64,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// Who.
    pub requested_by: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx: delivered.
    Delivered,
    /// It failed and will be tried again.
    Retrying,
    /// It failed and the deliverer gave up (the webhook is disabled).
    GaveUp,
}

/// One attempt to deliver one event, and how it ended. Never the body: the
/// event is at `position` in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDeliveryAttempted {
    /// The `webhook-id` sent ([`message_id`](super::message_id)).
    pub message_id: String,
    /// The delivered event's global position.
    pub position: u64,
    /// Its kind (`task.succeeded`).
    pub kind: String,
    /// 1 for the first attempt of this delivery.
    pub attempt: u32,
    /// When the attempt started.
    pub attempted_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong, if anything (at most
    /// [`MAX_ERROR_BYTES`](super::MAX_ERROR_BYTES) bytes).
    pub error: Option<String>,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// When the next attempt is due, for an attempt that ended
    /// `Retrying` (absent on the others, and on attempts recorded before
    /// this field existed: reading them needs no upcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

codec::stored_events!(WebhookEvent: "a webhook", schema version 1, {
    Created => "WebhookCreated",
    Disabled => "WebhookDisabled",
    Enabled => "WebhookEnabled",
    Deleted => "WebhookDeleted",
    ReplayRequested => "WebhookReplayRequested",
    DeliveryAttempted => "WebhookDeliveryAttempted",
});
