//! The worker loop: wait to be the active instance (rebuilding an older
//! projection first), then follow the global order batch by batch, noticing
//! pauses, moved checkpoints and newer versions between batches.

use std::time::Duration;

use tokio::time::Instant;

use backon::{BackoffBuilder, ExponentialBuilder};
use taskledger_events::{EventStore, RecordedEvent};

use super::batch::Applied;
use super::{
    connect, ensure_checkpoint, lock_key, to_i64, try_lock, Checkpoint, Projector,
    ProjectorRuntime, ProjectorState, Statements, CHECKPOINT_LAG,
};
use crate::rebuild::{rebuild, RebuildError, RebuildOptions};

/// How often a paused projector looks whether it was resumed.
const PAUSE_POLL: Duration = Duration::from_millis(250);

/// The longest wait between automatic rebuild attempts that failed.
const MAX_REBUILD_BACKOFF: Duration = Duration::from_secs(300);

/// How often an idle projector looks at its checkpoint.
const CONTROL_POLL: Duration = Duration::from_secs(1);

impl<P: Projector> ProjectorRuntime<P> {
    /// Runs until `stop` completes: waits to become the active instance,
    /// then applies the global order. Connection failures are logged and
    /// retried; nothing here ends the loop but `stop`.
    pub async fn run(self, stop: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                result = self.run_once() => {
                    if let Err(error) = result {
                        tracing::warn!(projector = self.projector.name(), %error, "projector lost its connection; retrying");
                    }
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(self.options.standby_retry) => {}
                    }
                }
            }
        }
        self.status
            .send_modify(|status| status.state = ProjectorState::Stopped);
    }

    /// One life of a connection: make sure the projection is this code's
    /// version (rebuilding it blue/green when it is older), become active,
    /// then project until the connection fails (an error) or the projection
    /// moves to another version (`Ok`).
    async fn run_once(&self) -> Result<(), tokio_postgres::Error> {
        let name = self.projector.name();
        let (mut client, _connection) = connect(&self.store).await?;
        // Prepared on this connection, so made and dropped with it.
        let statements = Statements::default();
        ensure_checkpoint(&client, name, self.projector.version()).await?;
        self.rebuild_until_current(&client).await?;

        // Wait to be the one active instance.
        while !try_lock(&client, lock_key(name)).await? {
            self.status
                .send_modify(|status| status.state = ProjectorState::Standby);
            tokio::time::sleep(self.options.standby_retry).await;
        }
        tracing::info!(projector = name, "projector active");

        let mut position = Checkpoint::read(&client, name, false).await?.position;
        self.status.send_modify(|status| {
            status.position = position;
            status.state = ProjectorState::Running;
        });
        // Where the checkpoint row is: behind `position` while the events
        // read since are ones this projector does not project (`skipped`,
        // the last of them, since when), written within CHECKPOINT_LAG.
        let mut stored = position;
        let mut skipped: Option<(RecordedEvent, Instant)> = None;

        let mut feed = self.store.subscribe_all(position);
        loop {
            // While idle, look at the checkpoint now and then: a rebuild,
            // reset, pause or newer version must be noticed without waiting
            // for the next event. (`next` is cancel-safe.)
            let Ok(next) = tokio::time::timeout(CONTROL_POLL, feed.next()).await else {
                let blocked = match skipped.take() {
                    // Write the checkpoint past what was skipped (applying
                    // its last event changes nothing, by `projects`).
                    Some((last, _)) => match self
                        .apply_batch(
                            &mut client,
                            &statements,
                            stored,
                            std::slice::from_ref(&last),
                        )
                        .await?
                    {
                        Ok(Applied::Done) => {
                            stored = last.global_position;
                            None
                        }
                        Ok(other) => Some(other),
                        Err(error) => {
                            self.stop_at(&client, last.global_position, &error).await?;
                            Some(Applied::Done)
                        }
                    },
                    None => self.idle_check(&client, stored).await?,
                };
                if let Some(blocked) = blocked {
                    let Some(to) = self.settle(&client, blocked, stored).await? else {
                        return Ok(());
                    };
                    if to != position {
                        self.status.send_modify(|status| status.position = to);
                        feed = self.store.subscribe_all(to);
                    }
                    (position, stored) = (to, to);
                }
                continue;
            };
            let Some(first) = next else {
                // The feed only ends on an unreadable event; wait and start over.
                tracing::error!(projector = name, position, "the event feed ended");
                tokio::time::sleep(self.options.failure_retry).await;
                (position, skipped) = (stored, None);
                feed = self.store.subscribe_all(position);
                continue;
            };
            let events = match feed.batch_from(first, self.options.batch_size.max(1)) {
                Ok(events) => events,
                Err(error) => {
                    self.stop_at(&client, position + 1, &error).await?;
                    (position, skipped) = (stored, None);
                    feed = self.store.subscribe_all(position);
                    continue;
                }
            };
            // A batch of events this projector does not project needs no
            // transaction: the checkpoint follows within CHECKPOINT_LAG.
            let since = skipped
                .as_ref()
                .map_or_else(Instant::now, |(_, since)| *since);
            if since.elapsed() < CHECKPOINT_LAG
                && !events.iter().any(|event| self.projector.projects(event))
            {
                self.advance(&mut position, &events);
                skipped = events.last().cloned().map(|last| (last, since));
                continue;
            }
            let pending = skipped.take();
            let applied = self
                .apply_batch(&mut client, &statements, stored, &events)
                .await?;
            if let (Err(_), Some((last, _))) = (&applied, pending) {
                // Before stopping at a failing event, move the checkpoint
                // past the skipped ones, so it shows right before it.
                let flushed = self
                    .apply_batch(
                        &mut client,
                        &statements,
                        stored,
                        std::slice::from_ref(&last),
                    )
                    .await?;
                if let Ok(Applied::Done) = flushed {
                    stored = last.global_position;
                }
            }
            let outcome = match applied {
                Ok(Applied::Done) => {
                    self.advance(&mut position, &events);
                    stored = position;
                    continue;
                }
                Ok(outcome) => outcome,
                Err(_) if events.len() > 1 => {
                    // Find the event that fails: apply one per transaction,
                    // so everything before it lands.
                    let mut outcome = Applied::Done;
                    for event in events.chunks(1) {
                        match self
                            .apply_batch(&mut client, &statements, stored, event)
                            .await?
                        {
                            Ok(Applied::Done) => {
                                self.advance(&mut position, event);
                                stored = position;
                            }
                            Ok(other) => {
                                outcome = other;
                                break;
                            }
                            Err(error) => {
                                self.stop_at(&client, event[0].global_position, &error)
                                    .await?;
                                break;
                            }
                        }
                    }
                    outcome
                }
                Err(error) => {
                    let failed_at = events.first().map_or(position + 1, |e| e.global_position);
                    self.stop_at(&client, failed_at, &error).await?;
                    Applied::Done
                }
            };
            let Some(to) = self.settle(&client, outcome, stored).await? else {
                return Ok(());
            };
            (position, stored) = (to, to);
            // Read on from what the checkpoint holds.
            feed = self.store.subscribe_all(position);
        }
    }

    /// Waits until the projection in the database is this code's version:
    /// rebuilds it blue/green while it is older (failed rebuilds are tried
    /// again after [`super::RuntimeOptions::failure_retry`], doubling up to
    /// [`MAX_REBUILD_BACKOFF`]), waits while another process rebuilds it or
    /// while it is newer.
    async fn rebuild_until_current(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<(), tokio_postgres::Error> {
        let name = self.projector.name();
        let own = self.projector.version();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.options.failure_retry)
            .with_max_delay(MAX_REBUILD_BACKOFF)
            .without_max_times()
            .build();
        loop {
            let stored = Checkpoint::read(client, name, false).await?.version;
            if stored == own {
                return Ok(());
            }
            if stored > own {
                self.outdated(stored);
                tokio::time::sleep(self.options.standby_retry).await;
                continue;
            }
            self.status
                .send_modify(|status| status.state = ProjectorState::Rebuilding);
            tracing::info!(
                projector = name,
                stored,
                version = own,
                "the projection is an older version; rebuilding it beside the live one"
            );
            match rebuild(
                &self.store,
                self.projector.as_ref(),
                &RebuildOptions::default(),
                &|_| {},
            )
            .await
            {
                Ok(report) => tracing::info!(projector = name, %report, "rebuilt"),
                Err(RebuildError::Busy) => {
                    // Another process is building it; wait for it.
                    tokio::time::sleep(self.options.standby_retry).await;
                }
                Err(error) => {
                    // Never ends: the backoff has no limit on retries.
                    let delay = backoff.next().unwrap_or(MAX_REBUILD_BACKOFF);
                    tracing::error!(projector = name, %error, retry_in_s = delay.as_secs_f64(), "rebuilding the projection failed; will retry");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn moved(&self, from: u64, to: u64) {
        tracing::info!(
            projector = self.projector.name(),
            from,
            to,
            "the checkpoint moved (a rebuild swapped tables in, or a reset); reading on from there"
        );
        self.status.send_modify(|status| {
            status.position = to;
            status.position_recorded_at = None;
            status.state = ProjectorState::Running;
        });
    }

    /// What the checkpoint says while no events come: `None` when nothing
    /// keeps this instance from applying the next batch (a paused instance
    /// is then shown running again).
    async fn idle_check(
        &self,
        client: &tokio_postgres::Client,
        position: u64,
    ) -> Result<Option<Applied>, tokio_postgres::Error> {
        let blocked = Checkpoint::read(client, self.projector.name(), false)
            .await?
            .blocks(self.projector.version(), position);
        if blocked != Some(Applied::Paused) {
            self.status.send_if_modified(|status| {
                let resumed = status.state == ProjectorState::Paused;
                if resumed {
                    status.state = ProjectorState::Running;
                }
                resumed
            });
        }
        Ok(blocked)
    }

    /// After something kept a batch from being applied: waits out a pause,
    /// follows a moved checkpoint, and answers the position to read on
    /// from, or `None` when the projection is another version now (this
    /// instance must leave it).
    async fn settle(
        &self,
        client: &tokio_postgres::Client,
        mut blocked: Applied,
        position: u64,
    ) -> Result<Option<u64>, tokio_postgres::Error> {
        loop {
            match blocked {
                Applied::Done => return Ok(Some(position)),
                Applied::Moved(to) => {
                    self.moved(position, to);
                    return Ok(Some(to));
                }
                Applied::Outdated(stored) => {
                    self.outdated(stored);
                    return Ok(None);
                }
                Applied::Paused => {
                    self.status
                        .send_modify(|status| status.state = ProjectorState::Paused);
                    // One cheap read of the checkpoint row each time.
                    tokio::time::sleep(PAUSE_POLL).await;
                    blocked = self
                        .idle_check(client, position)
                        .await?
                        .unwrap_or(Applied::Done);
                }
            }
        }
    }

    /// The database holds another version of the projection than this code
    /// projects: say so once and leave it alone.
    fn outdated(&self, stored: u32) {
        let own = self.projector.version();
        let changed = self.status.send_if_modified(|status| {
            let state = ProjectorState::Outdated { stored };
            if status.state == state {
                return false;
            }
            status.state = state;
            true
        });
        if changed {
            tracing::warn!(
                projector = self.projector.name(),
                stored,
                version = own,
                "the projection in the database is another version than this process projects; leaving it to processes that run version {stored}"
            );
        }
    }

    fn advance(&self, position: &mut u64, applied: &[RecordedEvent]) {
        let Some(last) = applied.last() else { return };
        *position = last.global_position;
        self.status.send_modify(|status| {
            status.position = last.global_position;
            status.position_recorded_at = Some(last.recorded_at);
            status.state = ProjectorState::Running;
        });
    }

    /// Never skip: record the failure (in the checkpoint row and the
    /// status), wait, and let the caller read from the same place again.
    async fn stop_at(
        &self,
        client: &tokio_postgres::Client,
        failed_at: u64,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), tokio_postgres::Error> {
        tracing::error!(projector = self.projector.name(), global_position = failed_at, %error, "projector stopped at an event; will retry");
        let error = error.to_string();
        client
            .execute(
                "UPDATE projector_checkpoints SET failed_position = $2, failure = $3 WHERE projector = $1",
                &[&self.projector.name(), &to_i64(failed_at), &error],
            )
            .await?;
        self.status.send_modify(|status| {
            status.state = ProjectorState::Failed {
                global_position: failed_at,
                error,
            };
        });
        tokio::time::sleep(self.options.failure_retry).await;
        Ok(())
    }
}
