//! What happened to a task: one struct per event, the [`TaskEvent`] enum over
//! them, and their stored form in the envelope ([`TaskEvent::to_new_event`],
//! [`TaskEvent::from_recorded`]).
//!
//! The stored names (`TaskSubmitted`, ...) are fixed by the explicit serde
//! renames and [`TaskEvent::event_type`], never by Rust type names. A change
//! to an event's shape gets a new schema version; the old shape is upcast on
//! read (see [`crate::upcast`]), never rewritten. A field added with a
//! `#[serde(default)]` that gives old events their meaning (`inputs`,
//! `tenant`) is not a change of shape: the default is the upcast, and events
//! written before it read as they did.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Artifact, TaskId};
use crate::codec;
pub use crate::codec::DecodeError;
use crate::tenant::TenantName;

/// Anything that can happen to a task.
///
/// Serialized with its stored name in a `type` field beside the event's own
/// fields: `{"type": "TaskStarted", "worker_id": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TaskEvent {
    /// See [`TaskSubmitted`].
    #[serde(rename = "TaskSubmitted")]
    Submitted(TaskSubmitted),
    /// See [`TaskCanceled`].
    #[serde(rename = "TaskCanceled")]
    Canceled(TaskCanceled),
    /// See [`TaskStarted`].
    #[serde(rename = "TaskStarted")]
    Started(TaskStarted),
    /// See [`TaskProgressRecorded`].
    #[serde(rename = "TaskProgressRecorded")]
    ProgressRecorded(TaskProgressRecorded),
    /// See [`TaskSucceeded`].
    #[serde(rename = "TaskSucceeded")]
    Succeeded(TaskSucceeded),
    /// See [`TaskFailed`].
    #[serde(rename = "TaskFailed")]
    Failed(TaskFailed),
    /// See [`TaskTimedOut`].
    #[serde(rename = "TaskTimedOut")]
    TimedOut(TaskTimedOut),
    /// See [`TaskRetried`].
    #[serde(rename = "TaskRetried")]
    Retried(TaskRetried),
    /// See [`TaskJobSubmitted`].
    #[serde(rename = "TaskJobSubmitted")]
    JobSubmitted(TaskJobSubmitted),
    /// See [`TaskJobRunning`].
    #[serde(rename = "TaskJobRunning")]
    JobRunning(TaskJobRunning),
    /// See [`TaskReleased`].
    #[serde(rename = "TaskReleased")]
    Released(TaskReleased),
}

/// A task was created and queued for its first attempt; also the command
/// that asks for it ([`SubmitTask`](super::SubmitTask)), whose limits the
/// fields' documentation gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSubmitted {
    /// The task's id.
    pub task_id: TaskId,
    /// What to run: selects the work queue and the container image. 1 to
    /// [`MAX_KIND_BYTES`](super::MAX_KIND_BYTES) bytes, no control
    /// characters.
    pub kind: String,
    /// The task's input, handed to the runner as given.
    pub params: Map<String, Value>,
    /// Input files: a name (`page.html`) and the SHA-256 of an uploaded
    /// blob; the runner mounts each read-only at `/in/{name}`. At most
    /// [`MAX_INPUTS`](super::MAX_INPUTS), names of
    /// [`MAX_INPUT_NAME_BYTES`](super::MAX_INPUT_NAME_BYTES) bytes at most.
    /// Absent from the stored form of tasks that have none (and of every
    /// event written before inputs existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// The tenant the task belongs to: the submitting key's, or the one a
    /// platform key named. Only that tenant's keys (and platform keys) see
    /// it. Absent from tasks submitted before tenants existed, which read
    /// as the `default` tenant's.
    #[serde(default = "TenantName::default_tenant")]
    pub tenant: TenantName,
    /// The frontend that submitted the task and reads its result. 1 to
    /// [`MAX_FRONTEND_ID_BYTES`](super::MAX_FRONTEND_ID_BYTES) bytes, no
    /// control characters.
    pub frontend_id: String,
    /// The frontend's own id for the task, if it has one. 1 to
    /// [`MAX_CLIENT_TASK_ID_BYTES`](super::MAX_CLIENT_TASK_ID_BYTES) bytes, no
    /// control characters.
    pub client_task_id: Option<String>,
    /// In [`PRIORITIES`](super::PRIORITIES); higher runs first.
    pub priority: i32,
    /// How long one attempt may run: 1 to
    /// [`MAX_TIMEOUT_SECONDS`](super::MAX_TIMEOUT_SECONDS).
    pub timeout_seconds: u64,
    /// How many attempts the task gets in all: 1 to
    /// [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS).
    pub max_attempts: u32,
    /// When the submission was accepted.
    pub submitted_at: DateTime<Utc>,
    /// The API key id that submitted it, if known.
    pub submitted_by: Option<String>,
    /// The tasks it depends on (its parents, of the same tenant; at most
    /// [`MAX_DEPENDS_ON`](super::MAX_DEPENDS_ON), each once). A task with
    /// parents is `waiting` until [`TaskReleased`] (every parent succeeded)
    /// or canceled (a parent did not). Absent from the stored form of tasks
    /// without parents (and of every event written before task graphs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    /// What a parent that fails, times out or is canceled does to this
    /// task. Absent when it is the default, `cancel`.
    #[serde(default, skip_serializing_if = "OnParentFailure::is_cancel")]
    pub on_parent_failure: OnParentFailure,
}

