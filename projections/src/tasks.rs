//! The `tasks` projector: one row per task in `tasks` (status, attempts,
//! timestamps, error, stream version) and one row per succeeded task in
//! `results` (result document, exit code, artifacts).
//!
//! Deterministic: every value comes from the events (`updated_at` is the
//! event's `recorded_at`), so a rebuild gives the same rows.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::RecordedEvent;
use tokio_postgres::{Row as PgRow, Transaction};
use uuid::Uuid;

use crate::runtime::{Projector, ProjectorError};

/// Projects task events into `tasks` and `results`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TasksProjector;

/// The columns of `tasks`, in the order [`TaskRow`] reads and writes them.
const COLUMNS: &str = "task_id, kind, status, frontend_id, client_task_id, params, priority,
    timeout_seconds, max_attempts, attempts, worker_id, progress_percent, progress_message,
    error, exit_code, submitted_at, submitted_by, started_at, finished_at, updated_at,
    stream_version, last_position, inputs";

/// Every row a batch touched, written back in one statement.
const UPSERT: &str = "INSERT INTO tasks (task_id, kind, status, frontend_id, client_task_id,
        params, priority, timeout_seconds, max_attempts, attempts, worker_id, progress_percent,
        progress_message, error, exit_code, submitted_at, submitted_by, started_at, finished_at,
        updated_at, stream_version, last_position, inputs)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::jsonb[], $7::int4[], $8::int8[], $9::int4[], $10::int4[], $11::text[],
        $12::float8[], $13::text[], $14::text[], $15::int4[], $16::timestamptz[], $17::text[],
        $18::timestamptz[], $19::timestamptz[], $20::timestamptz[], $21::int8[], $22::int8[],
        $23::jsonb[])
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
        inputs = EXCLUDED.inputs";

/// The results of the tasks that succeeded or failed in a batch (a second
/// result for a task violates the primary key: the log and the projection
/// disagree).
const RESULTS: &str =
    "INSERT INTO results (task_id, attempt, result, exit_code, artifacts, finished_at, status)
     SELECT * FROM unnest($1::uuid[], $2::int4[], $3::jsonb[], $4::int4[], $5::jsonb[],
        $6::timestamptz[], $7::text[])";

/// One row of `tasks`, folded in memory.
#[derive(Debug, Clone)]
struct TaskRow {
    task_id: Uuid,
    kind: String,
    status: &'static str,
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

/// The stored status text (`tasks.status`).
fn status(text: &str) -> &'static str {
    match text {
        "queued" => "queued",
        "running" => "running",
        "succeeded" => "succeeded",
        "failed" => "failed",
        "timed_out" => "timed_out",
        "canceled" => "canceled",
        _ => "unknown",
    }
}

impl TaskRow {
    fn from_row(row: &PgRow) -> Self {
        Self {
            task_id: row.get(0),
            kind: row.get(1),
            status: status(row.get(2)),
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
        }
    }
}

