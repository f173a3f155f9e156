//! `/v1/tasks`: submit, list (JSON pages or a CSV export), read one task,
//! its result and its history, and cancel.
//!
//! Writes go through the task aggregate ([`crate::submission`],
//! [`crate::commands`]); reads come from the `tasks` and `results` read
//! models, except a task's history and a task as it was (`as_of`,
//! `at_version`), which are read from the log itself. A write answers with
//! the task's stream version and the global position of its latest event; a
//! read given `min_version` (one task) or `min_position` (a list) waits until
//! the read model shows that much (see [`super::consistency`]). Every route
//! is scoped to the caller's tenant ([`super::tenancy`]): another tenant's
//! task is answered as one that does not exist.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskledger_events::task::{
    CancelTask, OnParentFailure, TaskCommand, TaskId, TaskStatus, Tasks,
};
use taskledger_events::tenant::TenantName;
use taskledger_events::{Direction, EventStore, StreamId};
use taskledger_replay::{TaskAtError, Until};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Authorized, ReadHistory, ReadTasks, WriteTasks};
use super::consistency::{wait_for, wait_for_position};
use super::paging::{cut_page, page_size};
use super::problem::{
    optional_header, path_extractor, uuid_segment, ApiJson, ApiQuery, OptionalJson, Problem,
};
use super::responses::{
    Authenticated, JsonBody, Malformed, NoSuchTask, OtherTenant, PositionWait, ReadWait,
};
use super::tenancy;
use super::{connection, database_error, read_error, store_unreadable};
use super::{execute_as, AppState};
use crate::submission::{self, Submission, SubmitError, Submitter};

mod changes;
mod csv;
mod query;
pub mod stream;
mod views;

pub use self::changes::TaskChangeView;
use self::csv::csv_export;
pub(crate) use self::csv::{spreadsheet_safe, wants_csv};
pub use self::query::ListTasksQuery;
use self::query::{fetch_task, page, parse_filter, parse_instant, Cursor};
pub(crate) use self::views::event_view;
pub use self::views::{
    ArtifactView, EventPage, EventView, ExecutorJobView, ProgressView, ResultView, Status,
    TaskPage, TaskView,
};

/// The most tasks one JSON page holds.
pub const MAX_PAGE: u32 = 1_000;
/// Tasks per page when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 100;
/// The most events one history page holds.
pub const MAX_EVENTS_PAGE: u32 = 1_000;

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
    /// The tenant the task belongs to. Required with a platform key (all
    /// tenants); with a tenant key it may be left out (the key's tenant) or
    /// be the key's own tenant, and nothing else (403).
    #[schema(example = "acme")]
    pub tenant: Option<String>,
    /// The submitting frontend, the frontend's own label inside its tenant;
    /// list and poll by it. The tenant's name when left out.
    #[schema(example = "web-frontend")]
    pub frontend_id: Option<String>,
    /// The frontend's own id for the task. Submitting the same one again
    /// returns the same task.
    pub client_task_id: Option<String>,
    /// -1000 to 1000, higher first; 0 when left out. A free runner slot
    /// takes the waiting task of this kind with the highest priority (and of
    /// equal ones the earliest); through RabbitMQ priorities count by sign
    /// and order of magnitude (1–9, 10–99, 100–999, 1000 and the negatives
    /// alike), so 3 and 7 go in the order they came.
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// 1 to 604800 (7 days), and at most the kind's `max_timeout_seconds`
    /// (422 above it); the kind's timeout when left out.
    #[schema(minimum = 1, maximum = 604_800)]
    pub timeout_seconds: Option<u64>,
    /// 1 to 100, and at most the kind's `max_attempts` (422 above it); the
    /// kind's attempts when left out.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Input files by name (`{"page.html": "<sha256>"}`): each a blob
    /// uploaded with `POST /v1/blobs`, mounted read-only at `/in/{name}`.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, String>,
    /// Tasks of the same tenant this one depends on (at most 100, each
    /// once): it is `waiting` until every one has succeeded, and each
    /// one's artifacts are mounted read-only under `/in/{parent_id}/`. A
    /// task that does not exist or is another tenant's is refused (422),
    /// alike.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub depends_on: Vec<uuid::Uuid>,
    /// What a parent that fails, times out or is canceled does to this
    /// task: `cancel` (the default: it is canceled, the reason naming the
    /// parent) or `run` (it runs once every parent has ended).
    #[schema(value_type = Option<String>, example = "cancel")]
    pub on_parent_failure: Option<OnParentFailure>,
}

