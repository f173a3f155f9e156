//! What a task can be asked to do: one struct per command (a submission is
//! the event it asks for), the [`TaskCommand`] enum over them, and the
//! limits [`decide`](super::decide) checks them against.

use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{TaskId, TaskStatus, TaskSubmitted};

/// The longest task kind, in bytes.
pub const MAX_KIND_BYTES: usize = 100;
/// The longest frontend id, in bytes.
pub const MAX_FRONTEND_ID_BYTES: usize = 200;
/// The longest client task id, in bytes.
pub const MAX_CLIENT_TASK_ID_BYTES: usize = 200;
/// The longest worker id, in bytes.
pub const MAX_WORKER_ID_BYTES: usize = 200;
/// The longest artifact name, in bytes (the longest file name on Linux).
pub const MAX_ARTIFACT_NAME_BYTES: usize = 255;
/// The longest free-text field (a cancel reason, an error, a progress
/// message), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 10_000;
/// The priorities a task may have; higher runs first.
pub const PRIORITIES: RangeInclusive<i32> = -1000..=1000;
/// The longest time one attempt may run: seven days.
pub const MAX_TIMEOUT_SECONDS: u64 = 7 * 86_400;
/// The most attempts a task may be given.
pub const MAX_ATTEMPTS: u32 = 100;
/// The most input files a task may name.
pub const MAX_INPUTS: usize = 16;
/// The longest input file name, in bytes.
pub const MAX_INPUT_NAME_BYTES: usize = 100;
/// The most parents a task may depend on.
pub const MAX_DEPENDS_ON: usize = 100;

/// Whether `name` may name an input file (it becomes `/in/{name}`): 1 to
/// [`MAX_INPUT_NAME_BYTES`] bytes, a letter or digit first, then letters,
/// digits, `.`, `_` or `-`. Submissions and kinds' declarations alike.
pub fn is_input_name(name: &str) -> bool {
    name.len() <= MAX_INPUT_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Any command to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCommand {
    /// See [`SubmitTask`].
    Submit(SubmitTask),
    /// See [`CancelTask`].
    Cancel(CancelTask),
    /// See [`StartTask`].
    Start(StartTask),
    /// See [`RecordTaskProgress`].
    RecordProgress(RecordTaskProgress),
    /// See [`CompleteTask`].
    Complete(CompleteTask),
    /// See [`FailTask`].
    Fail(FailTask),
    /// See [`TimeOutTask`].
    TimeOut(TimeOutTask),
    /// See [`RetryTask`].
    Retry(RetryTask),
    /// See [`RecordJobSubmitted`].
    RecordJobSubmitted(RecordJobSubmitted),
    /// See [`RecordJobRunning`].
    RecordJobRunning(RecordJobRunning),
    /// See [`ResolveDependencies`].
    ResolveDependencies(ResolveDependencies),
}

impl TaskCommand {
    /// The task the command is for: load the stream of this task
    /// ([`TaskId::stream_id`]) before deciding.
    pub fn task_id(&self) -> TaskId {
        match self {
            Self::Submit(command) => command.task_id,
            Self::Cancel(command) => command.task_id,
            Self::Start(command) => command.task_id,
            Self::RecordProgress(command) => command.task_id,
            Self::Complete(command) => command.task_id,
            Self::Fail(command) => command.task_id,
            Self::TimeOut(command) => command.task_id,
            Self::Retry(command) => command.task_id,
            Self::RecordJobSubmitted(command) => command.task_id,
            Self::RecordJobRunning(command) => command.task_id,
            Self::ResolveDependencies(command) => command.task_id,
        }
    }
}

/// Create a task and queue it for its first attempt.
///
/// The command is the [`TaskSubmitted`] event it asks for: [`decide`](super::decide)
/// checks each field against its limit (documented on the field) and, when
/// all hold and the task does not exist yet, records it as given. One struct,
/// so a submission's fields are listed once; a field the event must not
/// store would make the command its own struct again.
pub type SubmitTask = TaskSubmitted;

/// Stop a task that is queued or running; a running task's worker should stop
/// its container when it sees the cancellation.
#[derive(Debug, Clone, PartialEq)]
pub struct CancelTask {
    /// The task.
    pub task_id: TaskId,
    /// Why, in words, if the caller gave a reason.
    pub reason: Option<String>,
    /// When the cancellation was accepted.
    pub canceled_at: DateTime<Utc>,
}

/// A worker claims a queued task and starts its next attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct StartTask {
    /// The task.
    pub task_id: TaskId,
    /// The worker that runs the attempt. 1 to [`MAX_WORKER_ID_BYTES`] bytes,
    /// no control characters.
    pub worker_id: String,
    /// The attempt being started: one more than the attempts started so far.
    pub attempt: u32,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
}

