//! Appends: expected versions, idempotent retries, bad input, stream reads.

use serde_json::json;
use taskledger_events::{
    AppendError, Direction, EventStore, ExpectedVersion, InvalidInput, Metadata, NewEvent,
};

use crate::helpers::{
    append_in_order, appended, assert_matches, assert_verifies, event, refused, store, stream,
};

#[tokio::test]
async fn every_expected_version_case() {
    let (store, database) = store().await;
    let s = stream("task-expected");

    // NoStream on a new stream, then not again.
    let first = appended(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    assert_eq!(
        (
            first.first_version,
            first.stream_version,
            first.first_position
        ),
        (1, 1, 1)
    );
    let error = refused(&store, &s, ExpectedVersion::NoStream, vec![event(2)]).await;
    assert_matches!(
        error,
        AppendError::WrongExpectedVersion {
            actual: 1,
            expected: ExpectedVersion::NoStream,
            ..
        }
    );

    // StreamExists: refused on a new stream, accepted on an existing one.
    let other = stream("task-other");
    let error = refused(
        &store,
        &other,
        ExpectedVersion::StreamExists,
        vec![event(1)],
    )
    .await;
    assert_matches!(error, AppendError::WrongExpectedVersion { actual: 0, .. });
    let result = appended(
        &store,
        &s,
        ExpectedVersion::StreamExists,
        vec![event(2), event(3)],
    )
    .await;
    assert_eq!((result.first_version, result.stream_version), (2, 3));
    assert_eq!((result.first_position, result.last_position), (2, 3));

    // Exact: the right version works, a stale one reports the actual version.
    let result = appended(&store, &s, ExpectedVersion::Exact(3), vec![event(4)]).await;
    assert_eq!(result.stream_version, 4);
    let error = refused(&store, &s, ExpectedVersion::Exact(2), vec![event(5)]).await;
    match error {
        AppendError::WrongExpectedVersion {
            stream_id,
            expected,
            actual,
        } => {
            assert_eq!(
                (stream_id.as_str(), expected, actual),
                ("task-expected", ExpectedVersion::Exact(2), 4)
            );
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    // Exact(0) is the same as NoStream.
    let result = appended(&store, &other, ExpectedVersion::Exact(0), vec![event(1)]).await;
    assert_eq!(result.stream_version, 1);

    // Any: always appends.
    let result = appended(&store, &s, ExpectedVersion::Any, vec![event(5)]).await;
    assert_eq!(result.stream_version, 5);

    // Nothing was written by the refused appends.
    let events = store
        .read_stream(&s, 1, Direction::Forward, 100)
        .await
        .unwrap();
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        store.head_position().await.unwrap(),
        6,
        "five events in one stream, one in the other"
    );
    database.drop_database().await;
}

#[tokio::test]
async fn retrying_the_same_append_returns_the_original_result() {
    let (store, database) = store().await;
    let s = stream("task-retry");
    appended(&store, &s, ExpectedVersion::NoStream, vec![event(0)]).await;
    let batch = vec![event(1), event(2)];
    let original = appended(&store, &s, ExpectedVersion::Exact(1), batch.clone()).await;
    assert!(!original.already_stored);

    // The stream moves on; the retry still answers as the original did.
    appended(&store, &s, ExpectedVersion::Any, vec![event(3)]).await;
    let retry = appended(&store, &s, ExpectedVersion::Exact(1), batch.clone()).await;
    assert!(retry.already_stored);
    assert_eq!(
        (
            retry.first_version,
            retry.stream_version,
            retry.first_position,
            retry.last_position
        ),
        (
            original.first_version,
            original.stream_version,
            original.first_position,
            original.last_position
        )
    );
    let retry_any = appended(&store, &s, ExpectedVersion::Any, batch.clone()).await;
    assert!(retry_any.already_stored);
    assert_eq!(
        store.head_position().await.unwrap(),
        4,
        "a retry writes nothing"
    );

    // The same ids anywhere else are an error.
    let error = refused(
        &store,
        &stream("task-elsewhere"),
        ExpectedVersion::Any,
        batch.clone(),
    )
    .await;
    assert_matches!(error, AppendError::DuplicateEventId { stored_stream_id, stored_version: 2, .. } if stored_stream_id == "task-retry");
    // ... including at another expected version of the same stream,
    let error = refused(&store, &s, ExpectedVersion::Exact(3), batch.clone()).await;
    assert_matches!(error, AppendError::DuplicateEventId { .. });
    // ... in another order,
    let reversed = vec![batch[1].clone(), batch[0].clone()];
    let error = refused(&store, &s, ExpectedVersion::Any, reversed).await;
    assert_matches!(error, AppendError::DuplicateEventId { .. });
    // ... or mixed with a new event.
    let error = refused(
        &store,
        &s,
        ExpectedVersion::Any,
        vec![batch[0].clone(), event(9)],
    )
    .await;
    assert_matches!(error, AppendError::DuplicateEventId { .. });
    assert_eq!(store.head_position().await.unwrap(), 4);
    database.drop_database().await;
}

#[tokio::test]
async fn concurrent_identical_retries_store_the_events_once() {
    let (store, database) = store().await;
    let s = stream("task-race");
    let batch = vec![event(1)];
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        let s = s.clone();
        let batch = batch.clone();
        tokio::spawn(async move { store.append(&s, ExpectedVersion::NoStream, batch).await })
    });
    let results: Vec<_> = futures::future::join_all(attempts).await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| !r.already_stored).count(), 1);
    assert!(results
        .iter()
        .all(|r| r.first_position == 1 && r.stream_version == 1));
    assert_eq!(store.head_position().await.unwrap(), 1);
    database.drop_database().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_writes_nothing() {
    let (store, database) = store().await;
    for bad in ["", "a\u{0}b", "tab\there"] {
        assert!(taskledger_events::StreamId::new(bad).is_err(), "{bad:?}");
    }
    assert!(taskledger_events::StreamId::new("x".repeat(201)).is_err());

    let s = stream("task-bad");
    let error = refused(&store, &s, ExpectedVersion::Any, vec![]).await;
    assert_matches!(error, AppendError::Invalid(InvalidInput::EmptyBatch));
    for data in [json!([1]), json!("text"), json!(null), json!(3)] {
        let error = refused(
            &store,
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new("Bad", data.clone())],
        )
        .await;
        assert!(
            matches!(
                error,
                AppendError::Invalid(InvalidInput::NotAnObject { field: "data", .. })
            ),
            "{data}: {error:?}"
        );
    }
    let twice = event(1);
    let error = refused(&store, &s, ExpectedVersion::Any, vec![twice.clone(), twice]).await;
    assert_matches!(
        error,
        AppendError::Invalid(InvalidInput::RepeatedEventId { .. })
    );
    let mut untyped = event(1);
    untyped.event_type = String::new();
    let error = refused(&store, &s, ExpectedVersion::Any, vec![untyped]).await;
    assert_matches!(error, AppendError::Invalid(InvalidInput::EventType { .. }));
    assert_eq!(store.head_position().await.unwrap(), 0);
    database.drop_database().await;
}

