//! The API key aggregate: what an API key can be asked to do
//! ([`ApiKeyCommand`]), what happened to it ([`ApiKeyEvent`]), the two pure
//! functions that connect them, [`decide`] and [`apply`], and the pure secret
//! helpers [`generate_secret`] and [`hash_secret`].
//!
//! A key lives in the stream `apikey-{uuid}` ([`ApiKeyId::stream_id`]). Its
//! life is short:
//!
//! ```text
//! (none) ── CreateApiKey ──▶ active ── RevokeApiKey ──▶ revoked   (final)
//!                            │    ▲
//!                            └────┘ RotateApiKey (a new secret; the old one
//!                                   works for its grace period)
//! ```
//!
//! An active key is usable until its `expires_at`, if it has one; an expired
//! key can still be revoked, not rotated.
//!
//! Only the SHA-256 of a key's secret ([`hash_secret`]) is ever stored; the
//! secret itself is shown once, to whoever created the key, and never enters
//! a command, an event or a table. Creation and revocation are events, so
//! every change of access is in the audited log.
//!
//! Everything here is pure and synchronous: no IO, no clock, no randomness.
//! Times, ids and the secret's random bytes arrive from the caller; the caller
//! loads the stream, folds it with [`apply`] (or [`fold`]), calls [`decide`],
//! and appends the events with the stream version it read as the expected
//! version.
//!
//! Stored events: the envelope's `event_type` is the name in
//! [`ApiKeyEvent::event_type`] and `data` is the event's fields as a JSON
//! object *without* the `type` tag (see [`ApiKeyEvent::to_new_event`]), as for
//! tasks.

mod commands;
mod decide;
mod events;
mod scope;
mod secret;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{
    ApiKeyCommand, CreateApiKey, RevokeApiKey, RotateApiKey, MAX_NAME_BYTES, MAX_REASON_BYTES,
    MAX_ROTATION_GRACE,
};
pub use decide::decide;
pub use events::{ApiKeyCreated, ApiKeyEvent, ApiKeyRevoked, ApiKeyRotated, DecodeError};
pub use scope::{Scope, UnknownScope};
pub use secret::{
    generate_secret, hash_secret, key_id_of_secret, LEGACY_SECRET_LENGTH, SECRET_LENGTH,
    SECRET_PREFIX,
};
pub use state::{apply, fold, ApiKey, ApiKeyState, SecretMatch};

crate::aggregate::aggregate_of_module_functions! {
    /// The API key aggregate, for [`crate::command::execute`] and the tests'
    /// given/when/then.
    pub struct ApiKeys;
    NAME = "api_keys", STREAM_PREFIX = ApiKeyId::STREAM_PREFIX;
    State = ApiKeyState, Event = ApiKeyEvent;
    Command = ApiKeyCommand { Create, Revoke, Rotate }
}

crate::stream_id::uuid_identity!(
    /// The identity of an API key: a fresh UUID chosen by whoever creates
    /// it. Not secret (it appears in logs and as the `actor` of events); the
    /// secret is separate and only its hash is kept.
    ApiKeyId,
    "apikey-",
    "API key"
);
