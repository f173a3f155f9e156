//! The `tasks` projector: one row per task in `tasks` (status, attempts,
//! timestamps, error, stream version) and one row per succeeded task in
//! `results` (result document, exit code, artifacts).
//!
//! Deterministic: every value comes from the events (`updated_at` is the
//! event's `recorded_at`), so a rebuild gives the same rows.

use async_trait::async_trait;
use serde_json::Value;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::RecordedEvent;
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;
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
        for recorded in events {
            let Some(TaskId(task_id)) = TaskId::from_stream_id(&recorded.stream_id) else {
                continue;
            };
            let event =
                TaskEvent::from_recorded(recorded).map_err(|error| ProjectorError::Event {
                    global_position: recorded.global_position,
                    reason: error.to_string(),
                })?;
            apply_one(tx, task_id, recorded, &event).await?;
        }
        Ok(())
    }
}

async fn apply_one(
    tx: &Transaction<'_>,
    task_id: Uuid,
    recorded: &RecordedEvent,
    event: &TaskEvent,
) -> Result<(), ProjectorError> {
    let version = i64::try_from(recorded.version).unwrap_or(i64::MAX);
    let position = i64::try_from(recorded.global_position).unwrap_or(i64::MAX);
    let at = recorded.recorded_at;
    let changed = match event {
        TaskEvent::Submitted(submitted) => {
            let params = Value::Object(submitted.params.clone());
            let timeout = i64::try_from(submitted.timeout_seconds).unwrap_or(i64::MAX);
            let attempts = i32::try_from(submitted.max_attempts).unwrap_or(i32::MAX);
            let values: [&(dyn ToSql + Sync); 13] = [
                &task_id,
                &submitted.kind,
                &submitted.frontend_id,
                &submitted.client_task_id,
                &params,
                &submitted.priority,
                &timeout,
                &attempts,
                &submitted.submitted_at,
                &submitted.submitted_by,
                &at,
                &version,
                &position,
            ];
            tx.execute(SUBMITTED, &values).await?
        }
        TaskEvent::Canceled(canceled) => {
            let reason = canceled
                .reason
                .clone()
                .unwrap_or_else(|| "canceled".to_owned());
            tx.execute(
                CANCELED,
                &[
                    &task_id,
                    &canceled.canceled_at,
                    &reason,
                    &at,
                    &version,
                    &position,
                ],
            )
            .await?
        }
        TaskEvent::Started(started) => {
            let attempt = i32::try_from(started.attempt).unwrap_or(i32::MAX);
            tx.execute(
                STARTED,
                &[
                    &task_id,
                    &attempt,
                    &started.worker_id,
                    &started.started_at,
                    &at,
                    &version,
                    &position,
                ],
            )
            .await?
        }
        TaskEvent::ProgressRecorded(progress) => {
            tx.execute(
                PROGRESS,
                &[
                    &task_id,
                    &progress.percent,
                    &progress.message,
                    &at,
                    &version,
                    &position,
                ],
            )
            .await?
        }
        TaskEvent::Succeeded(succeeded) => {
            let attempt = i32::try_from(succeeded.attempt).unwrap_or(i32::MAX);
            let result = Value::Object(succeeded.result.clone());
            let artifacts = serde_json::to_value(&succeeded.artifacts).map_err(|error| {
                ProjectorError::Event {
                    global_position: recorded.global_position,
                    reason: error.to_string(),
                }
            })?;
            tx.execute(
                RESULT,
                &[
                    &task_id,
                    &attempt,
                    &result,
                    &succeeded.exit_code,
                    &artifacts,
                    &succeeded.finished_at,
                ],
            )
            .await?;
            tx.execute(
                SUCCEEDED,
                &[
                    &task_id,
                    &succeeded.exit_code,
                    &succeeded.finished_at,
                    &at,
                    &version,
                    &position,
                ],
            )
            .await?
        }
        TaskEvent::Failed(failed) => {
            tx.execute(
                FAILED,
                &[
                    &task_id,
                    &failed.error,
                    &failed.exit_code,
                    &failed.failed_at,
                    &at,
                    &version,
                    &position,
                ],
            )
            .await?
        }
        TaskEvent::TimedOut(timed_out) => {
            let error = format!("attempt {} ran past the task's timeout", timed_out.attempt);
            tx.execute(
                TIMED_OUT,
                &[
                    &task_id,
                    &error,
                    &timed_out.timed_out_at,
                    &at,
                    &version,
                    &position,
                ],
            )
            .await?
        }
        TaskEvent::Retried(retried) => {
            tx.execute(
                RETRIED,
                &[
                    &task_id,
                    &retried.reason,
                    &retried.exit_code,
                    &at,
                    &version,
                    &position,
                ],
            )
            .await?
        }
    };
    if changed != 1 {
        // A later event for a task the projection does not have: the log and
        // the projection disagree; stop rather than guess.
        return Err(ProjectorError::Event {
            global_position: recorded.global_position,
            reason: format!("no task row for {task_id} to apply {}", event.event_type()),
        });
    }
    Ok(())
}
