//! The probes: `/healthz` (the process answers) and `/readyz` (each outside
//! dependency and projection, checked within [`CHECK_TIMEOUT`]).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use taskledger_events::postgres::{PgEventStore, LOG_LOCK_KEY};
use taskledger_projections::runtime::ProjectorLag;

use super::AppState;

/// How long each readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain"))
)]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    /// This installation's id and RabbitMQ prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    installation: Option<Installation>,
    checks: Checks,
}

#[derive(Debug, Serialize)]
struct Installation {
    id: uuid::Uuid,
    amqp_prefix: String,
}

#[derive(Debug, Serialize)]
struct Checks {
    /// The database answers a query.
    database: Check,
    /// This process's appender, which orders the log, is running.
    log_appender: Check,
    /// No transaction has held the log lock for longer than the limit.
    log_lock: Check,
    /// Age of the oldest open transaction in the database, in seconds.
    oldest_transaction_seconds: Option<f64>,
    /// Each projector's distance behind the log, and its failure if it is
    /// stuck on an event. Reported, not counted against readiness: the
    /// write path works while a read model lags, and every instance shares
    /// the same projections, so failing readiness would only add an outage.
    projections: Vec<ProjectionCheck>,
    /// The Docker engine (for a runner with Docker kinds) and RabbitMQ (for
    /// a relay or runner given `AMQP_URL`): counted against readiness.
    #[serde(skip_serializing_if = "Option::is_none")]
    docker: Option<crate::service::dependencies::PartCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rabbitmq: Option<crate::service::dependencies::PartCheck>,
    /// Whether each kind's tasks can run on this process's runner (a
    /// missing image, a network the engine cannot give). Reported, not
    /// counted: the other kinds still run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    kinds: BTreeMap<String, crate::service::dependencies::KindCheck>,
}

#[derive(Debug, Serialize)]
struct ProjectionCheck {
    name: String,
    ok: bool,
    position: u64,
    lag_events: u64,
    lag_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl Check {
    fn ok() -> Self {
        Self {
            ok: true,
            detail: None,
        }
    }

    fn failed(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: Some(detail.into()),
        }
    }
}

/// Readiness: the database answers, the log's ordering machinery runs, and
/// nothing holds the log lock for too long. 200 when all hold, else 503.
#[utoipa::path(
    get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready: every check passed", content_type = "application/json"),
        (status = 503, description = "Not ready: the body names the failed check", content_type = "application/json"),
    )
)]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let log_appender = if state.store.appender_alive() {
        Check::ok()
    } else {
        Check::failed("the appender task has stopped; appends cannot be made")
    };
    let (database, log_lock, oldest, projections) =
        match tokio::time::timeout(CHECK_TIMEOUT, database_checks(&state.store)).await {
            Ok(Ok((lock_held, oldest, projections))) => {
                let log_lock = match lock_held {
                    Some(seconds) if seconds > state.log_lock_stall.as_secs_f64() => {
                        Check::failed(format!(
                    "a transaction has held the log lock for {seconds:.1} s; appends are waiting"
                ))
                    }
                    _ => Check::ok(),
                };
                (Check::ok(), log_lock, oldest, projections)
            }
            Ok(Err(error)) => (
                Check::failed(format!("{error}")),
                Check::failed("unknown: the database does not answer"),
                None,
                Vec::new(),
            ),
            Err(_) => (
                Check::failed(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
                Check::failed("unknown: the database does not answer"),
                None,
                Vec::new(),
            ),
        };
    let parts = state.dependencies.report().await;
    let ready = database.ok && log_appender.ok && log_lock.ok && parts.parts_ok();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        installation: state
            .installation
            .clone()
            .map(|(id, amqp_prefix)| Installation { id, amqp_prefix }),
        checks: Checks {
            docker: parts.docker,
            rabbitmq: parts.rabbitmq,
            kinds: parts.kinds,
            database,
            log_appender,
            log_lock,
            oldest_transaction_seconds: oldest,
            projections: projections
                .into_iter()
                .map(|lag| ProjectionCheck {
                    ok: lag.failure.is_none() && !lag.paused,
                    detail: match lag.failure {
                        Some((position, error)) => Some(format!(
                            "stopped at the event at position {position}: {error}"
                        )),
                        None if lag.paused => Some(format!(
                            "paused by an operator; `taskledger projections resume {}`",
                            lag.name
                        )),
                        None => None,
                    },
                    name: lag.name,
                    position: lag.position,
                    lag_events: lag.lag_events,
                    lag_seconds: lag.lag_seconds,
                })
                .collect(),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// How long the log lock has been held (if it is), the age of the oldest
/// open transaction in this database, in seconds, and the projectors' lags.
async fn database_checks(
    store: &PgEventStore,
) -> Result<(Option<f64>, Option<f64>, Vec<ProjectorLag>), taskledger_events::StoreError> {
    let client = store.pool().get().await?;
    let row = client
        .query_one(
            "SELECT
                 (SELECT extract(epoch FROM now() - min(a.xact_start))::float8
                  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE l.locktype = 'advisory' AND l.granted
                    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND ((l.classid::bigint << 32) | l.objid::bigint) = $1),
                 (SELECT extract(epoch FROM now() - min(xact_start))::float8
                  FROM pg_stat_activity
                  WHERE datname = current_database() AND xact_start IS NOT NULL
                    AND pid <> pg_backend_pid())",
            &[&LOG_LOCK_KEY],
        )
        .await
        .map_err(|source| taskledger_events::StoreError::Database {
            context: "checking transaction ages",
            source,
        })?;
    let lags = taskledger_projections::runtime::lags(&client)
        .await
        .map_err(|source| taskledger_events::StoreError::Database {
            context: "reading the projectors' checkpoints",
            source,
        })?;
    Ok((row.get(0), row.get(1), lags))
}
