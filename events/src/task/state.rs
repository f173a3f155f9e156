//! A task as its events leave it ([`Task`], [`TaskState`]), the fold that
//! builds it ([`apply`], [`fold`], with [`fits`] its transitions), and the
//! fields readers are shown of it ([`Task::shown_status`],
//! [`Task::shown_error`], [`Task::shown_worker_id`]).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Artifact, OnParentFailure, TaskEvent, TaskId};
use crate::tenant::TenantName;

/// The state of one task stream: `None` until the task is submitted.
pub type TaskState = Option<Task>;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its parents (`depends_on`) to succeed; no job is queued.
    Waiting,
    /// Waiting for a worker to start its next attempt.
    Queued,
    /// A worker is running an attempt.
    Running,
    /// An attempt succeeded (final).
    Succeeded,
    /// The last attempt failed and no attempt follows (final).
    Failed,
    /// An attempt ran past the timeout (final).
    TimedOut,
    /// Canceled while queued or running (final).
    Canceled,
}

impl TaskStatus {
    /// The stable snake_case name, as serialized (`timed_out`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Canceled => "canceled",
        }
    }

    /// Whether nothing more can happen to a task with this status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::TimedOut | Self::Canceled
        )
    }
}

impl fmt::Display for TaskStatus {
    /// The status in words, for messages: `timed out`, not `timed_out`
    /// (use [`TaskStatus::as_str`] for the stored name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut => f.write_str("timed out"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The latest progress reported by the running attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// How far, from 0 to 100, if known.
    pub percent: Option<f64>,
    /// What it is doing, in words.
    pub message: Option<String>,
    /// When it was reported.
    pub recorded_at: DateTime<Utc>,
}

/// The job an outside executor (Slurm) holds for the current attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorJob {
    /// The executor (`slurm`).
    pub executor: String,
    /// Its id for the job.
    pub job_id: String,
    /// When the job was first seen running; `None` while it waits in the
    /// executor's queue.
    pub running_at: Option<DateTime<Utc>>,
}

/// A submitted task, as its events leave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// What to run.
    pub kind: String,
    /// Its input.
    pub params: Map<String, Value>,
    /// Its input files: name → SHA-256 of the blob.
    pub inputs: std::collections::BTreeMap<String, String>,
    /// The tenant it belongs to.
    pub tenant: TenantName,
    /// The frontend that submitted it.
    pub frontend_id: String,
    /// The frontend's own id for it.
    pub client_task_id: Option<String>,
    /// Higher runs first.
    pub priority: i32,
    /// How long one attempt may run.
    pub timeout_seconds: u64,
    /// How many attempts it gets in all.
    pub max_attempts: u32,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// The API key id that submitted it.
    pub submitted_by: Option<String>,
    /// The tasks it depends on, each once, in the submission's order.
    pub depends_on: Vec<TaskId>,
    /// What a parent that does not succeed does to it.
    pub on_parent_failure: OnParentFailure,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// How many attempts have started; while running, the number of the
    /// current attempt.
    pub attempts_started: u32,
    /// The worker that started the latest attempt (`None` before the first).
    pub worker_id: Option<String>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// The latest progress of the current attempt; cleared when an attempt
    /// starts or ends in a retry.
    pub progress: Option<Progress>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// The error of the latest attempt that failed or was retried (kept while
    /// a later attempt runs).
    pub error: Option<String>,
    /// The exit code of the latest attempt that ended, if its container
    /// exited.
    pub exit_code: Option<i32>,
    /// The result document, once it succeeded.
    pub result: Option<Map<String, Value>>,
    /// The files it produced, once it succeeded; its logs, once it failed.
    pub artifacts: Vec<Artifact>,
    /// Why it was canceled, if it was and a reason was given.
    pub cancel_reason: Option<String>,
    /// While it waits for a retry's backoff: when the next attempt may
    /// start (`TaskRetried`'s `next_attempt_at`). `None` otherwise.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The latest attempt's job on an outside executor (`TaskJobSubmitted`,
    /// `TaskJobRunning`): kept once the task ends, cleared when an attempt
    /// starts or is retried.
    pub executor_job: Option<ExecutorJob>,
}

