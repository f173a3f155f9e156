//! Operations (scope `admin`): the projectors' state, pausing and resuming
//! them, and blue/green rebuilds started over HTTP (run in this process;
//! their progress is recorded in the database, so any process shows it).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use taskledger_projections::rebuild::{self, RebuildError, RebuildOptions, RebuildStatus};
use taskledger_projections::runtime::{self, ProjectorLag};
use utoipa::{IntoParams, ToSchema};

use super::auth::Admin;
use super::problem::{path_extractor, ApiJson, Problem};
use super::responses::{NoSuchProjection, PlatformOnly};
use super::tenancy::PlatformAuthorized;
use super::AppState;

/// One projector, as its checkpoint records it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectionView {
    /// Its name.
    pub name: String,
    /// The version of its tables' shape.
    pub version: u32,
    /// Every event up to this position is in its tables.
    pub position: u64,
    /// The log's head.
    pub head: u64,
    /// Events it has not applied.
    pub lag_events: u64,
    /// Age of the oldest event it has not applied, in seconds.
    pub lag_seconds: f64,
    /// `running` (caught up or catching up), `paused` (by an operator),
    /// `failed` (stopped at an event, which it retries) or `inactive` (no
    /// process runs it right now).
    pub state: &'static str,
    /// Whether some process runs it right now.
    pub active: bool,
    /// The event it is stopped at, while failed.
    pub failed_position: Option<u64>,
    /// Why, while failed.
    pub failure: Option<String>,
    /// Its last blue/green rebuild, if it was ever rebuilt.
    pub rebuild: Option<RebuildView>,
}

/// A projection's name in the path (`{name}`).
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProjectionPath {
    /// The projection, e.g. `tasks`
    pub name: String,
}

path_extractor!(ProjectionPath, "name", |name| Ok(Self {
    name: name.to_owned()
}));

