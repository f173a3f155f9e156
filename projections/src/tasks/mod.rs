//! The `tasks` projector: one row per task in `tasks` (tenant, status, attempts,
//! timestamps, error, stream version) and one row per succeeded task in
//! `results` (result document, exit code, artifacts).
//!
//! Deterministic: every value comes from the events (`updated_at` is the
//! event's `recorded_at`), so a rebuild gives the same rows. Each task is
//! folded with the aggregate's own `task::apply`, and the fields a row
//! derives are `Task::shown_status`, `Task::shown_error` and
//! `Task::shown_worker_id`, the ones a
//! task folded from the log is shown with: the row is what the fold says.
//! The reads of these tables are in [`query`].

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use taskledger_events::task::{
    self, OnParentFailure, Progress, Task, TaskEvent, TaskId, TaskState, TaskStatus,
};
use taskledger_events::RecordedEvent;
use tokio_postgres::Row as PgRow;
use uuid::Uuid;

use crate::declare::{describe, events_of};
use crate::runtime::{Batch, Projector, ProjectorError};

pub mod query;

/// Projects task events into `tasks` and `results`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TasksProjector;

/// The columns of `tasks`, in the order [`TaskRow`] reads and writes them.
const COLUMNS: &str = "task_id, kind, status, frontend_id, client_task_id, params, priority,
    timeout_seconds, max_attempts, attempts, worker_id, progress_percent, progress_message,
    error, exit_code, submitted_at, submitted_by, started_at, finished_at, updated_at,
    stream_version, last_position, inputs, tenant, next_attempt_at, executor, executor_job_id,
    executor_running_at, depends_on, on_parent_failure";

/// Every row a batch touched, written back in one statement.
const UPSERT: &str = "INSERT INTO tasks (task_id, kind, status, frontend_id, client_task_id,
        params, priority, timeout_seconds, max_attempts, attempts, worker_id, progress_percent,
        progress_message, error, exit_code, submitted_at, submitted_by, started_at, finished_at,
        updated_at, stream_version, last_position, inputs, tenant, next_attempt_at, executor,
        executor_job_id, executor_running_at, depends_on, on_parent_failure)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::jsonb[], $7::int4[], $8::int8[], $9::int4[], $10::int4[], $11::text[],
        $12::float8[], $13::text[], $14::text[], $15::int4[], $16::timestamptz[], $17::text[],
        $18::timestamptz[], $19::timestamptz[], $20::timestamptz[], $21::int8[], $22::int8[],
        $23::jsonb[], $24::text[], $25::timestamptz[], $26::text[], $27::text[],
        $28::timestamptz[], $29::jsonb[], $30::text[])
     ON CONFLICT (task_id) DO UPDATE SET
        kind = EXCLUDED.kind, status = EXCLUDED.status, frontend_id = EXCLUDED.frontend_id,
        client_task_id = EXCLUDED.client_task_id, params = EXCLUDED.params,
        priority = EXCLUDED.priority, timeout_seconds = EXCLUDED.timeout_seconds,
        max_attempts = EXCLUDED.max_attempts, attempts = EXCLUDED.attempts,
        worker_id = EXCLUDED.worker_id, progress_percent = EXCLUDED.progress_percent,
        progress_message = EXCLUDED.progress_message, error = EXCLUDED.error,
        exit_code = EXCLUDED.exit_code, submitted_at = EXCLUDED.submitted_at,
        submitted_by = EXCLUDED.submitted_by, started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at, updated_at = EXCLUDED.updated_at,
        stream_version = EXCLUDED.stream_version, last_position = EXCLUDED.last_position,
        inputs = EXCLUDED.inputs, tenant = EXCLUDED.tenant,
        next_attempt_at = EXCLUDED.next_attempt_at, executor = EXCLUDED.executor,
        executor_job_id = EXCLUDED.executor_job_id,
        executor_running_at = EXCLUDED.executor_running_at,
        depends_on = EXCLUDED.depends_on, on_parent_failure = EXCLUDED.on_parent_failure";

/// The results of the tasks that succeeded or failed in a batch (one per
/// task: a second success or failure does not fit the task and is not
/// projected).
const RESULTS: &str =
    "INSERT INTO results (task_id, attempt, result, exit_code, artifacts, finished_at, status)
     SELECT * FROM unnest($1::uuid[], $2::int4[], $3::jsonb[], $4::int4[], $5::jsonb[],
        $6::timestamptz[], $7::text[])";

