//! `/metrics` in the Prometheus text format: HTTP latency by route, method
//! and status (recorded by [`track`], a middleware on every route), the
//! process-wide command, append and runner metrics of [`crate::metrics`],
//! and, read from the database at scrape time, each projector's lag and
//! failure, the relay's lag, the log's head, the oldest open transaction and
//! how long the log lock has been held.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::Histogram;

/// HTTP request latencies by (method, route, status).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
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
    if let Ok(mut requests) = state.http_metrics.requests.lock() {
        requests
            .entry((method, route, response.status().as_u16()))
            .or_default()
            .observe(seconds);
    }
    response
}

/// Prometheus metrics of this process and of the shared database.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let requests = state
        .http_metrics
        .requests
        .lock()
        .map(|requests| requests.clone())
        .unwrap_or_default();
    out.push_str(
        "# HELP taskledger_http_request_duration_seconds HTTP request latency by route.\n",
    );
    out.push_str("# TYPE taskledger_http_request_duration_seconds histogram\n");
    for ((method, route, status), histogram) in &requests {
        let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
        histogram.write(
            &mut out,
            "taskledger_http_request_duration_seconds",
            &labels,
        );
    }
    crate::metrics::render(&mut out);
    if let Err(error) = database_metrics(&state, &mut out).await {
        tracing::warn!(%error, "reading metrics from the database failed");
        out.push_str(
            "# HELP taskledger_database_up Whether the metrics query reached the database.\n",
        );
        out.push_str("# TYPE taskledger_database_up gauge\ntaskledger_database_up 0\n");
    } else {
        out.push_str(
            "# HELP taskledger_database_up Whether the metrics query reached the database.\n",
        );
        out.push_str("# TYPE taskledger_database_up gauge\ntaskledger_database_up 1\n");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn database_metrics(state: &AppState, out: &mut String) -> anyhow::Result<()> {
    let client = state.store.pool().get().await?;
    let lags = taskledger_projections::runtime::lags(&client).await?;
    let gauge = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    };
    gauge(
        out,
        "taskledger_projection_lag_events",
        "Events in the log a projector has not applied.",
    );
    for lag in &lags {
        let _ = writeln!(
            out,
            "taskledger_projection_lag_events{{projector=\"{}\"}} {}",
            lag.name, lag.lag_events
        );
    }
    gauge(
        out,
        "taskledger_projection_lag_seconds",
        "Age of the oldest event a projector has not applied.",
    );
    for lag in &lags {
        let _ = writeln!(
            out,
            "taskledger_projection_lag_seconds{{projector=\"{}\"}} {}",
            lag.name, lag.lag_seconds
        );
    }
    gauge(
        out,
        "taskledger_projection_failed",
        "1 while a projector is stopped at an event it cannot apply.",
    );
    for lag in &lags {
        let _ = writeln!(
            out,
            "taskledger_projection_failed{{projector=\"{}\"}} {}",
            lag.name,
            u8::from(lag.failure.is_some())
        );
    }
    gauge(
        out,
        "taskledger_projection_paused",
        "1 while an operator has paused a projector.",
    );
    for lag in &lags {
        let _ = writeln!(
            out,
            "taskledger_projection_paused{{projector=\"{}\"}} {}",
            lag.name,
            u8::from(lag.paused)
        );
    }
    let head = lags.first().map(|lag| lag.head);
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
    let head: i64 = head.map_or_else(
        || row.get(0),
        |head| i64::try_from(head).unwrap_or(i64::MAX),
    );
    gauge(
        out,
        "taskledger_log_head_position",
        "The global position of the newest event.",
    );
    let _ = writeln!(out, "taskledger_log_head_position {head}");
    if let Some(relay) = row.get::<_, Option<i64>>(1) {
        gauge(
            out,
            "taskledger_relay_lag_events",
            "Events the relay has not had confirmed by the broker.",
        );
        let _ = writeln!(out, "taskledger_relay_lag_events {}", (head - relay).max(0));
    }
    gauge(
        out,
        "taskledger_oldest_transaction_seconds",
        "Age of the oldest open transaction in the database.",
    );
    let _ = writeln!(
        out,
        "taskledger_oldest_transaction_seconds {}",
        row.get::<_, Option<f64>>(2).unwrap_or(0.0)
    );
    Ok(())
}
