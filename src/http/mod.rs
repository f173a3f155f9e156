//! The HTTP surface: the `/v1` API ([`tasks`], [`audit`], …), the web
//! [`console`], liveness and readiness probes, the OpenAPI document, and the
//! problem+json error type every route uses ([`problem`]).
//!
//! Routes and their OpenAPI description come from one place: each handler's
//! `#[utoipa::path]` is registered through [`api_router`], so a route cannot
//! be served without being documented, nor documented without being served.
//! Every route, and the fallbacks, run inside the same layers ([`router`]):
//! a request id and span, the latency in `/metrics`, a deadline.

pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod blobs;
mod consistency;
pub mod console;
pub mod devices;
pub mod feed;
pub mod key_watch;
pub mod keys;
pub mod kinds;
pub mod ledgers;
pub mod limits;
pub mod metrics;
pub mod operations;
mod paging;
pub mod plans;
mod probes;
pub mod problem;
pub mod responses;
mod sse;
pub mod tasks;
pub(crate) mod tenancy;
mod traced;
pub mod webhooks;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use taskledger_events::command::Executed;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::{Aggregate, StreamId};
use taskledger_projections::runtime::ProjectorStatus;
use taskledger_projections::tasks::query::ReadError;
use tokio::sync::watch;
use tower::ServiceBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::adapters::blobs::BlobStore;
use crate::config::FileConfig;
use crate::service::shutdown::Shutdown;
use problem::Problem;
use responses::SharedResponses;

/// The largest request body any route accepts.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How long a handler may take to begin its answer, beyond the read wait
/// (only the start of an answer is timed, never its body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The request id header: taken from the request, or made (a UUID) when it
/// has none; echoed in the response and recorded in the request's span.
pub const REQUEST_ID: &str = "x-request-id";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The event store.
    pub store: PgEventStore,
    /// A transaction that has held the log lock this long makes the service
    /// not ready: every append in every process waits behind it.
    pub log_lock_stall: Duration,
    /// Task kinds and the rest of the configuration file.
    pub config: Arc<FileConfig>,
    /// How long a read with `min_version` / `min_position` waits for the
    /// read model before answering 503.
    pub read_wait: Duration,
    /// This process's tasks projector, when it runs one: read-your-writes
    /// waits wake when it moves (they poll as well, for a projector that is
    /// active in another process).
    pub tasks_projection: Option<watch::Receiver<ProjectorStatus>>,
    /// Where artifacts are stored.
    pub blobs: BlobStore,
    /// How RockBLOCK's mobile-originated webhooks are checked.
    pub mo: devices::MoPolicy,
    /// HTTP latencies for `/metrics`.
    pub http_metrics: Arc<metrics::HttpMetrics>,
    /// The process's shutdown signal: endless responses (event streams) end
    /// when it fires, so a graceful shutdown does not wait for them.
    pub shutdown: Option<Shutdown>,
    /// The outside parts this process needs (Docker, RabbitMQ, the kinds'
    /// images and networks), for `/readyz` and `GET /v1/kinds`.
    pub dependencies: Arc<crate::service::dependencies::Dependencies>,
    /// This installation's identity and broker prefix, for `/readyz`.
    pub installation: Option<(uuid::Uuid, String)>,
    /// Per-key request rates and open streams (`[limits]`).
    pub limits: Arc<limits::Limits>,
    /// The keys of open event streams, watched so a stream ends when its
    /// key is revoked or expires.
    pub key_watches: Arc<key_watch::KeyWatches>,
    /// The keys checked so far, each folded up to the version last read.
    pub key_cache: Arc<auth::KeyCache>,
    /// The console's signed-in sessions (in this process's memory).
    pub console_sessions: Arc<console::Sessions>,
}

impl AppState {
    /// State for `store` with the default settings and no task kinds (for
    /// tests and tools; the service builds its own from [`crate::config::settings`]).
    pub fn new(store: PgEventStore) -> Self {
        Self {
            store,
            log_lock_stall: Duration::from_secs(30),
            config: Arc::new(FileConfig::default()),
            read_wait: Duration::from_secs(2),
            tasks_projection: None,
            blobs: BlobStore::new("./data/blobs"),
            mo: devices::MoPolicy::NotConfigured,
            http_metrics: Arc::default(),
            shutdown: None,
            dependencies: Arc::new(crate::service::dependencies::Dependencies::none()),
            installation: None,
            limits: Arc::new(limits::Limits::new(
                &crate::config::limits::LimitsConfig::default(),
            )),
            key_watches: Arc::default(),
            key_cache: Arc::default(),
            console_sessions: Arc::default(),
        }
    }
}

impl limits::Limited for AppState {
    fn limits(&self) -> &limits::Limits {
        &self.limits
    }
}

impl auth::KeyStore for AppState {
    fn key_store(&self) -> &PgEventStore {
        &self.store
    }

