//! The task aggregate: what a task can be asked to do ([`TaskCommand`]), what
//! happened to it ([`TaskEvent`]), and the two pure functions that connect
//! them, [`decide`] and [`apply`].
//!
//! A task lives in the stream `task-{uuid}` ([`TaskId::stream_id`]). Its
//! statuses move like this:
//!
//! ```text
//! queued  ── StartTask ─────────────────────────────▶ running
//! running ── CompleteTask ──────────────────────────▶ succeeded   (final)
//! running ── FailTask, or RetryTask with no
//!            attempts left ─────────────────────────▶ failed      (final)
//! running ── TimeOutTask ───────────────────────────▶ timed_out   (final)
//! running ── FailTask (retryable) or RetryTask,
//!            while attempts remain ─────────────────▶ queued
//! queued, running ── CancelTask ────────────────────▶ canceled    (final)
//! ```
//!
//! Attempts are numbered from 1. A worker names the attempt it is working on
//! in every command, so a worker that lost its task (the job was redelivered
//! and another worker started the next attempt) is told it is stale instead
//! of overwriting the newer attempt.
//!
//! Everything here is pure and synchronous: no IO, no clock, no randomness.
//! Times and ids arrive in the commands; the caller loads the stream, folds it
//! with [`apply`] (or [`fold`]), calls [`decide`], and appends the events with
//! the stream version it read as the expected version.
//!
//! Stored events: the envelope's `event_type` is the name in
//! [`TaskEvent::event_type`] and `data` is the event's fields as a JSON object
//! *without* the `type` tag, which would repeat the envelope (see
//! [`TaskEvent::to_new_event`]). The serde form of [`TaskEvent`] (for messages
//! and logs) is the same object with the tag added.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Aggregate, Refusal, StreamId};

mod commands;
mod decide;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{
    is_input_name, Artifact, CancelTask, CompleteTask, FailTask, RecordTaskProgress, RetryTask,
    StartTask, SubmitTask, TaskCommand, TimeOutTask, MAX_ARTIFACT_NAME_BYTES, MAX_ATTEMPTS,
    MAX_CLIENT_TASK_ID_BYTES, MAX_FRONTEND_ID_BYTES, MAX_INPUTS, MAX_INPUT_NAME_BYTES,
    MAX_KIND_BYTES, MAX_MESSAGE_BYTES, MAX_TIMEOUT_SECONDS, MAX_WORKER_ID_BYTES, PRIORITIES,
};
pub use decide::decide;
pub use events::{
    DecodeError, TaskCanceled, TaskEvent, TaskFailed, TaskProgressRecorded, TaskRetried,
    TaskStarted, TaskSubmitted, TaskSucceeded, TaskTimedOut,
};
pub use state::{apply, fits, fold, Progress, Task, TaskState, TaskStatus};

/// The task aggregate, for [`crate::command::execute`] and the tests'
/// given/when/then.
#[derive(Debug, Clone, Copy)]
pub struct Tasks;

impl Aggregate for Tasks {
    const NAME: &'static str = "tasks";
    const STREAM_PREFIX: &'static str = TaskId::STREAM_PREFIX;

    type State = TaskState;
    type Command = TaskCommand;
    type Event = TaskEvent;

    fn command_name(command: &TaskCommand) -> &'static str {
        match command {
            TaskCommand::Submit(_) => "Submit",
            TaskCommand::Cancel(_) => "Cancel",
            TaskCommand::Start(_) => "Start",
            TaskCommand::RecordProgress(_) => "RecordProgress",
            TaskCommand::Complete(_) => "Complete",
            TaskCommand::Fail(_) => "Fail",
            TaskCommand::TimeOut(_) => "TimeOut",
            TaskCommand::Retry(_) => "Retry",
        }
    }

    fn decide(state: &TaskState, command: TaskCommand) -> Result<Vec<TaskEvent>, Refusal> {
        decide(state, command)
    }

    fn apply(state: TaskState, event: &TaskEvent) -> TaskState {
        apply(state, event)
    }
}

/// The identity of a task. Chosen by whoever submits it (a fresh UUID, or one
/// derived from a client's own task id so a retried submission finds the
/// first one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// The prefix of every task stream's id.
    pub const STREAM_PREFIX: &'static str = "task-";

    /// The stream that holds this task's events: `task-{uuid}`, the UUID in
    /// its lowercase hyphenated form.
    pub fn stream_id(&self) -> StreamId {
        // A 41-byte ASCII id without control characters is always valid.
        StreamId::new(format!("{}{}", Self::STREAM_PREFIX, self.0))
            .expect("task-{uuid} is always a valid stream id")
    }

    /// The task whose stream is `stream_id`, or `None` when `stream_id` is not
    /// `task-` followed by a UUID.
    pub fn from_stream_id(stream_id: &str) -> Option<Self> {
        let uuid = stream_id.strip_prefix(Self::STREAM_PREFIX)?;
        Uuid::parse_str(uuid).ok().map(Self)
    }

    /// The first 8 hexadecimal digits followed by "…", for messages meant for
    /// people (`3f2a1b4c…`). Not unique: keep the full id wherever it is
    /// needed to find the task again.
    pub fn short(&self) -> String {
        let mut buffer = Uuid::encode_buffer();
        let hex = self.0.simple().encode_lower(&mut buffer);
        format!("{}…", &hex[..8])
    }
}

impl fmt::Display for TaskId {
    /// The full UUID, lowercase and hyphenated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<Uuid> for TaskId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}
