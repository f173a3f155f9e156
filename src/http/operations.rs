//! Operations (scope `admin`): the projectors' state.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Admin, Authorized};
use super::problem::{ApiJson, Problem};
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
    /// `running` (caught up or catching up) or `failed` (stopped at an event).
    pub state: &'static str,
    /// The event it is stopped at, while failed.
    pub failed_position: Option<u64>,
    /// Why, while failed.
    pub failure: Option<String>,
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
    get,
    path = "/v1/projections",
    tag = "service",
    responses(
        (status = 200, description = "The projectors", body = ProjectionPage),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks admin", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn list_projections(
    State(state): State<AppState>,
    _: Authorized<Admin>,
) -> Result<ApiJson<ProjectionPage>, Problem> {
    let unavailable = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "reading the projectors failed");
        Problem::unavailable("the database is unavailable right now", 1)
    };
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|error| unavailable(&error))?;
    let lags = taskledger_projections::runtime::lags(&client)
        .await
        .map_err(|error| unavailable(&error))?;
    Ok(ApiJson(ProjectionPage {
        items: lags.into_iter().map(view).collect(),
        next_cursor: None,
    }))
}

/// The API's view of a projector's lag.
pub fn view(lag: taskledger_projections::runtime::ProjectorLag) -> ProjectionView {
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
        } else {
            "running"
        },
        failed_position,
        failure,
    }
}
