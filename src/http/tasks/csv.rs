//! `GET /v1/tasks` as one CSV export (`Accept: text/csv`): every matching
//! task, streamed a chunk of rows at a time.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde_json::Value;

use taskledger_projections::tasks::query::TaskFilter;

use super::query::{page, Cursor};
use super::views::TaskView;
use crate::http::AppState;

/// Rows fetched per query while streaming a CSV export.
const CSV_CHUNK: i64 = 1_000;

pub(crate) fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            let mut parts = media.split(';');
            let is_csv = parts
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/csv"));
            // `q=0` means "not acceptable".
            let refused = parts.any(|parameter| {
                parameter
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_csv && !refused
        })
}

/// The CSV columns, in order.
const CSV_HEADER: [&str; 21] = [
    "id",
    "kind",
    "status",
    "tenant",
    "frontend_id",
    "client_task_id",
    "priority",
    "attempts",
    "max_attempts",
    "timeout_seconds",
    "worker_id",
    "error",
    "exit_code",
    "submitted_at",
    "started_at",
    "finished_at",
    "stream_version",
    "position",
    "params",
    "executor",
    "executor_job_id",
];

/// Streams every task the filter matches (at most `limit`) as CSV, a chunk
/// of rows at a time, so an export of any size takes constant memory.
pub(super) fn csv_export(
    state: AppState,
    filter: Arc<TaskFilter>,
    cursor: Option<Cursor>,
    limit: Option<u32>,
) -> Response {
    struct Export {
        state: AppState,
        filter: Arc<TaskFilter>,
        cursor: Option<Cursor>,
        remaining: Option<u64>,
        header: bool,
        done: bool,
    }
    let export = Export {
        state,
        filter,
        cursor,
        remaining: limit.map(u64::from),
        header: true,
        done: false,
    };
    let chunks = stream::unfold(export, |mut export| async move {
        if export.done {
            return None;
        }
        let mut writer = ::csv::Writer::from_writer(Vec::new());
        if export.header {
            export.header = false;
            if writer.write_record(CSV_HEADER).is_err() {
                return None;
            }
        }
        let want = export
            .remaining
            .map_or(CSV_CHUNK, |remaining| CSV_CHUNK.min(remaining as i64));
        let page = if want == 0 {
            Ok(Vec::new())
        } else {
            page(&export.state, &export.filter, export.cursor.as_ref(), want).await
        };
        let tasks = match page {
            Ok(tasks) => tasks,
            Err(problem) => {
                // The status line is gone; ending the body early is the only
                // way left to tell the client the export is incomplete.
                let cause = problem.cause().unwrap_or(&problem.detail);
                tracing::error!(%cause, "a CSV export failed part way");
                export.done = true;
                return Some((
                    Err(std::io::Error::other("the export failed part way")),
                    export,
                ));
            }
        };
        if (tasks.len() as i64) < want || want == 0 {
            export.done = true;
        }
        if let Some(remaining) = export.remaining.as_mut() {
            *remaining -= tasks.len() as u64;
        }
        export.cursor = tasks.last().map(Cursor::after).or(export.cursor);
        for task in &tasks {
            if writer.write_record(csv_record(task)).is_err() {
                export.done = true;
                break;
            }
        }
        let bytes = writer.into_inner().unwrap_or_default();
        Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), export))
    });
    let mut response = Body::from_stream(chunks.boxed()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"tasks.csv\""),
    );
    response
}

/// Text a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a
/// leading tab or carriage return) gets a leading `'`, as OWASP advises for
/// CSV exports; numbers and times are never touched.
pub(crate) fn spreadsheet_safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn csv_record(task: &TaskView) -> [String; 21] {
    let optional = |value: &Option<String>| spreadsheet_safe(value.as_deref().unwrap_or_default());
    let instant =
        |value: &Option<DateTime<Utc>>| value.map(|at| at.to_rfc3339()).unwrap_or_default();
    [
        task.id.to_string(),
        spreadsheet_safe(&task.kind),
        task.status.as_str().to_owned(),
        // Tenant names are lowercase words: nothing a spreadsheet runs.
        task.tenant.clone(),
        spreadsheet_safe(&task.frontend_id),
        optional(&task.client_task_id),
        task.priority.to_string(),
        task.attempts.to_string(),
        task.max_attempts.to_string(),
        task.timeout_seconds.to_string(),
        optional(&task.worker_id),
        optional(&task.error),
        task.exit_code
            .map(|code| code.to_string())
            .unwrap_or_default(),
        task.submitted_at.to_rfc3339(),
        instant(&task.started_at),
        instant(&task.finished_at),
        task.stream_version.to_string(),
        task.position.to_string(),
        Value::Object(task.params.clone()).to_string(),
        // Names and ids an executor chose: defused like any text.
        optional(&task.executor_job.as_ref().map(|job| job.executor.clone())),
        optional(&task.executor_job.as_ref().map(|job| job.job_id.clone())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_is_chosen_by_accept() {
        let mut headers = HeaderMap::new();
        assert!(!wants_csv(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_csv(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;q=0.5, Text/CSV;q=0.9"),
        );
        assert!(wants_csv(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/csv;q=0, application/json"),
        );
        assert!(!wants_csv(&headers));
    }

    #[test]
    fn formulas_are_defused_in_text_cells() {
        assert_eq!(spreadsheet_safe("=cmd()"), "'=cmd()");
        assert_eq!(spreadsheet_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("web"), "web");
    }
}