/// Whether `event` fits `state`: a submission starts a task that does not
/// exist yet; a waiting task can be released; a queued task can be started; a running one can record
/// progress, succeed, fail, time out or be retried; a queued or running one
/// can be canceled. Nothing else fits (a final task takes no event).
pub fn fits(state: &TaskState, event: &TaskEvent) -> bool {
    let status = state.as_ref().map(|task| task.status);
    matches!(
        (status, event),
        (None, TaskEvent::Submitted(_))
            | (Some(TaskStatus::Waiting), TaskEvent::Released(_))
            | (Some(TaskStatus::Queued), TaskEvent::Started(_))
            | (
                Some(TaskStatus::Running),
                TaskEvent::ProgressRecorded(_)
                    | TaskEvent::Succeeded(_)
                    | TaskEvent::Failed(_)
                    | TaskEvent::TimedOut(_)
                    | TaskEvent::Retried(_)
                    | TaskEvent::JobSubmitted(_)
                    | TaskEvent::JobRunning(_)
            )
            | (
                Some(TaskStatus::Waiting | TaskStatus::Queued | TaskStatus::Running),
                TaskEvent::Canceled(_)
            )
    )
}

/// The state after `event`. Total: it never fails.
///
/// An event that does not [fit](fits) the state — anything before
/// `TaskSubmitted`, a second `TaskSubmitted`, or an event the current status
/// cannot be followed by (e.g. `TaskStarted` for a task that is not queued)
/// — leaves the state as it was. [`decide`](super::decide) never produces
/// such an event, and the store's expected versions keep decisions in
/// order, so one can only come from a stream written by other code; the
/// auditor's replay, not this fold, is the place to report it.
pub fn apply(state: TaskState, event: &TaskEvent) -> TaskState {
    if !fits(&state, event) {
        return state;
    }
    let Some(mut task) = state else {
        // Fits: the event is the submission.
        let TaskEvent::Submitted(submitted) = event else {
            return None;
        };
        return Some(Task {
            id: submitted.task_id,
            kind: submitted.kind.clone(),
            params: submitted.params.clone(),
            inputs: submitted.inputs.clone(),
            tenant: submitted.tenant.clone(),
            frontend_id: submitted.frontend_id.clone(),
            client_task_id: submitted.client_task_id.clone(),
            priority: submitted.priority,
            timeout_seconds: submitted.timeout_seconds,
            max_attempts: submitted.max_attempts,
            submitted_at: submitted.submitted_at,
            submitted_by: submitted.submitted_by.clone(),
            depends_on: submitted.depends_on.clone(),
            on_parent_failure: submitted.on_parent_failure,
            status: if submitted.depends_on.is_empty() {
                TaskStatus::Queued
            } else {
                TaskStatus::Waiting
            },
            attempts_started: 0,
            worker_id: None,
            started_at: None,
            progress: None,
            finished_at: None,
            error: None,
            exit_code: None,
            result: None,
            artifacts: Vec::new(),
            cancel_reason: None,
            next_attempt_at: None,
            executor_job: None,
        });
    };
    // Only a retry's wait has a due time: any other event ends it.
    task.next_attempt_at = None;
    match event {
        // Fits only a task that does not exist.
        TaskEvent::Submitted(_) => {}
        TaskEvent::Released(_) => task.status = TaskStatus::Queued,
        TaskEvent::Started(started) => {
            task.status = TaskStatus::Running;
            task.attempts_started = started.attempt;
            task.worker_id = Some(started.worker_id.clone());
            task.started_at = Some(started.started_at);
            task.progress = None;
            task.executor_job = None;
        }
        TaskEvent::ProgressRecorded(progress) => {
            task.progress = Some(Progress {
                percent: progress.percent,
                message: progress.message.clone(),
                recorded_at: progress.recorded_at,
            });
        }
        TaskEvent::Succeeded(succeeded) => {
            task.status = TaskStatus::Succeeded;
            task.result = Some(succeeded.result.clone());
            task.exit_code = Some(succeeded.exit_code);
            task.artifacts = succeeded.artifacts.clone();
            task.finished_at = Some(succeeded.finished_at);
        }
        TaskEvent::Failed(failed) => {
            task.status = TaskStatus::Failed;
            task.error = Some(failed.error.clone());
            task.exit_code = failed.exit_code;
            task.artifacts = failed.artifacts.clone();
            task.finished_at = Some(failed.failed_at);
        }
        TaskEvent::TimedOut(timed_out) => {
            task.status = TaskStatus::TimedOut;
            task.finished_at = Some(timed_out.timed_out_at);
        }
        TaskEvent::Retried(retried) => {
            task.status = TaskStatus::Queued;
            task.error = Some(retried.reason.clone());
            task.exit_code = retried.exit_code;
            task.progress = None;
            task.next_attempt_at = retried.next_attempt_at;
            task.executor_job = None;
        }
        TaskEvent::JobSubmitted(submitted) => {
            task.executor_job = Some(ExecutorJob {
                executor: submitted.executor.clone(),
                job_id: submitted.job_id.clone(),
                running_at: None,
            });
        }
        TaskEvent::JobRunning(running) => {
            if let Some(job) = &mut task.executor_job {
                job.running_at = Some(running.running_at);
            }
        }
        TaskEvent::Canceled(canceled) => {
            task.status = TaskStatus::Canceled;
            task.cancel_reason = canceled.reason.clone();
            task.finished_at = Some(canceled.canceled_at);
        }
    }
    Some(task)
}

