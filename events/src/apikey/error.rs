//! A command the API key aggregate refused: [`DomainError`], with a kind for
//! the HTTP layer and a message for the person who sent the command.

pub use crate::domain::DomainErrorKind;

use super::ApiKeyId;

/// A command the API key aggregate refused; nothing happened to the key.
///
/// The message is one sentence for an operator, naming the key by its short
/// id (`api key 3f2a1b4c… is already revoked`); [`DomainError::key_id`] has
/// the full id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    kind: DomainErrorKind,
    key_id: ApiKeyId,
    message: String,
}

impl DomainError {
    /// What kind of refusal this is.
    pub fn kind(&self) -> DomainErrorKind {
        self.kind
    }

    /// The key the refused command was for.
    pub fn key_id(&self) -> ApiKeyId {
        self.key_id
    }

    /// The human message (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(super) fn not_found(key_id: ApiKeyId) -> Self {
        Self {
            kind: DomainErrorKind::NotFound,
            key_id,
            message: format!("api key {} does not exist", key_id.short()),
        }
    }

    pub(super) fn already_exists(key_id: ApiKeyId) -> Self {
        Self {
            kind: DomainErrorKind::AlreadyExists,
            key_id,
            message: format!("api key {} already exists", key_id.short()),
        }
    }

    pub(super) fn already_revoked(key_id: ApiKeyId) -> Self {
        Self {
            kind: DomainErrorKind::InvalidTransition,
            key_id,
            message: format!("api key {} is already revoked", key_id.short()),
        }
    }

    pub(super) fn invalid(key_id: ApiKeyId, message: String) -> Self {
        Self {
            kind: DomainErrorKind::Invalid,
            key_id,
            message,
        }
    }
}
