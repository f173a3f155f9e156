//! `/v1/tasks`: submit, list (JSON pages or a CSV export), read one task,
//! its result and its history, and cancel.
//!
//! Writes go through the task aggregate ([`crate::submission`],
//! [`crate::commands`]); reads come from the `tasks` and `results` read
//! models, except a task's history and a task as it was (`as_of`,
//! `at_version`), which are read from the log itself. A write answers with
//! the task's stream version and the global position of its latest event; a
//! read given `min_version` (one task) or `min_position` (a list) waits until
//! the read model shows that much (see [`super::consistency`]).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, SubsecRound, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskledger_events::task::{CancelTask, Task, TaskCommand, TaskId, TaskStatus, Tasks};
use taskledger_events::{Direction, EventStore, Metadata, RecordedEvent, StreamId};
use taskledger_replay::{TaskAtError, Until};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Authorized, ReadHistory, ReadTasks, WriteTasks};
use super::consistency::{wait_for, wait_for_position};
use super::problem::{ApiBytes, ApiJson, ApiPath, ApiQuery, Problem};
use super::responses::{Authenticated, JsonBody, Malformed, ReadWait};
use super::AppState;
use super::{connection, database_error};
use crate::commands::execute;
use crate::submission::{self, Submission, SubmitError, Submitter};

/// The most tasks one JSON page holds.
pub const MAX_PAGE: u32 = 1_000;
/// Tasks per page when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 100;
/// The most events one history page holds.
pub const MAX_EVENTS_PAGE: u32 = 1_000;
/// Rows fetched per query while streaming a CSV export.
const CSV_CHUNK: i64 = 1_000;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a worker.
    Queued,
    /// A worker runs an attempt.
    Running,
    /// Succeeded (final).
    Succeeded,
    /// Failed with no attempt left (final).
    Failed,
    /// Ran past its timeout (final).
    TimedOut,
    /// Canceled (final).
    Canceled,
}

impl Status {
    const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Canceled,
    ];

    fn as_str(self) -> &'static str {
        TaskStatus::from(self).as_str()
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

impl From<TaskStatus> for Status {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Queued => Self::Queued,
            TaskStatus::Running => Self::Running,
            TaskStatus::Succeeded => Self::Succeeded,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::TimedOut => Self::TimedOut,
            TaskStatus::Canceled => Self::Canceled,
        }
    }
}

impl From<Status> for TaskStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Queued => Self::Queued,
            Status::Running => Self::Running,
            Status::Succeeded => Self::Succeeded,
            Status::Failed => Self::Failed,
            Status::TimedOut => Self::TimedOut,
            Status::Canceled => Self::Canceled,
        }
    }
}

/// A submission.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskRequest {
    /// A task kind from the service's configuration.
    #[schema(example = "url-analysis")]
    pub kind: String,
    /// The kind's parameters: strings, numbers or booleans.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"url": "http://example.test/"}))]
    pub params: Map<String, Value>,
    /// The submitting frontend; list and poll by it.
    #[schema(example = "web-frontend")]
    pub frontend_id: String,
    /// The frontend's own id for the task. Submitting the same one again
    /// returns the same task.
    pub client_task_id: Option<String>,
    /// -1000 to 1000, higher first; 0 when left out.
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// 1 to 604800 (7 days); the kind's timeout when left out.
    #[schema(minimum = 1, maximum = 604_800)]
    pub timeout_seconds: Option<u64>,
    /// 1 to 100; the kind's attempts when left out.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Input files by name (`{"page.html": "<sha256>"}`): each a blob
    /// uploaded with `POST /v1/blobs`, mounted read-only at `/in/{name}`.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, String>,
}

/// A cancellation (the body may be empty).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelTaskRequest {
    /// Why, for the task's history.
    pub reason: Option<String>,
}

/// The latest progress its running attempt reported.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProgressView {
    /// 0 to 100, when known.
    pub percent: Option<f64>,
    /// What it is doing.
    pub message: Option<String>,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskView {
    /// Its id.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Where it is in its life.
    pub status: Status,
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
    /// Its stream's version: pass it as `min_version` to read your write.
    pub stream_version: u64,
    /// The global position of its latest event: pass it as `min_position`
    /// to a list to read your write.
    pub position: u64,
}