/// One row of `tasks`: its columns.
#[derive(Debug, Clone)]
struct TaskRow {
    task_id: Uuid,
    kind: String,
    status: String,
    frontend_id: String,
    client_task_id: Option<String>,
    params: Value,
    priority: i32,
    timeout_seconds: i64,
    max_attempts: i32,
    attempts: i32,
    worker_id: Option<String>,
    progress_percent: Option<f64>,
    progress_message: Option<String>,
    error: Option<String>,
    exit_code: Option<i32>,
    submitted_at: DateTime<Utc>,
    submitted_by: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    stream_version: i64,
    last_position: i64,
    inputs: Value,
    tenant: String,
    next_attempt_at: Option<DateTime<Utc>>,
    executor: Option<String>,
    executor_job_id: Option<String>,
    executor_running_at: Option<DateTime<Utc>>,
    depends_on: Value,
    on_parent_failure: String,
}

/// One row of `results`.
#[derive(Debug, Clone)]
struct ResultRow {
    task_id: Uuid,
    attempt: i32,
    result: Value,
    exit_code: Option<i32>,
    artifacts: Value,
    finished_at: DateTime<Utc>,
    /// `succeeded` (a result) or `failed` (only the attempt's logs).
    status: &'static str,
}

/// A task of a batch, folded in memory.
#[derive(Debug)]
struct Projected {
    /// The task (always `Some`: a row exists once the task is submitted;
    /// an `Option` so that `task::apply` can take it by value).
    state: TaskState,
    /// The `recorded_at` of its latest event.
    updated_at: DateTime<Utc>,
    /// Its stream's version.
    stream_version: i64,
    /// Its latest event's global position.
    last_position: i64,
}

impl Projected {
    /// The task a stored row holds, with the row's bookkeeping.
    ///
    /// # Errors
    /// A status no event gives.
    fn from_row(row: TaskRow) -> Result<Self, String> {
        let (updated_at, stream_version, last_position) =
            (row.updated_at, row.stream_version, row.last_position);
        Ok(Self {
            state: Some(row.into_task()?),
            updated_at,
            stream_version,
            last_position,
        })
    }

    /// Folds `event`, recorded as `recorded`, into the task.
    fn apply(&mut self, recorded: &RecordedEvent, event: &TaskEvent) {
        self.state = task::apply(self.state.take(), event);
        self.updated_at = recorded.recorded_at;
        self.stream_version = i64::try_from(recorded.version).unwrap_or(i64::MAX);
        self.last_position = i64::try_from(recorded.global_position).unwrap_or(i64::MAX);
    }

    /// The row's columns.
    fn row(&self) -> Option<TaskRow> {
        let task = self.state.as_ref()?;
        Some(TaskRow {
            task_id: task.id.0,
            kind: task.kind.clone(),
            status: task.shown_status().as_str().to_owned(),
            frontend_id: task.frontend_id.clone(),
            client_task_id: task.client_task_id.clone(),
            params: Value::Object(task.params.clone()),
            priority: task.priority,
            timeout_seconds: i64::try_from(task.timeout_seconds).unwrap_or(i64::MAX),
            max_attempts: i32::try_from(task.max_attempts).unwrap_or(i32::MAX),
            attempts: i32::try_from(task.attempts_started).unwrap_or(i32::MAX),
            worker_id: task.shown_worker_id().map(str::to_owned),
            progress_percent: task.progress.as_ref().and_then(|progress| progress.percent),
            progress_message: task
                .progress
                .as_ref()
                .and_then(|progress| progress.message.clone()),
            error: task.shown_error(),
            exit_code: task.exit_code,
            submitted_at: task.submitted_at,
            submitted_by: task.submitted_by.clone(),
            started_at: task.started_at,
            finished_at: task.finished_at,
            updated_at: self.updated_at,
            stream_version: self.stream_version,
            last_position: self.last_position,
            inputs: serde_json::to_value(&task.inputs)
                .unwrap_or_else(|_| Value::Object(Default::default())),
            tenant: task.tenant.as_str().to_owned(),
            next_attempt_at: task.next_attempt_at,
            executor: task.executor_job.as_ref().map(|job| job.executor.clone()),
            executor_job_id: task.executor_job.as_ref().map(|job| job.job_id.clone()),
            executor_running_at: task.executor_job.as_ref().and_then(|job| job.running_at),
            depends_on: serde_json::to_value(&task.depends_on)
                .unwrap_or_else(|_| Value::Array(Vec::new())),
            on_parent_failure: task.on_parent_failure.as_str().to_owned(),
        })
    }
}

