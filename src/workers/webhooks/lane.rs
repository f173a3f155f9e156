//! One webhook's lane: a task that delivers, in log order, every event the
//! webhook wants after its own position, and keeps that position in
//! `webhook_checkpoints` (row `webhook-{id}`).
//!
//! - **Live**: the follower hands events over through a bounded queue
//!   (`[webhooks] queue_length`). When the queue is full the lane *falls
//!   behind*: the follower stops handing it events, and the lane reads the
//!   log itself from its position, up to where the follower is, then goes
//!   live again. So a slow receiver costs a bounded amount of memory and
//!   never blocks the follower or another lane.
//! - **Position**: every event up to it was delivered (or not wanted). A
//!   delivery that gave up leaves it before that event: the webhook is
//!   disabled and, once enabled, catches up from there (the event it gave
//!   up on first). It is written at most every [`SAVE_EVERY`] or
//!   [`SAVE_AFTER`] events, and when the deliverer stops: a crash delivers
//!   again at most what that window held, under the same `webhook-id`.
//! - **Replay**: a replay from `N` moves the position back to before `N`
//!   (never forward) and the lane catches up from there, in order: the
//!   events from `N` on are delivered again, then the lane goes on live.
//!   Disabling or deleting the webhook stops it between two deliveries.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use taskledger_events::postgres::PgEventStore;
use taskledger_events::webhook::{kind_of, message_id, wants, Webhook};
use taskledger_events::{EventStore, RecordedEvent};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::deliver::{Delivery, Job, DELETED, DISABLED};
use super::tenants::Tenants;
use crate::workers::backoff::Pauses;

/// The longest a lane's position stays unwritten.
pub(super) const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Events a lane delivers before its position is written.
pub(super) const SAVE_AFTER: u64 = 100;
/// Events read from the log at once while catching up.
const BATCH: usize = 200;

/// What the follower and a lane share.
#[derive(Debug)]
pub(super) struct Shared {
    /// The webhook's status as the follower folded it (`deliver`'s codes).
    pub(super) status: AtomicU8,
    control: Mutex<Control>,
    /// Wakes the lane: its status or control changed.
    pub(super) wake: Notify,
}

#[derive(Debug, Default)]
struct Control {
    /// The follower hands the lane its events (else the lane reads them).
    live: bool,
    /// A replay asked to deliver again from this position.
    rewind_to: Option<u64>,
}