impl TaskView {
    /// The view of a task folded from its stream. Equal to what the `tasks`
    /// projection holds once it has reached `stream_version`: the fields the
    /// projection derives (the error of a canceled or timed-out task, the
    /// worker of a queued or canceled one) come from the same derivation
    /// ([`Task::shown_error`], [`Task::shown_worker_id`]).
    pub fn from_task(task: &Task, stream_version: u64, position: u64) -> Self {
        Self {
            id: task.id.0,
            kind: task.kind.clone(),
            status: task.status.into(),
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
            stream_version,
            position,
        }
    }

    fn from_row(row: &Row) -> Result<Self, Problem> {
        let status: String = row.get("status");
        let status = Status::parse(&status).ok_or_else(|| {
            tracing::error!(%status, "the tasks read model holds an unknown status");
            Problem::internal()
        })?;
        let params = match row.get::<_, Value>("params") {
            Value::Object(params) => params,
            _ => Map::new(),
        };
        let percent: Option<f64> = row.get("progress_percent");
        let message: Option<String> = row.get("progress_message");
        Ok(Self {
            id: row.get("task_id"),
            kind: row.get("kind"),
            status,
            frontend_id: row.get("frontend_id"),
            client_task_id: row.get("client_task_id"),
            params,
            inputs: serde_json::from_value(row.get::<_, Value>("inputs")).unwrap_or_default(),
            priority: row.get("priority"),
            timeout_seconds: unsigned(row.get::<_, i64>("timeout_seconds")),
            max_attempts: unsigned(row.get::<_, i32>("max_attempts")),
            attempts: unsigned(row.get::<_, i32>("attempts")),
            worker_id: row.get("worker_id"),
            progress: (percent.is_some() || message.is_some())
                .then_some(ProgressView { percent, message }),
            error: row.get("error"),
            exit_code: row.get("exit_code"),
            submitted_at: row.get("submitted_at"),
            submitted_by: row.get("submitted_by"),
            started_at: row.get("started_at"),
            finished_at: row.get("finished_at"),
            stream_version: unsigned(row.get::<_, i64>("stream_version")),
            position: unsigned(row.get::<_, i64>("last_position")),
        })
    }
}

/// A database integer that is never negative (the projection writes only
/// counts, versions and positions there).
fn unsigned<I, U>(value: I) -> U
where
    U: TryFrom<I> + Default,
{
    U::try_from(value).unwrap_or_default()
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

/// Read-your-writes for one task.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadTaskQuery {
    /// Wait until the task shows at least this stream version (the
    /// `stream_version` of a write).
    pub min_version: Option<u64>,
}

/// Reading one task: now (from the read model, optionally waiting for a
/// version), or as it was (folded from the log).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetTaskQuery {
    /// Wait until the task shows at least this stream version (the
    /// `stream_version` of a write).
    pub min_version: Option<u64>,
    /// The task as it was at this instant (RFC 3339; write `+` as `%2B`, or
    /// use `Z`): its events recorded at or before it, folded from the log.
    /// Excludes `at_version` and `min_version`.
    #[param(format = DateTime)]
    pub as_of: Option<String>,
    /// The task as it was at this version of its stream, folded from the
    /// log. Excludes `as_of` and `min_version`.
    pub at_version: Option<u64>,
}

/// Paging of a task's history.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskEventsQuery {
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Accepted for symmetry with the other reads; the history is read from
    /// the log itself, which always holds every acknowledged write.
    pub min_version: Option<u64>,
}

