//! Why a command was refused: [`Refusal`], one type for every aggregate,
//! with a kind a program acts on (the HTTP layer maps it to a status) and a
//! message for the person who sent the command.

use std::fmt;

/// A command an aggregate refused; nothing happened.
///
/// The message is one sentence for whoever sent the command, naming what
/// it was about (`task 3f2a1b4c… is already succeeded; it cannot be
/// canceled`); `Display` shows the message alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    kind: RefusalKind,
    message: String,
}

impl Refusal {
    /// A refusal of `kind` with `message`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// [`RefusalKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::NotFound, message)
    }

    /// [`RefusalKind::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::AlreadyExists, message)
    }

    /// [`RefusalKind::InvalidTransition`].
    pub fn invalid_transition(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::InvalidTransition, message)
    }

    /// [`RefusalKind::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Invalid, message)
    }

    /// What kind of refusal this is.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// The human message (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Why a command was refused, in a form a program can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The aggregate (task, key, message, ...) does not exist (HTTP 404).
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

impl RefusalKind {
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

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