impl Shared {
    pub(super) fn new(status: u8) -> Self {
        Self {
            status: AtomicU8::new(status),
            control: Mutex::default(),
            wake: Notify::new(),
        }
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the follower should hand the lane `job`: it is live and the
    /// queue had room. A full queue makes it fall behind.
    pub(super) fn hand_over(&self, queue: &mpsc::Sender<Job>, job: Job) {
        let mut control = self.control();
        if !control.live {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(job) {
            control.live = false;
            crate::metrics::webhook_fell_behind();
        }
    }

    /// Stops handing events over (the lane reads them from the log).
    pub(super) fn fall_behind(&self) {
        self.control().live = false;
        self.wake.notify_one();
    }

    /// A replay from `from`.
    pub(super) fn rewind(&self, from: u64) {
        let mut control = self.control();
        control.live = false;
        control.rewind_to = Some(control.rewind_to.map_or(from, |earlier| earlier.min(from)));
        drop(control);
        self.wake.notify_one();
    }
}

/// Where the follower is: every event up to here was handed to the live
/// lanes that wanted it. Written (under the lock) once per event, after it
/// was handed over; a lane takes it to go live, so no event falls between
/// its reading and the follower's handing over.
pub(super) type Followed = Arc<RwLock<u64>>;

/// One webhook's task.
pub(super) struct Lane {
    pub(super) store: PgEventStore,
    pub(super) webhook: Webhook,
    pub(super) delivery: Delivery,
    pub(super) shared: Arc<Shared>,
    pub(super) followed: Followed,
    pub(super) queue: mpsc::Receiver<Job>,
    /// Delivered through here.
    pub(super) position: u64,
    /// Tenants of the streams met while catching up.
    pub(super) tenants: Tenants,
    pub(super) stopping: CancellationToken,
}

impl Lane {
    /// Delivers until the webhook is deleted or the deliverer stops, then
    /// writes its position.
    pub(super) async fn run(mut self) {
        let mut saved = Saved {
            position: self.position,
            at: Instant::now(),
            since: 0,
        };
        let stopping = self.stopping.clone();
        let mut pauses = Pauses::reconnect();
        loop {
            let outcome = tokio::select! {
                () = stopping.cancelled() => break,
                outcome = self.work(&mut saved) => outcome,
            };
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    // Recording or reading failed (the database): the
                    // position stays before what failed; read it again.
                    self.fall_behind();
                    let pause = pauses.interrupted("webhook delivery", &error);
                    tokio::select! {
                        () = stopping.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        if let Err(error) = self.save(&mut saved).await {
            tracing::warn!(
                webhook = %self.webhook.id,
                error = format!("{error:#}"),
                "writing a webhook's position failed; it delivers again from the last one written"
            );
        }
    }

    /// The lane's loop; `Ok` once the webhook is deleted.
    async fn work(&mut self, saved: &mut Saved) -> anyhow::Result<()> {
        loop {
            match self.shared.status.load(Ordering::Acquire) {
                DELETED => return Ok(()),
                DISABLED => {
                    self.fall_behind();
                    self.save(saved).await?;
                    self.shared.wake.notified().await;
                    continue;
                }
                _ => {}
            }
            let (live, rewind_to) = {
                let mut control = self.shared.control();
                (control.live, control.rewind_to.take())
            };
            if let Some(from) = rewind_to {
                self.position = self.position.min(from.saturating_sub(1));
                self.fall_behind();
                continue;
            }
            if live {
                tokio::select! {
                    job = self.queue.recv() => match job {
                        None => return Ok(()),
                        Some(job) => self.live(job, saved).await?,
                    },
                    () = self.shared.wake.notified() => {}
                    () = tokio::time::sleep(SAVE_EVERY) => self.idle(),
                }
            } else {
                self.catch_up(saved).await?;
            }
            self.save_if_due(saved).await?;
        }
    }

    /// An event the follower handed over.
    async fn live(&mut self, job: Job, saved: &mut Saved) -> anyhow::Result<()> {
        if job.position <= self.position {
            return Ok(()); // read from the log already
        }
        if self.delivery.deliver(&job).await? {
            self.position = job.position;
            saved.since += 1;
        } else {
            self.fall_behind();
        }
        Ok(())
    }

    /// Idle and live with nothing queued: everything the follower has
    /// passed is delivered.
    fn idle(&mut self) {
        let followed = self
            .followed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let control = self.shared.control();
        if control.live && self.queue.is_empty() {
            self.position = self.position.max(*followed);
        }
    }

    /// One batch of the log after the position, up to where the follower
    /// is; live again once there.
    async fn catch_up(&mut self, saved: &mut Saved) -> anyhow::Result<()> {
        let followed = *self
            .followed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.position >= followed {
            let followed = self
                .followed
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut control = self.shared.control();
            if self.position >= *followed && control.rewind_to.is_none() {
                while self.queue.try_recv().is_ok() {}
                control.live = true;
            }
            return Ok(());
        }
        let permit = self.delivery.database.acquire().await?;
        let batch = self.store.read_all(self.position, BATCH).await?;
        drop(permit);
        for recorded in batch
            .iter()
            .take_while(|recorded| recorded.global_position <= followed)
        {
            if self.shared.status.load(Ordering::Acquire) != super::deliver::ENABLED
                || self.shared.control().rewind_to.is_some()
            {
                return Ok(());
            }
            if let Some(kind) = kind_of(&recorded.event_type) {
                if wants(&self.webhook.event_kinds, kind) && self.is_ours(recorded).await? {
                    let job = Job {
                        message_id: message_id(self.webhook.id, recorded.event_id),
                        position: recorded.global_position,
                        kind,
                        body: Arc::new(super::body(recorded, kind, &self.webhook.tenant)),
                    };
                    if !self.delivery.deliver(&job).await? {
                        return Ok(());
                    }
                    saved.since += 1;
                }
            }
            self.position = recorded.global_position;
            self.save_if_due(saved).await?;
        }
        Ok(())
    }

    /// Whether `recorded` is an event of the webhook's tenant (looked up
    /// under a database permit).
    async fn is_ours(&mut self, recorded: &RecordedEvent) -> anyhow::Result<bool> {
        let _permit = self.delivery.database.acquire().await?;
        let tenant = self.tenants.of(&self.store, recorded, false).await?;
        Ok(tenant.as_ref() == Some(&self.webhook.tenant))
    }

    fn fall_behind(&mut self) {
        self.shared.control().live = false;
        while self.queue.try_recv().is_ok() {}
    }

    async fn save_if_due(&mut self, saved: &mut Saved) -> anyhow::Result<()> {
        if saved.since >= SAVE_AFTER || saved.at.elapsed() >= SAVE_EVERY {
            self.save(saved).await?;
        }
        Ok(())
    }

    async fn save(&self, saved: &mut Saved) -> anyhow::Result<()> {
        if saved.position != self.position {
            let _permit = self.delivery.database.acquire().await?;
            let client = self.store.pool().get().await?;
            client
                .execute(
                    "UPDATE webhook_checkpoints SET position = $2, updated_at = now()
                     WHERE deliverer = $1",
                    &[
                        &checkpoint_name(&self.webhook),
                        &i64::try_from(self.position).unwrap_or(i64::MAX),
                    ],
                )
                .await?;
            saved.position = self.position;
        }
        saved.at = Instant::now();
        saved.since = 0;
        Ok(())
    }
}

/// What of the position is written.
struct Saved {
    position: u64,
    at: Instant,
    since: u64,
}

/// The webhook's row in `webhook_checkpoints`.
pub(super) fn checkpoint_name(webhook: &Webhook) -> String {
    format!("webhook-{}", webhook.id)
}
