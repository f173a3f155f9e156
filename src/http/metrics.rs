//! `/metrics` in the OpenMetrics text format: HTTP latency by route, method
//! and status (recorded by [`track`], a middleware on every route), the
//! process-wide command, append and runner metrics of [`crate::metrics`],
//! and, read from the database at scrape time, each projector's lag,
//! failure and pause, the relay's lag, the log's head and the oldest open
//! transaction.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use taskledger_projections::runtime::ProjectorLag;

use super::problem::Problem;
use super::AppState;
use crate::metrics::latency_histogram;

/// What Prometheus expects for the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `taskledger_http_request_duration_seconds`'s labels, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// HTTP request latencies by (method, route, status), one per router (so
/// per test service, where the process-wide metrics are shared).
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Histogram>,
    registry: Registry,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let requests = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let mut registry = Registry::default();
        registry.register(
            "taskledger_http_request_duration_seconds",
            "HTTP request latency by route",
            requests.clone(),
        );
        Self { requests, registry }
    }
}

/// Records the latency of every request under its route's template
/// (`/v1/tasks/{id}`, never the concrete path, so the label set stays
/// small); requests that match no route count as `unmatched`.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let began = Instant::now();
    let response = next.run(request).await;
    let seconds = began.elapsed().as_secs_f64();
    state
        .http_metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(seconds);
    response
}

/// Prometheus metrics of this process and of the shared database.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses((status = 200, description = "OpenMetrics text format 1.0.0", content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let database = match database_metrics(&state).await {
        Ok(registry) => registry,
        Err(error) => {
            tracing::warn!(%error, "reading metrics from the database failed");
            database_up(Registry::default(), false)
        }
    };
    let mut out = String::new();
    let encoded = encode_registry(&mut out, &state.http_metrics.registry)
        .and_then(|()| crate::metrics::render(&mut out))
        .and_then(|()| encode_registry(&mut out, &database))
        .and_then(|()| encode_eof(&mut out));
    if let Err(error) = encoded {
        tracing::error!(%error, "encoding the metrics failed");
        return Problem::internal().into_response();
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response()
}

/// `taskledger_database_up` added to `registry`.
fn database_up(mut registry: Registry, up: bool) -> Registry {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::from(up));
    registry.register(
        "taskledger_database_up",
        "Whether the metrics query reached the database",
        gauge,
    );
    registry
}

/// The metrics read from the database now, in a registry of their own
/// (built for this scrape: a projector that is gone leaves no series).
async fn database_metrics(state: &AppState) -> anyhow::Result<Registry> {
    let client = state.store.pool().get().await?;
    let lags = taskledger_projections::runtime::lags(&client).await?;
    let mut registry = Registry::default();
    projection_metrics(&mut registry, &lags);
    let row = client
        .query_one(
            "SELECT
                 (SELECT coalesce(max(global_position), 0) FROM events),
                 (SELECT min(position) FROM relay_checkpoints),
                 (SELECT extract(epoch FROM now() - min(xact_start))::float8
                  FROM pg_stat_activity
                  WHERE datname = current_database() AND xact_start IS NOT NULL
                    AND pid <> pg_backend_pid())",
            &[],
        )
        .await?;
    let head: i64 = lags.first().map_or_else(
        || row.get(0),
        |lag| i64::try_from(lag.head).unwrap_or(i64::MAX),
    );
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    };
    gauge(
        &mut registry,
        "taskledger_log_head_position",
        "The global position of the newest event",
        head,
    );
    if let Some(relay) = row.get::<_, Option<i64>>(1) {
        gauge(
            &mut registry,
            "taskledger_relay_lag_events",
            "Events the relay has not had confirmed by the broker",
            (head - relay).max(0),
        );
    }
    let oldest = Gauge::<f64, AtomicU64>::default();
    oldest.set(row.get::<_, Option<f64>>(2).unwrap_or(0.0));
    registry.register(
        "taskledger_oldest_transaction_seconds",
        "Age of the oldest open transaction in the database",
        oldest,
    );
    Ok(database_up(registry, true))
}

/// `taskledger_projection_*{projector}`: each projector's lag, failure and
/// pause. Projector names come from the checkpoints table, so they are
/// whatever text a row holds (the encoder escapes them).
fn projection_metrics(registry: &mut Registry, lags: &[ProjectorLag]) {
    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct ProjectorLabels {
        projector: String,
    }
    let lag_events = Family::<ProjectorLabels, Gauge>::default();
    let lag_seconds = Family::<ProjectorLabels, Gauge<f64, AtomicU64>>::default();
    let failed = Family::<ProjectorLabels, Gauge>::default();
    let paused = Family::<ProjectorLabels, Gauge>::default();
    for lag in lags {
        let labels = ProjectorLabels {
            projector: lag.name.clone(),
        };
        lag_events
            .get_or_create(&labels)
            .set(i64::try_from(lag.lag_events).unwrap_or(i64::MAX));
        lag_seconds.get_or_create(&labels).set(lag.lag_seconds);
        failed
            .get_or_create(&labels)
            .set(i64::from(lag.failure.is_some()));
        paused.get_or_create(&labels).set(i64::from(lag.paused));
    }
    registry.register(
        "taskledger_projection_lag_events",
        "Events in the log a projector has not applied",
        lag_events,
    );
    registry.register(
        "taskledger_projection_lag_seconds",
        "Age of the oldest event a projector has not applied",
        lag_seconds,
    );
    registry.register(
        "taskledger_projection_failed",
        "1 while a projector is stopped at an event it cannot apply",
        failed,
    );
    registry.register(
        "taskledger_projection_paused",
        "1 while an operator has paused a projector",
        paused,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projector_names_are_escaped_in_label_values() {
        let lag = ProjectorLag {
            name: "say \"hi\"\\\nbye".into(),
            version: 1,
            position: 3,
            head: 5,
            lag_events: 2,
            lag_seconds: 0.5,
            failure: Some((4, "no row".into())),
            paused: false,
            active: true,
        };
        let mut registry = Registry::default();
        projection_metrics(&mut registry, &[lag]);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains(r#"taskledger_projection_lag_events{projector="say \"hi\"\\\nbye"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(r#"taskledger_projection_failed{projector="say \"hi\"\\\nbye"} 1"#),
            "{out}"
        );
        // One sample a line: the newline did not split one.
        assert_eq!(out.lines().filter(|line| line.contains("bye")).count(), 4);
    }
}
