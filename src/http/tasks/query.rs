//! Reading tasks from the `tasks` read model: one by id, or a listing's
//! filters, the SQL they build, and the keyset cursor that pages it.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use taskledger_events::task::TaskId;
use tokio_postgres::types::ToSql;
use utoipa::IntoParams;
use uuid::Uuid;

use super::views::{Status, TaskView};
use crate::http::problem::Problem;
use crate::http::{connection, database_error, AppState};

/// Filters and paging of `GET /v1/tasks`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTasksQuery {
    /// Only these statuses, comma-separated (`queued,running`).
    pub status: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this frontend's tasks.
    pub frontend_id: Option<String>,
    /// Only tasks submitted after this instant (RFC 3339; write `+` as
    /// `%2B`, or use `Z`).
    #[param(format = DateTime)]
    pub submitted_after: Option<String>,
    /// Tasks per page, 1 to 1000 (default 100). For CSV: the most rows to
    /// export, 1 or more (default: all).
    #[param(minimum = 1)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Wait until the list reflects every event up to this global position
    /// (the `position` of a write).
    pub min_position: Option<u64>,
}

const TASK_COLUMNS: &str = "task_id, kind, status, frontend_id, client_task_id, params, priority,
    timeout_seconds, max_attempts, attempts, worker_id, progress_percent, progress_message,
    error, exit_code, submitted_at, submitted_by, started_at, finished_at, stream_version,
    last_position, inputs";

pub(super) async fn fetch_task(
    state: &AppState,
    task_id: TaskId,
) -> Result<Option<TaskView>, Problem> {
    let client = connection(state).await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1"
        ))
        .await
        .map_err(database_error("preparing a task read"))?;
    let row = client
        .query_opt(&statement, &[&task_id.0])
        .await
        .map_err(database_error("reading a task"))?;
    row.as_ref().map(TaskView::from_row).transpose()
}

/// A listing's filters, validated.
#[derive(Debug, Clone)]
pub(super) struct TaskFilter {
    statuses: Option<Vec<String>>,
    kind: Option<String>,
    frontend_id: Option<String>,
    submitted_after: Option<DateTime<Utc>>,
}

impl TaskFilter {
    pub(super) fn parse(query: &ListTasksQuery) -> Result<Self, Problem> {
        let statuses = query
            .status
            .as_deref()
            .map(|list| {
                list.split(',')
                    .map(|name| {
                        Status::parse(name.trim())
                            .map(|status| status.as_str().to_owned())
                            .ok_or_else(|| {
                                Problem::bad_request(format!(
                                    "unknown status {name:?}; use one or more of {}",
                                    Status::ALL.map(Status::as_str).join(", ")
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let submitted_after = query
            .submitted_after
            .as_deref()
            .map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|instant| instant.with_timezone(&Utc))
                    .map_err(|error| {
                        Problem::bad_request(format!(
                            "submitted_after {text:?} is not an RFC 3339 instant ({error}); \
                             write '+' as %2B or use Z, e.g. 2026-01-31T12:00:00Z"
                        ))
                    })
            })
            .transpose()?;
        for (name, value) in [("kind", &query.kind), ("frontend_id", &query.frontend_id)] {
            if value
                .as_deref()
                .is_some_and(|value| value.chars().any(char::is_control))
            {
                return Err(Problem::bad_request(format!(
                    "{name} must not contain control characters"
                )));
            }
        }
        Ok(Self {
            statuses,
            kind: query.kind.clone(),
            frontend_id: query.frontend_id.clone(),
            submitted_after,
        })
    }

    /// Up to `limit` tasks after `cursor`, newest first.
    pub(super) async fn page(
        &self,
        state: &AppState,
        cursor: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<TaskView>, Problem> {
        let mut conditions = Vec::new();
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(statuses) = &self.statuses {
            values.push(statuses);
            conditions.push(format!("status = ANY(${})", values.len()));
        }
        if let Some(kind) = &self.kind {
            values.push(kind);
            conditions.push(format!("kind = ${}", values.len()));
        }
        if let Some(frontend_id) = &self.frontend_id {
            values.push(frontend_id);
            conditions.push(format!("frontend_id = ${}", values.len()));
        }
        if let Some(after) = &self.submitted_after {
            values.push(after);
            conditions.push(format!("submitted_at > ${}", values.len()));
        }
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
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        let _ = write!(
            sql,
            " ORDER BY submitted_at DESC, task_id DESC LIMIT ${}",
            values.len()
        );
        let client = connection(state).await?;
        let statement = client
            .prepare_cached(&sql)
            .await
            .map_err(database_error("preparing a task listing"))?;
        let rows = client
            .query(&statement, &values)
            .await
            .map_err(database_error("listing tasks"))?;
        rows.iter().map(TaskView::from_row).collect()
    }
}

/// Where a page ends: the last task's submission time and id (the listing's
/// order). Sent as `{microseconds since the epoch}_{uuid}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    submitted_at: DateTime<Utc>,
    task_id: Uuid,
}

impl Cursor {
    pub(super) fn after(task: &TaskView) -> Self {
        Self {
            submitted_at: task.submitted_at,
            task_id: task.id,
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, Problem> {
        let bad = || Problem::bad_request("cursor must be the next_cursor of an earlier page");
        let (micros, id) = text.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let submitted_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        // Cursors come from submission times; anything outside years 1 to
        // 9999 was not made here (and PostgreSQL would refuse some of it).
        if !(1..=9999).contains(&submitted_at.year()) {
            return Err(bad());
        }
        Ok(Self {
            submitted_at,
            task_id: Uuid::parse_str(id).map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}_{}",
            self.submitted_at.timestamp_micros(),
            self.task_id.simple()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            submitted_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            task_id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::parse(&cursor.to_string()).unwrap(), cursor);
        let far = Cursor {
            submitted_at: DateTime::from_timestamp_micros(i64::MIN / 2).unwrap(),
            task_id: Uuid::nil(),
        };
        assert_eq!(Cursor::parse(&far.to_string()).unwrap_err().status, 400);
        for garbage in [
            "",
            "12",
            "x_y",
            "12_notauuid",
            "_",
            "1.5_00000000000000000000000000000000",
        ] {
            assert_eq!(
                Cursor::parse(garbage).unwrap_err().status,
                400,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn statuses_are_validated() {
        let query = ListTasksQuery {
            status: Some("queued, timed_out".into()),
            ..ListTasksQuery::default()
        };
        let filter = TaskFilter::parse(&query).unwrap();
        assert_eq!(
            filter.statuses.unwrap(),
            vec!["queued".to_owned(), "timed_out".to_owned()]
        );
        let query = ListTasksQuery {
            status: Some("done".into()),
            ..ListTasksQuery::default()
        };
        let problem = TaskFilter::parse(&query).unwrap_err();
        assert!(problem.detail.contains("\"done\""), "{}", problem.detail);
        assert!(problem.detail.contains("timed_out"), "{}", problem.detail);
    }
}