/// Submits a task.
///
/// Retrying is safe with the same `client_task_id`, or with the same
/// `Idempotency-Key` header: the retry answers 200 with the task the first
/// try made (never a second task), or refuses when the request differs.
#[utoipa::path(
    post,
    path = "/v1/tasks",
    tag = "tasks",
    request_body = SubmitTaskRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
         min_length = 1, max_length = 255, pattern = "^[!-~]+$",
         description = "Makes a retry of this submission return the same task (1 to 255 visible ASCII characters, no spaces)")
    ),
    responses(
        (status = 201, description = "The task was created", body = TaskView,
            headers(("Location" = String, description = "The task: `/v1/tasks/{id}`"))),
        (status = 200, description = "An earlier try of this submission created the task", body = TaskView,
            headers(("Location" = String, description = "The task: `/v1/tasks/{id}`"))),
        Authenticated,
        JsonBody,
        (status = 400, description = "Malformed JSON, or an Idempotency-Key that is not 1 to 255 visible ASCII characters", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The client task id names a different task", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind, missing or unknown parameter, a field missing, mistyped or out of range, or a reused Idempotency-Key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn submit_task(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteTasks>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SubmitTaskRequest>,
) -> Result<Response, Problem> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII"))?;
            submission::check_idempotency_key(key).map_err(Problem::bad_request)?;
            Some(key)
        }
    };
    for (input, sha256) in &request.inputs {
        // A malformed digest is refused by the submission's own checks.
        if state.blobs.path(sha256).is_some() && !state.blobs.contains(sha256).await {
            return Err(submit_problem(submission::SubmitError::Kind(
                crate::config::KindError::MissingBlob {
                    input: input.clone(),
                    sha256: sha256.clone(),
                },
            )));
        }
    }
    let submitted = submission::submit(
        &state.store,
        &state.config,
        Submission {
            kind: request.kind,
            params: request.params,
            frontend_id: request.frontend_id,
            client_task_id: request.client_task_id,
            priority: request.priority,
            timeout_seconds: request.timeout_seconds,
            max_attempts: request.max_attempts,
            inputs: request.inputs,
        },
        Submitter {
            key_id: caller.key_id,
            idempotency_key,
        },
        now(),
    )
    .await
    .map_err(submit_problem)?;
    let view = TaskView::from_task(
        &submitted.task,
        submitted.stream_version,
        submitted.position,
    );
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location =
        HeaderValue::try_from(format!("/v1/tasks/{}", view.id)).map_err(|_| Problem::internal())?;
    Ok((status, [(header::LOCATION, location)], ApiJson(view)).into_response())
}

/// Lists tasks, newest first, as JSON pages or (with `Accept: text/csv`) as
/// one CSV export of every matching task.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    params(ListTasksQuery),
    responses(
        (status = 200, description = "A page of tasks, or the CSV export", content(
            (TaskPage = "application/json"),
            (String = "text/csv")
        )),
        Authenticated,
        (status = 400, description = "A malformed filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`min_position` is beyond the log's head (answered at once)", body = Problem, content_type = "application/problem+json"),
        ReadWait,
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn list_tasks(
    State(state): State<AppState>,
    _: Authorized<ReadTasks>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListTasksQuery>,
) -> Result<Response, Problem> {
    let filter = Arc::new(TaskFilter::parse(&query)?);
    let cursor = query.cursor.as_deref().map(Cursor::parse).transpose()?;
    let csv = wants_csv(&headers);
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if csv && limit == 0 {
        return Err(Problem::bad_request("limit must be 1 or more"));
    }
    if !csv && !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}; got {limit}"
        )));
    }
    if let Some(position) = query.min_position {
        wait_for_position(&state, "tasks", position).await?;
    }
    if csv {
        return Ok(csv_export(state, filter, cursor, query.limit));
    }
    // One more than asked, to know whether another page follows.
    let mut items = filter
        .page(&state, cursor.as_ref(), i64::from(limit) + 1)
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|task| Cursor::after(task).to_string())
    } else {
        None
    };
    Ok(ApiJson(TaskPage { items, next_cursor }).into_response())
}