impl TaskRow {
    /// The task this row holds, as far as its later events, its row and its
    /// readers need it. A row keeps what readers are shown, not the whole
    /// task, so what it lacks is filled in the way that shows the same row
    /// again: a canceled task's reason is its shown error; a queued or
    /// canceled task's earlier worker, its result and artifacts (in
    /// `results`) and its progress's time are never shown and no later
    /// event needs them. So a reader shown this task sees what the row says.
    ///
    /// # Errors
    /// A status no event gives.
    fn into_task(self) -> Result<Task, String> {
        let row = self;
        let executor_job = match (row.executor, row.executor_job_id) {
            (Some(executor), Some(job_id)) => Some(task::ExecutorJob {
                executor,
                job_id,
                running_at: row.executor_running_at,
            }),
            _ => None,
        };
        let status = match row.status.as_str() {
            // Shown queued while its attempt's job waits (Task::shown_status);
            // a task queued for its next attempt has no job.
            "queued" if executor_job.is_some() => TaskStatus::Running,
            "queued" => TaskStatus::Queued,
            "waiting" => TaskStatus::Waiting,
            "running" => TaskStatus::Running,
            "succeeded" => TaskStatus::Succeeded,
            "failed" => TaskStatus::Failed,
            "timed_out" => TaskStatus::TimedOut,
            "canceled" => TaskStatus::Canceled,
            other => {
                return Err(format!(
                    "task {} has status {other:?} in the projection, which no event gives",
                    row.task_id
                ))
            }
        };
        let progress =
            (row.progress_percent.is_some() || row.progress_message.is_some()).then(|| Progress {
                percent: row.progress_percent,
                message: row.progress_message.clone(),
                recorded_at: row.updated_at,
            });
        let task = Task {
            id: TaskId(row.task_id),
            kind: row.kind,
            params: match row.params {
                Value::Object(params) => params,
                _ => serde_json::Map::new(),
            },
            inputs: serde_json::from_value(row.inputs).unwrap_or_default(),
            tenant: row
                .tenant
                .parse()
                .map_err(|error| format!("task {} in the projection: {error}", row.task_id))?,
            frontend_id: row.frontend_id,
            client_task_id: row.client_task_id,
            priority: row.priority,
            timeout_seconds: u64::try_from(row.timeout_seconds).unwrap_or(0),
            max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
            submitted_at: row.submitted_at,
            submitted_by: row.submitted_by,
            depends_on: serde_json::from_value(row.depends_on).unwrap_or_default(),
            on_parent_failure: match row.on_parent_failure.as_str() {
                "run" => OnParentFailure::Run,
                _ => OnParentFailure::Cancel,
            },
            status,
            attempts_started: u32::try_from(row.attempts).unwrap_or(0),
            worker_id: row.worker_id,
            started_at: row.started_at,
            progress,
            finished_at: row.finished_at,
            cancel_reason: if status == TaskStatus::Canceled {
                row.error.clone()
            } else {
                None
            },
            error: row.error,
            exit_code: row.exit_code,
            result: None,
            artifacts: Vec::new(),
            next_attempt_at: row.next_attempt_at,
            executor_job,
        };
        Ok(task)
    }

    fn from_row(row: &PgRow) -> Self {
        Self {
            task_id: row.get(0),
            kind: row.get(1),
            status: row.get(2),
            frontend_id: row.get(3),
            client_task_id: row.get(4),
            params: row.get(5),
            priority: row.get(6),
            timeout_seconds: row.get(7),
            max_attempts: row.get(8),
            attempts: row.get(9),
            worker_id: row.get(10),
            progress_percent: row.get(11),
            progress_message: row.get(12),
            error: row.get(13),
            exit_code: row.get(14),
            submitted_at: row.get(15),
            submitted_by: row.get(16),
            started_at: row.get(17),
            finished_at: row.get(18),
            updated_at: row.get(19),
            stream_version: row.get(20),
            last_position: row.get(21),
            inputs: row.get(22),
            tenant: row.get(23),
            next_attempt_at: row.get(24),
            executor: row.get(25),
            executor_job_id: row.get(26),
            executor_running_at: row.get(27),
            depends_on: row.get(28),
            on_parent_failure: row.get(29),
        }
    }
}

