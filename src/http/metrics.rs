//! `/metrics` in the Prometheus text format 0.0.4: HTTP latency by route,
//! method and status (recorded by [`super::traced::per_request`], the
//! middleware on every route), the
//! process-wide command, append and runner metrics of [`crate::metrics`],
//! and, read from the database at scrape time, each projector's lag,
//! failure and pause, the relay's lag, the log's head and the oldest open
//! transaction.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Gauge, GaugeVec, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use taskledger_projections::runtime::ProjectorLag;

use super::problem::Problem;
use super::AppState;
use crate::metrics::latency_histogram;

/// What Prometheus expects for its text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// HTTP request latencies by (method, route, status), one per router (so
/// per test service, where the process-wide metrics are shared).
#[derive(Debug)]
pub struct HttpMetrics {
    /// Labelled `method`, `route`, `status`.
    requests: HistogramVec,
    registry: Registry,
}

impl Default for HttpMetrics {
    /// Panics only if the fixed name, labels or buckets were invalid.
    fn default() -> Self {
        let requests = HistogramVec::new(
            latency_histogram(
                "taskledger_http_request_duration_seconds",
                "HTTP request latency by route.",
            ),
            &["method", "route", "status"],
        )
        .expect("taskledger_http_request_duration_seconds is well-formed");
        let registry = Registry::new();
        registry
            .register(Box::new(requests.clone()))
            .expect("a new registry holds no other metric");
        Self { requests, registry }
    }
}

impl HttpMetrics {
    /// Records one answered request: its latency under its method, its
    /// route's template (`/v1/tasks/{id}`, never the concrete path, so the
    /// label set stays small; `unmatched` for requests that match no route)
    /// and its status.
    pub fn observe(&self, method: &str, route: &str, status: StatusCode, seconds: f64) {
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .observe(seconds);
    }
}

/// Prometheus metrics of this process and of the shared database.
#[utoipa::path(
    get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let database = match database_metrics(&state).await {
        Ok(registry) => registry,
        Err(error) => {
            tracing::warn!(%error, "reading metrics from the database failed");
            match database_up(Registry::new(), false) {
                Ok(registry) => registry,
                Err(error) => return encoding_failed(&error),
            }
        }
    };
    // `gather` leaves out a family with no series yet (no request seen, no
    // projector registered): Prometheus needs no HELP for what is absent.
    let mut families = state.http_metrics.registry.gather();
    families.extend(crate::metrics::gather());
    families.extend(database.gather());
    let mut out = String::new();
    if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut out) {
        return encoding_failed(&error);
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response()
}

/// The answer when a metric could not be built or encoded (a bug here, not
/// a state of the service).
fn encoding_failed(error: &prometheus::Error) -> Response {
    Problem::internal()
        .because(
            "encoding the metrics",
            anyhow::Error::msg(error.to_string()),
        )
        .into_response()
}

/// `registry` with `taskledger_database_up` added.
fn database_up(registry: Registry, up: bool) -> prometheus::Result<Registry> {
    let gauge = IntGauge::new(
        "taskledger_database_up",
        "Whether the metrics query reached the database.",
    )?;
    gauge.set(i64::from(up));
    registry.register(Box::new(gauge))?;
    Ok(registry)
}

/// The metrics read from the database now, in a registry of their own
/// (built for this scrape: a projector that is gone leaves no series).
async fn database_metrics(state: &AppState) -> anyhow::Result<Registry> {
    let client = state.store.pool().get().await?;
    let lags = taskledger_projections::runtime::lags(&client).await?;
    let registry = Registry::new();
    projection_metrics(&registry, &lags)?;
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
    let gauge = |name: &str, help: &str, value: i64| -> prometheus::Result<()> {
        let gauge = IntGauge::new(name, help)?;
        gauge.set(value);
        registry.register(Box::new(gauge))
    };
    gauge(
        "taskledger_log_head_position",
        "The global position of the newest event.",
        head,
    )?;
    if let Some(relay) = row.get::<_, Option<i64>>(1) {
        gauge(
            "taskledger_relay_lag_events",
            "Events the relay has not recorded as confirmed by the broker (its checkpoint trails the broker's confirms by up to 1 s).",
            (head - relay).max(0),
        )?;
    }
    let oldest = Gauge::new(
        "taskledger_oldest_transaction_seconds",
        "Age of the oldest open transaction in the database.",
    )?;
    oldest.set(row.get::<_, Option<f64>>(2).unwrap_or(0.0));
    registry.register(Box::new(oldest))?;
    Ok(database_up(registry, true)?)
}

/// `taskledger_projection_*{projector}`: each projector's lag, failure and
/// pause. Projector names come from the checkpoints table, so they are
/// whatever text a row holds (the encoder escapes them).
fn projection_metrics(registry: &Registry, lags: &[ProjectorLag]) -> prometheus::Result<()> {
    let labelled = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["projector"]);
    let lag_events = labelled(
        "taskledger_projection_lag_events",
        "Events in the log a projector has not applied.",
    )?;
    let lag_seconds = GaugeVec::new(
        Opts::new(
            "taskledger_projection_lag_seconds",
            "Age of the oldest event a projector has not applied.",
        ),
        &["projector"],
    )?;
    let failed = labelled(
        "taskledger_projection_failed",
        "1 while a projector is stopped at an event it cannot apply.",
    )?;
    let paused = labelled(
        "taskledger_projection_paused",
        "1 while an operator has paused a projector.",
    )?;
    for lag in lags {
        let projector = [lag.name.as_str()];
        lag_events
            .with_label_values(&projector)
            .set(i64::try_from(lag.lag_events).unwrap_or(i64::MAX));
        lag_seconds
            .with_label_values(&projector)
            .set(lag.lag_seconds);
        failed
            .with_label_values(&projector)
            .set(i64::from(lag.failure.is_some()));
        paused
            .with_label_values(&projector)
            .set(i64::from(lag.paused));
    }
    registry.register(Box::new(lag_events))?;
    registry.register(Box::new(lag_seconds))?;
    registry.register(Box::new(failed))?;
    registry.register(Box::new(paused))
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
        let registry = Registry::new();
        projection_metrics(&registry, &[lag]).unwrap();
        let out = TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
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