/// Reads one task: as it is now (from the read model), or, with `as_of` or
/// `at_version`, as it was then (folded from its events in the log, for
/// auditors).
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id"), GetTaskQuery),
    responses(
        (status = 200, description = "The task (as it was, with `as_of` or `at_version`)", body = TaskView),
        Authenticated,
        ReadWait,
        (status = 400, description = "A malformed id or query, or more than one of `as_of`, `at_version`, `min_version`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task, or it did not exist yet at that point", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`at_version` or `min_version` beyond the task's stream (answered at once)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:read"]), ("api_key" = ["audit:read"]))
)]
pub async fn get_task(
    State(state): State<AppState>,
    _: Authorized<ReadHistory>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<GetTaskQuery>,
) -> Result<ApiJson<TaskView>, Problem> {
    let task_id = parse_task_id(&id)?;
    let until = match (&query.as_of, query.at_version, query.min_version) {
        (None, None, min_version) => {
            return read_task(&state, task_id, min_version).await.map(ApiJson)
        }
        (Some(text), None, None) => Until::Instant(
            DateTime::parse_from_rfc3339(text)
                .map(|instant| instant.with_timezone(&Utc))
                .map_err(|error| {
                    Problem::bad_request(format!(
                        "as_of {text:?} is not an RFC 3339 instant ({error}); \
                         write '+' as %2B or use Z, e.g. 2026-01-31T12:00:00Z"
                    ))
                })?,
        ),
        (None, Some(version), None) => Until::Version(version),
        _ => {
            let given: Vec<&str> = [
                ("as_of", query.as_of.is_some()),
                ("at_version", query.at_version.is_some()),
                ("min_version", query.min_version.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect();
            return Err(Problem::bad_request(format!(
                "{} exclude each other; give at most one",
                given.join(" and ")
            )));
        }
    };
    let at = taskledger_replay::task_at(&state.store, task_id, until)
        .await
        .map_err(|error| match error {
            error @ (TaskAtError::NoSuchTask(_) | TaskAtError::NotYet { .. }) => {
                Problem::not_found(error.to_string())
            }
            error @ TaskAtError::BeyondStream { .. } => Problem::unprocessable(error.to_string()),
            error @ TaskAtError::Unreadable { .. } => {
                tracing::error!(%error, "a task's history cannot be folded");
                Problem::internal()
            }
            TaskAtError::Store(error) => {
                tracing::error!(%error, task = %task_id, "reading a task's history failed");
                Problem::unavailable("the event store cannot be read right now", 1)
            }
        })?;
    Ok(ApiJson(TaskView::from_task(
        &at.task,
        at.version,
        at.position,
    )))
}

/// Reads a succeeded task's result document and the list of its files.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/result",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id"), ReadTaskQuery),
    responses(
        (status = 200, description = "The result", body = ResultView),
        Authenticated,
        ReadWait,
        Malformed,
        (status = 404, description = "No such task, or it has not succeeded", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`min_version` beyond the task's stream (answered at once)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn get_result(
    State(state): State<AppState>,
    _: Authorized<ReadTasks>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReadTaskQuery>,
) -> Result<ApiJson<ResultView>, Problem> {
    let task_id = parse_task_id(&id)?;
    let task = read_task(&state, task_id, query.min_version).await?;
    let client = connection(&state).await?;
    let statement = client
        .prepare_cached(
            "SELECT attempt, result, exit_code, artifacts, finished_at FROM results
             WHERE task_id = $1 AND status = 'succeeded'",
        )
        .await
        .map_err(database_error("preparing a result read"))?;
    let row = client
        .query_opt(&statement, &[&task_id.0])
        .await
        .map_err(database_error("reading a result"))?;
    let Some(row) = row else {
        let status = TaskStatus::from(task.status);
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no-result",
            "No result",
            format!(
                "task {} is {status}; only a succeeded task has a result (a failed task's logs are \
                 listed at /v1/tasks/{}/artifacts)",
                task_id.short(),
                task_id.0
            ),
        ));
    };
    let artifacts: Vec<ArtifactView> = serde_json::from_value(row.get("artifacts"))
        .map_err(|error| {
            tracing::error!(%error, task = %task_id, "unreadable artifacts in the results read model");
            Problem::internal()
        })?;
    Ok(ApiJson(ResultView {
        task_id: task_id.0,
        attempt: unsigned(row.get::<_, i32>("attempt")),
        result: row.get("result"),
        exit_code: row.get("exit_code"),
        artifacts,
        finished_at: row.get("finished_at"),
    }))
}

/// Cancels a queued or running task (a running task's container is stopped
/// by its runner).
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/cancel",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id")),
    request_body(content = Option<CancelTaskRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The task, canceled", body = TaskView),
        Authenticated,
        JsonBody,
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task already finished, or it kept changing", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn cancel_task(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteTasks>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<ApiJson<TaskView>, Problem> {
    let task_id = parse_task_id(&id)?;
    let request: CancelTaskRequest = super::problem::optional_json(&headers, &body)?;
    let command = TaskCommand::Cancel(CancelTask {
        task_id,
        reason: request.reason,
        canceled_at: now(),
    });
    let metadata = Metadata {
        actor: Some(caller.key_id.to_string()),
        ..Metadata::default()
    };
    let executed = execute::<Tasks>(
        &state.store,
        &task_id.stream_id(),
        command,
        Uuid::new_v4(),
        metadata,
    )
    .await?;
    let task = executed.state.as_ref().ok_or_else(Problem::internal)?;
    Ok(ApiJson(TaskView::from_task(
        task,
        executed.stream_version,
        executed.position,
    )))
}