/// A cancellation (the body may be empty).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelTaskRequest {
    /// Why, for the task's history.
    pub reason: Option<String>,
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
/// Checks every input names a blob `tenant` uploaded and that is still
/// stored: another tenant's upload of the same bytes does not count, and is
/// refused exactly as a digest nobody uploaded (a malformed digest is
/// refused by the submission's own checks).
pub(crate) async fn check_inputs_uploaded(
    state: &AppState,
    tenant: &TenantName,
    inputs: &BTreeMap<String, String>,
) -> Result<(), Problem> {
    if inputs.is_empty() {
        return Ok(());
    }
    let digests: Vec<&str> = inputs.values().map(String::as_str).collect();
    let owned: HashSet<String> = connection(state)
        .await?
        .query(
            "SELECT sha256 FROM blob_owners WHERE tenant = $1 AND sha256 = ANY($2)",
            &[&tenant.as_str(), &digests],
        )
        .await
        .map_err(database_error("reading which blobs a tenant uploaded"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for (input, sha256) in inputs {
        if state.blobs.path(sha256).is_none() {
            continue;
        }
        if !owned.contains(sha256) || !state.blobs.contains(sha256).await {
            return Err(submit_problem(submission::SubmitError::Kind(
                crate::config::kind::KindError::MissingBlob {
                    input: input.clone(),
                    sha256: sha256.clone(),
                },
            )));
        }
    }
    Ok(())
}

/// The `Idempotency-Key` header of a submission (`POST /v1/tasks`,
/// `POST /v1/plans`), if sent: a 400 unless it is 1 to 255 visible ASCII
/// characters.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes a retry of this request answer what its first try made (1 to
    /// 255 visible ASCII characters, no spaces)
    #[param(
        rename = "Idempotency-Key",
        value_type = String,
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    pub key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let not_text = "Idempotency-Key must be visible ASCII";
        let key = optional_header(parts, "idempotency-key", not_text, |key| {
            submission::check_idempotency_key(key).map_err(Problem::bad_request)?;
            Ok(key.to_owned())
        })?;
        Ok(Self { key })
    }
}

