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
//! ```
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

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Aggregate, Refusal, StreamId};

mod commands;
mod decide;
mod events;
mod scope;
mod secret;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{ApiKeyCommand, CreateApiKey, RevokeApiKey, MAX_NAME_BYTES};
pub use decide::decide;
pub use events::{ApiKeyCreated, ApiKeyEvent, ApiKeyRevoked, DecodeError};
pub use scope::{Scope, UnknownScope};
pub use secret::{generate_secret, hash_secret, SECRET_LENGTH, SECRET_PREFIX};
pub use state::{apply, fold, ApiKey, ApiKeyState};

/// The API key aggregate, for [`crate::command::execute`] and the tests'
/// given/when/then.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeys;

impl Aggregate for ApiKeys {
    const NAME: &'static str = "api_keys";
    const STREAM_PREFIX: &'static str = ApiKeyId::STREAM_PREFIX;

    type State = ApiKeyState;
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;

    fn command_name(command: &ApiKeyCommand) -> &'static str {
        match command {
            ApiKeyCommand::Create(_) => "Create",
            ApiKeyCommand::Revoke(_) => "Revoke",
        }
    }

    fn decide(state: &ApiKeyState, command: ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, Refusal> {
        decide(state, command)
    }

    fn apply(state: ApiKeyState, event: &ApiKeyEvent) -> ApiKeyState {
        apply(state, event)
    }
}

/// The identity of an API key: a fresh UUID chosen by whoever creates it.
/// Not secret (it appears in logs and as the `actor` of events); the secret
/// is separate and only its hash is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKeyId(pub Uuid);

impl ApiKeyId {
    /// The prefix of every API key stream's id.
    pub const STREAM_PREFIX: &'static str = "apikey-";

    /// The stream that holds this key's events: `apikey-{uuid}`, the UUID in
    /// its lowercase hyphenated form.
    pub fn stream_id(&self) -> StreamId {
        // A 43-byte ASCII id without control characters is always valid.
        StreamId::new(format!("{}{}", Self::STREAM_PREFIX, self.0))
            .expect("apikey-{uuid} is always a valid stream id")
    }

    /// The key whose stream is `stream_id`, or `None` when `stream_id` is not
    /// `apikey-` followed by a UUID.
    pub fn from_stream_id(stream_id: &str) -> Option<Self> {
        let uuid = stream_id.strip_prefix(Self::STREAM_PREFIX)?;
        Uuid::parse_str(uuid).ok().map(Self)
    }

    /// The first 8 hexadecimal digits followed by "…", for messages meant for
    /// people (`3f2a1b4c…`). Not unique: keep the full id wherever it is
    /// needed to find the key again.
    pub fn short(&self) -> String {
        let mut buffer = Uuid::encode_buffer();
        let hex = self.0.simple().encode_lower(&mut buffer);
        format!("{}…", &hex[..8])
    }
}

impl fmt::Display for ApiKeyId {
    /// The full UUID, lowercase and hyphenated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<Uuid> for ApiKeyId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}
