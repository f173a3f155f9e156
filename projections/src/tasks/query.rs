//! Reading the `tasks` and `results` read models, for the API: one task, a
//! filtered page of tasks (newest first, keyset-paged by submission time
//! and id), how many tasks have each status, a succeeded task's result,
//! and a task's files.
//!
//! Each read is one prepared (and cached) statement on the caller's pooled
//! connection; a task comes back as the projector's row shows it
//! ([`StoredTask`]), so what a reader is shown is derived where the row is
//! written.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use deadpool_postgres::ClientWrapper;
use serde_json::Value;
use taskledger_events::task::{Artifact, Task, TaskId, TaskStatus};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{TaskRow, COLUMNS};

/// Why a read of the task read models failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The database refused or failed the query.
    #[error("reading the task read models failed: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A row holds what the projector never writes (a bug or a damaged
    /// table).
    #[error("the task read models hold an unreadable row: {0}")]
    Corrupt(String),
}

/// A task as the `tasks` read model holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    /// The task, as far as its row shows it (see the projector's module).
    pub task: Task,
    /// Its stream's version.
    pub stream_version: u64,
    /// The global position of its latest event.
    pub position: u64,
}

impl StoredTask {
    fn from_row(row: &Row) -> Result<Self, ReadError> {
        let row = TaskRow::from_row(row);
        let stream_version = u64::try_from(row.stream_version).unwrap_or(0);
        let position = u64::try_from(row.last_position).unwrap_or(0);
        Ok(Self {
            task: row.into_task().map_err(ReadError::Corrupt)?,
            stream_version,
            position,
        })
    }
}

/// The task with `task_id`, if the read model has it.
///
/// # Errors
/// The database failed, or the row is unreadable.
pub async fn task(
    client: &ClientWrapper,
    task_id: TaskId,
) -> Result<Option<StoredTask>, ReadError> {
    let statement = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE task_id = $1"))
        .await?;
    let row = client.query_opt(&statement, &[&task_id.0]).await?;
    row.as_ref().map(StoredTask::from_row).transpose()
}

/// A listing's filters: every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks whose tenant is each of these: the caller's own and the
    /// one it asked for (two different names, or a name no task has, give
    /// none).
    pub tenants: Vec<String>,
    /// Only tasks with one of these statuses.
    pub statuses: Option<Vec<TaskStatus>>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this frontend's tasks.
    pub frontend_id: Option<String>,
    /// Only tasks submitted after this instant.
    pub submitted_after: Option<DateTime<Utc>>,
    /// Only tasks submitted before this instant.
    pub submitted_before: Option<DateTime<Utc>>,
}

/// Where a page of tasks ends: the last task's submission time and id (the
/// listing's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCursor {
    /// The last task's submission time.
    pub submitted_at: DateTime<Utc>,
    /// The last task's id.
    pub task_id: Uuid,
}

impl TaskCursor {
    /// The cursor after `task`.
    pub fn after(task: &Task) -> Self {
        Self {
            submitted_at: task.submitted_at,
            task_id: task.id.0,
        }
    }
}

/// Up to `limit` tasks that match `filter` and come after `cursor`, newest
/// first (by submission time, then id).
///
/// # Errors
/// The database failed, or a row is unreadable.
pub async fn tasks(
    client: &ClientWrapper,
    filter: &TaskFilter,
    cursor: Option<&TaskCursor>,
    limit: i64,
) -> Result<Vec<StoredTask>, ReadError> {
    let statuses = status_names(filter);
    let (mut conditions, mut values) = filter_conditions(filter, statuses.as_ref());
    if let Some(cursor) = cursor {
        values.push(&cursor.submitted_at);
        values.push(&cursor.task_id);
        conditions.push(format!(
            "(submitted_at, task_id) < (${}, ${})",
            values.len() - 1,
            values.len()
        ));
    }
    values.push(&limit);
    let mut sql = format!("SELECT {COLUMNS} FROM tasks");
    push_where(&mut sql, &conditions);
    let _ = write!(
        sql,
        " ORDER BY submitted_at DESC, task_id DESC LIMIT ${}",
        values.len()
    );
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &values).await?;
    rows.iter().map(StoredTask::from_row).collect()
}

