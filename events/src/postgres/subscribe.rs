//! Live subscriptions to the global order: catch up in batches, then follow
//! new commits, woken by `LISTEN`/`NOTIFY` with polling as the fallback.
//!
//! The feed runs in its own task. It survives a database restart: reads are
//! retried with backoff, and a lost listener connection is reopened (polling
//! covers the time in between). It never skips: it always asks for positions
//! after the last one it delivered, and the append protocol makes positions
//! visible in order.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{PgEventStore, EVENTS_CHANNEL};
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

struct Listener {
    // Kept so the connection stays open; dropping it closes the connection.
    _client: tokio_postgres::Client,
    connection: JoinHandle<()>,
}

/// Opens the connection that `LISTEN`s for commits; a notification wakes the
/// feed.
#[tracing::instrument(name = "event_listener_connect", skip_all, err(level = "debug"))]
async fn listen(
    store: &PgEventStore,
    wake: Arc<Notify>,
) -> Result<Listener, tokio_postgres::Error> {
    let (client, mut connection) = store.inner.config.connect(NoTls).await?;
    let connection = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "event listener connection lost; polling until it is back");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
        .await?;
    Ok(Listener {
        _client: client,
        connection,
    })
}

#[tracing::instrument(name = "event_feed", skip_all, fields(from_position = after_position))]
async fn run_feed(
    store: PgEventStore,
    mut after_position: u64,
    sender: mpsc::Sender<Result<crate::envelope::RecordedEvent, StoreError>>,
) {
    let wake = Arc::new(Notify::new());
    let mut listener: Option<Listener> = None;
    let batch = store.inner.options.subscription_batch.max(1);
    let poll_interval = store.inner.options.poll_interval;
    let mut failures: u32 = 0;
    let mut retry_delays = READ_RETRY.build();
    loop {
        if listener
            .as_ref()
            .is_none_or(|listener| listener.connection.is_finished())
        {
            // Listen before reading, so a commit between the read and the
            // wait still wakes us.
            // A failure is logged by `listen`'s span; polling covers it.
            listener = listen(&store, wake.clone()).await.ok();
        }
        let caught_up = loop {
            match store.read_all_as_stored(after_position, batch).await {
                Ok(events) => {
                    if failures > 0 {
                        tracing::info!(after_position, "event feed reconnected");
                    }
                    failures = 0;
                    retry_delays = READ_RETRY.build();
                    let count = events.len();
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
                    if count < batch {
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
        let pause = if caught_up {
            poll_interval
        } else {
            // Never empty: the builder sets no limit of retries.
            retry_delays.next().unwrap_or(Duration::from_secs(5))
        };
        tokio::select! {
            () = wake.notified(), if caught_up && listener.is_some() => {}
            () = tokio::time::sleep(pause) => {}
            () = sender.closed() => return,
        }
    }
}
