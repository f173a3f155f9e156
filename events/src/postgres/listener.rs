//! The one `LISTEN` connection of a store, shared by all its subscriptions:
//! each commit's notification (its last position) is fanned out inside the
//! process through a `watch` channel, so however many feeds follow the log,
//! the process holds one listening connection, and a feed holds none while
//! it waits (it reads from the pool after a wake-up).
//!
//! Started by the first subscription, it ends when the last one is gone.
//! A lost connection is reopened with backoff; while it is down, feeds see
//! `listening == false` and poll, and each reconnect bumps `generation`, so
//! every feed reads once more (notifications sent in the gap are lost).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use super::EVENTS_CHANNEL;

/// What the listener has heard, as every feed sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Heard {
    /// The highest position a notification named (0: none yet).
    pub(super) newest_position: u64,
    /// Bumped on every (re)connect and every notification whose payload
    /// is not a position: a feed that sees it change reads again.
    pub(super) generation: u64,
    /// Whether `LISTEN` is in effect now; while not, feeds poll.
    pub(super) listening: bool,
    /// Whether the listener has tried to connect at least once (a new feed
    /// waits for that, so it listens before its first read when it can).
    pub(super) attempted: bool,
}

/// The pause after each failed connect in a row: 100 ms doubling to 5 s.
const RECONNECT: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_factor(2.0)
    .with_max_delay(Duration::from_secs(5))
    .without_max_times();

/// A store's shared listener.
#[derive(Debug)]
pub(super) struct SharedListener {
    config: tokio_postgres::Config,
    heard: watch::Sender<Heard>,
    /// Whether the listener task runs; changed only under this lock, with
    /// the receiver count, so a subscription never meets a task that is
    /// about to end.
    running: Mutex<bool>,
}

impl SharedListener {
    pub(super) fn new(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            heard: watch::Sender::new(Heard::default()),
            running: Mutex::new(false),
        }
    }

    /// A receiver of what the listener hears, starting the listener when
    /// none runs. Must be called inside a Tokio runtime.
    pub(super) fn subscribe(self: &Arc<Self>) -> watch::Receiver<Heard> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = self.heard.subscribe();
        if !*running {
            *running = true;
            tokio::spawn(run(self.clone()));
        }
        receiver
    }

    /// The generation now: bumped by each reconnect of the listener.
    pub(super) fn generation(&self) -> u64 {
        self.heard.borrow().generation
    }

    /// Whether the task should end: no subscription is left. Marks it
    /// stopped (and not listening) under the lock when so, so a task started
    /// after it never has its state overwritten by this one.
    fn stop_if_unused(&self) -> bool {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if self.heard.receiver_count() == 0 {
            *running = false;
            self.heard.send_modify(|heard| heard.listening = false);
            true
        } else {
            false
        }
    }
}

#[tracing::instrument(name = "event_listener", skip_all)]
async fn run(shared: Arc<SharedListener>) {
    let mut delays = RECONNECT.build();
    let mut failures: u32 = 0;
    loop {
        match listen(&shared).await {
            Ok(connection) => {
                if failures > 0 {
                    tracing::info!("event listener reconnected");
                }
                failures = 0;
                delays = RECONNECT.build();
                shared.heard.send_modify(|heard| {
                    heard.listening = true;
                    heard.attempted = true;
                    heard.generation += 1;
                });
                if wait_for_end(&shared, connection).await {
                    return;
                }
                shared.heard.send_modify(|heard| heard.listening = false);
            }
            Err(error) => {
                shared
                    .heard
                    .send_if_modified(|heard| !std::mem::replace(&mut heard.attempted, true));
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(%error, failures, "event listener cannot connect; feeds poll meanwhile");
                }
            }
        }
        // Never empty: the builder sets no limit of retries.
        let pause = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.heard.closed() => {}
        }
        if shared.stop_if_unused() {
            return;
        }
    }
}

/// Waits until the connection is lost (false) or no subscription is left
/// (true, and the task is marked stopped).
async fn wait_for_end(shared: &SharedListener, mut connection: Listening) -> bool {
    loop {
        tokio::select! {
            _ = &mut connection.driver => return false,
            () = shared.heard.closed() => {
                if shared.stop_if_unused() {
                    return true;
                }
                // A subscription arrived at the same moment: carry on.
                tokio::task::yield_now().await;
            }
        }
    }
}

struct Listening {
    // Kept so the connection stays open; dropping it closes the connection.
    _client: tokio_postgres::Client,
    // Ends when the connection is lost, or closed by dropping the client.
    driver: tokio::task::JoinHandle<()>,
}

/// Opens the connection and `LISTEN`s; its notifications go to `heard`.
#[tracing::instrument(name = "event_listener_connect", skip_all, err(level = "debug"))]
async fn listen(shared: &SharedListener) -> Result<Listening, tokio_postgres::Error> {
    let (client, mut connection) = shared.config.connect(NoTls).await?;
    let heard = shared.heard.clone();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    let position = notification.payload().trim().parse::<u64>().ok();
                    heard.send_if_modified(|heard| match position {
                        Some(position) if position <= heard.newest_position => false,
                        Some(position) => {
                            heard.newest_position = position;
                            true
                        }
                        None => {
                            heard.generation += 1;
                            true
                        }
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "event listener connection lost; feeds poll until it is back");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
        .await?;
    Ok(Listening {
        _client: client,
        driver,
    })
}