/// A task's history, oldest first, read from the log (for auditors).
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/events",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id"), TaskEventsQuery),
    responses(
        (status = 200, description = "A page of the task's events", body = EventPage),
        Authenticated,
        Malformed,
        (status = 404, description = "No such task", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:read"]), ("api_key" = ["audit:read"]))
)]
pub async fn task_events(
    State(state): State<AppState>,
    _: Authorized<ReadHistory>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TaskEventsQuery>,
) -> Result<ApiJson<EventPage>, Problem> {
    let task_id = parse_task_id(&id)?;
    let bad_cursor = || Problem::bad_request("cursor must be the next_cursor of an earlier page");
    let after: u64 = match query.cursor.as_deref() {
        None => 0,
        Some(cursor) => cursor.parse().map_err(|_| bad_cursor())?,
    };
    if after == u64::MAX {
        return Err(bad_cursor());
    }
    let page = stream_page(&state, &task_id.stream_id(), after, query.limit).await?;
    if page.items.is_empty() && after == 0 {
        return Err(not_found(task_id));
    }
    Ok(ApiJson(page))
}

/// One page of a stream's events after stream version `after` (which must
/// be below `u64::MAX`): at most `limit` (1 to [`MAX_EVENTS_PAGE`], default
/// [`DEFAULT_PAGE`]) events as stored, with the next page's cursor when
/// more follow. Serves a task's history and the auditors' any-stream read.
pub(crate) async fn stream_page(
    state: &AppState,
    stream_id: &StreamId,
    after: u64,
    limit: Option<u32>,
) -> Result<EventPage, Problem> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be from 1 to {MAX_EVENTS_PAGE}; got {limit}"
        )));
    }
    // One more than asked, to know whether another page follows.
    let mut events = state
        .store
        .read_stream(stream_id, after + 1, Direction::Forward, limit as usize + 1)
        .await
        .map_err(|error| {
            tracing::error!(%error, stream = %stream_id, "reading a stream failed");
            Problem::unavailable("the event store cannot be read right now", 1)
        })?;
    let next_cursor = if events.len() > limit as usize {
        events.truncate(limit as usize);
        events.last().map(|event| event.version.to_string())
    } else {
        None
    };
    Ok(EventPage {
        items: events.into_iter().map(event_view).collect(),
        next_cursor,
    })
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

/// The current instant at the database's precision (microseconds), so what
/// a command answers equals what the read model later shows.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub(crate) fn parse_task_id(id: &str) -> Result<TaskId, Problem> {
    Uuid::parse_str(id)
        .map(TaskId)
        .map_err(|_| Problem::bad_request(format!("{id:?} is not a task id (a UUID)")))
}

fn not_found(task_id: TaskId) -> Problem {
    Problem::not_found(format!("task {task_id} does not exist"))
}