impl Task {
    /// The status readers are shown (the `tasks` read model's `status`, a
    /// task view's `status`): `queued` while the running attempt's job
    /// waits in an outside executor's queue (Slurm's PENDING), else the
    /// status. The one derivation, as for [`Task::shown_error`].
    pub fn shown_status(&self) -> TaskStatus {
        match (&self.status, &self.executor_job) {
            (TaskStatus::Running, Some(job)) if job.running_at.is_none() => TaskStatus::Queued,
            (status, _) => *status,
        }
    }

    /// The error readers are shown (the `tasks` read model's `error`, a
    /// task view's `error`): why it was canceled (`canceled` when no reason
    /// was given), that its attempt ran past the timeout, nothing once it
    /// succeeded, else the error of its latest attempt that failed or was
    /// retried. The one derivation: the projection stores it and a task
    /// folded from the log is shown with it, so the two agree.
    pub fn shown_error(&self) -> Option<String> {
        match self.status {
            TaskStatus::Canceled => Some(
                self.cancel_reason
                    .clone()
                    .unwrap_or_else(|| "canceled".to_owned()),
            ),
            TaskStatus::TimedOut => Some(format!(
                "attempt {} ran past the task's timeout",
                self.attempts_started
            )),
            // An earlier attempt's error is not the outcome.
            TaskStatus::Succeeded => None,
            _ => self.error.clone(),
        }
    }

    /// The worker readers are shown: the one running the task's attempt or
    /// that ran its last one; none while it waits (queued, also after a
    /// retry) and once it is canceled. The one derivation, as for
    /// [`Task::shown_error`].
    pub fn shown_worker_id(&self) -> Option<&str> {
        match self.status {
            TaskStatus::Waiting | TaskStatus::Queued | TaskStatus::Canceled => None,
            _ => self.worker_id.as_deref(),
        }
    }
}

/// The state after all of `events`, in order, starting from no task.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a TaskEvent>) -> TaskState {
    events.into_iter().fold(None, apply)
}