#[async_trait]
impl Projector for TasksProjector {
    describe! {
        name: "tasks",
        /// 2: a retry clears the progress (as the aggregate does). 3: tasks
        /// carry their input files, and a failed task has a `results` row
        /// with its logs. 4: tasks carry their tenant. (A waiting task's
        /// `next_attempt_at`, migration 17, needs no rebuild: no event
        /// before it has a due time, and NULL is what they show. Nor do the
        /// executor job's columns, migration 18: no event before them has
        /// a job. Nor do a task's parents, migration 22: no event before
        /// them has parents.)
        version: 4,
        tables: ["tasks", "results"],
        schema: concat!(
            include_str!("../../../migrations/0003_task_read_models.sql"),
            include_str!("../../../migrations/0011_task_inputs_and_failed_logs.sql"),
            include_str!("../../../migrations/0013_task_tenants.sql"),
            include_str!("../../../migrations/0017_task_retry_due.sql"),
            include_str!("../../../migrations/0018_task_executor_jobs.sql"),
            include_str!("../../../migrations/0022_task_graphs.sql")
        ),
    }

    fn projects(&self, event: &RecordedEvent) -> bool {
        TaskId::from_stream_id(&event.stream_id).is_some()
    }

    /// Folds the batch's events into the rows they touch (read once from
    /// the table when the task came before this batch), then writes every
    /// touched row in one statement and every new result in another: three
    /// round trips per batch however many events it holds. The rows are the
    /// same as applying each event in turn would give.
    async fn apply(&self, tx: &Batch<'_>, events: &[RecordedEvent]) -> Result<(), ProjectorError> {
        let decoded: Vec<(Uuid, &RecordedEvent, TaskEvent)> =
            events_of(events, TaskId::from_stream_id)
                .map(|decoded| {
                    decoded.map(|(TaskId(task_id), recorded, event)| (task_id, recorded, event))
                })
                .collect::<Result<_, _>>()?;
        if decoded.is_empty() {
            return Ok(());
        }

        // The rows of every task the batch touches, but those whose
        // stream it starts: a `TaskSubmitted` at version 1 is the first
        // event of its stream (the log keeps one event per stream and
        // version), so its task has no row yet. Any other `TaskSubmitted`
        // is looked up, and refused by the fold below if its row exists.
        let mut first_seen = std::collections::HashSet::with_capacity(decoded.len());
        let earlier: Vec<Uuid> = decoded
            .iter()
            .filter(|(task_id, recorded, event)| {
                first_seen.insert(*task_id)
                    && !(recorded.version == 1 && matches!(event, TaskEvent::Submitted(_)))
            })
            .map(|(task_id, _, _)| *task_id)
            .collect();
        let mut tasks: HashMap<Uuid, Projected> = HashMap::with_capacity(decoded.len());
        if !earlier.is_empty() {
            let select = format!("SELECT {COLUMNS} FROM tasks WHERE task_id = ANY($1)");
            for row in tx.query(&select, &[&earlier]).await? {
                let row = TaskRow::from_row(&row);
                let task_id = row.task_id;
                let projected = Projected::from_row(row).map_err(|reason| {
                    // Reported at the task's first event of the batch.
                    let global_position = decoded
                        .iter()
                        .find(|(id, _, _)| *id == task_id)
                        .map_or(0, |(_, recorded, _)| recorded.global_position);
                    ProjectorError::Event {
                        global_position,
                        reason,
                    }
                })?;
                tasks.insert(task_id, projected);
            }
        }

        // Fold, in event order.
        let mut results = Vec::new();
        for (task_id, recorded, event) in &decoded {
            match (tasks.get_mut(task_id), event) {
                (Some(_), TaskEvent::Submitted(_)) => {
                    // A second submission of one task: stop rather than guess.
                    return Err(ProjectorError::Event {
                        global_position: recorded.global_position,
                        reason: format!("task {task_id} is already in the projection"),
                    });
                }
                (None, TaskEvent::Submitted(_)) => {
                    let mut projected = Projected {
                        state: None,
                        updated_at: recorded.recorded_at,
                        stream_version: 0,
                        last_position: 0,
                    };
                    projected.apply(recorded, event);
                    tasks.insert(*task_id, projected);
                }
                (Some(projected), event) => {
                    if task::fits(&projected.state, event) {
                        if let Some(result) = result_row(*task_id, recorded, event)? {
                            results.push(result);
                        }
                    }
                    projected.apply(recorded, event);
                }
                (None, event) => {
                    // A later event for a task the projection does not have:
                    // the log and the projection disagree; stop.
                    return Err(ProjectorError::Event {
                        global_position: recorded.global_position,
                        reason: format!(
                            "no task row for {task_id} to apply {}",
                            event.event_type()
                        ),
                    });
                }
            }
        }
        let mut touched: Vec<TaskRow> = tasks.values().filter_map(Projected::row).collect();
        touched.sort_by_key(|row| row.task_id);
        write_rows(tx, &touched.iter().collect::<Vec<_>>()).await?;
        if !results.is_empty() {
            write_results(tx, &results).await?;
        }
        Ok(())
    }
}