    fn key_cache(&self) -> &auth::KeyCache {
        &self.key_cache
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taskledger",
        description = "An event-sourced task backend. Every route under /v1 takes an API key as \
                       `Authorization: Bearer <key>`; errors are RFC 9457 problem+json. Every \
                       response carries `X-Request-Id`: the request's own, or a UUID made for \
                       it; the service's logs of the request name it."
    ),
    modifiers(&BearerKeys, &SharedResponses),
    tags(
        (name = "tasks", description = "Submit, list, read and cancel tasks"),
        (name = "plans", description = "Task graphs submitted in one request: their tasks, counts by status, cancellation"),
        (name = "ledger", description = "The global order for ledger sync consumers and auditors"),
        (name = "audit", description = "Auditors' reads of the log: any stream as stored, chain verification"),
        (name = "devices", description = "Satellite modems through the RockBLOCK web API"),
        (name = "webhooks", description = "Webhooks: signed deliveries of a tenant's events, their log, replays"),
        (name = "keys", description = "API keys: create, list, revoke and rotate (platform admin keys)"),
        (name = "service", description = "Probes and this document")
    )
)]
struct ApiDoc;

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every route with its OpenAPI description, not yet given its state.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(probes::healthz))
        .routes(routes!(probes::readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(metrics::metrics))
        .routes(routes!(operations::list_projections))
        .routes(routes!(operations::get_projection))
        .routes(routes!(operations::rebuild_projection))
        .routes(routes!(operations::pause_projection))
        .routes(routes!(operations::resume_projection))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::rotate_key))
        .routes(routes!(tasks::submit_task, tasks::list_tasks))
        .routes(routes!(kinds::list_kinds))
        .routes(routes!(blobs::upload_blob))
        .routes(routes!(tasks::stream::stream_tasks))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::get_result))
        .routes(routes!(tasks::cancel_task))
        .routes(routes!(tasks::task_events))
        .routes(routes!(plans::submit_plan, plans::list_plans))
        .routes(routes!(plans::get_plan))
        .routes(routes!(plans::cancel_plan))
        .routes(routes!(artifacts::list_artifacts))
        .routes(routes!(artifacts::get_artifact))
        .routes(routes!(feed::list_events))
        .routes(routes!(feed::stream_events))
        .routes(routes!(audit::stream_events))
        .routes(routes!(audit::verify))
        .routes(routes!(ledgers::confirm))
        .routes(routes!(ledgers::list_ledgers))
        .routes(routes!(ledgers::ledger_status))
        .routes(routes!(ledgers::ledger_holes))
        .routes(routes!(ledgers::task_ledger))
        .routes(routes!(devices::send_message, devices::list_messages))
        .routes(routes!(devices::mo::rockblock_mo))
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::get_device, devices::assign_device))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::enable_webhook))
        .routes(routes!(webhooks::replay_webhook))
        .routes(routes!(webhooks::list_deliveries))
}

/// The OpenAPI document of every route (served at `/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The router with every route.
pub fn router(state: AppState) -> Router {
    let (router, _) = api_router().split_for_parts();
    let router = router
        .merge(console::router(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    served(router, &state).with_state(state)
}

/// Only `/healthz`, `/readyz` and `/metrics`, for a process without the
/// `api` role.
pub fn probes_router(state: AppState) -> Router {
    let (router, _) = OpenApiRouter::new()
        .routes(routes!(probes::healthz))
        .routes(routes!(probes::readyz))
        .routes(routes!(metrics::metrics))
        .split_for_parts();
    served(router.fallback(not_found), &state).with_state(state)
}

/// `router` in the layers every request passes, outermost first: its
/// request id, span, latency in `/metrics` and the log of a failure's cause
/// ([`traced::per_request`]), and the deadline ([`with_timeout`]) — inside,
/// so a timed-out request is counted and logged with its 503.
fn served(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    traced(
        with_timeout(router, REQUEST_TIMEOUT + state.read_wait),
        &state.http_metrics,
    )
}

/// `router` inside [`traced::per_request`], recording into `metrics`.
fn traced<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    metrics: &Arc<metrics::HttpMetrics>,
) -> Router<S> {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::clone(metrics),
        traced::per_request,
    ))
}

/// `router` with a deadline on every handler: one that has not begun its
/// answer within `timeout` is dropped (as when a client hangs up) and
/// answered 503 with `Retry-After`, as problem+json. Only the start of the
/// answer is timed, never its body: the endless event stream, the CSV
/// export and artifact downloads stream on for as long as they take.
fn with_timeout<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    timeout: Duration,
) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            // tower's timeout, not tower-http's: that one answers with an
            // empty body, not a problem.
            .layer(HandleErrorLayer::new(
                move |_: tower::BoxError| async move {
                    tracing::warn!(
                        timeout_seconds = timeout.as_secs_f64(),
                        "a request found no answer in time"
                    );
                    Problem::unavailable(
                        format!("no answer within {:.0} s; try again", timeout.as_secs_f64()),
                        1,
                    )
                },
            ))
            .layer(tower::timeout::TimeoutLayer::new(timeout)),
    )
}

