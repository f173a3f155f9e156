//! What a webhook can be asked to do: one struct per command and the
//! [`WebhookCommand`] enum over them, with the limits
//! [`decide`](super::decide) checks.

use chrono::{DateTime, Utc};

use super::{WebhookCreated, WebhookDeliveryAttempted, WebhookId};

/// The longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 2000;
/// The most kinds one webhook names.
pub const MAX_KINDS: usize = 32;
/// The longest disable reason, in bytes.
pub const MAX_REASON_BYTES: usize = 500;
/// The longest error text of one attempt, in bytes (longer ones are cut by
/// the caller, at a character boundary).
pub const MAX_ERROR_BYTES: usize = 300;

/// Any command to a webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookCommand {
    /// See [`CreateWebhook`].
    Create(CreateWebhook),
    /// See [`DisableWebhook`].
    Disable(DisableWebhook),
    /// See [`EnableWebhook`].
    Enable(EnableWebhook),
    /// See [`DeleteWebhook`].
    Delete(DeleteWebhook),
    /// See [`ReplayWebhook`].
    Replay(ReplayWebhook),
    /// See [`RecordDelivery`].
    RecordDelivery(RecordDelivery),
}

impl WebhookCommand {
    /// The webhook the command is for.
    pub fn webhook_id(&self) -> WebhookId {
        match self {
            Self::Create(command) => command.webhook_id,
            Self::Disable(command) => command.webhook_id,
            Self::Enable(command) => command.webhook_id,
            Self::Delete(command) => command.webhook_id,
            Self::Replay(command) => command.webhook_id,
            Self::RecordDelivery(command) => command.webhook_id,
        }
    }
}

/// Create an enabled webhook: the command is the event it asks for.
pub type CreateWebhook = WebhookCreated;

/// Stop deliveries to a webhook (it must be enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct DisableWebhook {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// Why: 1 to [`MAX_REASON_BYTES`] bytes, no control characters.
    pub reason: String,
    /// When.
    pub disabled_at: DateTime<Utc>,
    /// Who.
    pub disabled_by: Option<String>,
}

/// Deliver to a disabled webhook again. Enabling an enabled webhook changes
/// nothing (no event).
#[derive(Debug, Clone, PartialEq)]
pub struct EnableWebhook {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// When.
    pub enabled_at: DateTime<Utc>,
    /// Who.
    pub enabled_by: Option<String>,
}

/// Delete a webhook for good.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteWebhook {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// When.
    pub deleted_at: DateTime<Utc>,
    /// Who.
    pub deleted_by: Option<String>,
}

/// Deliver again from a position of the log (the webhook must be enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayWebhook {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The first position (1 or more).
    pub from_position: u64,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// Who.
    pub requested_by: Option<String>,
}

/// Record one delivery attempt; one that gave up also disables the webhook
/// with `give_up_reason`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordDelivery {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The attempt.
    pub attempt: WebhookDeliveryAttempted,
    /// Why the webhook is disabled, when the attempt gave up.
    pub give_up_reason: Option<String>,
}