/// What a parent that ends other than succeeded does to its dependents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnParentFailure {
    /// The dependent is canceled, with a reason naming the parent.
    #[default]
    Cancel,
    /// The dependent is released once every parent is final, whatever
    /// their outcome.
    Run,
}

impl OnParentFailure {
    /// Whether this is the default, [`OnParentFailure::Cancel`].
    pub fn is_cancel(&self) -> bool {
        *self == Self::Cancel
    }

    /// The stable snake_case name, as serialized (`cancel`, `run`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Run => "run",
        }
    }
}

/// A waiting task's parents all succeeded (or, with
/// [`OnParentFailure::Run`], all ended): it is queued for its first
/// attempt, as a task without parents is at submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReleased {
    /// When the release was decided.
    pub released_at: DateTime<Utc>,
}

/// A queued or running task was canceled; it is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCanceled {
    /// Why, if a reason was given.
    pub reason: Option<String>,
    /// When.
    pub canceled_at: DateTime<Utc>,
    /// Whether an attempt was running (its worker should stop it).
    pub was_running: bool,
}

/// A worker started an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStarted {
    /// The worker running it.
    pub worker_id: String,
    /// The attempt, counted from 1.
    pub attempt: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// The running attempt reported progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgressRecorded {
    /// The attempt.
    pub attempt: u32,
    /// How far, from 0 to 100, if known.
    pub percent: Option<f64>,
    /// What it is doing, in words.
    pub message: Option<String>,
    /// When.
    pub recorded_at: DateTime<Utc>,
}

/// The running attempt succeeded; the task is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSucceeded {
    /// The attempt.
    pub attempt: u32,
    /// The result document.
    pub result: Map<String, Value>,
    /// The container's exit code.
    pub exit_code: i32,
    /// The files it produced.
    pub artifacts: Vec<Artifact>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// The running attempt failed and no attempt follows; the task is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailed {
    /// The attempt.
    pub attempt: u32,
    /// What went wrong, in words.
    pub error: String,
    /// The container's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The attempt's logs (`stdout.log`, `stderr.log`), capped as for a
    /// success (absent when it kept none, and in events written before
    /// failed tasks kept logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// The running attempt ran past the task's timeout; the task is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTimedOut {
    /// The attempt.
    pub attempt: u32,
    /// When the worker stopped it.
    pub timed_out_at: DateTime<Utc>,
}

/// The running attempt ended without a result and the task is queued again
/// for the next attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRetried {
    /// The attempt that ended.
    pub attempt: u32,
    /// Why it ended, in words.
    pub reason: String,
    /// The container's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// When.
    pub retried_at: DateTime<Utc>,
    /// The next attempt does not start before this: the retry's backoff,
    /// chosen (with its jitter) by the worker that reported the failure.
    /// Absent from retries without a backoff, among them every one written
    /// before backoffs existed (their next attempt was due at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The running attempt's command was handed to an outside executor (a
/// Slurm job) that queues it: the task is shown `queued`, with the job's
/// id, until [`TaskJobRunning`]. The attempt is claimed all the same (its
/// runner watches the job); no other attempt starts meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskJobSubmitted {
    /// The attempt.
    pub attempt: u32,
    /// The executor that holds the job (`slurm`).
    pub executor: String,
    /// The executor's own id for the job (Slurm's job id).
    pub job_id: String,
    /// When the runner saw the executor accept it.
    pub submitted_at: DateTime<Utc>,
}

/// The executor started the job of [`TaskJobSubmitted`]: the task is shown
/// `running` again, and the attempt's timeout counts from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskJobRunning {
    /// The attempt.
    pub attempt: u32,
    /// The job (as in its `TaskJobSubmitted`).
    pub job_id: String,
    /// When the runner first saw it running.
    pub running_at: DateTime<Utc>,
}

codec::stored_events!(TaskEvent: "a task", schema version 1, {
    Submitted => "TaskSubmitted",
    Canceled => "TaskCanceled",
    Started => "TaskStarted",
    ProgressRecorded => "TaskProgressRecorded",
    Succeeded => "TaskSucceeded",
    Failed => "TaskFailed",
    TimedOut => "TaskTimedOut",
    Retried => "TaskRetried",
    JobSubmitted => "TaskJobSubmitted",
    JobRunning => "TaskJobRunning",
    Released => "TaskReleased",
});