/// A worker reports how far the current attempt has got.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordTaskProgress {
    /// The task.
    pub task_id: TaskId,
    /// The attempt the worker is running.
    pub attempt: u32,
    /// How far, from 0 to 100, if the worker knows.
    pub percent: Option<f64>,
    /// What the attempt is doing, in words.
    pub message: Option<String>,
    /// When the worker saw this progress.
    pub recorded_at: DateTime<Utc>,
}

/// A worker reports that the current attempt succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct CompleteTask {
    /// The task.
    pub task_id: TaskId,
    /// The attempt that succeeded.
    pub attempt: u32,
    /// The result document (`/out/result.json`).
    pub result: Map<String, Value>,
    /// The container's exit code.
    pub exit_code: i32,
    /// The files the attempt produced, each with a unique name.
    pub artifacts: Vec<Artifact>,
    /// When the attempt finished.
    pub finished_at: DateTime<Utc>,
}

/// A worker reports that the current attempt failed.
///
/// A `retryable` failure while attempts remain queues the task again (the
/// decision is [`TaskRetried`](super::TaskRetried)); otherwise the task fails
/// for good ([`TaskFailed`](super::TaskFailed)).
#[derive(Debug, Clone, PartialEq)]
pub struct FailTask {
    /// The task.
    pub task_id: TaskId,
    /// The attempt that failed.
    pub attempt: u32,
    /// What went wrong, in words.
    pub error: String,
    /// The container's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The files the attempt left (its `stdout.log` and `stderr.log`), kept
    /// when the task fails for good.
    pub artifacts: Vec<Artifact>,
    /// Whether another attempt might succeed (e.g. a lost connection, not bad
    /// input).
    pub retryable: bool,
    /// When the next attempt may start, if the failure is retried: the
    /// kind's backoff, chosen by the worker (randomness stays out of
    /// [`decide`](super::decide)). `None`: at once.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the attempt failed.
    pub failed_at: DateTime<Utc>,
}

/// A worker reports that the current attempt ran past the task's timeout.
/// The task ends timed out; it is not retried.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeOutTask {
    /// The task.
    pub task_id: TaskId,
    /// The attempt that timed out.
    pub attempt: u32,
    /// When the worker stopped it.
    pub timed_out_at: DateTime<Utc>,
}

/// A job was redelivered because the runner of the current attempt died: end
/// that attempt and queue the task again if attempts remain, or fail it
/// ("gave up after N attempts: {reason}") if not.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryTask {
    /// The task.
    pub task_id: TaskId,
    /// Why the attempt ended, in words (e.g. "the runner stopped responding").
    pub reason: String,
    /// When the retry was decided.
    pub retried_at: DateTime<Utc>,
    /// When the next attempt may start (see [`FailTask::next_attempt_at`]).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The longest executor name or executor job id, in bytes.
pub const MAX_EXECUTOR_JOB_BYTES: usize = 200;

/// A worker handed the current attempt to an outside executor, which
/// accepted it as a job (`sbatch` printed its id). Once per attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordJobSubmitted {
    /// The task.
    pub task_id: TaskId,
    /// The attempt the job runs.
    pub attempt: u32,
    /// The executor (`slurm`). 1 to [`MAX_EXECUTOR_JOB_BYTES`] bytes, no
    /// control characters.
    pub executor: String,
    /// The executor's id for the job; as `executor`.
    pub job_id: String,
    /// When the executor accepted it.
    pub submitted_at: DateTime<Utc>,
}

/// A worker saw the attempt's job (recorded by [`RecordJobSubmitted`])
/// start running. Once per attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordJobRunning {
    /// The task.
    pub task_id: TaskId,
    /// The attempt.
    pub attempt: u32,
    /// The job: the one recorded for the attempt.
    pub job_id: String,
    /// When the worker first saw it running.
    pub running_at: DateTime<Utc>,
}

/// Decide what a waiting task's parents, as they are now, mean for it:
/// released when every parent succeeded (with
/// [`OnParentFailure::Run`](super::OnParentFailure::Run): when every parent
/// is final), canceled naming the first parent (in `depends_on` order) that
/// failed, timed out or was canceled, nothing while a parent may still
/// succeed. Issued by whoever follows the parents' outcomes (the graph
/// worker, and the submission itself for parents already final), looked up
/// in the log before deciding; a parent's final status never changes, so
/// any two lookups lead to the same release or the same cancellation.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolveDependencies {
    /// The waiting task.
    pub task_id: TaskId,
    /// Each parent's status now, for every id in the task's `depends_on`.
    pub parents: Vec<(TaskId, TaskStatus)>,
    /// When it was decided.
    pub resolved_at: DateTime<Utc>,
}

/// A file an attempt produced, stored by its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The file's name: 1 to [`MAX_ARTIFACT_NAME_BYTES`] bytes, no `/` or NUL,
    /// not `.` or `..`, unique within the task's artifacts.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its content: 64 lowercase hexadecimal digits.
    pub sha256: String,
    /// Its media type, e.g. `application/json`; not empty.
    pub media_type: String,
}