#[utoipa::path(
    post, path = "/v1/tasks", tag = "tasks",
    request_body = SubmitTaskRequest,
    params(IdempotencyKey),
    responses(
        (status = 201, description = "The task was created", body = TaskView,
            headers(("Location" = String, description = "The task: `/v1/tasks/{id}`"))),
        (status = 200, description = "An earlier try of this submission created the task", body = TaskView,
            headers(("Location" = String, description = "The task: `/v1/tasks/{id}`"))),
        Authenticated, JsonBody,
        OtherTenant,
        (status = 409, description = "The client task id names a different task", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind, missing or unknown parameter, a field missing, mistyped or out of range, a reused Idempotency-Key, or a platform key naming no tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn submit_task(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteTasks>,
    idempotency: IdempotencyKey,
    ApiJson(request): ApiJson<SubmitTaskRequest>,
) -> Result<Response, Problem> {
    let tenant = tenancy::acting_tenant(
        &caller,
        request.tenant.as_deref(),
        tenancy::ActingFor::Submission,
    )?;
    check_inputs_uploaded(&state, &tenant, &request.inputs).await?;
    let submitted = submission::submit(
        &state.store,
        &state.config,
        Submission {
            kind: request.kind,
            params: request.params,
            frontend_id: request
                .frontend_id
                .unwrap_or_else(|| tenant.as_str().to_owned()),
            tenant,
            client_task_id: request.client_task_id,
            priority: request.priority,
            timeout_seconds: request.timeout_seconds,
            max_attempts: request.max_attempts,
            inputs: request.inputs,
            depends_on: request.depends_on.into_iter().map(TaskId).collect(),
            on_parent_failure: request.on_parent_failure.unwrap_or_default(),
        },
        Submitter {
            key_id: caller.key_id,
            idempotency_key: idempotency.key.as_deref(),
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
    created_or_retried(submitted.created, format!("/v1/tasks/{}", view.id), view)
}

/// The answer to a submission: 201 when it `created` what `location` names,
/// 200 when a retry found what an earlier try made; `view` and the
/// `Location` either way.
pub(crate) fn created_or_retried(
    created: bool,
    location: String,
    view: impl Serialize,
) -> Result<Response, Problem> {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = HeaderValue::try_from(location).map_err(|_| Problem::internal())?;
    Ok((status, [(header::LOCATION, location)], ApiJson(view)).into_response())
}

/// Lists tasks, newest first, as JSON pages or (with `Accept: text/csv`) as
/// one CSV export of every matching task: a tenant key's own tenant's only,
/// every tenant's for a platform key (`tenant` filters).
#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks",
    params(ListTasksQuery),
    responses(
        (status = 200, description = "A page of tasks, or the CSV export", content(
            (TaskPage = "application/json"),
            (String = "text/csv")
        )),
        Authenticated,
        (status = 400, description = "A malformed filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
        PositionWait,
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn list_tasks(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadTasks>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListTasksQuery>,
) -> Result<Response, Problem> {
    let mut filter = parse_filter(&query)?;
    filter.tenants = tenancy::listing_tenants(&caller, query.tenant.as_deref());
    let filter = Arc::new(filter);
    let cursor = query.cursor.as_deref().map(Cursor::parse).transpose()?;
    let csv = wants_csv(&headers);
    if csv && query.limit == Some(0) {
        return Err(Problem::bad_request("limit must be 1 or more"));
    }
    let limit = if csv {
        0
    } else {
        page_size(query.limit, DEFAULT_PAGE, MAX_PAGE)?
    };
    wait_for_position(&state, "tasks", query.min_position).await?;
    if csv {
        return Ok(csv_export(state, filter, cursor, query.limit));
    }
    // One more than asked, to know whether another page follows.
    let items = page(&state, &filter, cursor.as_ref(), i64::from(limit) + 1).await?;
    let (items, next_cursor) = cut_page(items, limit as usize, |task| {
        Cursor::after(task).to_string()
    });
    Ok(ApiJson(TaskPage { items, next_cursor }).into_response())
}

/// Reads one task: as it is now (from the read model), or, with `as_of` or
/// `at_version`, as it was then (folded from its events in the log, for
/// auditors).
#[utoipa::path(
    get, path = "/v1/tasks/{id}", tag = "tasks",
    params(TaskPath, GetTaskQuery),
    responses(
        (status = 200, description = "The task (as it was, with `as_of` or `at_version`)", body = TaskView),
        Authenticated, ReadWait,
        (status = 400, description = "A malformed id or query, or more than one of `as_of`, `at_version`, `min_version`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task, or it did not exist yet at that point", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`at_version` or `min_version` beyond the task's stream (answered at once)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:read"]), ("api_key" = ["audit:read"]))
)]
pub async fn get_task(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadHistory>,
    TaskPath { id: task_id }: TaskPath,
    ApiQuery(query): ApiQuery<GetTaskQuery>,
) -> Result<ApiJson<TaskView>, Problem> {
    tenancy::check_task(&state, &caller, task_id).await?;
    let until = match (&query.as_of, query.at_version, query.min_version) {
        (None, None, min_version) => {
            return read_task(&state, task_id, min_version).await.map(ApiJson)
        }
        (Some(text), None, None) => Until::Instant(parse_instant("as_of", text)?),
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
                Problem::internal().because("folding a task's history", error)
            }
            TaskAtError::Store(error) => {
                store_unreadable(format!("reading task {task_id}'s history"))(error)
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
    get, path = "/v1/tasks/{id}/result", tag = "tasks",
    params(TaskPath, ReadTaskQuery),
    responses(
        (status = 200, description = "The result", body = ResultView),
        Authenticated, ReadWait, Malformed,
        (status = 404, description = "No such task, or it has not succeeded", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`min_version` beyond the task's stream (answered at once)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn get_result(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadTasks>,
    TaskPath { id: task_id }: TaskPath,
    ApiQuery(query): ApiQuery<ReadTaskQuery>,
) -> Result<ApiJson<ResultView>, Problem> {
    tenancy::check_task(&state, &caller, task_id).await?;
    let task = read_task(&state, task_id, query.min_version).await?;
    let client = connection(&state).await?;
    let stored = taskledger_projections::tasks::query::succeeded_result(&client, task_id)
        .await
        .map_err(read_error("reading a result"))?;
    let Some(stored) = stored else {
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
    Ok(ApiJson(ResultView {
        task_id: task_id.0,
        attempt: stored.attempt,
        result: stored.result,
        exit_code: stored.exit_code,
        artifacts: stored
            .artifacts
            .into_iter()
            .map(ArtifactView::from)
            .collect(),
        finished_at: stored.finished_at,
    }))
}

/// Cancels a queued or running task (a running task's container is stopped
/// by its runner).
#[utoipa::path(
    post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(TaskPath),
    request_body(content = Option<CancelTaskRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The task, canceled", body = TaskView),
        Authenticated, JsonBody, NoSuchTask,
        (status = 409, description = "The task already finished, or it kept changing", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn cancel_task(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteTasks>,
    TaskPath { id: task_id }: TaskPath,
    OptionalJson(request): OptionalJson<CancelTaskRequest>,
) -> Result<ApiJson<TaskView>, Problem> {
    tenancy::check_task(&state, &caller, task_id).await?;
    let command = TaskCommand::Cancel(CancelTask {
        task_id,
        reason: request.reason,
        canceled_at: now(),
    });
    let executed = execute_as::<Tasks>(&state, &caller, &task_id.stream_id(), command).await?;
    let task = executed.state.as_ref().ok_or_else(Problem::internal)?;
    Ok(ApiJson(TaskView::from_task(
        task,
        executed.stream_version,
        executed.position,
    )))
}

/// A task's history, oldest first, read from the log (for auditors).
#[utoipa::path(
    get, path = "/v1/tasks/{id}/events", tag = "tasks",
    params(TaskPath, TaskEventsQuery),
    responses(
        (status = 200, description = "A page of the task's events", body = EventPage),
        Authenticated, Malformed, NoSuchTask,
    ),
    security(("api_key" = ["tasks:read"]), ("api_key" = ["audit:read"]))
)]
pub async fn task_events(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadHistory>,
    TaskPath { id: task_id }: TaskPath,
    ApiQuery(query): ApiQuery<TaskEventsQuery>,
) -> Result<ApiJson<EventPage>, Problem> {
    tenancy::check_task(&state, &caller, task_id).await?;
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
        return Err(no_such_task(task_id));
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
    let limit = page_size(limit, DEFAULT_PAGE, MAX_EVENTS_PAGE)?;
    // One more than asked, to know whether another page follows.
    let events = state
        .store
        .read_stream(stream_id, after + 1, Direction::Forward, limit as usize + 1)
        .await
        .map_err(store_unreadable(format!("reading stream {stream_id}")))?;
    let (events, next_cursor) = cut_page(events, limit as usize, |event| event.version.to_string());
    Ok(EventPage {
        items: events.into_iter().map(event_view).collect(),
        next_cursor,
    })
}

/// The current instant at the database's precision (microseconds), so what
/// a command answers equals what the read model later shows.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A task's id in the path (`{id}`): 400 unless it is a UUID.
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskPath {
    /// The task's id
    #[param(value_type = Uuid)]
    pub id: TaskId,
}

path_extractor!(TaskPath, "id", |id| Ok(Self {
    id: TaskId(uuid_segment(id, "a task id")?),
}));

/// 404: the task `task_id` does not exist.
pub(crate) fn no_such_task(task_id: TaskId) -> Problem {
    Problem::not_found(format!("task {task_id} does not exist"))
}

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
            .ok_or_else(|| no_such_task(task_id));
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
        .map_err(store_unreadable(format!("reading task {task_id}'s stream")))?;
    match newest.first().map(|event| event.version) {
        None => return Err(no_such_task(task_id)),
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

pub(crate) fn submit_problem(error: SubmitError) -> Problem {
    match error {
        SubmitError::Kind(error) => Problem::unprocessable(error.to_string()),
        error @ SubmitError::IdempotencyKeyReused { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            error.to_string(),
        ),
        error @ SubmitError::ClientTaskIdTaken { .. } => Problem::conflict(error.to_string()),
        error @ SubmitError::UnknownParent { .. } => Problem::unprocessable(error.to_string()),
        SubmitError::Command(error) => error.into(),
    }
}
