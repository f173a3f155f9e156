//! The webhook's rules ([`decide`]).

use super::commands::{
    RecordDelivery, WebhookCommand, MAX_ERROR_BYTES, MAX_KINDS, MAX_REASON_BYTES, MAX_URL_BYTES,
};
use super::events::{
    DeliveryOutcome, WebhookDeleted, WebhookDisabled, WebhookEnabled, WebhookEvent,
    WebhookReplayRequested,
};
use super::{UnknownKinds, Webhook, WebhookId, WebhookState, WebhookStatus};
use crate::{check, Refusal};

/// The events `command` produces in `state`, or why it is refused. Pure.
///
/// - Create (no such webhook yet) → `WebhookCreated`.
/// - Disable (enabled) → `WebhookDisabled`.
/// - Enable (disabled) → `WebhookEnabled`; (enabled) → nothing.
/// - Delete (not deleted) → `WebhookDeleted`.
/// - Replay (enabled) → `WebhookReplayRequested`.
/// - RecordDelivery (not deleted) → `WebhookDeliveryAttempted`, and
///   `WebhookDisabled` with the reason when it gave up on an enabled webhook.
///
/// # Errors
/// A [`Refusal`]: `NotFound` when the webhook does not exist (or the state
/// holds another), also once it is deleted; `AlreadyExists` for a second
/// creation; `InvalidTransition` for disabling or replaying a webhook that is
/// not enabled; `Invalid` for a URL that is not `http(s)://` with a host, has
/// credentials, is too long or has control characters; no kinds, too many,
/// or unknown ones (listed with the known); an empty or bad reason; a
/// replay from position 0; an attempt numbered 0, with an error text over
/// [`MAX_ERROR_BYTES`], or that gave up without a reason.
pub fn decide(state: &WebhookState, command: WebhookCommand) -> Result<Vec<WebhookEvent>, Refusal> {
    match command {
        WebhookCommand::Create(create) => {
            if state.is_some() {
                return Err(Refusal::already_exists(format!(
                    "webhook {} already exists",
                    create.webhook_id.short()
                )));
            }
            check_url(&create.url)?;
            if create.event_kinds.is_empty() {
                return Err(Refusal::invalid("events must name at least one event kind"));
            }
            if create.event_kinds.len() > MAX_KINDS {
                return Err(Refusal::invalid(format!(
                    "events names {} kinds; the limit is {MAX_KINDS}",
                    create.event_kinds.len()
                )));
            }
            UnknownKinds::check(&create.event_kinds)
                .map_err(|error| Refusal::invalid(error.to_string()))?;
            Ok(vec![WebhookEvent::Created(create)])
        }
        WebhookCommand::Disable(disable) => {
            let webhook = existing(state, disable.webhook_id)?;
            if webhook.status != WebhookStatus::Enabled {
                return Err(not_enabled(webhook));
            }
            check::text("reason", &disable.reason, MAX_REASON_BYTES)?;
            Ok(vec![WebhookEvent::Disabled(WebhookDisabled {
                reason: disable.reason,
                disabled_at: disable.disabled_at,
                disabled_by: disable.disabled_by,
            })])
        }
        WebhookCommand::Enable(enable) => {
            let webhook = existing(state, enable.webhook_id)?;
            if webhook.status == WebhookStatus::Enabled {
                return Ok(vec![]);
            }
            Ok(vec![WebhookEvent::Enabled(WebhookEnabled {
                enabled_at: enable.enabled_at,
                enabled_by: enable.enabled_by,
            })])
        }
        WebhookCommand::Delete(delete) => {
            existing(state, delete.webhook_id)?;
            Ok(vec![WebhookEvent::Deleted(WebhookDeleted {
                deleted_at: delete.deleted_at,
                deleted_by: delete.deleted_by,
            })])
        }
        WebhookCommand::Replay(replay) => {
            let webhook = existing(state, replay.webhook_id)?;
            if webhook.status != WebhookStatus::Enabled {
                return Err(not_enabled(webhook));
            }
            if replay.from_position == 0 {
                return Err(Refusal::invalid(
                    "from_position must be 1 or more (the log starts at 1)",
                ));
            }
            Ok(vec![WebhookEvent::ReplayRequested(
                WebhookReplayRequested {
                    from_position: replay.from_position,
                    requested_at: replay.requested_at,
                    requested_by: replay.requested_by,
                },
            )])
        }
        WebhookCommand::RecordDelivery(record) => {
            let webhook = existing(state, record.webhook_id)?;
            record_delivery(webhook, record)
        }
    }
}

fn record_delivery(
    webhook: &Webhook,
    record: RecordDelivery,
) -> Result<Vec<WebhookEvent>, Refusal> {
    let attempt = &record.attempt;
    if attempt.attempt == 0 {
        return Err(Refusal::invalid("attempt numbers start at 1"));
    }
    if attempt
        .error
        .as_ref()
        .is_some_and(|error| error.len() > MAX_ERROR_BYTES)
    {
        return Err(Refusal::invalid(format!(
            "an attempt's error is at most {MAX_ERROR_BYTES} bytes"
        )));
    }
    let gave_up = attempt.outcome == DeliveryOutcome::GaveUp;
    let at = attempt.attempted_at;
    let mut events = vec![WebhookEvent::DeliveryAttempted(record.attempt)];
    if gave_up && webhook.status == WebhookStatus::Enabled {
        let reason = record
            .give_up_reason
            .ok_or_else(|| Refusal::invalid("an attempt that gave up needs a reason"))?;
        check::text("reason", &reason, MAX_REASON_BYTES)?;
        events.push(WebhookEvent::Disabled(WebhookDisabled {
            reason,
            disabled_at: at,
            disabled_by: Some("webhook-deliverer".to_owned()),
        }));
    }
    Ok(events)
}

fn existing(state: &WebhookState, webhook_id: WebhookId) -> Result<&Webhook, Refusal> {
    match state {
        Some(webhook) if webhook.id == webhook_id && webhook.status != WebhookStatus::Deleted => {
            Ok(webhook)
        }
        _ => Err(Refusal::not_found(format!(
            "webhook {} does not exist",
            webhook_id.short()
        ))),
    }
}

fn not_enabled(webhook: &Webhook) -> Refusal {
    Refusal::invalid_transition(format!(
        "webhook {} is {}; enable it first",
        webhook.id.short(),
        webhook.status.as_str()
    ))
}

/// `http://` or `https://`, a host, no user or password, no control
/// characters, at most [`MAX_URL_BYTES`].
fn check_url(url: &str) -> Result<(), Refusal> {
    if url.len() > MAX_URL_BYTES {
        return Err(Refusal::invalid(format!(
            "url is {} bytes long; the limit is {MAX_URL_BYTES}",
            url.len()
        )));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Refusal::invalid(
            "url must not contain spaces or control characters",
        ));
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err(Refusal::invalid("url must start with http:// or https://"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(Refusal::invalid(
            "url must not contain credentials (user:password@); sign with the webhook's secret instead",
        ));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(Refusal::invalid("url must name a host"));
    }
    Ok(())
}
