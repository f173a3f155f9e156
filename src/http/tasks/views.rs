//! What `/v1/tasks` answers with: a task, its result and files, its
//! progress and status, and the events of its history, with their
//! conversions from the aggregate, the read model's rows and the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskledger_events::task::{Artifact, Task, TaskStatus};
use taskledger_events::RecordedEvent;
use taskledger_projections::tasks::query::StoredTask;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

/// Where a task is in its life: the aggregate's [`TaskStatus`], serialized
/// as it is (`timed_out`). A wrapper only so the document can describe it:
/// the events crate knows nothing of OpenAPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Status(pub TaskStatus);

impl Status {
    pub(super) const ALL: [Self; 7] = [
        Self(TaskStatus::Waiting),
        Self(TaskStatus::Queued),
        Self(TaskStatus::Running),
        Self(TaskStatus::Succeeded),
        Self(TaskStatus::Failed),
        Self(TaskStatus::TimedOut),
        Self(TaskStatus::Canceled),
    ];

    pub(super) fn as_str(self) -> &'static str {
        self.0.as_str()
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

impl From<TaskStatus> for Status {
    fn from(status: TaskStatus) -> Self {
        Self(status)
    }
}

impl From<Status> for TaskStatus {
    fn from(status: Status) -> Self {
        status.0
    }
}

impl PartialSchema for Status {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Where a task is in its life."))
            .enum_values(Some(Self::ALL.map(Self::as_str)))
            .into()
    }
}

impl ToSchema for Status {}

/// The latest progress its running attempt reported.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProgressView {
    /// 0 to 100, when known.
    pub percent: Option<f64>,
    /// What it is doing.
    pub message: Option<String>,
}

/// The job an outside executor runs a task's latest attempt as.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ExecutorJobView {
    /// The executor: `slurm`.
    #[schema(example = "slurm")]
    pub executor: String,
    /// The executor's id for the job (Slurm's job id, as `squeue` shows it).
    #[schema(example = "4711")]
    pub job_id: String,
    /// When the job was first seen running; absent while it waits in the
    /// executor's queue (the task is then shown `queued`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_at: Option<DateTime<Utc>>,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskView {
    /// Its id.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Where it is in its life: `waiting` while a parent (`depends_on`)
    /// has not succeeded yet, then as a task without parents. A task whose attempt was handed to an
    /// outside executor (Slurm) is `queued` while the job waits in that
    /// executor's queue (see `executor_job`), and `running` once it runs.
    pub status: Status,
    /// The tenant it belongs to.
    #[schema(example = "acme")]
    pub tenant: String,
    /// The frontend that submitted it.
    pub frontend_id: String,
    /// The frontend's own id for it.
    pub client_task_id: Option<String>,
    /// Its parameters, as submitted.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// Its input files: name → SHA-256 of the uploaded blob.
    pub inputs: std::collections::BTreeMap<String, String>,
    /// Higher runs first.
    pub priority: i32,
    /// How long one attempt may run.
    pub timeout_seconds: u64,
    /// Attempts it gets in all.
    pub max_attempts: u32,
    /// Attempts started so far.
    pub attempts: u32,
    /// The worker running (or that last ran) it.
    pub worker_id: Option<String>,
    /// The running attempt's latest progress.
    pub progress: Option<ProgressView>,
    /// Why it failed, timed out, was canceled, or why its last attempt was
    /// retried.
    pub error: Option<String>,
    /// The last finished attempt's exit code.
    pub exit_code: Option<i32>,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// The API key that submitted it.
    pub submitted_by: Option<String>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// While it waits for a retry's backoff (status `queued`): the instant
    /// its next attempt may start, chosen by the kind's retry policy when
    /// the last attempt failed. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The latest attempt's job on an outside executor (a kind with
    /// `executor = "slurm"`), once the executor accepted it. Absent
    /// otherwise, and while a retry waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_job: Option<ExecutorJobView>,
    /// The tasks it depends on (its parents): it waits until each has
    /// succeeded. Absent when it has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Uuid>,
    /// What a parent that fails, times out or is canceled does to it:
    /// `cancel` (it is canceled, naming the parent) or `run` (it runs once
    /// every parent ended). Absent when it has no parents.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "cancel")]
    pub on_parent_failure: Option<&'static str>,
    /// Its stream's version: pass it as `min_version` to read your write.
    pub stream_version: u64,
    /// The global position of its latest event: pass it as `min_position`
    /// to a list to read your write.
    pub position: u64,
}

