//! A webhook as its events leave it ([`Webhook`], [`WebhookState`]) and the
//! fold that builds it ([`apply`]).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{DeliveryOutcome, WebhookEvent, WebhookId};
use crate::tenant::TenantName;

/// The state of one webhook stream: `None` until it is created.
pub type WebhookState = Option<Webhook>;

/// Whether a webhook receives deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStatus {
    /// It does.
    Enabled,
    /// It does not, until it is enabled.
    Disabled,
    /// It never will again.
    Deleted,
}

impl WebhookStatus {
    /// `enabled`, `disabled` or `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Deleted => "deleted",
        }
    }
}

/// A created webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Its id.
    pub id: WebhookId,
    /// Whose events it receives.
    pub tenant: TenantName,
    /// Where they go.
    pub url: String,
    /// What it wants.
    pub event_kinds: BTreeSet<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its status.
    pub status: WebhookStatus,
    /// Why it was last disabled, while it is.
    pub disabled_reason: Option<String>,
    /// The last replay asked for: its position, and the stream version of
    /// the request (so a deliverer tells two replays from one position
    /// apart).
    pub replay: Option<(u64, u64)>,
    /// Attempts recorded.
    pub attempts: u64,
    /// Deliveries that ended (delivered or given up), and the position of the
    /// last one.
    pub finished: u64,
    /// The position of the last delivery that ended, 0 for none.
    pub finished_through: u64,
    /// Stream version (events folded).
    pub version: u64,
}

/// The state after `event`. Total: an event that does not fit (anything
/// before `WebhookCreated`, a second creation) leaves it as it was.
pub fn apply(state: WebhookState, event: &WebhookEvent) -> WebhookState {
    let Some(mut webhook) = state else {
        return match event {
            WebhookEvent::Created(created) => Some(Webhook {
                id: created.webhook_id,
                tenant: created.tenant.clone(),
                url: created.url.clone(),
                event_kinds: created.event_kinds.clone(),
                created_at: created.created_at,
                status: WebhookStatus::Enabled,
                disabled_reason: None,
                replay: None,
                attempts: 0,
                finished: 0,
                finished_through: 0,
                version: 1,
            }),
            _ => None,
        };
    };
    match event {
        WebhookEvent::Created(_) => return Some(webhook),
        WebhookEvent::Disabled(disabled) => {
            webhook.status = WebhookStatus::Disabled;
            webhook.disabled_reason = Some(disabled.reason.clone());
        }
        WebhookEvent::Enabled(_) => {
            webhook.status = WebhookStatus::Enabled;
            webhook.disabled_reason = None;
        }
        WebhookEvent::Deleted(_) => webhook.status = WebhookStatus::Deleted,
        WebhookEvent::ReplayRequested(replay) => {
            webhook.replay = Some((replay.from_position, webhook.version + 1));
        }
        WebhookEvent::DeliveryAttempted(attempt) => {
            webhook.attempts += 1;
            if attempt.outcome != DeliveryOutcome::Retrying {
                webhook.finished += 1;
                webhook.finished_through = attempt.position;
            }
        }
    }
    webhook.version += 1;
    Some(webhook)
}