/// A pooled connection for a read; 503 when none can be had.
pub(crate) async fn connection(state: &AppState) -> Result<deadpool_postgres::Object, Problem> {
    state.store.pool().get().await.map_err(|error| {
        Problem::unavailable("the database is unavailable right now", 1)
            .because("getting a database connection for a read", error)
    })
}

/// Runs `command` on `stream_id` as `caller` (its key the actor), under a
/// fresh command id: the write of every route that gives a command.
///
/// # Errors
/// The command's refusal, conflict or failure, as its problem.
pub(crate) async fn execute_as<A: Aggregate>(
    state: &AppState,
    caller: &auth::Caller,
    stream_id: &StreamId,
    command: A::Command,
) -> Result<Executed<A>, Problem> {
    let executed = crate::commands::execute::<A>(
        &state.store,
        stream_id,
        command,
        uuid::Uuid::new_v4(),
        caller.metadata(),
    )
    .await?;
    Ok(executed)
}

/// Maps a failed read to 503, its cause what was being read.
pub(crate) fn database_error<E>(context: &'static str) -> impl Fn(E) -> Problem
where
    E: Into<anyhow::Error>,
{
    move |error| {
        Problem::unavailable("the database could not answer right now", 1).because(context, error)
    }
}

/// Maps a failed read of the log to 503, its cause what was being read.
pub(crate) fn store_unreadable(
    context: String,
) -> impl FnOnce(taskledger_events::StoreError) -> Problem {
    move |error| {
        Problem::unavailable("the event store cannot be read right now", 1).because(context, error)
    }
}

/// Maps a failed read of the log (or of a table beside it) to 503 with
/// "the log cannot be read right now", its cause what was being read.
pub(crate) fn log_unreadable<E>(context: &'static str) -> impl Fn(E) -> Problem
where
    E: Into<anyhow::Error>,
{
    move |error| Problem::unavailable("the log cannot be read right now", 1).because(context, error)
}

/// Maps a failed read of the `tasks` and `results` read models: 503 when
/// the database did not answer, an opaque 500 for a row the projector never
/// writes; its cause what was being read.
pub(crate) fn read_error(context: &'static str) -> impl Fn(ReadError) -> Problem {
    move |error| match error {
        ReadError::Database(error) => database_error(context)(error),
        error @ ReadError::Corrupt(_) => Problem::internal().because(context, error),
    }
}

async fn not_found() -> Problem {
    Problem::not_found("no such route; the routes are listed in /v1/openapi.json")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not accept that method; see /v1/openapi.json",
    )
}

/// This document.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::extract::Request;

    use axum::body::Body;
    use axum::response::sse::{Event, Sse};
    use axum::routing::get;
    use futures::StreamExt as _;
    use tower::ServiceExt as _;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(200);

    fn app() -> Router {
        let router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "too late"
                }),
            )
            .route(
                "/stream",
                get(|| async {
                    let ticks = futures::stream::repeat(()).then(|()| async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, Infallible>(Event::default().data("tick"))
                    });
                    Sse::new(ticks)
                }),
            );
        traced(with_timeout(router, TIMEOUT), &Arc::default())
    }

    fn get_request(path: &str) -> Request {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_handler_past_the_deadline_is_answered_503_as_a_problem() {
        let began = std::time::Instant::now();
        let response = app().oneshot(get_request("/slow")).await.unwrap();
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            responses::PROBLEM_JSON
        );
        assert!(response.headers().contains_key(REQUEST_ID));
    }

    #[tokio::test]
    async fn an_event_stream_outlives_the_deadline() {
        let response = app().oneshot(get_request("/stream")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body().into_data_stream();
        let began = std::time::Instant::now();
        let mut ticks = 0;
        while began.elapsed() < TIMEOUT * 3 {
            let chunk = body.next().await.expect("the stream ended").unwrap();
            ticks += String::from_utf8_lossy(&chunk)
                .matches("data: tick")
                .count();
        }
        assert!(ticks >= 6, "{ticks} events in {:?}", began.elapsed());
    }

    #[tokio::test]
    async fn a_request_id_is_echoed_or_made() {
        let given = Request::builder()
            .uri("/stream")
            .header(REQUEST_ID, "from-the-client-1")
            .body(Body::empty())
            .unwrap();
        let response = app().oneshot(given).await.unwrap();
        assert_eq!(response.headers()[REQUEST_ID], "from-the-client-1");
        let response = app().oneshot(get_request("/nowhere")).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let made = response.headers()[REQUEST_ID].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
    }
}
