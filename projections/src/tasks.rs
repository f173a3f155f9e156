//! The `tasks` projector: one row per task in `tasks` (status, attempts,
//! timestamps, error, stream version) and one row per succeeded task in
//! `results` (result document, exit code, artifacts).
//!
//! Deterministic: every value comes from the events (`updated_at` is the
//! event's `recorded_at`), so a rebuild gives the same rows.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::RecordedEvent;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Statement, Transaction};
use uuid::Uuid;

use crate::runtime::{Projector, ProjectorError};

/// Projects task events into `tasks` and `results`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TasksProjector;

const SUBMITTED: &str =
    "INSERT INTO tasks (task_id, kind, status, frontend_id, client_task_id, params,
        priority, timeout_seconds, max_attempts, submitted_at, submitted_by,
        updated_at, stream_version, last_position)
     VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
const CANCELED: &str =
    "UPDATE tasks SET status = 'canceled', finished_at = $2, error = $3, worker_id = NULL,
        updated_at = $4, stream_version = $5, last_position = $6 WHERE task_id = $1";
const STARTED: &str =
    "UPDATE tasks SET status = 'running', attempts = $2, worker_id = $3, started_at = $4,
        progress_percent = NULL, progress_message = NULL,
        updated_at = $5, stream_version = $6, last_position = $7 WHERE task_id = $1";
const PROGRESS: &str = "UPDATE tasks SET progress_percent = $2, progress_message = $3,
        updated_at = $4, stream_version = $5, last_position = $6 WHERE task_id = $1";
const SUCCEEDED: &str =
    "UPDATE tasks SET status = 'succeeded', exit_code = $2, finished_at = $3, error = NULL,
        updated_at = $4, stream_version = $5, last_position = $6 WHERE task_id = $1";
const RESULT: &str =
    "INSERT INTO results (task_id, attempt, result, exit_code, artifacts, finished_at)
     VALUES ($1, $2, $3, $4, $5, $6)";
const FAILED: &str =
    "UPDATE tasks SET status = 'failed', error = $2, exit_code = $3, finished_at = $4,
        updated_at = $5, stream_version = $6, last_position = $7 WHERE task_id = $1";
const TIMED_OUT: &str = "UPDATE tasks SET status = 'timed_out', error = $2, finished_at = $3,
        updated_at = $4, stream_version = $5, last_position = $6 WHERE task_id = $1";
const RETRIED: &str =
    "UPDATE tasks SET status = 'queued', error = $2, exit_code = $3, worker_id = NULL,
        progress_percent = NULL, progress_message = NULL, updated_at = $4, stream_version = $5, last_position = $6 WHERE task_id = $1";

