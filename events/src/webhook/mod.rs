//! The webhook aggregate: one tenant's subscription to some kinds of events,
//! delivered by HTTP to a URL, stream `webhook-{uuid}`.
//!
//! ```text
//! (none) ── CreateWebhook ──▶ enabled ── DisableWebhook ──▶ disabled
//!                              ▲   │ ◀──── EnableWebhook ─────┘
//!                              │   └─ RecordDelivery (gave up) ─▶ disabled
//!           any but deleted ── DeleteWebhook ──▶ deleted        (final)
//! ```
//!
//! Every delivery attempt and its outcome is an event of the webhook's own
//! stream ([`WebhookDeliveryAttempted`]: the position and type of the event
//! delivered, the attempt number, the status code or error, the duration —
//! never a body), so the delivery log is the stream. An attempt that gives
//! up disables the webhook in the same decision (`WebhookDisabled` with the
//! reason). A replay ([`ReplayWebhook`]) asks the delivering worker to send
//! again every matching event from a position on.
//!
//! The secret that signs deliveries never enters a command or an event (the
//! log is readable by auditors): the caller keeps it apart and shows it
//! once.
//!
//! Pure and synchronous, like every aggregate: times, ids and outcomes
//! arrive in the commands. The commands are in `commands.rs`, the events in
//! `events.rs`, the state in `state.rs`, the rules in `decide.rs`, and the
//! kinds a webhook can ask for in `kinds.rs`.

use crate::Aggregate;

mod commands;
mod decide;
mod events;
mod kinds;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{
    CreateWebhook, DeleteWebhook, DisableWebhook, EnableWebhook, RecordDelivery, ReplayWebhook,
    WebhookCommand, MAX_ERROR_BYTES, MAX_KINDS, MAX_REASON_BYTES, MAX_URL_BYTES,
};
pub use decide::decide;
pub use events::{
    DeliveryOutcome, WebhookCreated, WebhookDeleted, WebhookDeliveryAttempted, WebhookDisabled,
    WebhookEnabled, WebhookEvent, WebhookReplayRequested,
};
pub use kinds::{kind_of, message_id, wants, UnknownKinds, KNOWN_KINDS};
pub use state::{apply, Webhook, WebhookState, WebhookStatus};

/// The webhook aggregate, for [`crate::command::execute`] and the tests'
/// given/when/then.
#[derive(Debug, Clone, Copy)]
pub struct Webhooks;

impl Aggregate for Webhooks {
    const NAME: &'static str = "webhooks";
    const STREAM_PREFIX: &'static str = WebhookId::STREAM_PREFIX;

    type State = WebhookState;
    type Command = WebhookCommand;
    type Event = WebhookEvent;

    fn command_name(command: &WebhookCommand) -> &'static str {
        match command {
            WebhookCommand::Create(_) => "Create",
            WebhookCommand::Disable(_) => "Disable",
            WebhookCommand::Enable(_) => "Enable",
            WebhookCommand::Delete(_) => "Delete",
            WebhookCommand::Replay(_) => "Replay",
            WebhookCommand::RecordDelivery(_) => "RecordDelivery",
        }
    }

    crate::aggregate::decide_and_apply_by_module_functions!();
}

crate::stream_id::uuid_identity!(
    /// The identity of a webhook: a fresh UUID chosen by whoever creates it.
    WebhookId,
    "webhook-",
    "webhook"
);
