//! What an API key can be asked to do: one struct per command (a creation is
//! the event it asks for), the
//! [`ApiKeyCommand`] enum over them, and the limit
//! [`decide`](super::decide) checks them against.

use chrono::{DateTime, Utc};

use super::{ApiKeyCreated, ApiKeyId};

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
/// The command is the [`ApiKeyCreated`] event it asks for:
/// [`decide`](super::decide) checks its fields (their limits are documented
/// on them) and, when the key does not exist yet, records it as given. One
/// struct, so a key's fields are listed once; a field the event must not
/// store would make the command its own struct again.
///
/// The secret is not part of the command: the caller makes it with
/// [`generate_secret`](super::generate_secret), shows it once to whoever asked
/// for the key, and passes only its [`hash_secret`](super::hash_secret).
pub type CreateApiKey = ApiKeyCreated;

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
