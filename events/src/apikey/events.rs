//! What happened to an API key: one struct per event, the [`ApiKeyEvent`]
//! enum over them, and their stored form in the envelope
//! ([`ApiKeyEvent::to_new_event`], [`ApiKeyEvent::from_recorded`]).
//!
//! The stored names (`ApiKeyCreated`, `ApiKeyRevoked`, `ApiKeyRotated`) are fixed by the
//! explicit serde renames and [`ApiKeyEvent::event_type`], never by Rust type
//! names. A change to an event's shape gets a new schema version; the old
//! shape is upcast on read (see [`crate::upcast`]), never rewritten. A field
//! added with a `#[serde(default)]` that gives old events their meaning
//! (`access`, `expires_at`, `rate_limit`) is not a change of shape: the
//! default is the upcast, and events written before it read as they did.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiKeyId, Scope};
use crate::codec;
pub use crate::codec::DecodeError;
use crate::tenant::Access;

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
    /// See [`ApiKeyRotated`].
    #[serde(rename = "ApiKeyRotated")]
    Rotated(ApiKeyRotated),
}

/// An API key was created and is active; also the command that asks for it
/// ([`CreateApiKey`](super::CreateApiKey)), whose limits the fields'
/// documentation gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    /// The key's id.
    pub key_id: ApiKeyId,
    /// What the key is for, for people ("ci deploys"). 1 to
    /// [`MAX_NAME_BYTES`](super::MAX_NAME_BYTES) bytes, no control
    /// characters.
    pub name: String,
    /// What the key may do; at least one scope (stored as a JSON array of
    /// scope names, in [`Scope`]'s order).
    pub scopes: BTreeSet<Scope>,
    /// The SHA-256 of its secret ([`hash_secret`](super::hash_secret)): 64
    /// lowercase hexadecimal digits, never the secret. It must be the hash of
    /// a freshly generated secret: two keys with one hash cannot both be
    /// projected (`api_keys.key_hash` is unique).
    pub key_hash: String,
    /// When the creation was accepted.
    pub created_at: DateTime<Utc>,
    /// The API key id (or operator) that created it, if known.
    pub created_by: Option<String>,
    /// Whose work the key reaches: one tenant's, or every tenant's. Fixed
    /// for the key's life. Absent from keys created before tenants existed,
    /// which read as the `default` tenant's ([`Access::default`]).
    #[serde(default)]
    pub access: Access,
    /// When the key stops working, if it ever does; after `created_at`.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The most requests per second the key may make, if not the service's
    /// default (`[limits]` in the configuration file).
    #[serde(default)]
    pub rate_limit: Option<NonZeroU32>,
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

/// An active key got a new secret; the one it replaced keeps working until
/// `previous_valid_until`, and then stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRotated {
    /// The SHA-256 of the new secret (never the secret).
    pub key_hash: String,
    /// Until when (exclusive) the secret it replaced still works: the
    /// rotation's instant plus its grace period (equal to `rotated_at` when
    /// there was none).
    pub previous_valid_until: DateTime<Utc>,
    /// When.
    pub rotated_at: DateTime<Utc>,
    /// Who rotated it.
    pub rotated_by: Option<String>,
}

codec::stored_events!(ApiKeyEvent: "an api key", schema version 1, {
    Created => "ApiKeyCreated",
    Revoked => "ApiKeyRevoked",
    Rotated => "ApiKeyRotated",
});
