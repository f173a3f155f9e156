//! Reading tasks for `/v1/tasks`: a listing's query and filters, parsed
//! and checked, and the keyset cursor that pages it; the reads themselves
//! are the projector's ([`taskledger_projections::tasks::query`]).

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use taskledger_events::task::{TaskId, TaskStatus};
use taskledger_projections::tasks::query::{self, TaskCursor, TaskFilter};
use utoipa::IntoParams;
use uuid::Uuid;

use super::views::{Status, TaskView};
use crate::http::paging::Keyset;
use crate::http::problem::Problem;
use crate::http::{connection, read_error, AppState};

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
    /// Only this tenant's tasks (platform keys; for a tenant key only its
    /// own tenant gives any). A name no task has gives an empty list.
    pub tenant: Option<String>,
    /// Only tasks submitted after this instant (RFC 3339; write `+` as
    /// `%2B`, or use `Z`).
    #[param(format = DateTime)]
    pub submitted_after: Option<String>,
    /// Only tasks submitted before this instant (RFC 3339, as
    /// `submitted_after`).
    #[param(format = DateTime)]
    pub submitted_before: Option<String>,
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

/// The task from the read model, as the API shows it.
pub(super) async fn fetch_task(
    state: &AppState,
    task_id: TaskId,
) -> Result<Option<TaskView>, Problem> {
    let client = connection(state).await?;
    let stored = query::task(&client, task_id)
        .await
        .map_err(read_error("reading a task"))?;
    Ok(stored.as_ref().map(TaskView::from_stored))
}

/// A listing's filters, validated; 400 naming the one that is malformed.
/// The instant `text` gives as query parameter `name`; 400, with a hint
/// about the `+` a query string turns into a space, unless it is RFC 3339.
pub(super) fn parse_instant(name: &str, text: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|error| {
            Problem::bad_request(format!(
                "{name} {text:?} is not an RFC 3339 instant ({error}); \
                 write '+' as %2B or use Z, e.g. 2026-01-31T12:00:00Z"
            ))
        })
}

pub(super) fn parse_filter(query: &ListTasksQuery) -> Result<TaskFilter, Problem> {
    let statuses = query
        .status
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|name| {
                    Status::parse(name.trim())
                        .map(TaskStatus::from)
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
        .map(|text| parse_instant("submitted_after", text))
        .transpose()?;
    let submitted_before = query
        .submitted_before
        .as_deref()
        .map(|text| parse_instant("submitted_before", text))
        .transpose()?;
    for (name, value) in [
        ("kind", &query.kind),
        ("frontend_id", &query.frontend_id),
        ("tenant", &query.tenant),
    ] {
        if value
            .as_deref()
            .is_some_and(|value| value.chars().any(char::is_control))
        {
            return Err(Problem::bad_request(format!(
                "{name} must not contain control characters"
            )));
        }
    }
    Ok(TaskFilter {
        tenants: Vec::new(),
        statuses,
        kind: query.kind.clone(),
        frontend_id: query.frontend_id.clone(),
        submitted_after,
        submitted_before,
    })
}

/// Up to `limit` tasks matching `filter` after `cursor`, newest first.
pub(super) async fn page(
    state: &AppState,
    filter: &TaskFilter,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<TaskView>, Problem> {
    let client = connection(state).await?;
    let after = cursor.map(|cursor| TaskCursor {
        submitted_at: cursor.submitted_at,
        task_id: cursor.task_id,
    });
    let stored = query::tasks(&client, filter, after.as_ref(), limit)
        .await
        .map_err(read_error("listing tasks"))?;
    Ok(stored.iter().map(TaskView::from_stored).collect())
}

/// Where a page ends: the last task's submission time and id (the listing's
/// order). Sent as a [`Keyset`].
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
        let Keyset { at, id } = Keyset::parse(text)?;
        // Cursors come from submission times; anything outside years 1 to
        // 9999 was not made here (and PostgreSQL would refuse some of it).
        if !(1..=9999).contains(&at.year()) {
            return Err(Problem::bad_request(
                "cursor must be the next_cursor of an earlier page",
            ));
        }
        Ok(Self {
            submitted_at: at,
            task_id: id,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Keyset {
            at: self.submitted_at,
            id: self.task_id,
        }
        .fmt(f)
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
        let filter = parse_filter(&query).unwrap();
        let statuses: Vec<String> = filter
            .statuses
            .unwrap()
            .into_iter()
            .map(|status| status.as_str().to_owned())
            .collect();
        assert_eq!(statuses, vec!["queued".to_owned(), "timed_out".to_owned()]);
        let query = ListTasksQuery {
            status: Some("done".into()),
            ..ListTasksQuery::default()
        };
        let problem = parse_filter(&query).unwrap_err();
        assert!(problem.detail.contains("\"done\""), "{}", problem.detail);
        assert!(problem.detail.contains("timed_out"), "{}", problem.detail);
    }
}