/// A blue/green rebuild, as last recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildView {
    /// The version being (or that was) built.
    pub version: u32,
    /// `building`, `swapping`, `done`, `failed`, or `interrupted` (its
    /// process went away before it finished; the live tables are intact).
    pub state: String,
    /// Events applied to the new tables.
    pub position: u64,
    /// The log's head as last read.
    pub head: u64,
    /// Events applied per second so far.
    pub events_per_s: f64,
    /// Seconds left at that rate, while it builds.
    pub eta_seconds: Option<f64>,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When it last reported.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The projectors.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectionPage {
    /// Every projector with a checkpoint, by name.
    pub items: Vec<ProjectionView>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

/// Every projector's version, checkpoint, lag and state.
#[utoipa::path(
    get, path = "/v1/projections", tag = "service",
    responses(
        (status = 200, description = "The projectors", body = ProjectionPage),
        PlatformOnly,
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn list_projections(
    State(state): State<AppState>,
    _: PlatformAuthorized<Admin>,
) -> Result<ApiJson<ProjectionPage>, Problem> {
    Ok(ApiJson(ProjectionPage {
        items: views(&state).await?,
        next_cursor: None,
    }))
}

/// One projector: version, checkpoint, lag, state and its last rebuild.
#[utoipa::path(
    get, path = "/v1/projections/{name}", tag = "service",
    params(ProjectionPath),
    responses(
        (status = 200, description = "The projector", body = ProjectionView),
        PlatformOnly, NoSuchProjection,
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn get_projection(
    State(state): State<AppState>,
    _: PlatformAuthorized<Admin>,
    ProjectionPath { name }: ProjectionPath,
) -> Result<ApiJson<ProjectionView>, Problem> {
    Ok(ApiJson(one(&state, &name).await?))
}

/// Starts a blue/green rebuild of a projection in this process: its next
/// tables are built from sequence 0 beside the live ones, caught up and
/// swapped in atomically; reads keep using the live tables until then.
/// Follow it at `GET /v1/projections/{name}` (the `Location`).
#[utoipa::path(
    post, path = "/v1/projections/{name}/rebuild", tag = "service",
    params(ProjectionPath),
    responses(
        (status = 202, description = "The rebuild started; the projection with its progress", body = ProjectionView,
            headers(("Location" = String, description = "Where to follow it"))),
        PlatformOnly,
        (status = 404, description = "No such projection", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A rebuild of it is already running", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn rebuild_projection(
    State(state): State<AppState>,
    _: PlatformAuthorized<Admin>,
    ProjectionPath { name }: ProjectionPath,
) -> Result<Response, Problem> {
    let projector = taskledger_projections::by_name(&name).map_err(unknown)?;
    // Answer once the rebuild holds its lock (its first progress report),
    // or has already ended.
    let (started, has_started) = tokio::sync::oneshot::channel::<()>();
    let started = Arc::new(Mutex::new(Some(started)));
    let store = state.store.clone();
    let task = tokio::spawn(async move {
        let report = rebuild::rebuild(
            &store,
            projector.as_ref(),
            &RebuildOptions::default(),
            &move |_| {
                if let Some(started) = started.lock().ok().and_then(|mut s| s.take()) {
                    let _ = started.send(());
                }
            },
        )
        .await;
        match &report {
            Ok(report) => tracing::info!(%report, "rebuild finished"),
            Err(RebuildError::Busy) => {}
            Err(error) => tracing::error!(projector = projector.name(), %error, "rebuild failed"),
        }
        report
    });
    if has_started.await.is_err() {
        // It ended before it started building.
        match task.await {
            Ok(Err(RebuildError::Busy)) => {
                return Err(Problem::conflict(format!(
                    "a rebuild of {name} is already running; follow it at /v1/projections/{name}"
                )))
            }
            Ok(Err(error)) => {
                // The rebuild's task has logged why.
                return Err(Problem::unavailable(
                    format!("the rebuild of {name} could not start: {error}"),
                    1,
                ));
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    let view = one(&state, &name).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/projections/{name}"))],
        ApiJson(view),
    )
        .into_response())
}

/// Pauses a projection: no further events are applied to its tables
/// (reads go on, growing stale) until it is resumed. It takes effect
/// between two batches: once this answers, nothing more is applied. As
/// `taskledger projections pause`.
#[utoipa::path(
    post, path = "/v1/projections/{name}/pause", tag = "service",
    params(ProjectionPath),
    responses(
        (status = 200, description = "Paused (or already paused); the projection", body = ProjectionView),
        PlatformOnly, NoSuchProjection,
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn pause_projection(
    State(state): State<AppState>,
    _: PlatformAuthorized<Admin>,
    ProjectionPath { name }: ProjectionPath,
) -> Result<ApiJson<ProjectionView>, Problem> {
    set_paused(&state, &name, true).await
}

/// Lets a paused projection apply events again. As `taskledger projections
/// resume`.
#[utoipa::path(
    post, path = "/v1/projections/{name}/resume", tag = "service",
    params(ProjectionPath),
    responses(
        (status = 200, description = "Resumed (or it was not paused); the projection", body = ProjectionView),
        PlatformOnly, NoSuchProjection,
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn resume_projection(
    State(state): State<AppState>,
    _: PlatformAuthorized<Admin>,
    ProjectionPath { name }: ProjectionPath,
) -> Result<ApiJson<ProjectionView>, Problem> {
    set_paused(&state, &name, false).await
}

/// Pauses (`true`) or resumes projection `name`; its view afterwards.
async fn set_paused(
    state: &AppState,
    name: &str,
    paused: bool,
) -> Result<ApiJson<ProjectionView>, Problem> {
    taskledger_projections::by_name(name).map_err(unknown)?;
    let client = state.store.pool().get().await.map_err(unavailable)?;
    if !runtime::set_paused(&client, name, paused)
        .await
        .map_err(unavailable)?
    {
        return Err(never_ran(name));
    }
    Ok(ApiJson(one(state, name).await?))
}

fn unknown(error: taskledger_projections::UnknownProjection) -> Problem {
    Problem::not_found(error.to_string())
}

fn unavailable<E: Into<anyhow::Error>>(error: E) -> Problem {
    Problem::unavailable("the database is unavailable right now", 1)
        .because("reading or writing the projectors' checkpoints", error)
}

/// Every projector's view, with its last rebuild.
async fn views(state: &AppState) -> Result<Vec<ProjectionView>, Problem> {
    let client = state.store.pool().get().await.map_err(unavailable)?;
    let lags = runtime::lags(&client).await.map_err(unavailable)?;
    let mut rebuilds = rebuild::rebuilds(&client).await.map_err(unavailable)?;
    let mut items = Vec::with_capacity(lags.len());
    for lag in lags {
        let last = rebuilds
            .iter()
            .position(|r| r.name == lag.name)
            .map(|index| rebuild_view(rebuilds.swap_remove(index)));
        items.push(view(lag, last));
    }
    Ok(items)
}

async fn one(state: &AppState, name: &str) -> Result<ProjectionView, Problem> {
    taskledger_projections::by_name(name).map_err(unknown)?;
    views(state)
        .await?
        .into_iter()
        .find(|view| view.name == name)
        .ok_or_else(|| never_ran(name))
}

fn never_ran(name: &str) -> Problem {
    Problem::not_found(format!("{name} has never run in this deployment"))
}

fn rebuild_view(last: RebuildStatus) -> RebuildView {
    RebuildView {
        version: last.version,
        eta_seconds: last.eta_seconds(),
        state: last.state,
        position: last.position,
        head: last.head,
        events_per_s: last.events_per_s,
        started_at: last.started_at,
        updated_at: last.updated_at,
        finished_at: last.finished_at,
        error: last.error,
    }
}

/// The API's view of a projector's lag.
pub fn view(lag: ProjectorLag, rebuild: Option<RebuildView>) -> ProjectionView {
    let (failed_position, failure) = match lag.failure {
        Some((position, failure)) => (Some(position), Some(failure)),
        None => (None, None),
    };
    ProjectionView {
        name: lag.name,
        version: lag.version,
        position: lag.position,
        head: lag.head,
        lag_events: lag.lag_events,
        lag_seconds: lag.lag_seconds,
        state: if failure.is_some() {
            "failed"
        } else if lag.paused {
            "paused"
        } else if lag.active {
            "running"
        } else {
            "inactive"
        },
        active: lag.active,
        failed_position,
        failure,
        rebuild,
    }
}
