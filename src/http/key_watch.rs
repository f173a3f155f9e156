//! Open event streams' keys, watched: a stream ends within about a second
//! of its key being revoked or expiring.
//!
//! One watcher per key, shared by all that key's open streams in this
//! process, checks the key every [`CHECK_INTERVAL`]
//! ([`super::auth::key_is_usable`]) and tells them through a `watch`
//! channel; it ends with the key's last stream. A check that fails (the
//! database is unavailable) changes nothing: the next one decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use taskledger_events::postgres::PgEventStore;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use super::auth::key_is_usable;
use crate::service::shutdown::Shutdown;

/// How often a watched key is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The process's key watchers, by key id.
#[derive(Debug, Default)]
pub struct KeyWatches {
    /// Each watcher's channel (`true` while the key is usable). The entry
    /// holds a receiver of its own, so a watcher whose channel has no other
    /// receiver has no stream left.
    watchers: Mutex<HashMap<Uuid, watch::Receiver<bool>>>,
}

/// A stream's view of its key.
#[derive(Debug)]
pub struct WatchedKey(watch::Receiver<bool>);

impl WatchedKey {
    /// Resolves once the key is no longer usable (never, while it is).
    pub async fn unusable(mut self) {
        if self.0.wait_for(|usable| !*usable).await.is_err() {
            // The watcher is gone without a verdict: nothing will come.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the key is no longer usable or `shutdown` (the
    /// service's, when it has one) fires: when an open stream must end.
    pub async fn unusable_or_stopped(self, shutdown: Option<Shutdown>) {
        let stopped = async move {
            match shutdown {
                Some(mut shutdown) => shutdown.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stopped => {}
            () = self.unusable() => {}
        }
    }
}

impl KeyWatches {
    /// Watches `key_id` (just authenticated, so usable now) on `store`,
    /// starting its watcher if none runs.
    pub fn watch(self: &Arc<Self>, store: &PgEventStore, key_id: Uuid) -> WatchedKey {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(receiver) = watchers.get(&key_id) {
            if receiver.has_changed().is_ok() {
                return WatchedKey(receiver.clone());
            }
        }
        let (sender, receiver) = watch::channel(true);
        watchers.insert(key_id, receiver.clone());
        tokio::spawn(run(self.clone(), store.clone(), key_id, sender));
        WatchedKey(receiver)
    }

    /// Whether the watcher of `key_id` has no stream left; if so its entry
    /// is removed (under the lock, so no stream joins it meanwhile).
    fn retire_if_unwatched(&self, key_id: Uuid, sender: &watch::Sender<bool>) -> bool {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        if sender.receiver_count() <= 1 {
            watchers.remove(&key_id);
            true
        } else {
            false
        }
    }
}

#[tracing::instrument(name = "key_watch", skip_all, fields(key = %key_id))]
async fn run(
    watches: Arc<KeyWatches>,
    store: PgEventStore,
    key_id: Uuid,
    sender: watch::Sender<bool>,
) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is at once; the key was just authenticated.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if watches.retire_if_unwatched(key_id, &sender) {
            return;
        }
        match key_is_usable(&store, key_id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    "an API key with open event streams was revoked or expired; ending them"
                );
                // Retired before the verdict, so a stream opened after it
                // starts a new watcher (and is refused at authentication).
                watches
                    .watchers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key_id);
                let _ = sender.send(false);
                return;
            }
            Err(problem) => {
                tracing::debug!(
                    cause = problem.cause(),
                    "cannot check an API key; trying again"
                );
            }
        }
    }
}