/// How many tasks matching `filter` (its statuses aside) have each status;
/// statuses no such task has are left out.
///
/// # Errors
/// The database failed, or a row holds a status the projector never writes.
pub async fn status_counts(
    client: &ClientWrapper,
    filter: &TaskFilter,
) -> Result<Vec<(TaskStatus, u64)>, ReadError> {
    let filter = TaskFilter {
        statuses: None,
        ..filter.clone()
    };
    let (conditions, values) = filter_conditions(&filter, None);
    let mut sql = "SELECT status, count(*) FROM tasks".to_owned();
    push_where(&mut sql, &conditions);
    sql.push_str(" GROUP BY status");
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &values).await?;
    rows.iter()
        .map(|row| {
            let name: String = row.get(0);
            let status: TaskStatus = serde_json::from_value(Value::String(name.clone()))
                .map_err(|_| ReadError::Corrupt(format!("a task with status {name:?}")))?;
            Ok((status, u64::try_from(row.get::<_, i64>(1)).unwrap_or(0)))
        })
        .collect()
}

/// The names of `filter`'s statuses, if it has any, for [`filter_conditions`].
fn status_names(filter: &TaskFilter) -> Option<Vec<&'static str>> {
    filter
        .statuses
        .as_ref()
        .map(|statuses| statuses.iter().map(|status| status.as_str()).collect())
}

/// `filter`'s conditions on the `tasks` table (`statuses`: its statuses'
/// names) and their values, numbered `$1`, `$2`, … in order.
fn filter_conditions<'a>(
    filter: &'a TaskFilter,
    statuses: Option<&'a Vec<&'static str>>,
) -> (Vec<String>, Vec<&'a (dyn ToSql + Sync)>) {
    let mut conditions = Vec::new();
    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(statuses) = statuses {
        values.push(statuses);
        conditions.push(format!("status = ANY(${})", values.len()));
    }
    for tenant in &filter.tenants {
        values.push(tenant);
        conditions.push(format!("tenant = ${}", values.len()));
    }
    if let Some(kind) = &filter.kind {
        values.push(kind);
        conditions.push(format!("kind = ${}", values.len()));
    }
    if let Some(frontend_id) = &filter.frontend_id {
        values.push(frontend_id);
        conditions.push(format!("frontend_id = ${}", values.len()));
    }
    if let Some(after) = &filter.submitted_after {
        values.push(after);
        conditions.push(format!("submitted_at > ${}", values.len()));
    }
    if let Some(before) = &filter.submitted_before {
        values.push(before);
        conditions.push(format!("submitted_at < ${}", values.len()));
    }
    (conditions, values)
}

/// Appends ` WHERE` and `conditions` joined by `AND` to `sql`, if there
/// are any.
fn push_where(sql: &mut String, conditions: &[String]) {
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
}

/// A succeeded task's row of `results`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    /// The attempt that succeeded.
    pub attempt: u32,
    /// The result document.
    pub result: Value,
    /// The container's exit code.
    pub exit_code: i32,
    /// The files it produced.
    pub artifacts: Vec<Artifact>,
    /// When the attempt finished.
    pub finished_at: DateTime<Utc>,
}

/// The result of `task_id`, if it succeeded.
///
/// # Errors
/// The database failed, or the row is unreadable.
pub async fn succeeded_result(
    client: &ClientWrapper,
    task_id: TaskId,
) -> Result<Option<StoredResult>, ReadError> {
    let statement = client
        .prepare_cached(
            "SELECT attempt, result, exit_code, artifacts, finished_at FROM results
             WHERE task_id = $1 AND status = 'succeeded'",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&task_id.0]).await? else {
        return Ok(None);
    };
    Ok(Some(StoredResult {
        attempt: u32::try_from(row.get::<_, i32>("attempt")).unwrap_or(0),
        result: row.get("result"),
        exit_code: row.get("exit_code"),
        artifacts: artifacts_of(task_id, row.get("artifacts"))?,
        finished_at: row.get("finished_at"),
    }))
}

/// The files of `task_id` (succeeded, or failed: its logs), if it has a
/// row in `results`.
///
/// # Errors
/// The database failed, or the row is unreadable.
pub async fn artifacts(
    client: &ClientWrapper,
    task_id: TaskId,
) -> Result<Option<Vec<Artifact>>, ReadError> {
    let statement = client
        .prepare_cached("SELECT artifacts FROM results WHERE task_id = $1")
        .await?;
    client
        .query_opt(&statement, &[&task_id.0])
        .await?
        .map(|row| artifacts_of(task_id, row.get(0)))
        .transpose()
}

fn artifacts_of(task_id: TaskId, artifacts: Value) -> Result<Vec<Artifact>, ReadError> {
    serde_json::from_value(artifacts)
        .map_err(|error| ReadError::Corrupt(format!("task {task_id}'s artifacts: {error}")))
}
