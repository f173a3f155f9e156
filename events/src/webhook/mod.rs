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

crate::aggregate::aggregate_of_module_functions! {
    /// The webhook aggregate, for [`crate::command::execute`] and the tests'
    /// given/when/then.
    pub struct Webhooks;
    NAME = "webhooks", STREAM_PREFIX = WebhookId::STREAM_PREFIX;
    State = WebhookState, Event = WebhookEvent;
    Command = WebhookCommand { Create, Disable, Enable, Delete, Replay, RecordDelivery }
}

crate::stream_id::uuid_identity!(
    /// The identity of a webhook: a fresh UUID chosen by whoever creates it.
    WebhookId,
    "webhook-",
    "webhook"
);
