//! The global order under concurrency: 32+ writers, a live subscriber, and
//! writers that hold the log lock while they sleep or roll back on purpose.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::Rng;
use taskledger_events::postgres::{
    append_in_transaction, AppendRequest, PgEventStore, StoreOptions,
};
use taskledger_events::{chain, AppendError, EventStore, ExpectedVersion, RecordedEvent};
use uuid::Uuid;

use crate::helpers::{appended, assert_verifies, event, eventually, store, stream};

const WRITERS: usize = 32;
const APPENDS_PER_WRITER: usize = 60;
const STREAMS: usize = 24;

/// What the writers managed to commit: event id → stream.
type Committed = HashMap<Uuid, String>;

async fn writer(store: PgEventStore, seed: usize) -> Committed {
    let mut committed = Committed::new();
    for i in 0..APPENDS_PER_WRITER {
        let (stream_index, count, exact) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0..STREAMS),
                rng.random_range(1..=3_u64),
                rng.random_bool(0.3),
            )
        };
        let s = stream(&format!("task-{stream_index}"));
        let expected = if exact {
            // Read-then-write: conflicts are expected and must be clean.
            let last = store
                .read_stream(&s, u64::MAX, taskledger_events::Direction::Backward, 1)
                .await
                .unwrap();
            ExpectedVersion::Exact(last.first().map_or(0, |e| e.version))
        } else {
            ExpectedVersion::Any
        };
        let events: Vec<_> = (0..count)
            .map(|n| event((seed * 10_000 + i * 10) as u64 + n))
            .collect();
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        match store.append(&s, expected, events).await {
            Ok(result) => {
                assert_eq!(result.stream_version - result.first_version + 1, count);
                assert_eq!(result.last_position - result.first_position + 1, count);
                for id in ids {
                    committed.insert(id, s.to_string());
                }
            }
            Err(AppendError::WrongExpectedVersion { .. }) => {}
            Err(other) => panic!("writer {seed}: unexpected append error {other}"),
        }
    }
    committed
}

/// Holds the log lock across a sleep, then commits or rolls back.
async fn disruptor(store: PgEventStore, seed: usize, rounds: usize) -> Committed {
    let mut committed = Committed::new();
    for round in 0..rounds {
        let (sleep_ms, roll_back, stream_index) = {
            let mut rng = rand::rng();
            (
                rng.random_range(5..40),
                rng.random_bool(0.5),
                rng.random_range(0..STREAMS),
            )
        };
        let s = stream(&format!("task-{stream_index}"));
        let events = vec![event((900_000 + seed * 1_000 + round) as u64), event(1)];
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let request = AppendRequest::new(s.clone(), ExpectedVersion::Any, events).unwrap();
        let mut client = store.pool().get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let outcomes = append_in_transaction(&tx, std::slice::from_ref(&request))
            .await
            .unwrap();
        assert!(outcomes[0].is_ok());
        tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
        if roll_back {
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
            for id in ids {
                committed.insert(id, s.to_string());
            }
        }
    }
    committed
}

async fn collect(
    mut feed: taskledger_events::Subscription,
    sink: tokio::sync::mpsc::UnboundedSender<RecordedEvent>,
) {
    while let Some(event) = feed.next().await {
        if sink
            .send(event.expect("the feed delivers every event"))
            .is_err()
        {
            return;
        }
    }
}