impl TaskView {
    /// The view of a task folded from its stream. Equal to what the `tasks`
    /// projection holds once it has reached `stream_version`: the fields the
    /// projection derives (the status of a task whose job waits, the error
    /// of a canceled or timed-out task, the worker of a queued or canceled
    /// one) come from the same derivation ([`Task::shown_status`],
    /// [`Task::shown_error`], [`Task::shown_worker_id`]).
    pub fn from_task(task: &Task, stream_version: u64, position: u64) -> Self {
        Self {
            id: task.id.0,
            kind: task.kind.clone(),
            status: task.shown_status().into(),
            tenant: task.tenant.as_str().to_owned(),
            frontend_id: task.frontend_id.clone(),
            client_task_id: task.client_task_id.clone(),
            params: task.params.clone(),
            inputs: task.inputs.clone(),
            priority: task.priority,
            timeout_seconds: task.timeout_seconds,
            max_attempts: task.max_attempts,
            attempts: task.attempts_started,
            worker_id: task.shown_worker_id().map(str::to_owned),
            progress: task.progress.as_ref().map(|progress| ProgressView {
                percent: progress.percent,
                message: progress.message.clone(),
            }),
            error: task.shown_error(),
            exit_code: task.exit_code,
            submitted_at: task.submitted_at,
            submitted_by: task.submitted_by.clone(),
            started_at: task.started_at,
            finished_at: task.finished_at,
            next_attempt_at: task.next_attempt_at,
            executor_job: task.executor_job.as_ref().map(|job| ExecutorJobView {
                executor: job.executor.clone(),
                job_id: job.job_id.clone(),
                running_at: job.running_at,
            }),
            depends_on: task.depends_on.iter().map(|parent| parent.0).collect(),
            on_parent_failure: (!task.depends_on.is_empty())
                .then(|| task.on_parent_failure.as_str()),
            stream_version,
            position,
        }
    }

    /// The view of a task as the `tasks` read model holds it: the same
    /// derivation as [`TaskView::from_task`], from the task its row shows.
    pub(super) fn from_stored(stored: &StoredTask) -> Self {
        Self::from_task(&stored.task, stored.stream_version, stored.position)
    }
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskPage {
    /// The tasks.
    pub items: Vec<TaskView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A file a task produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactView {
    /// Its name (unique within the task).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, hexadecimal.
    pub sha256: String,
    /// Its media type.
    pub media_type: String,
}

impl From<Artifact> for ArtifactView {
    fn from(artifact: Artifact) -> Self {
        Self {
            name: artifact.name,
            size: artifact.size,
            sha256: artifact.sha256,
            media_type: artifact.media_type,
        }
    }
}

/// A succeeded task's result.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ResultView {
    /// The task.
    pub task_id: Uuid,
    /// The attempt that succeeded.
    pub attempt: u32,
    /// The result document (`/out/result.json`).
    #[schema(value_type = Object)]
    pub result: Value,
    /// The container's exit code.
    pub exit_code: i32,
    /// The files it produced.
    pub artifacts: Vec<ArtifactView>,
    /// When the attempt finished.
    pub finished_at: DateTime<Utc>,
}

/// One event as stored (a task's history, a stream, the global order).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Its place in the global order.
    pub position: u64,
    /// The stream it belongs to (`task-…`, `apikey-…`, …).
    pub stream_id: String,
    /// Its place in its stream, from 1.
    pub version: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its type, e.g. `TaskSubmitted`.
    pub event_type: String,
    /// The schema version it was read as (after upcasting).
    pub schema_version: u32,
    /// Its fields.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Who and what caused it.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// When it was stored.
    pub recorded_at: DateTime<Utc>,
    /// The hash chain's value at this event, hexadecimal.
    pub hash: String,
}

/// A page of events, oldest first (a task's history, a stream, the global
/// order).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventPage {
    /// The events.
    pub items: Vec<EventView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// An event as the API shows it (the stored envelope, hash in hex).
pub(crate) fn event_view(event: RecordedEvent) -> EventView {
    EventView {
        position: event.global_position,
        stream_id: event.stream_id,
        version: event.version,
        event_id: event.event_id,
        event_type: event.event_type,
        schema_version: event.schema_version,
        data: event.data,
        metadata: serde_json::to_value(&event.metadata).unwrap_or(Value::Null),
        recorded_at: event.recorded_at,
        hash: hex::encode(event.hash),
    }
}
