//! Defects a review found in the append protocol, each pinned by a test.

use std::time::Duration;

use serde_json::json;
use taskledger_events::postgres::{
    append_in_transaction, AppendRequest, PgEventStore, StoreOptions,
};
use taskledger_events::testing::TestDatabase;
use taskledger_events::{
    chain, AppendError, EventStore, ExpectedVersion, InvalidInput, Metadata, NewEvent, StoreError,
};

use crate::helpers::{append_in_order, appended, assert_matches, event, refused, store, stream};

async fn verifies(store: &PgEventStore) -> Option<taskledger_events::postgres::verify::Defect> {
    crate::helpers::verify(store, 1_000).await.defect
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_batched_behind_a_newer_append_is_still_recognised() {
    let (store, database) = store().await;
    let s = stream("task-x");
    appended(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let original = event(2);
    appended(
        &store,
        &s,
        ExpectedVersion::Exact(1),
        vec![original.clone()],
    )
    .await;
    for round in 0..20 {
        // Both land in one batch most of the time; either way each answer
        // must be right.
        let (newer, retry) = futures::join!(
            store.append(
                &s,
                ExpectedVersion::Exact(2 + round),
                vec![event(3 + round)]
            ),
            store.append(&s, ExpectedVersion::Exact(1), vec![original.clone()]),
        );
        newer.unwrap();
        let retry = retry.unwrap();
        assert!(retry.already_stored);
        assert_eq!((retry.first_version, retry.first_position), (2, 2));
    }
    database.drop_database().await;
}

#[tokio::test]
async fn a_head_refilled_after_lost_commits_is_not_chained_onto() {
    let (first, database) = store().await;
    let s = stream("task-a");
    append_in_order(&first, &s, 0..3).await;
    // What a failover to a replica that missed the last commit looks like:
    // position 3 is gone, and another process writes a different 3.
    let admin = database.client().await;
    admin
        .batch_execute(
            "ALTER TABLE events DISABLE TRIGGER events_append_only;
             DELETE FROM events WHERE global_position = 3;
             ALTER TABLE events ENABLE TRIGGER events_append_only",
        )
        .await
        .unwrap();
    let second = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    appended(
        &second,
        &stream("task-b"),
        ExpectedVersion::NoStream,
        vec![event(9)],
    )
    .await;
    // The first store's cached head has position 3 but the old hash.
    let result = appended(
        &first,
        &stream("task-c"),
        ExpectedVersion::NoStream,
        vec![event(10)],
    )
    .await;
    assert_eq!(result.first_position, 4);
    assert_eq!(verifies(&first).await, None, "the chain must stay intact");
    drop(admin);
    database.drop_database().await;
}

#[tokio::test]
async fn schema_versions_beyond_the_column_are_refused() {
    let (store, database) = store().await;
    let mut too_big = event(1);
    too_big.schema_version = 3_000_000_000;
    let s = stream("task-s");
    let error = refused(&store, &s, ExpectedVersion::Any, vec![too_big]).await;
    assert_matches!(
        error,
        AppendError::Invalid(InvalidInput::SchemaVersion { .. })
    );
    assert_eq!(store.head_position().await.unwrap(), 0);
    database.drop_database().await;
}

#[tokio::test]
async fn an_absurd_expected_version_is_a_conflict_not_a_crash() {
    let (store, database) = store().await;
    let s = stream("task-m");
    appended(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let error = refused(&store, &s, ExpectedVersion::Exact(u64::MAX), vec![event(2)]).await;
    assert_matches!(error, AppendError::WrongExpectedVersion { actual: 1, .. });
    assert!(store.appender_alive());
    let next = appended(&store, &s, ExpectedVersion::Exact(1), vec![event(3)]).await;
    assert_eq!(next.stream_version, 2);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_that_would_be_unreadable_is_refused_and_a_corrupt_row_stops_the_feed() {
    let (store, database) = store().await;
    let mut poisoned = event(1);
    let mut extra = serde_json::Map::new();
    extra.insert("actor".into(), json!(5));
    poisoned.metadata = Metadata {
        extra,
        ..Metadata::default()
    };
    let s = stream("task-p");
    let error = refused(&store, &s, ExpectedVersion::Any, vec![poisoned]).await;
    assert_matches!(error, AppendError::Invalid(InvalidInput::MetadataKey { key, .. }) if key == "actor");

    // A row written behind the store's back is reported, never skipped.
    appended(&store, &s, ExpectedVersion::Any, vec![event(2)]).await;
    let admin = database.client().await;
    admin
        .execute(
            "INSERT INTO events VALUES (2, gen_random_uuid(), 'task-p', 2, 'T', 1, '{}', '{\"actor\":5}', now(), \
             decode(repeat('00', 32), 'hex'))",
            &[],
        )
        .await
        .unwrap();
    let mut feed = store.subscribe_all(0);
    let first = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.unwrap().global_position, 1);
    let second = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap()
        .unwrap();
    assert_matches!(
        second,
        Err(StoreError::Corrupt {
            global_position: 2,
            ..
        })
    );
    let end = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the feed must end at an unreadable event");
    drop(admin);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_default_of_repeatable_read_does_not_break_appends() {
    let database = TestDatabase::create().await;
    let url = format!(
        "{}?options=-c%20default_transaction_isolation%3Drepeatable%5C%20read",
        database.url
    );
    let first = PgEventStore::connect(&url, StoreOptions::default()).unwrap();
    let second = PgEventStore::connect(&url, StoreOptions::default()).unwrap();
    let run = |store: PgEventStore, tag: &'static str| async move {
        for n in 0..60_u64 {
            store
                .append(
                    &stream(&format!("task-{tag}-{}", n % 5)),
                    ExpectedVersion::Any,
                    vec![event(n)],
                )
                .await
                .unwrap_or_else(|error| panic!("{tag} append {n}: {error}"));
        }
    };
    futures::join!(run(first.clone(), "a"), run(second.clone(), "b"));
    assert_eq!(first.head_position().await.unwrap(), 120);
    assert_eq!(verifies(&first).await, None);

    // A caller's own transaction must be READ COMMITTED.
    let mut client = first.pool().get().await.unwrap();
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    let request =
        AppendRequest::new(stream("task-rr"), ExpectedVersion::Any, vec![event(1)]).unwrap();
    let error = append_in_transaction(&tx, &[request]).await.unwrap_err();
    assert_matches!(error, StoreError::Misuse(message) if message.contains("READ COMMITTED"));
    drop(tx);
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn computed_floats_read_back_exactly_and_verify() {
    let (store, database) = store().await;
    let total = 359.25_f64 * 1.07;
    appended(
        &store,
        &stream("task-f"),
        ExpectedVersion::Any,
        vec![NewEvent::new("Priced", json!({ "total": total }))],
    )
    .await;
    let read = store.read_all(0, 10).await.unwrap();
    assert_eq!(read[0].data["total"].as_f64(), Some(total));
    let stored = store.read_all_as_stored(0, 10).await.unwrap();
    assert!(chain::verify_run(0, chain::GENESIS_HASH, &stored).is_ok());
    assert_eq!(verifies(&store).await, None);
    database.drop_database().await;
}

/// A saturated pool fails a request after `pool_wait` instead of making it
/// wait without bound (the API answers that with 503).
#[tokio::test]
async fn a_saturated_pool_fails_after_its_wait_instead_of_hanging() {
    use std::time::Duration;
    use taskledger_events::postgres::StoreOptions;
    let (store, database) = crate::helpers::store_with(StoreOptions {
        pool_size: 2,
        pool_wait: Duration::from_millis(300),
        ..StoreOptions::default()
    })
    .await;
    let first = store.pool().get().await.unwrap();
    let second = store.pool().get().await.unwrap();
    let started = std::time::Instant::now();
    let third = tokio::time::timeout(Duration::from_secs(5), store.pool().get())
        .await
        .expect("the pool wait is bounded");
    assert!(third.is_err(), "a third connection from a pool of two");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The planner hint is set on the store's own connections and only there:
    // not on the ones `pool()` hands out for read models and exports.
    let own = taskledger_events::testing::own_pool(&store)
        .get()
        .await
        .unwrap();
    assert_eq!(seqscan_setting(&own).await, "off");
    assert_eq!(seqscan_setting(&first).await, "on");
    drop((first, second));
    assert!(
        store.pool().get().await.is_ok(),
        "freed connections are handed out again"
    );
    database.drop_database().await;
}

async fn seqscan_setting(client: &deadpool_postgres::Client) -> String {
    client
        .query_one("SHOW enable_seqscan", &[])
        .await
        .unwrap()
        .get(0)
}
