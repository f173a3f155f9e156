//! The task aggregate: what a task can be asked to do ([`TaskCommand`]), what
//! happened to it ([`TaskEvent`]), and the two pure functions that connect
//! them, [`decide`] and [`apply`].
//!
//! A task lives in the stream `task-{uuid}` ([`TaskId::stream_id`]). Its
//! statuses move like this:
//!
//! A task submitted with parents (`depends_on`) starts `waiting`; one
//! without starts `queued`.
//!
//! ```text
//! waiting ── ResolveDependencies: every parent
//!            succeeded (or, `run`, ended) ──────────▶ queued
//! waiting ── ResolveDependencies: a parent failed,
//!            timed out or was canceled (`cancel`) ──▶ canceled    (final)
//! queued  ── StartTask ─────────────────────────────▶ running
//! running ── CompleteTask ──────────────────────────▶ succeeded   (final)
//! running ── FailTask, or RetryTask with no
//!            attempts left ─────────────────────────▶ failed      (final)
//! running ── TimeOutTask ───────────────────────────▶ timed_out   (final)
//! running ── FailTask (retryable) or RetryTask,
//!            while attempts remain ─────────────────▶ queued
//! waiting, queued, running ── CancelTask ───────────▶ canceled    (final)
//! running ── RecordJobSubmitted, RecordJobRunning ──▶ running (an outside
//!            executor's job: shown `queued` between the two)
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

mod commands;
mod decide;
mod events;
#[cfg(test)]
mod graph_tests;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{
    is_input_name, Artifact, CancelTask, CompleteTask, FailTask, RecordJobRunning,
    RecordJobSubmitted, RecordTaskProgress, ResolveDependencies, RetryTask, StartTask, SubmitTask,
    TaskCommand, TimeOutTask, MAX_ARTIFACT_NAME_BYTES, MAX_ATTEMPTS, MAX_CLIENT_TASK_ID_BYTES,
    MAX_DEPENDS_ON, MAX_EXECUTOR_JOB_BYTES, MAX_FRONTEND_ID_BYTES, MAX_INPUTS,
    MAX_INPUT_NAME_BYTES, MAX_KIND_BYTES, MAX_MESSAGE_BYTES, MAX_TIMEOUT_SECONDS,
    MAX_WORKER_ID_BYTES, PRIORITIES,
};
pub use decide::decide;
pub use events::{
    DecodeError, OnParentFailure, TaskCanceled, TaskEvent, TaskFailed, TaskJobRunning,
    TaskJobSubmitted, TaskProgressRecorded, TaskReleased, TaskRetried, TaskStarted, TaskSubmitted,
    TaskSucceeded, TaskTimedOut,
};
pub use state::{apply, fits, fold, ExecutorJob, Progress, Task, TaskState, TaskStatus};

crate::aggregate::aggregate_of_module_functions! {
    /// The task aggregate, for [`crate::command::execute`] and the tests'
    /// given/when/then.
    pub struct Tasks;
    NAME = "tasks", STREAM_PREFIX = TaskId::STREAM_PREFIX;
    State = TaskState, Event = TaskEvent;
    Command = TaskCommand {
        Submit, Cancel, Start, RecordProgress, Complete, Fail, TimeOut, Retry,
        RecordJobSubmitted, RecordJobRunning, ResolveDependencies,
    }
}

crate::stream_id::uuid_identity!(
    /// The identity of a task. Chosen by whoever submits it (a fresh UUID,
    /// or one derived from a client's own task id so a retried submission
    /// finds the first one).
    TaskId,
    "task-",
    "task"
);
