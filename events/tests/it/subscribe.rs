//! Subscriptions: catch up, follow live, and survive lost connections.

use std::ops::RangeInclusive;
use std::time::Duration;

use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::{listening_connections, TestDatabase};
use taskledger_events::{EventStore, ExpectedVersion, RecordedEvent, Subscription};

use crate::helpers::{appended, event, store_with, stream};

/// A poll interval long enough that following live must come from
/// notifications.
const NOTIFIED_ONLY: Duration = Duration::from_secs(60);

/// A store whose subscriptions also poll every `poll_interval`.
async fn store_polling_every(poll_interval: Duration) -> (PgEventStore, TestDatabase) {
    store_with(StoreOptions {
        poll_interval,
        ..StoreOptions::default()
    })
    .await
}

async fn next(feed: &mut Subscription) -> RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("the feed delivered nothing within 10 s")
        .expect("the feed ended")
        .expect("the feed failed")
}

/// Expects the feed's next events to be the ones at `positions`, in order.
async fn expect_positions(feed: &mut Subscription, positions: RangeInclusive<u64>) {
    for position in positions {
        assert_eq!(
            next(feed).await.global_position,
            position,
            "the feed's next event"
        );
    }
}

async fn append_numbers(store: &PgEventStore, numbers: std::ops::Range<u64>) {
    for n in numbers {
        appended(
            store,
            &stream("task-feed"),
            ExpectedVersion::Any,
            vec![event(n)],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_up_in_batches_then_follows_live_from_any_position() {
    let options = StoreOptions {
        subscription_batch: 7,
        poll_interval: NOTIFIED_ONLY,
        ..StoreOptions::default()
    };
    let (store, database) = store_with(options).await;
    append_numbers(&store, 0..20).await;

    let mut feed = store.subscribe_all(5);
    expect_positions(&mut feed, 6..=20).await;
    append_numbers(&store, 20..25).await;
    for position in 21..=25 {
        let event = next(&mut feed).await;
        assert_eq!(
            (event.global_position, event.data["n"].as_u64()),
            (position, Some(position - 1))
        );
    }
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_database_dropping_every_connection() {
    let (store, database) = store_polling_every(Duration::from_millis(200)).await;
    append_numbers(&store, 0..3).await;
    let mut feed = store.subscribe_all(0);
    expect_positions(&mut feed, 1..=3).await;

    // What a server restart does to us: every connection to the database is
    // cut, the listener's included.
    let admin = database.client().await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(
        killed.len() >= 2,
        "expected the listener and a pooled connection, killed {}",
        killed.len()
    );

    // Appends recover (the first may meet a dead pooled connection).
    let mut appended = 0;
    for n in 3..40 {
        if appended == 3 {
            break;
        }
        if store
            .append(&stream("task-feed"), ExpectedVersion::Any, vec![event(n)])
            .await
            .is_ok()
        {
            appended += 1;
        }
    }
    assert_eq!(
        appended, 3,
        "appends did not recover after the connections were cut"
    );
    expect_positions(&mut feed, 4..=6).await;
    // And the feed is live again (notified or polled).
    append_numbers(&store, 100..101).await;
    assert_eq!(next(&mut feed).await.global_position, 7);
    drop(admin);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscription_of_a_store_shares_one_listening_connection() {
    let (store, database) = store_polling_every(NOTIFIED_ONLY).await;
    let admin = database.client().await;
    let mut feeds: Vec<Subscription> = (0..50).map(|_| store.subscribe_all(0)).collect();
    append_numbers(&store, 0..2).await;
    for feed in &mut feeds {
        expect_positions(feed, 1..=2).await;
    }
    assert_eq!(listening_connections(&admin).await, 1);
    // Live: a later commit reaches every feed through the one listener.
    append_numbers(&store, 2..3).await;
    for feed in &mut feeds {
        assert_eq!(next(feed).await.global_position, 3);
    }
    // The last subscription gone, the listener closes its connection.
    drop(feeds);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listening_connections(&admin).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener outlived its last subscription by 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And a new subscription starts it again.
    let mut feed = store.subscribe_all(3);
    append_numbers(&store, 3..4).await;
    assert_eq!(next(&mut feed).await.global_position, 4);
    drop(admin);
    database.drop_database().await;
}

/// Feeds that have caught up share one read per commit: the first to wake
/// reads, the others take what it kept. Each still gets every event, in
/// order, and a feed that starts behind reads its own way to the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feeds_woken_by_one_commit_share_one_read() {
    const FEEDS: usize = 8;
    const COMMITS: u64 = 20;
    let (store, database) = store_polling_every(NOTIFIED_ONLY).await;
    append_numbers(&store, 0..3).await;
    let mut feeds: Vec<Subscription> = (0..FEEDS).map(|_| store.subscribe_all(0)).collect();
    for feed in &mut feeds {
        expect_positions(feed, 1..=3).await;
    }
    let before = store.feed_reads();
    for n in 3..3 + COMMITS {
        append_numbers(&store, n..n + 1).await;
        for feed in &mut feeds {
            let event = next(feed).await;
            assert_eq!(
                (event.global_position, event.data["n"].as_u64()),
                (n + 1, Some(n))
            );
        }
    }
    let reads = store.feed_reads() - before;
    // One read per commit; a feed that woke for a commit it had already
    // taken with the one before may read once more, never eight times.
    assert!(
        reads <= COMMITS + COMMITS / 4,
        "{FEEDS} live feeds made {reads} reads for {COMMITS} commits"
    );
    assert!(
        reads >= COMMITS,
        "{reads} reads for {COMMITS} commits: the count is broken"
    );

    // A feed that starts at 0 reads the log itself and then joins.
    let mut late = store.subscribe_all(0);
    expect_positions(&mut late, 1..=3 + COMMITS).await;
    append_numbers(&store, 100..101).await;
    assert_eq!(next(&mut late).await.global_position, 4 + COMMITS);
    for feed in &mut feeds {
        assert_eq!(next(feed).await.global_position, 4 + COMMITS);
    }
    database.drop_database().await;
}

/// Under concurrent writers, with one feed that stops taking for a while
/// (falling behind what the others keep), every live feed still gets the
/// whole log once, in order, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_feeds_get_every_event_once_in_order_under_concurrent_writers() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 150;
    let options = StoreOptions {
        subscription_batch: 16,
        poll_interval: NOTIFIED_ONLY,
        ..StoreOptions::default()
    };
    let (store, database) = store_with(options).await;
    append_numbers(&store, 0..1).await;
    let mut feeds: Vec<Subscription> = (0..5).map(|_| store.subscribe_all(0)).collect();
    for feed in &mut feeds {
        expect_positions(feed, 1..=1).await;
    }
    let mut slow = feeds.pop().unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    appended(
                        &store,
                        &stream(&format!("task-writer-{writer}")),
                        ExpectedVersion::Any,
                        vec![event(writer * EACH + n)],
                    )
                    .await;
                }
            })
        })
        .collect();
    let last = 1 + WRITERS * EACH;
    let readers: Vec<_> = feeds
        .into_iter()
        .map(|mut feed| tokio::spawn(async move { expect_positions(&mut feed, 2..=last).await }))
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for reader in readers {
        reader.await.unwrap();
    }
    // The slow feed took nothing meanwhile: it is far behind what is kept.
    expect_positions(&mut slow, 2..=last).await;
    database.drop_database().await;
}