/// The `results` row of a success or a failure (their logs), for an event
/// that fits its task.
fn result_row(
    task_id: Uuid,
    recorded: &RecordedEvent,
    event: &TaskEvent,
) -> Result<Option<ResultRow>, ProjectorError> {
    let malformed = |error: serde_json::Error| ProjectorError::Event {
        global_position: recorded.global_position,
        reason: error.to_string(),
    };
    Ok(match event {
        TaskEvent::Succeeded(succeeded) => Some(ResultRow {
            task_id,
            attempt: i32::try_from(succeeded.attempt).unwrap_or(i32::MAX),
            result: Value::Object(succeeded.result.clone()),
            exit_code: Some(succeeded.exit_code),
            artifacts: serde_json::to_value(&succeeded.artifacts).map_err(malformed)?,
            finished_at: succeeded.finished_at,
            status: "succeeded",
        }),
        TaskEvent::Failed(failed) => Some(ResultRow {
            task_id,
            attempt: i32::try_from(failed.attempt).unwrap_or(i32::MAX),
            result: Value::Object(serde_json::Map::new()),
            exit_code: failed.exit_code,
            artifacts: serde_json::to_value(&failed.artifacts).map_err(malformed)?,
            finished_at: failed.failed_at,
            status: "failed",
        }),
        _ => None,
    })
}

/// Writes the rows (as column arrays, one statement).
async fn write_rows(tx: &Batch<'_>, rows: &[&TaskRow]) -> Result<(), tokio_postgres::Error> {
    fn column<'a, T>(rows: &[&'a TaskRow], get: impl Fn(&'a TaskRow) -> T) -> Vec<T> {
        rows.iter().map(|row| get(row)).collect()
    }
    tx.execute(
        UPSERT,
        &[
            &column(rows, |r| r.task_id),
            &column(rows, |r| r.kind.as_str()),
            &column(rows, |r| r.status.as_str()),
            &column(rows, |r| r.frontend_id.as_str()),
            &column(rows, |r| r.client_task_id.as_deref()),
            &column(rows, |r| &r.params),
            &column(rows, |r| r.priority),
            &column(rows, |r| r.timeout_seconds),
            &column(rows, |r| r.max_attempts),
            &column(rows, |r| r.attempts),
            &column(rows, |r| r.worker_id.as_deref()),
            &column(rows, |r| r.progress_percent),
            &column(rows, |r| r.progress_message.as_deref()),
            &column(rows, |r| r.error.as_deref()),
            &column(rows, |r| r.exit_code),
            &column(rows, |r| r.submitted_at),
            &column(rows, |r| r.submitted_by.as_deref()),
            &column(rows, |r| r.started_at),
            &column(rows, |r| r.finished_at),
            &column(rows, |r| r.updated_at),
            &column(rows, |r| r.stream_version),
            &column(rows, |r| r.last_position),
            &column(rows, |r| &r.inputs),
            &column(rows, |r| r.tenant.as_str()),
            &column(rows, |r| r.next_attempt_at),
            &column(rows, |r| r.executor.as_deref()),
            &column(rows, |r| r.executor_job_id.as_deref()),
            &column(rows, |r| r.executor_running_at),
            &column(rows, |r| &r.depends_on),
            &column(rows, |r| r.on_parent_failure.as_str()),
        ],
    )
    .await?;
    Ok(())
}

/// Inserts the results (as column arrays, one statement).
async fn write_results(tx: &Batch<'_>, results: &[ResultRow]) -> Result<(), tokio_postgres::Error> {
    let task_ids: Vec<Uuid> = results.iter().map(|r| r.task_id).collect();
    let attempts: Vec<i32> = results.iter().map(|r| r.attempt).collect();
    let documents: Vec<&Value> = results.iter().map(|r| &r.result).collect();
    let exit_codes: Vec<Option<i32>> = results.iter().map(|r| r.exit_code).collect();
    let artifacts: Vec<&Value> = results.iter().map(|r| &r.artifacts).collect();
    let finished: Vec<DateTime<Utc>> = results.iter().map(|r| r.finished_at).collect();
    let statuses: Vec<&str> = results.iter().map(|r| r.status).collect();
    tx.execute(
        RESULTS,
        &[
            &task_ids,
            &attempts,
            &documents,
            &exit_codes,
            &artifacts,
            &finished,
            &statuses,
        ],
    )
    .await?;
    Ok(())
}
