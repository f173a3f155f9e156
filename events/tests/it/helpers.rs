//! Shared set-up for the store tests.

use std::time::Duration;

use serde_json::json;
use taskledger_events::postgres::verify::{verify_range, Verification};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::TestDatabase;
use taskledger_events::{
    AppendError, AppendResult, EventStore, ExpectedVersion, NewEvent, StreamId,
};

/// Asserts that `value` matches `pattern` (and its guard, if any); the
/// failure shows the value.
macro_rules! assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        match &$value {
            $pattern $(if $guard)? => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern)),
        }
    };
}
pub(crate) use assert_matches;

pub(crate) async fn store() -> (PgEventStore, TestDatabase) {
    store_with(StoreOptions::default()).await
}

pub(crate) async fn store_with(options: StoreOptions) -> (PgEventStore, TestDatabase) {
    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, options).expect("store");
    (store, database)
}

/// Verifies the whole log (chain and order), reading `batch` events a query.
pub(crate) async fn verify(store: &PgEventStore, batch: usize) -> Verification {
    let client = store.pool().get().await.unwrap();
    verify_range(&client, 1, None, batch, |_| {}).await.unwrap()
}

/// Asserts that [`verify`] (reading `batch` events a query) checks exactly
/// `checked` events and finds no defect.
pub(crate) async fn assert_verifies(store: &PgEventStore, batch: usize, checked: u64) {
    let verification = verify(store, batch).await;
    assert_eq!(verification.defect, None, "the log does not verify");
    assert_eq!(verification.checked, checked, "events checked");
}

/// Appends `events` to `stream` expecting `expected`; panics, naming the
/// stream, if the store refuses.
pub(crate) async fn appended(
    store: &PgEventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendResult {
    store
        .append(stream, expected, events)
        .await
        .unwrap_or_else(|error| panic!("appending to {stream} at {expected:?}: {error:?}"))
}

/// Why the store refuses to append `events` to `stream` expecting
/// `expected`; panics, naming the stream, if it accepts them.
pub(crate) async fn refused(
    store: &PgEventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendError {
    match store.append(stream, expected, events).await {
        Ok(result) => panic!("appending to {stream} at {expected:?} was accepted: {result:?}"),
        Err(error) => error,
    }
}

/// Appends `event(v)` at each version `v` of `versions` in turn, each
/// expecting exactly the version before it.
pub(crate) async fn append_in_order(
    store: &PgEventStore,
    stream: &StreamId,
    versions: std::ops::Range<u64>,
) {
    for version in versions {
        appended(
            store,
            stream,
            ExpectedVersion::Exact(version),
            vec![event(version)],
        )
        .await;
    }
}

pub(crate) fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

pub(crate) fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", json!({ "n": n }))
}

/// Polls `check` every 10 ms until it is true or `within` has passed.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