#[async_trait]
impl Projector for TasksProjector {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tasks", "results"]
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectorError> {
        let mut writes = Vec::with_capacity(events.len() + 8);
        for recorded in events {
            let Some(TaskId(task_id)) = TaskId::from_stream_id(&recorded.stream_id) else {
                continue;
            };
            let event =
                TaskEvent::from_recorded(recorded).map_err(|error| ProjectorError::Event {
                    global_position: recorded.global_position,
                    reason: error.to_string(),
                })?;
            writes.extend(writes_for(task_id, recorded, &event)?);
        }
        // Each statement is prepared once per batch, and the writes are
        // pipelined: sent in order without waiting for each answer, and run
        // by the server in that order, so a task's rows change in event
        // order. One round trip per batch instead of two per event.
        let mut statements: HashMap<&'static str, Statement> = HashMap::new();
        for write in &writes {
            if !statements.contains_key(write.sql) {
                statements.insert(write.sql, tx.prepare(write.sql).await?);
            }
        }
        let results = futures::future::join_all(writes.iter().map(|write| {
            let params: Vec<&(dyn ToSql + Sync)> = write
                .params
                .iter()
                .map(|param| param.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let statement = &statements[write.sql];
            async move { tx.execute(statement, &params).await }
        }))
        .await;
        for (write, changed) in writes.iter().zip(results) {
            let changed = changed?;
            if changed != 1 {
                // A later event for a task the projection does not have: the
                // log and the projection disagree; stop rather than guess.
                return Err(ProjectorError::Event {
                    global_position: write.global_position,
                    reason: format!(
                        "no task row for {} to apply {}",
                        write.task_id, write.event_type
                    ),
                });
            }
        }
        Ok(())
    }
}

/// One row change: a statement, its parameters, and the event it is for.
struct Write {
    sql: &'static str,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
    task_id: Uuid,
    global_position: u64,
    event_type: &'static str,
}

/// The row changes `event` makes (each must change exactly one row).
fn writes_for(
    task_id: Uuid,
    recorded: &RecordedEvent,
    event: &TaskEvent,
) -> Result<Vec<Write>, ProjectorError> {
    let version = i64::try_from(recorded.version).unwrap_or(i64::MAX);
    let position = i64::try_from(recorded.global_position).unwrap_or(i64::MAX);
    let at = recorded.recorded_at;
    let write = |sql: &'static str, params: Vec<Box<dyn ToSql + Sync + Send>>| Write {
        sql,
        params,
        task_id,
        global_position: recorded.global_position,
        event_type: event.event_type(),
    };
    let writes = match event {
        TaskEvent::Submitted(submitted) => vec![write(
            SUBMITTED,
            vec![
                Box::new(task_id),
                Box::new(submitted.kind.clone()),
                Box::new(submitted.frontend_id.clone()),
                Box::new(submitted.client_task_id.clone()),
                Box::new(Value::Object(submitted.params.clone())),
                Box::new(submitted.priority),
                Box::new(i64::try_from(submitted.timeout_seconds).unwrap_or(i64::MAX)),
                Box::new(i32::try_from(submitted.max_attempts).unwrap_or(i32::MAX)),
                Box::new(submitted.submitted_at),
                Box::new(submitted.submitted_by.clone()),
                Box::new(at),
                Box::new(version),
                Box::new(position),
            ],
        )],
        TaskEvent::Canceled(canceled) => vec![write(
            CANCELED,
            vec![
                Box::new(task_id),
                Box::new(canceled.canceled_at),
                Box::new(
                    canceled
                        .reason
                        .clone()
                        .unwrap_or_else(|| "canceled".to_owned()),
                ),
                Box::new(at),
                Box::new(version),
                Box::new(position),
            ],
        )],
        TaskEvent::Started(started) => vec![write(
            STARTED,
            vec![
                Box::new(task_id),
                Box::new(i32::try_from(started.attempt).unwrap_or(i32::MAX)),
                Box::new(started.worker_id.clone()),
                Box::new(started.started_at),
                Box::new(at),
                Box::new(version),
                Box::new(position),
            ],
        )],
        TaskEvent::ProgressRecorded(progress) => vec![write(
            PROGRESS,
            vec![
                Box::new(task_id),
                Box::new(progress.percent),
                Box::new(progress.message.clone()),
                Box::new(at),
                Box::new(version),
                Box::new(position),
            ],
        )],
        TaskEvent::Succeeded(succeeded) => {
            let artifacts = serde_json::to_value(&succeeded.artifacts).map_err(|error| {
                ProjectorError::Event {
                    global_position: recorded.global_position,
                    reason: error.to_string(),
                }
            })?;
            vec![
                write(
                    RESULT,
                    vec![
                        Box::new(task_id),
                        Box::new(i32::try_from(succeeded.attempt).unwrap_or(i32::MAX)),
                        Box::new(Value::Object(succeeded.result.clone())),
                        Box::new(succeeded.exit_code),
                        Box::new(artifacts),
                        Box::new(succeeded.finished_at),
                    ],
                ),
                write(
                    SUCCEEDED,
                    vec![
                        Box::new(task_id),
                        Box::new(succeeded.exit_code),
                        Box::new(succeeded.finished_at),
                        Box::new(at),
                        Box::new(version),
                        Box::new(position),
                    ],
                ),
            ]
        }
        TaskEvent::Failed(failed) => vec![write(
            FAILED,
            vec![
                Box::new(task_id),
                Box::new(failed.error.clone()),
                Box::new(failed.exit_code),
                Box::new(failed.failed_at),
                Box::new(at),
                Box::new(version),
                Box::new(position),
            ],
        )],
        TaskEvent::TimedOut(timed_out) => vec![write(
            TIMED_OUT,
            vec![
                Box::new(task_id),
                Box::new(format!(
                    "attempt {} ran past the task's timeout",
                    timed_out.attempt
                )),
                Box::new(timed_out.timed_out_at),
                Box::new(at),
                Box::new(version),
                Box::new(position),
            ],
        )],
        TaskEvent::Retried(retried) => vec![write(
            RETRIED,
            vec![
                Box::new(task_id),
                Box::new(retried.reason.clone()),
                Box::new(retried.exit_code),
                Box::new(at),
                Box::new(version),
                Box::new(position),
            ],
        )],
    };
    Ok(writes)
}
