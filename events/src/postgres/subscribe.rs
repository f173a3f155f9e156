//! Live subscriptions to the global order: catch up in batches, then follow
//! new commits, woken by the store's one shared `LISTEN` connection
//! ([`super::listener`]) with polling as the fallback.
//!
//! The feed runs in its own task and holds no connection while it waits: it
//! takes one from the pool for each read. It survives a database restart:
//! reads are retried with backoff, and the listener reopens its connection
//! (polling covers the time in between). It never skips: it always asks for
//! positions after the last one it delivered, and the append protocol makes
//! positions visible in order.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::mpsc;

use super::tail::Batch;
use super::PgEventStore;
use crate::error::StoreError;
use crate::store::Subscription;

/// Starts a feed of everything after `after_position`.
pub(super) fn start(store: PgEventStore, after_position: u64) -> Subscription {
    // Room for one batch in flight keeps memory bounded for slow consumers.
    let capacity = store.inner.options.subscription_batch.max(16);
    let (sender, receiver) = mpsc::channel(capacity);
    tokio::spawn(run_feed(store, after_position, sender));
    Subscription::new(receiver)
}

/// The pause after each failed read in a row: 100 ms doubling to 5 s (100,
/// 200, … 3,200 ms, then 5 s each time), from 100 ms again after a read
/// succeeds. Without jitter, so the delays are exactly the ones the feed
/// had before it used `backon`.
const READ_RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_factor(2.0)
    .with_max_delay(Duration::from_secs(5))
    .without_max_times();

/// How long a new feed waits for the listener's first connect.
const LISTEN_FIRST: Duration = Duration::from_secs(5);

#[tracing::instrument(name = "event_feed", skip_all, fields(from_position = after_position))]
async fn run_feed(
    store: PgEventStore,
    mut after_position: u64,
    sender: mpsc::Sender<Result<crate::envelope::RecordedEvent, StoreError>>,
) {
    let mut heard = store.inner.listener.subscribe();
    let batch = store.inner.options.subscription_batch.max(1);
    let poll_interval = store.inner.options.poll_interval;
    // While the listener listens, a notification wakes the feed; this slow
    // poll only finds rows written without one.
    let listening_poll = poll_interval.saturating_mul(10);
    let mut failures: u32 = 0;
    let mut retry_delays = READ_RETRY.build();
    // Whether the feed has caught up once: from then on it reads through
    // the store's shared tail ([`super::tail`]); until then (a new feed, a
    // rebuild from 0) it reads the log itself.
    let mut live = false;
    // The listener's generation when a notification woke the feed (none
    // after a poll, a reconnect or a failed read): while that connection
    // still listens, the tail may count as caught up once it reaches the
    // newest position heard; after a reconnect in between (a notification
    // may have been lost), only a fresh read does.
    let mut woken_by_notification: Option<u64> = None;
    // Listen before the first read when the listener can (as a feed did when
    // it had its own connection); bounded, polling covers a listener that
    // cannot connect.
    let _ = tokio::time::timeout(LISTEN_FIRST, heard.wait_for(|heard| heard.attempted)).await;
    loop {
        // Marked seen before the read, so a commit between the read and the
        // wait still wakes the feed.
        let seen = *heard.borrow_and_update();
        // Every commit after `seen` wakes the feed again.
        let notified = woken_by_notification
            .take()
            .filter(|generation| *generation == seen.generation && seen.listening)
            .map(|_| seen.newest_position);
        let caught_up = loop {
            let read = if live {
                store
                    .inner
                    .tail
                    .read(&store, after_position, batch, notified)
                    .await
            } else {
                store.read_all_for_feed(after_position, batch).await.map(
                    |(events, stopped_before_unreadable)| Batch {
                        more: stopped_before_unreadable || events.len() >= batch,
                        events,
                    },
                )
            };
            match read {
                Ok(Batch { events, more }) => {
                    if failures > 0 {
                        tracing::info!(after_position, "event feed reconnected");
                    }
                    failures = 0;
                    retry_delays = READ_RETRY.build();
                    for event in events {
                        let position = event.global_position;
                        let event = store.inner.upcasters.upcast(event);
                        let permanent = event.is_err();
                        if sender.send(event).await.is_err() || permanent {
                            // The subscriber is gone, or the event cannot be
                            // delivered and must not be skipped.
                            return;
                        }
                        after_position = position;
                    }
                    // A batch cut short by an unreadable event is not the
                    // end: the next read, at once, reports that event.
                    if !more {
                        live = true;
                        break true;
                    }
                }
                Err(error @ StoreError::Corrupt { .. }) => {
                    // An event that cannot be read must not be skipped: hand
                    // the error to the subscriber and end the feed.
                    tracing::error!(%error, after_position, "event feed stopped at an unreadable event");
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures % 20 == 0 {
                        tracing::warn!(%error, after_position, failures, "event feed cannot read; retrying");
                    }
                    break false;
                }
            }
        };
        if !caught_up {
            // Never empty: the builder sets no limit of retries.
            let pause = retry_delays.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = sender.closed() => return,
            }
            continue;
        }
        let pause = if seen.listening {
            listening_poll
        } else {
            poll_interval
        };
        let wait = async {
            loop {
                if heard.changed().await.is_err() {
                    // The store is gone; polling is all that is left.
                    std::future::pending::<()>().await;
                }
                let now = *heard.borrow_and_update();
                if now.generation != seen.generation || now.listening != seen.listening {
                    return None;
                }
                if now.newest_position > after_position {
                    return Some(now.generation);
                }
            }
        };
        tokio::select! {
            notified = wait => woken_by_notification = notified,
            () = tokio::time::sleep(pause) => {}
            () = sender.closed() => return,
        }
    }
}
