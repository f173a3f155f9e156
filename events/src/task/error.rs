//! A command the task aggregate refused: [`DomainError`], with a kind for the
//! HTTP layer and a message for the person who sent the command.

pub use crate::domain::DomainErrorKind;

use super::TaskId;

/// A command the task aggregate refused; nothing happened to the task.
///
/// The message is one sentence for a frontend developer, naming the task by
/// its short id (`task 3f2a1b4c… is already succeeded; it cannot be
/// canceled`); [`DomainError::task_id`] has the full id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    kind: DomainErrorKind,
    task_id: TaskId,
    message: String,
}

impl DomainError {
    /// What kind of refusal this is.
    pub fn kind(&self) -> DomainErrorKind {
        self.kind
    }

    /// The task the refused command was for.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// The human message (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(super) fn not_found(task_id: TaskId) -> Self {
        Self {
            kind: DomainErrorKind::NotFound,
            task_id,
            message: format!("task {} does not exist", task_id.short()),
        }
    }

    pub(super) fn already_exists(task_id: TaskId) -> Self {
        Self {
            kind: DomainErrorKind::AlreadyExists,
            task_id,
            message: format!("task {} already exists", task_id.short()),
        }
    }

    pub(super) fn invalid_transition(task_id: TaskId, message: String) -> Self {
        Self {
            kind: DomainErrorKind::InvalidTransition,
            task_id,
            message,
        }
    }

    pub(super) fn invalid(task_id: TaskId, message: String) -> Self {
        Self {
            kind: DomainErrorKind::Invalid,
            task_id,
            message,
        }
    }
}
