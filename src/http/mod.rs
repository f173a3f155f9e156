//! The HTTP surface: liveness and readiness probes, and the problem+json
//! error type every route uses ([`problem`]).

pub mod auth;
pub mod problem;

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use taskledger_events::postgres::{PgEventStore, LOG_LOCK_KEY};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The event store.
    pub store: PgEventStore,
    /// A transaction that has held the log lock this long makes the service
    /// not ready: every append in every process waits behind it.
    pub log_lock_stall: Duration,
}

impl auth::KeyStore for AppState {
    fn key_store(&self) -> &PgEventStore {
        &self.store
    }
}

/// The router with every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    checks: Checks,
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
async fn readyz(State(state): State<AppState>) -> Response {
    let log_appender = if state.store.appender_alive() {
        Check::ok()
    } else {
        Check::failed("the appender task has stopped; appends cannot be made")
    };
    let (database, log_lock, oldest) =
        match tokio::time::timeout(CHECK_TIMEOUT, transaction_ages(&state.store)).await {
            Ok(Ok((lock_held, oldest))) => {
                let log_lock = match lock_held {
                    Some(seconds) if seconds > state.log_lock_stall.as_secs_f64() => {
                        Check::failed(format!(
                    "a transaction has held the log lock for {seconds:.1} s; appends are waiting"
                ))
                    }
                    _ => Check::ok(),
                };
                (Check::ok(), log_lock, oldest)
            }
            Ok(Err(error)) => (
                Check::failed(format!("{error}")),
                Check::failed("unknown: the database does not answer"),
                None,
            ),
            Err(_) => (
                Check::failed(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
                Check::failed("unknown: the database does not answer"),
                None,
            ),
        };
    let ready = database.ok && log_appender.ok && log_lock.ok;
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: Checks {
            database,
            log_appender,
            log_lock,
            oldest_transaction_seconds: oldest,
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// How long the log lock has been held (if it is), and the age of the oldest
/// open transaction in this database, in seconds.
async fn transaction_ages(
    store: &PgEventStore,
) -> Result<(Option<f64>, Option<f64>), taskledger_events::StoreError> {
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
    Ok((row.get(0), row.get(1)))
}
