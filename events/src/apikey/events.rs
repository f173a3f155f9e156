//! What happened to an API key: one struct per event, the [`ApiKeyEvent`]
//! enum over them, and their stored form in the envelope
//! ([`ApiKeyEvent::to_new_event`], [`ApiKeyEvent::from_recorded`]).
//!
//! The stored names (`ApiKeyCreated`, `ApiKeyRevoked`) are fixed by the
//! explicit serde renames and [`ApiKeyEvent::event_type`], never by Rust type
//! names. A change to an event's shape gets a new schema version; the old
//! shape is upcast on read (see [`crate::upcast`]), never rewritten.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiKeyId, Scope};
pub use crate::codec::DecodeError;
use crate::codec::{self, DomainEvent};
use crate::{Metadata, NewEvent, RecordedEvent};

/// Anything that can happen to an API key.
///
/// Serialized with its stored name in a `type` field beside the event's own
/// fields: `{"type": "ApiKeyRevoked", "reason": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ApiKeyEvent {
    /// See [`ApiKeyCreated`].
    #[serde(rename = "ApiKeyCreated")]
    Created(ApiKeyCreated),
    /// See [`ApiKeyRevoked`].
    #[serde(rename = "ApiKeyRevoked")]
    Revoked(ApiKeyRevoked),
}

/// An API key was created and is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    /// The key.
    pub key_id: ApiKeyId,
    /// What it is for.
    pub name: String,
    /// What it may do (stored as a JSON array of scope names, in
    /// [`Scope`]'s order).
    pub scopes: BTreeSet<Scope>,
    /// The SHA-256 of its secret, 64 lowercase hexadecimal digits. Never the
    /// secret.
    pub key_hash: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: Option<String>,
}

/// An active API key was revoked; it is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    /// Why, if a reason was given.
    pub reason: Option<String>,
    /// When.
    pub revoked_at: DateTime<Utc>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

impl ApiKeyCreated {
    /// The stored event type.
    pub const EVENT_TYPE: &'static str = "ApiKeyCreated";
}
impl ApiKeyRevoked {
    /// The stored event type.
    pub const EVENT_TYPE: &'static str = "ApiKeyRevoked";
}

impl ApiKeyEvent {
    /// The schema version every API key event is written with, and the only
    /// one [`ApiKeyEvent::from_recorded`] reads (older ones must be upcast
    /// first).
    pub const SCHEMA_VERSION: u32 = 1;

    /// Every stored API key event type, e.g. for a projector's filter.
    pub const EVENT_TYPES: [&'static str; 2] =
        [ApiKeyCreated::EVENT_TYPE, ApiKeyRevoked::EVENT_TYPE];

    /// The stored name of this event, equal to the `type` tag of its serde
    /// form.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Created(_) => ApiKeyCreated::EVENT_TYPE,
            Self::Revoked(_) => ApiKeyRevoked::EVENT_TYPE,
        }
    }

    /// The event ready to append: its [`event_type`](Self::event_type),
    /// [`SCHEMA_VERSION`](Self::SCHEMA_VERSION), and as `data` the event's own
    /// fields as a JSON object *without* a `type` field (the envelope already
    /// says it). The caller chooses `event_id`, so a retried append of the same
    /// decision is recognised by the store.
    pub fn to_new_event(&self, event_id: Uuid, metadata: Metadata) -> NewEvent {
        codec::encode(self, event_id, metadata)
    }

    /// Reads a stored API key event from its `event_type` and `data` (a `type`
    /// field in `data`, if any, is ignored; the envelope's type decides).
    /// Fields added by a later version are ignored; a missing optional field
    /// reads as `None`.
    ///
    /// # Errors
    /// - [`DecodeError::UnknownType`] when `event_type` is not one of
    ///   [`EVENT_TYPES`](Self::EVENT_TYPES);
    /// - [`DecodeError::UnsupportedSchemaVersion`] when `schema_version` is not
    ///   [`SCHEMA_VERSION`](Self::SCHEMA_VERSION) (read it through an
    ///   upcasting reader);
    /// - [`DecodeError::NotAnObject`] when `data` is not a JSON object;
    /// - [`DecodeError::Malformed`] when a field is missing or has the wrong
    ///   type (an unknown scope name included).
    pub fn from_recorded(recorded: &RecordedEvent) -> Result<Self, DecodeError> {
        codec::decode(recorded)
    }
}

impl DomainEvent for ApiKeyEvent {
    const AGGREGATE: &'static str = "an api key";
    const TYPES: &'static [&'static str] = &Self::EVENT_TYPES;
    const CURRENT_SCHEMA_VERSION: u32 = Self::SCHEMA_VERSION;

    fn stored_type(&self) -> &'static str {
        self.event_type()
    }
}