#[tokio::test]
async fn the_envelope_round_trips_and_streams_read_both_ways() {
    let (store, database) = store().await;
    let s = stream("task-envelope");
    let correlation = uuid::Uuid::new_v4();
    let mut first = NewEvent::new(
        "TaskSubmitted",
        json!({"kind": "url", "nested": {"b": 1, "a": [1.5, "\u{0}x"]}}),
    );
    first.metadata = Metadata {
        correlation_id: Some(correlation),
        actor: Some("key-7".into()),
        ..Metadata::default()
    };
    let events: Vec<NewEvent> = std::iter::once(first.clone())
        .chain((2..=5).map(event))
        .collect();
    appended(&store, &s, ExpectedVersion::NoStream, events).await;

    let stored = store
        .read_stream(&s, 1, Direction::Forward, 2)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].event_id, first.event_id);
    assert_eq!(stored[0].event_type, "TaskSubmitted");
    assert_eq!(stored[0].schema_version, 1);
    assert_eq!(stored[0].data, first.data);
    assert_eq!(stored[0].metadata.correlation_id, Some(correlation));
    assert_eq!(stored[0].metadata.actor.as_deref(), Some("key-7"));
    assert_eq!(stored[0].stream_id, "task-envelope");
    assert!(stored[0].recorded_at <= chrono::Utc::now());

    let versions = async |from: u64, direction: Direction, limit: usize| -> Vec<u64> {
        let events = store.read_stream(&s, from, direction, limit).await.unwrap();
        events.iter().map(|e| e.version).collect()
    };
    assert_eq!(versions(u64::MAX, Direction::Backward, 3).await, [5, 4, 3]);
    assert_eq!(versions(3, Direction::Backward, 10).await, [3, 2, 1]);
    assert_eq!(versions(4, Direction::Forward, 10).await, [4, 5]);
    assert!(store
        .read_stream(&stream("nobody"), 1, Direction::Forward, 10)
        .await
        .unwrap()
        .is_empty());

    let all = store.read_all(2, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_verifies(&store, 2, 5).await;
    database.drop_database().await;
}

