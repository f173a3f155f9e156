//! What the projector tests share: a fresh database with a store, events
//! appended as they are, a projector run in the background (or until its
//! checkpoint reaches a position), the checkpoint row, and polling with a
//! deadline instead of sleeping.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use taskledger_events::codec::DomainEvent;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::TestDatabase;
use taskledger_events::{EventStore, ExpectedVersion, Metadata, StreamId};
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::{Projector, ProjectorRuntime, ProjectorStatus};
use tokio_postgres::types::FromSqlOwned;

/// A new database (dropped by the test's `database.drop_database()`), a
/// store on it and a client.
pub(crate) async fn database() -> (PgEventStore, TestDatabase, tokio_postgres::Client) {
    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    let client = database.client().await;
    (store, database, client)
}

/// A fixed time, `second`s into the minute the fixtures happen in.
pub(crate) fn at(second: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, second).unwrap()
}

/// Appends `events` to `stream_id` as they are (a hand-written log: no
/// aggregate decides them), each with a new id.
pub(crate) async fn record<E: DomainEvent>(
    store: &PgEventStore,
    stream_id: &StreamId,
    expected: ExpectedVersion,
    events: &[E],
) {
    let new_events = events
        .iter()
        .map(|event| {
            taskledger_events::codec::encode(event, uuid::Uuid::now_v7(), Metadata::default())
        })
        .collect();
    store.append(stream_id, expected, new_events).await.unwrap();
}

/// The one row a query without parameters answers; panics, naming the
/// query, if it does not.
pub(crate) async fn row(client: &tokio_postgres::Client, sql: &str) -> tokio_postgres::Row {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// The one value a query without parameters answers.
pub(crate) async fn scalar<T: FromSqlOwned>(client: &tokio_postgres::Client, sql: &str) -> T {
    row(client, sql).await.get(0)
}

/// The first column of every row a query without parameters answers.
pub(crate) async fn column<T: FromSqlOwned>(client: &tokio_postgres::Client, sql: &str) -> Vec<T> {
    let rows = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    rows.iter().map(|row| row.get(0)).collect()
}

/// Empties `tables` and sets `projector`'s checkpoint back to 0: its next
/// run rebuilds them from the whole log.
pub(crate) async fn reset(client: &tokio_postgres::Client, projector: &str, tables: &str) {
    client
        .batch_execute(&format!(
            "TRUNCATE {tables}; UPDATE projector_checkpoints SET position = 0 WHERE projector = '{projector}'"
        ))
        .await
        .unwrap();
}

/// Runtime options that retry a standby or a failure after 100 ms (a test
/// should not wait the default seconds).
pub(crate) fn quick_retries() -> RuntimeOptions {
    RuntimeOptions {
        standby_retry: Duration::from_millis(100),
        failure_retry: Duration::from_millis(100),
        ..RuntimeOptions::default()
    }
}

/// `projector`'s checkpoint row: position, failed position, failure.
pub(crate) async fn checkpoint(
    client: &tokio_postgres::Client,
    projector: &str,
) -> Option<(i64, Option<i64>, Option<String>)> {
    client
        .query_opt(
            "SELECT position, failed_position, failure FROM projector_checkpoints WHERE projector = $1",
            &[&projector],
        )
        .await
        .unwrap()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
}

/// Polls `check` until it holds; fails the test, naming `what`, when it
/// does not within `within`.
pub(crate) async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A projector runtime running in the background.
pub(crate) struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    /// The instance's status.
    pub(crate) status: tokio::sync::watch::Receiver<ProjectorStatus>,
}

impl Running {
    /// Starts `runtime` in the background.
    pub(crate) fn start<P: Projector>(runtime: ProjectorRuntime<P>) -> Self {
        let status = runtime.status();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runtime.run(async move {
            let _ = stopped.await;
        }));
        Self { stop, task, status }
    }

    /// Stops it and waits until it has stopped.
    pub(crate) async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

/// Runs `runtime` until its checkpoint is `head`, failing the test if the
/// projector records a failure on the way, then stops it.
pub(crate) async fn run_until<P: Projector>(
    runtime: ProjectorRuntime<P>,
    client: &tokio_postgres::Client,
    head: u64,
) {
    let name = runtime.status().borrow().name;
    let running = Running::start(runtime);
    let head = i64::try_from(head).unwrap();
    wait_until(
        &format!("the {name} projector to reach {head}"),
        Duration::from_secs(20),
        async || match checkpoint(client, name).await {
            Some((position, _, failure)) => {
                assert!(failure.is_none(), "the projector failed: {failure:?}");
                position == head
            }
            None => false,
        },
    )
    .await;
    running.stop().await;
}