const TASK_COLUMNS: &str = "task_id, kind, status, frontend_id, client_task_id, params, priority,
    timeout_seconds, max_attempts, attempts, worker_id, progress_percent, progress_message,
    error, exit_code, submitted_at, submitted_by, started_at, finished_at, stream_version,
    last_position, inputs";

/// The task from the read model; with `min_version`, once it shows at least
/// that version.
async fn read_task(
    state: &AppState,
    task_id: TaskId,
    min_version: Option<u64>,
) -> Result<TaskView, Problem> {
    let Some(min_version) = min_version else {
        return fetch_task(state, task_id)
            .await?
            .ok_or_else(|| not_found(task_id));
    };
    let shows = |task: &TaskView| task.stream_version >= min_version;
    if let Some(task) = fetch_task(state, task_id).await?.filter(shows) {
        return Ok(task);
    }
    // Waiting for a version the task will never have is the caller's
    // mistake, not the service's lag: the log says which, at once.
    let newest = state
        .store
        .read_stream(&task_id.stream_id(), u64::MAX, Direction::Backward, 1)
        .await
        .map_err(|error| {
            tracing::error!(%error, task = %task_id, "reading a task's stream failed");
            Problem::unavailable("the event store cannot be read right now", 1)
        })?;
    match newest.first().map(|event| event.version) {
        None => return Err(not_found(task_id)),
        Some(version) if version < min_version => {
            return Err(Problem::unprocessable(format!(
                "min_version {min_version} is beyond task {task_id}, which is at version {version}"
            )))
        }
        Some(_) => {}
    }
    wait_for(
        state,
        || format!("version {min_version} of task {task_id}"),
        || async { Ok(fetch_task(state, task_id).await?.filter(shows)) },
    )
    .await
}

async fn fetch_task(state: &AppState, task_id: TaskId) -> Result<Option<TaskView>, Problem> {
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
struct TaskFilter {
    statuses: Option<Vec<String>>,
    kind: Option<String>,
    frontend_id: Option<String>,
    submitted_after: Option<DateTime<Utc>>,
}

impl TaskFilter {
    fn parse(query: &ListTasksQuery) -> Result<Self, Problem> {
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
    async fn page(
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
struct Cursor {
    submitted_at: DateTime<Utc>,
    task_id: Uuid,
}

impl Cursor {
    fn after(task: &TaskView) -> Self {
        Self {
            submitted_at: task.submitted_at,
            task_id: task.id,
        }
    }

    fn parse(text: &str) -> Result<Self, Problem> {
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
const CSV_HEADER: [&str; 18] = [
    "id",
    "kind",
    "status",
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
];

/// Streams every task the filter matches (at most `limit`) as CSV, a chunk
/// of rows at a time, so an export of any size takes constant memory.
fn csv_export(
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
        let mut writer = csv::Writer::from_writer(Vec::new());
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
            export
                .filter
                .page(&export.state, export.cursor.as_ref(), want)
                .await
        };
        let tasks = match page {
            Ok(tasks) => tasks,
            Err(problem) => {
                // The status line is gone; ending the body early is the only
                // way left to tell the client the export is incomplete.
                tracing::error!(detail = %problem.detail, "a CSV export failed part way");
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

fn csv_record(task: &TaskView) -> [String; 18] {
    let optional = |value: &Option<String>| spreadsheet_safe(value.as_deref().unwrap_or_default());
    let instant =
        |value: &Option<DateTime<Utc>>| value.map(|at| at.to_rfc3339()).unwrap_or_default();
    [
        task.id.to_string(),
        spreadsheet_safe(&task.kind),
        task.status.as_str().to_owned(),
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
    ]
}

fn submit_problem(error: SubmitError) -> Problem {
    match error {
        SubmitError::Kind(error) => Problem::unprocessable(error.to_string()),
        error @ SubmitError::IdempotencyKeyReused { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            error.to_string(),
        ),
        error @ SubmitError::ClientTaskIdTaken { .. } => Problem::conflict(error.to_string()),
        SubmitError::Command(error) => error.into(),
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