#[tokio::test]
async fn two_stores_on_one_log_interleave_correctly() {
    // Two processes' appenders: each one's cached head goes stale whenever
    // the other appends, so their one-round-trip commits must notice and
    // take the full path.
    let (first, database) = store().await;
    let second =
        taskledger_events::postgres::PgEventStore::connect(&database.url, Default::default())
            .unwrap();
    let s = stream("task-shared");
    let mut version = 0;
    for round in 0..20_u64 {
        let store = if round % 2 == 0 { &first } else { &second };
        let result = appended(
            store,
            &s,
            ExpectedVersion::Exact(version),
            vec![event(round)],
        )
        .await;
        assert_eq!(
            (result.stream_version, result.first_position),
            (version + 1, round + 1)
        );
        version = result.stream_version;
        // A stale expectation is still refused with the actual version.
        let error = refused(
            store,
            &s,
            ExpectedVersion::Exact(version - 1),
            vec![event(99)],
        )
        .await;
        assert_matches!(error, AppendError::WrongExpectedVersion { actual, .. } if *actual == version);
    }
    let (fast, full) = first.commit_counts();
    assert!(
        full >= 10,
        "stale heads must fall back to the full path (fast {fast}, full {full})"
    );
    assert_verifies(&first, 100, 20).await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_single_writer_commits_in_one_round_trip_and_duplicates_still_fail_cleanly() {
    let (store, database) = store().await;
    let s = stream("task-fast");
    append_in_order(&store, &s, 0..10).await;
    let (fast, full) = store.commit_counts();
    assert!(
        fast >= 9,
        "appends after the first should take one round trip (fast {fast}, full {full})"
    );

    // An id already stored elsewhere, appended where the fast path's guard
    // passes: the unique index refuses it and the full path says why.
    let stored = store
        .read_stream(&s, 1, Direction::Forward, 1)
        .await
        .unwrap()
        .remove(0);
    let mut copy = event(1);
    copy.event_id = stored.event_id;
    let error = refused(
        &store,
        &stream("task-new"),
        ExpectedVersion::NoStream,
        vec![copy],
    )
    .await;
    assert_matches!(error, AppendError::DuplicateEventId { stored_stream_id, stored_version: 1, .. } if stored_stream_id == "task-fast");
    // The appender goes on working.
    let next = appended(&store, &s, ExpectedVersion::Exact(10), vec![event(10)]).await;
    assert_eq!((next.stream_version, next.first_position), (11, 11));
    database.drop_database().await;
}

#[tokio::test]
async fn recorded_at_never_decreases_along_the_log() {
    let (store, database) = store().await;
    for n in 0..30 {
        let expected = if n % 3 == 0 {
            ExpectedVersion::Any
        } else {
            ExpectedVersion::Exact(n)
        };
        appended(&store, &stream("task-time"), expected, vec![event(n)]).await;
    }
    let all = store.read_all(0, 100).await.unwrap();
    assert_eq!(all.len(), 30);
    for pair in all.windows(2) {
        assert!(
            pair[0].recorded_at <= pair[1].recorded_at,
            "{:?} > {:?}",
            pair[0].recorded_at,
            pair[1].recorded_at
        );
    }
    database.drop_database().await;
}

#[tokio::test]
async fn the_table_itself_refuses_data_that_is_not_an_object() {
    // Defence in depth for writers that bypass the store.
    let database = taskledger_events::testing::TestDatabase::create().await;
    let client = database.client().await;
    for bad in ["[1]", "\"text\"", "3", " {\"a\":1}", "{not json"] {
        let result = client
            .execute(
                "INSERT INTO events VALUES (1, gen_random_uuid(), 's', 1, 'T', 1, $1::text::json, '{}', now(), \
                 decode(repeat('00', 32), 'hex'))",
                &[&bad],
            )
            .await;
        assert!(result.is_err(), "{bad:?} was accepted");
    }
    client
        .execute(
            "INSERT INTO events VALUES (1, gen_random_uuid(), 's', 1, 'T', 1, '{\"a\":1}', '{}', now(), \
             decode(repeat('00', 32), 'hex'))",
            &[],
        )
        .await
        .expect("an object is accepted");
    let refused = client.execute("UPDATE events SET version = 2", &[]).await;
    let error = refused.unwrap_err();
    let message = error
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("append-only"), "{error:?}");
    let refused = client.execute("DELETE FROM events", &[]).await;
    assert!(refused.is_err());
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn the_latest_event_of_a_type_is_one_indexed_read_however_long_the_stream() {
    let (store, database) = store().await;
    let device = stream("device-300434063000001");
    let assigned = |tenant: &str| NewEvent::new("DeviceAssigned", json!({ "tenant": tenant }));
    assert!(store
        .latest_of_type(&device, "DeviceAssigned")
        .await
        .unwrap()
        .is_none());
    let mut batch: Vec<NewEvent> = (1..=500).map(event).collect();
    batch.insert(10, assigned("acme"));
    batch.insert(300, assigned("globex"));
    appended(&store, &device, ExpectedVersion::NoStream, batch).await;
    appended(
        &store,
        &device,
        ExpectedVersion::Any,
        (501..=700).map(event).collect(),
    )
    .await;
    let latest = store
        .latest_of_type(&device, "DeviceAssigned")
        .await
        .unwrap()
        .expect("two assignments");
    assert_eq!(latest.version, 301);
    assert_eq!(latest.data["tenant"], "globex");
    let other = stream("device-300434063000002");
    assert!(store
        .latest_of_type(&other, "DeviceAssigned")
        .await
        .unwrap()
        .is_none());

    // The read is the partial index's: it never passes the stream's
    // messages.
    let client = database.client().await;
    client.batch_execute("ANALYZE events").await.unwrap();
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT global_position FROM events WHERE stream_id = $1 \
             AND event_type = 'DeviceAssigned' ORDER BY version DESC LIMIT 1",
            &[&device.as_str()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        plan.join("\n").contains("events_stream_version_assigned"),
        "{plan:#?}"
    );
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn the_newest_events_of_a_type_are_read_filtered_by_their_fields() {
    let (store, database) = store().await;
    let hook = stream("webhook-filtered");
    let attempt = |message: &str, position: u64, n: u64| {
        NewEvent::new(
            "WebhookDeliveryAttempted",
            json!({ "message_id": message, "position": position, "attempt": n }),
        )
    };
    let mut batch = vec![
        attempt("msg_a", 7, 1),
        attempt("msg_b", 8, 1),
        attempt("msg_a", 7, 2),
    ];
    batch.insert(1, event(1));
    batch.push(attempt("msg_a", 7, 3));
    appended(&store, &hook, ExpectedVersion::NoStream, batch).await;
    let read = |matching: Vec<(&'static str, &'static str)>, limit: usize| {
        let (store, hook) = (&store, &hook);
        async move {
            store
                .newest_of_type_matching(hook, "WebhookDeliveryAttempted", &matching, limit)
                .await
                .unwrap()
                .iter()
                .map(|event| {
                    (
                        event.data["message_id"].clone(),
                        event.data["attempt"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    // Every event of the type, oldest first; not the other type's.
    assert_eq!(
        read(vec![], 10).await,
        [
            (json!("msg_a"), json!(1)),
            (json!("msg_b"), json!(1)),
            (json!("msg_a"), json!(2)),
            (json!("msg_a"), json!(3)),
        ]
    );
    // The newest `limit` of those that match every field, a number by its
    // digits.
    assert_eq!(
        read(vec![("message_id", "msg_a"), ("position", "7")], 2).await,
        [(json!("msg_a"), json!(2)), (json!("msg_a"), json!(3))]
    );
    assert_eq!(
        read(vec![("position", "8")], 10).await,
        [(json!("msg_b"), json!(1))]
    );
    assert!(read(vec![("message_id", "msg_a"), ("position", "8")], 10)
        .await
        .is_empty());
    assert!(store
        .newest_of_type_matching(
            &stream("webhook-other"),
            "WebhookDeliveryAttempted",
            &[],
            10
        )
        .await
        .unwrap()
        .is_empty());
    database.drop_database().await;
}
