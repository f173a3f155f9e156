//! What an API key can be asked to do: one struct per command, the
//! [`ApiKeyCommand`] enum over them, and the limit
//! [`decide`](super::decide) checks them against.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{ApiKeyId, Scope};

/// The longest key name, in bytes.
pub const MAX_NAME_BYTES: usize = 100;

/// Any command to an API key.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    /// See [`CreateApiKey`].
    Create(CreateApiKey),
    /// See [`RevokeApiKey`].
    Revoke(RevokeApiKey),
}

impl ApiKeyCommand {
    /// The key the command is for: load the stream of this key
    /// ([`ApiKeyId::stream_id`]) before deciding.
    pub fn key_id(&self) -> ApiKeyId {
        match self {
            Self::Create(command) => command.key_id,
            Self::Revoke(command) => command.key_id,
        }
    }
}

/// Create an active API key.
///
/// The secret is not part of the command: the caller makes it with
/// [`generate_secret`](super::generate_secret), shows it once to whoever asked
/// for the key, and passes only its [`hash_secret`](super::hash_secret).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateApiKey {
    /// The new key's id.
    pub key_id: ApiKeyId,
    /// What the key is for, for people ("ci deploys"). 1 to
    /// [`MAX_NAME_BYTES`] bytes, no control characters.
    pub name: String,
    /// What the key may do; at least one scope.
    pub scopes: BTreeSet<Scope>,
    /// The SHA-256 of the secret ([`hash_secret`](super::hash_secret)): 64
    /// lowercase hexadecimal digits. It must be the hash of a freshly
    /// generated secret: two keys with one hash cannot both be projected
    /// (`api_keys.key_hash` is unique).
    pub key_hash: String,
    /// When the creation was accepted.
    pub created_at: DateTime<Utc>,
    /// The API key id (or operator) that created it, if known.
    pub created_by: Option<String>,
}

/// Revoke an active API key for good; requests with its secret are refused
/// from then on.
#[derive(Debug, Clone, PartialEq)]
pub struct RevokeApiKey {
    /// The key.
    pub key_id: ApiKeyId,
    /// Why, in words, if the caller gave a reason.
    pub reason: Option<String>,
    /// When the revocation was accepted.
    pub revoked_at: DateTime<Utc>,
    /// The API key id (or operator) that revoked it, if known.
    pub revoked_by: Option<String>,
}
