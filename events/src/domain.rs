//! What every aggregate's refusals have in common: their kind, which the
//! HTTP layer maps to a status.

use std::fmt;

/// Why a command was refused, in a form a program can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainErrorKind {
    /// The aggregate (task, key, ...) does not exist (HTTP 404).
    NotFound,
    /// One with this id already exists (HTTP 409).
    AlreadyExists,
    /// It exists but its state does not allow the command (HTTP 409), e.g. a
    /// task that already succeeded, a key already revoked. Reloading will not
    /// help unless the state moves on.
    InvalidTransition,
    /// The command itself is malformed: a field is empty, too long, out of
    /// range or not in the required form (HTTP 422).
    Invalid,
}

impl DomainErrorKind {
    /// A stable snake_case name, e.g. for a problem+json `code` field:
    /// `not_found`, `already_exists`, `invalid_transition`, `invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::InvalidTransition => "invalid_transition",
            Self::Invalid => "invalid",
        }
    }
}

impl fmt::Display for DomainErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
