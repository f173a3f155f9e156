//! `/console/`: the web console for operators, auditors and frontend
//! developers, served by the `api` role from templates and assets built
//! into the binary (nothing is fetched from elsewhere at run time).
//!
//! Pages are rendered on the server ([`askama`] templates in `templates/`)
//! with a little plain JavaScript (`assets/console.js`) for live updates.
//! A visitor signs in with an API key ([`signin`]); the key stays on the
//! server behind a session cookie ([`session`]) and every page reads and
//! writes through `/v1` with it ([`api`]), so the console shows exactly what
//! the key's tenant and scopes allow. Every answer carries a strict
//! `Content-Security-Policy` ([`secure_headers`]); every form that changes
//! something carries the session's CSRF token.

mod api;
mod apiref;
mod audit;
mod devices;
mod ledgers;
mod live;
mod pages;
mod projections;
pub mod session;
mod signin;
mod task;
mod tasks;
mod vendor_styles;
mod views;
mod webhooks;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::AppState;
use api::Api;
pub use session::Sessions;

/// What the console's handlers share.
#[derive(Debug, Clone)]
struct ConsoleState {
    /// The service's state (keys, the store, limits).
    app: AppState,
    /// `/v1`, called in the process with the session's key.
    api: Api,
    /// The signed-in sessions.
    sessions: Arc<Sessions>,
}

/// The policy every console answer carries: nothing but this service's
/// own scripts, styles and images; no framing.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The console's routes, under `/console`, for `state`'s service.
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let (api, _) = super::api_router().split_for_parts();
    let api = api.fallback(super::not_found).with_state(state.clone());
    let console = ConsoleState {
        app: state.clone(),
        api: Api::new(api),
        sessions: Arc::clone(&state.console_sessions),
    };
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/sign-in", get(signin::form).post(signin::sign_in))
        .route("/console/sign-out", post(signin::sign_out))
        .route("/console/tasks", get(tasks::list))
        .route("/console/tasks/rows", get(tasks::rows))
        .route("/console/tasks/live", get(live::tasks))
        .route("/console/tasks.csv", get(tasks::csv))
        .route("/console/tasks/{id}", get(task::show))
        .route("/console/tasks/{id}/cancel", post(task::cancel))
        .route("/console/tasks/{id}/artifacts/{name}", get(task::artifact))
        .route("/console/devices", get(devices::list))
        .route("/console/devices/{imei}", get(devices::show))
        .route("/console/webhooks", get(webhooks::list))
        .route("/console/webhooks/{id}", get(webhooks::show))
        .route("/console/webhooks/{id}/enable", post(webhooks::enable))
        .route("/console/webhooks/{id}/replay", post(webhooks::replay))
        .route("/console/ledgers", get(ledgers::list))
        .route("/console/projections", get(projections::show))
        .route("/console/projections/status", get(projections::status))
        .route("/console/projections/{name}", get(projections::one))
        .route(
            "/console/projections/{name}/{operation}",
            post(projections::operate),
        )
        .route("/console/audit", get(audit::show))
        .route("/console/audit/verify", get(audit::verify))
        .route("/console/audit/streams", get(audit::open_stream))
        .route("/console/audit/streams/{stream}", get(audit::stream))
        .route("/console/assets/{file}", get(asset))
        .route("/console/api", get(apiref::page))
        .route("/console/assets/api/{file}", get(apiref::asset))
        .route("/console/{*rest}", get(pages::no_such_page))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(console)
}

async fn home() -> Redirect {
    Redirect::to("/console/tasks")
}

/// Adds the console's security headers to `response`: the CSP, no MIME
/// sniffing, no referrer beyond this origin, and no caching of pages.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The console's static files, built into the binary.
async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body): (&str, &str) = match file.as_str() {
        "console.css" => (
            "text/css; charset=utf-8",
            include_str!("assets/console.css"),
        ),
        "favicon.svg" => ("image/svg+xml", include_str!("assets/favicon.svg")),
        "world.svg" => ("image/svg+xml", include_str!("assets/world.svg")),
        "console.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/console.js"),
        ),
        "projections.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/projections.js"),
        ),
        _ => return pages::no_such_page().await,
    };
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
