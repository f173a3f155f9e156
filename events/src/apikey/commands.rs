//! What an API key can be asked to do: one struct per command (a creation is
//! the event it asks for), the
//! [`ApiKeyCommand`] enum over them, and the limit
//! [`decide`](super::decide) checks them against.

use chrono::{DateTime, TimeDelta, Utc};

use super::{ApiKeyCreated, ApiKeyId};

/// The longest key name, in bytes.
pub const MAX_NAME_BYTES: usize = 100;

/// The longest revocation reason, in bytes.
pub const MAX_REASON_BYTES: usize = 500;

/// The longest grace period a rotation may give the secret it replaces:
/// seven days, long enough to roll a new secret out to every client of a
/// key, short enough that a forgotten copy does not work for long.
pub const MAX_ROTATION_GRACE: TimeDelta = TimeDelta::days(7);

/// Any command to an API key.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    /// See [`CreateApiKey`].
    Create(CreateApiKey),
    /// See [`RevokeApiKey`].
    Revoke(RevokeApiKey),
    /// See [`RotateApiKey`].
    Rotate(RotateApiKey),
}

impl ApiKeyCommand {
    /// The key the command is for: load the stream of this key
    /// ([`ApiKeyId::stream_id`]) before deciding.
    pub fn key_id(&self) -> ApiKeyId {
        match self {
            Self::Create(command) => command.key_id,
            Self::Revoke(command) => command.key_id,
            Self::Rotate(command) => command.key_id,
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
    /// Why, in words, if the caller gave a reason: at most
    /// [`MAX_REASON_BYTES`] bytes, no control characters.
    pub reason: Option<String>,
    /// When the revocation was accepted.
    pub revoked_at: DateTime<Utc>,
    /// The API key id (or operator) that revoked it, if known.
    pub revoked_by: Option<String>,
}

/// Give an active, unexpired key a new secret. The secret it replaces keeps
/// working for `grace` (0 to [`MAX_ROTATION_GRACE`]) and then stops; a key
/// has at most two working secrets, so a rotation ends the grace of the one
/// before it.
///
/// As for creation, the secret is not part of the command: only the new
/// secret's [`hash_secret`](super::hash_secret).
#[derive(Debug, Clone, PartialEq)]
pub struct RotateApiKey {
    /// The key.
    pub key_id: ApiKeyId,
    /// The SHA-256 of the new secret: 64 lowercase hexadecimal digits, not
    /// the current secret's.
    pub key_hash: String,
    /// How long the secret it replaces keeps working.
    pub grace: TimeDelta,
    /// When the rotation was accepted (also the instant the key's expiry is
    /// checked at).
    pub rotated_at: DateTime<Utc>,
    /// The API key id (or operator) that rotated it, if known.
    pub rotated_by: Option<String>,
}