#[async_trait]
impl Projector for TasksProjector {
    fn name(&self) -> &'static str {
        "tasks"
    }

    /// 2: a retry clears the progress (as the aggregate does). 3: tasks
    /// carry their input files, and a failed task has a `results` row with
    /// its logs.
    fn version(&self) -> u32 {
        3
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tasks", "results"]
    }

    fn schema(&self) -> &'static str {
        concat!(
            include_str!("../../migrations/0003_task_read_models.sql"),
            include_str!("../../migrations/0011_task_inputs_and_failed_logs.sql")
        )
    }

    /// Folds the batch's events into the rows they touch (read once from
    /// the table when the task came before this batch), then writes every
    /// touched row in one statement and every new result in another: three
    /// round trips per batch however many events it holds. The rows are the
    /// same as applying each event in turn would give.
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectorError> {
        let mut decoded = Vec::with_capacity(events.len());
        for recorded in events {
            let Some(TaskId(task_id)) = TaskId::from_stream_id(&recorded.stream_id) else {
                continue;
            };
            let event =
                TaskEvent::from_recorded(recorded).map_err(|error| ProjectorError::Event {
                    global_position: recorded.global_position,
                    reason: error.to_string(),
                })?;
            decoded.push((task_id, recorded, event));
        }
        if decoded.is_empty() {
            return Ok(());
        }

        // The rows of every task the batch touches (a task submitted in
        // this batch has none, unless the log submits it twice, which the
        // fold refuses).
        let earlier: Vec<Uuid> = decoded
            .iter()
            .map(|(task_id, _, _)| *task_id)
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        let mut rows: HashMap<Uuid, TaskRow> = HashMap::with_capacity(decoded.len());
        if !earlier.is_empty() {
            let select = format!("SELECT {COLUMNS} FROM tasks WHERE task_id = ANY($1)");
            for row in tx.query(&select, &[&earlier]).await? {
                let row = TaskRow::from_row(&row);
                rows.insert(row.task_id, row);
            }
        }

        // Fold, in event order.
        let mut order = Vec::new();
        let mut results = Vec::new();
        for (task_id, recorded, event) in &decoded {
            let row = rows.get_mut(task_id);
            match (row, event) {
                (Some(_), TaskEvent::Submitted(_)) => {
                    // A second submission of one task: stop rather than guess.
                    return Err(ProjectorError::Event {
                        global_position: recorded.global_position,
                        reason: format!("task {task_id} is already in the projection"),
                    });
                }
                (None, TaskEvent::Submitted(submitted)) => {
                    order.push(*task_id);
                    rows.insert(*task_id, submitted_row(*task_id, recorded, submitted));
                }
                (Some(row), event) => {
                    if let Some(result) = fold(row, recorded, event)? {
                        results.push(result);
                    }
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
        let mut touched: Vec<&TaskRow> = rows.values().collect();
        touched.sort_by_key(|row| row.task_id);
        write_rows(tx, &touched).await?;
        if !results.is_empty() {
            write_results(tx, &results).await?;
        }
        Ok(())
    }
}

/// The row a submission creates.
fn submitted_row(
    task_id: Uuid,
    recorded: &RecordedEvent,
    submitted: &taskledger_events::task::TaskSubmitted,
) -> TaskRow {
    TaskRow {
        task_id,
        kind: submitted.kind.clone(),
        status: "queued",
        frontend_id: submitted.frontend_id.clone(),
        client_task_id: submitted.client_task_id.clone(),
        params: Value::Object(submitted.params.clone()),
        priority: submitted.priority,
        timeout_seconds: i64::try_from(submitted.timeout_seconds).unwrap_or(i64::MAX),
        max_attempts: i32::try_from(submitted.max_attempts).unwrap_or(i32::MAX),
        attempts: 0,
        worker_id: None,
        progress_percent: None,
        progress_message: None,
        error: None,
        exit_code: None,
        submitted_at: submitted.submitted_at,
        submitted_by: submitted.submitted_by.clone(),
        started_at: None,
        finished_at: None,
        updated_at: recorded.recorded_at,
        stream_version: i64::try_from(recorded.version).unwrap_or(i64::MAX),
        last_position: i64::try_from(recorded.global_position).unwrap_or(i64::MAX),
        inputs: serde_json::to_value(&submitted.inputs)
            .unwrap_or_else(|_| Value::Object(Default::default())),
    }
}

/// Applies one later event to its task's row; a success also gives its
/// result row.
fn fold(
    row: &mut TaskRow,
    recorded: &RecordedEvent,
    event: &TaskEvent,
) -> Result<Option<ResultRow>, ProjectorError> {
    let mut result = None;
    match event {
        TaskEvent::Submitted(_) => {}
        TaskEvent::Canceled(canceled) => {
            row.status = "canceled";
            row.finished_at = Some(canceled.canceled_at);
            row.error = Some(
                canceled
                    .reason
                    .clone()
                    .unwrap_or_else(|| "canceled".to_owned()),
            );
            row.worker_id = None;
        }
        TaskEvent::Started(started) => {
            row.status = "running";
            row.attempts = i32::try_from(started.attempt).unwrap_or(i32::MAX);
            row.worker_id = Some(started.worker_id.clone());
            row.started_at = Some(started.started_at);
            row.progress_percent = None;
            row.progress_message = None;
        }
        TaskEvent::ProgressRecorded(progress) => {
            row.progress_percent = progress.percent;
            row.progress_message = progress.message.clone();
        }
        TaskEvent::Succeeded(succeeded) => {
            let artifacts = serde_json::to_value(&succeeded.artifacts).map_err(|error| {
                ProjectorError::Event {
                    global_position: recorded.global_position,
                    reason: error.to_string(),
                }
            })?;
            result = Some(ResultRow {
                task_id: row.task_id,
                attempt: i32::try_from(succeeded.attempt).unwrap_or(i32::MAX),
                result: Value::Object(succeeded.result.clone()),
                exit_code: Some(succeeded.exit_code),
                artifacts,
                finished_at: succeeded.finished_at,
                status: "succeeded",
            });
            row.status = "succeeded";
            row.exit_code = Some(succeeded.exit_code);
            row.finished_at = Some(succeeded.finished_at);
            row.error = None;
        }
        TaskEvent::Failed(failed) => {
            let artifacts =
                serde_json::to_value(&failed.artifacts).map_err(|error| ProjectorError::Event {
                    global_position: recorded.global_position,
                    reason: error.to_string(),
                })?;
            result = Some(ResultRow {
                task_id: row.task_id,
                attempt: i32::try_from(failed.attempt).unwrap_or(i32::MAX),
                result: Value::Object(serde_json::Map::new()),
                exit_code: failed.exit_code,
                artifacts,
                finished_at: failed.failed_at,
                status: "failed",
            });
            row.status = "failed";
            row.error = Some(failed.error.clone());
            row.exit_code = failed.exit_code;
            row.finished_at = Some(failed.failed_at);
        }
        TaskEvent::TimedOut(timed_out) => {
            row.status = "timed_out";
            row.error = Some(format!(
                "attempt {} ran past the task's timeout",
                timed_out.attempt
            ));
            row.finished_at = Some(timed_out.timed_out_at);
        }
        TaskEvent::Retried(retried) => {
            row.status = "queued";
            row.error = Some(retried.reason.clone());
            row.exit_code = retried.exit_code;
            row.worker_id = None;
            row.progress_percent = None;
            row.progress_message = None;
        }
    }
    row.updated_at = recorded.recorded_at;
    row.stream_version = i64::try_from(recorded.version).unwrap_or(i64::MAX);
    row.last_position = i64::try_from(recorded.global_position).unwrap_or(i64::MAX);
    Ok(result)
}

/// Writes the rows (as column arrays, one statement).
async fn write_rows(tx: &Transaction<'_>, rows: &[&TaskRow]) -> Result<(), tokio_postgres::Error> {
    fn column<'a, T>(rows: &[&'a TaskRow], get: impl Fn(&'a TaskRow) -> T) -> Vec<T> {
        rows.iter().map(|row| get(row)).collect()
    }
    tx.execute(
        UPSERT,
        &[
            &column(rows, |r| r.task_id),
            &column(rows, |r| r.kind.as_str()),
            &column(rows, |r| r.status),
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
        ],
    )
    .await?;
    Ok(())
}

/// Inserts the results (as column arrays, one statement).
async fn write_results(
    tx: &Transaction<'_>,
    results: &[ResultRow],
) -> Result<(), tokio_postgres::Error> {
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