/// `disruptors` hold the log lock in transactions of their own; with
/// `second_process`, half the writers append through another store (its own
/// appender), so each appender's assumed head, and every batch it sent
/// ahead on it, goes stale again and again.
///
/// With `commit_ahead`, every store sends its next batch while the one
/// before commits (the store's option, off by default).
async fn run(disruptors: usize, second_process: bool, commit_ahead: bool) {
    let (store, database) = store().await;
    let options = StoreOptions {
        commit_ahead,
        ..StoreOptions::default()
    };
    let store = if commit_ahead {
        PgEventStore::connect(&database.url, options.clone()).expect("a store that commits ahead")
    } else {
        store
    };
    let (sink, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(collect(store.subscribe_all(0), sink));
    let other = second_process
        .then(|| PgEventStore::connect(&database.url, options.clone()).expect("a second store"));

    let mut tasks = Vec::new();
    for seed in 0..WRITERS {
        let through = match &other {
            Some(other) if seed % 2 == 1 => other.clone(),
            _ => store.clone(),
        };
        tasks.push(tokio::spawn(writer(through, seed)));
    }
    for seed in 0..disruptors {
        tasks.push(tokio::spawn(disruptor(store.clone(), seed, 12)));
    }
    let mut committed = Committed::new();
    for task in tasks {
        committed.extend(task.await.unwrap());
    }
    let total = committed.len() as u64;
    assert!(
        total >= 2_000,
        "the test should append thousands of events, got {total}"
    );

    // The subscriber follows live and ends up with exactly the log, in order.
    let mut delivered: Vec<RecordedEvent> = Vec::new();
    eventually(
        Duration::from_secs(30),
        "the subscriber to see every event",
        || {
            while let Ok(event) = seen.try_recv() {
                delivered.push(event);
            }
            let done = delivered.len() as u64 >= total;
            async move { done }
        },
    )
    .await;
    follower.abort();

    let log = read_everything(&store).await;
    // Gapless global order holding every committed event exactly once.
    let positions: Vec<u64> = log.iter().map(|e| e.global_position).collect();
    assert_eq!(
        positions,
        (1..=total).collect::<Vec<_>>(),
        "the global order has holes or extra rows"
    );
    let stored_ids: HashSet<Uuid> = log.iter().map(|e| e.event_id).collect();
    assert_eq!(stored_ids.len() as u64, total);
    assert_eq!(
        stored_ids,
        committed.keys().copied().collect::<HashSet<_>>()
    );
    for event in &log {
        assert_eq!(committed[&event.event_id], event.stream_id);
    }
    // Every stream's versions are gapless.
    let mut versions: HashMap<&str, Vec<u64>> = HashMap::new();
    for event in &log {
        versions
            .entry(&event.stream_id)
            .or_default()
            .push(event.version);
    }
    for (stream, versions) in versions {
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "stream {stream}"
        );
        assert_eq!(
            sorted, versions,
            "stream {stream}'s versions follow the global order"
        );
    }
    // The subscriber saw exactly that sequence, in that order.
    let delivered_ids: Vec<(u64, Uuid)> = delivered
        .iter()
        .map(|e| (e.global_position, e.event_id))
        .collect();
    let log_ids: Vec<(u64, Uuid)> = log
        .iter()
        .map(|e| (e.global_position, e.event_id))
        .collect();
    assert_eq!(delivered_ids, log_ids);
    // The hash chain verifies, from the envelopes and from the stored text.
    chain::verify_run(0, chain::GENESIS_HASH, &log).expect("hash chain");
    assert_verifies(&store, 500, total).await;
    database.drop_database().await;
}

async fn read_everything(store: &PgEventStore) -> Vec<RecordedEvent> {
    let mut log = Vec::new();
    loop {
        let after = log.last().map_or(0, |e: &RecordedEvent| e.global_position);
        let batch = store.read_all(after, 1_000).await.unwrap();
        if batch.is_empty() {
            return log;
        }
        log.extend(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_writers_and_a_live_subscriber_keep_one_gapless_order() {
    run(0, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_appending_at_once_keep_one_gapless_chained_order() {
    run(2, true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_committing_ahead_keep_one_gapless_chained_order() {
    run(2, true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_rolled_back_transactions_neither_get_skipped_nor_stall_readers() {
    run(4, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_does_not_block_readers_and_a_rollback_leaves_no_hole() {
    let (store, database) = store().await;
    let s = stream("task-open");
    appended(&store, &s, ExpectedVersion::Any, vec![event(1)]).await;

    let mut client = store.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Any, vec![event(2)]).unwrap();
    let outcome = append_in_transaction(&tx, &[request])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(outcome.first_position, 2);

    // Readers answer at once while the transaction is open, without its row.
    let read = tokio::time::timeout(Duration::from_secs(2), store.read_all(0, 10)).await;
    assert_eq!(
        read.expect("a reader waited on an open append")
            .unwrap()
            .len(),
        1
    );
    // A writer queued behind it goes in once it ends.
    let waiting = tokio::spawn({
        let store = store.clone();
        let s = s.clone();
        async move { store.append(&s, ExpectedVersion::Any, vec![event(3)]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the second writer must wait for the open append"
    );
    tx.rollback().await.unwrap();
    drop(client);
    let result = waiting.await.unwrap().unwrap();
    assert_eq!(
        (result.first_position, result.stream_version),
        (2, 2),
        "the rolled-back position is reused"
    );
    let all = store.read_all(0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(chain::verify_run(0, chain::GENESIS_HASH, &all).is_ok());
    database.drop_database().await;
}
