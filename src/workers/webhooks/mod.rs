//! The webhook deliverer: follows the global order and delivers every event
//! a webhook of the event's tenant wants, signed the Standard Webhooks way
//! ([`sign`]), to targets checked before every attempt ([`target`]), over
//! TLS checked against [`tls::TrustedRoots`] for https, each webhook in its
//! own lane ([`lane`]: a task, a bounded queue, its own position) and each
//! delivery attempted and recorded by [`deliver`].
//!
//! - **At-least-once**: a webhook's position (`webhook_checkpoints` row
//!   `webhook-{id}`) passes an event only once its delivery ended and that
//!   is recorded in the webhook's stream. A restart delivers again from
//!   each webhook's own position, under the same `webhook-id`
//!   ([`taskledger_events::webhook::message_id`]: derived from the webhook
//!   and the event's id), so receivers can drop what they have; a dead
//!   receiver holds back only its own webhook's position.
//! - **The registry is folded from the same log**: at start, every webhook
//!   as of the follower's checkpoint (row `webhooks`, where it has read
//!   to); then each webhook event in order as it is read. A webhook
//!   created at position `c` gets the events after `c`.
//! - **Isolation and order**: each lane delivers its webhook's events one
//!   at a time in log order; a slow receiver, a full queue or a replay
//!   holds back only its own lane, never the follower or another lane.
//! - **Bounded use of the database**: the lanes take a connection only
//!   under one of [`DATABASE_PERMITS`]; an attempt's record is one append
//!   on the stream as the lane last left it ([`deliver`]).
//! - **One active deliverer** across processes (a session advisory lock, as
//!   for the relay); the others stand by. When it stops, every lane writes
//!   its position.

pub mod deliver;
pub mod lane;
pub mod sign;
pub mod target;
mod tenants;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::tenant::TenantName;
use taskledger_events::webhook::{
    self, kind_of, message_id, wants, Webhook, WebhookEvent, WebhookId, WebhookStatus,
};
use taskledger_events::{Direction, EventStore, RecordedEvent};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::webhooks::WebhooksConfig;
use crate::workers::leader::{self, AbortOnDrop};
use deliver::{Delivery, Job, DELETED, DISABLED, ENABLED};
use lane::{Followed, Lane, Shared};
use tenants::Tenants;
use tls::TrustedRoots;

/// The deliverer's name in `webhook_checkpoints` and its lock.
const NAME: &str = "webhooks";
/// How long the lanes have to write their positions when it stops.
const STOPPING: Duration = Duration::from_secs(5);
/// Events the follower reads before it writes its checkpoint.
const SAVE_AFTER: u64 = 1_000;
/// Lanes that may use a database connection at once (a load, a read of
/// the log while catching up, a tenant look-up, a position written): a
/// quarter of the store's default pool of 16, so 1,000 lanes never starve
/// the API and the follower sharing it. Appends take none: they go through
/// the store's one appender, in shared commits.
const DATABASE_PERMITS: usize = 4;

/// Runs the deliverer until `stop` resolves; then every lane writes its
/// position.
pub async fn run(
    store: PgEventStore,
    config: WebhooksConfig,
    roots: TrustedRoots,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    leader::run(
        "webhook deliverer",
        leader::OnStop::Finish(STOPPING),
        stop,
        |stopping| {
            let (store, config, roots) = (&store, &config, &roots);
            async move { deliver_once(store, config, roots, &stopping).await }
        },
    )
    .await;
}

/// One webhook as the follower holds it.
struct Entry {
    webhook: Webhook,
    shared: Arc<Shared>,
    queue: Option<mpsc::Sender<Job>>,
    lane: Option<AbortOnDrop<()>>,
}

/// One life of the deliverer: lock, load, follow until something fails or
/// `stopping`. `Ok` when another process's deliverer is active, or once
/// stopped.
async fn deliver_once(
    store: &PgEventStore,
    config: &WebhooksConfig,
    roots: &TrustedRoots,
    stopping: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(leadership) = leader::try_lead(store, NAME).await? else {
        return Ok(());
    };
    let client = &leadership.client;
    let mut checkpoint = leadership
        .checkpoint("webhook_checkpoints", "deliverer", NAME)
        .await?;
    tracing::info!(position = checkpoint, "webhook deliverer active");

    let mut follower = Follower {
        store,
        config,
        roots,
        webhooks: HashMap::new(),
        tenants: Tenants::default(),
        followed: Arc::new(RwLock::new(checkpoint)),
        stopping: stopping.clone(),
        database: Arc::new(Semaphore::new(DATABASE_PERMITS)),
    };
    follower.load(checkpoint).await?;
    let mut feed = store.subscribe_all(checkpoint);
    let mut read = checkpoint;
    let mut saved_at = Instant::now();
    let outcome = loop {
        let flush = tokio::select! {
            () = stopping.cancelled() => break Ok(()),
            event = feed.next() => {
                let recorded = match event.context("the event feed ended")? {
                    Ok(recorded) => recorded,
                    Err(error) => break Err(anyhow::Error::from(error).context("reading the log")),
                };
                read = recorded.global_position;
                if let Err(error) = follower.follow(&recorded).await {
                    break Err(error);
                }
                read - checkpoint >= SAVE_AFTER || saved_at.elapsed() >= lane::SAVE_EVERY
            }
            () = tokio::time::sleep(lane::SAVE_EVERY) => true,
        };
        if flush && read > checkpoint {
            save(client, read).await?;
            checkpoint = read;
            saved_at = Instant::now();
        }
    };
    // The lanes stop with the follower (their token is a child of
    // `stopping`) and write their positions.
    follower.stopping.cancel();
    for entry in follower.webhooks.into_values() {
        if let Some(lane) = entry.lane {
            let _ = lane.await;
        }
    }
    if outcome.is_ok() && read > checkpoint {
        save(client, read).await?;
    }
    outcome
}

async fn save(client: &tokio_postgres::Client, position: u64) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE webhook_checkpoints SET position = $2, updated_at = now()
             WHERE deliverer = $1",
            &[&NAME, &i64::try_from(position).unwrap_or(i64::MAX)],
        )
        .await?;
    Ok(())
}

/// The registry of webhooks, each with its lane.
struct Follower<'a> {
    store: &'a PgEventStore,
    config: &'a WebhooksConfig,
    roots: &'a TrustedRoots,
    webhooks: HashMap<WebhookId, Entry>,
    tenants: Tenants,
    followed: Followed,
    /// The lanes' stop.
    stopping: CancellationToken,
    /// The lanes' database permits.
    database: Arc<Semaphore>,
}

impl Follower<'_> {
    /// Every webhook as of `checkpoint`, each folded from its stream up to
    /// there.
    async fn load(&mut self, checkpoint: u64) -> anyhow::Result<()> {
        let client = self.store.pool().get().await?;
        let rows = client
            .query(
                "SELECT stream_id FROM events
                 WHERE event_type = 'WebhookCreated' AND global_position <= $1
                 ORDER BY global_position",
                &[&i64::try_from(checkpoint).unwrap_or(i64::MAX)],
            )
            .await?;
        drop(client);
        for row in rows {
            let stream: String = row.get(0);
            let Some(id) = WebhookId::from_stream_id(&stream) else {
                continue;
            };
            let events = self
                .store
                .read_stream(&id.stream_id(), 1, Direction::Forward, usize::MAX)
                .await?;
            let mut state = None;
            for recorded in events
                .iter()
                .filter(|event| event.global_position <= checkpoint)
            {
                state = webhook::apply(state, &WebhookEvent::from_recorded(recorded)?);
            }
            if let Some(webhook) = state {
                self.add(webhook, checkpoint).await?;
            }
        }
        Ok(())
    }

    /// Starts a webhook's lane (none for a deleted one), from its own
    /// position, made `from` if it has none yet (a new webhook: where it was
    /// created; one that predates lanes: where the follower is).
    async fn add(&mut self, webhook: Webhook, from: u64) -> anyhow::Result<()> {
        let shared = Arc::new(Shared::new(code(webhook.status)));
        let (queue, lane) = if webhook.status == WebhookStatus::Deleted {
            (None, None)
        } else {
            let client = self.store.pool().get().await?;
            let secret: String = client
                .query_opt(
                    "SELECT secret FROM webhook_secrets WHERE webhook_id = $1",
                    &[&webhook.id.0],
                )
                .await?
                .with_context(|| format!("webhook {} has no secret", webhook.id))?
                .get(0);
            // Written before the follower's checkpoint can pass `from`.
            let position: i64 = client
                .query_one(
                    "INSERT INTO webhook_checkpoints (deliverer, position) VALUES ($1, $2)
                     ON CONFLICT (deliverer) DO UPDATE SET deliverer = EXCLUDED.deliverer
                     RETURNING position",
                    &[
                        &lane::checkpoint_name(&webhook),
                        &i64::try_from(from).unwrap_or(i64::MAX),
                    ],
                )
                .await?
                .get(0);
            drop(client);
            let (sender, receiver) = mpsc::channel(self.config.queue_length);
            let lane = Lane {
                store: self.store.clone(),
                webhook: webhook.clone(),
                delivery: Delivery {
                    store: self.store.clone(),
                    webhook_id: webhook.id,
                    url: webhook.url.clone(),
                    key: sign::key_bytes(&secret)?,
                    shared: shared.clone(),
                    config: self.config.clone(),
                    roots: self.roots.clone(),
                    client: None,
                    known: None,
                    database: self.database.clone(),
                },
                shared: shared.clone(),
                followed: self.followed.clone(),
                queue: receiver,
                position: u64::try_from(position).unwrap_or(0),
                tenants: Tenants::default(),
                stopping: self.stopping.child_token(),
            };
            (
                Some(sender),
                Some(AbortOnDrop::new(tokio::spawn(lane.run()))),
            )
        };
        self.webhooks.insert(
            webhook.id,
            Entry {
                webhook,
                shared,
                queue,
                lane,
            },
        );
        Ok(())
    }

    /// One event of the log, in order: handed to the live lanes that want
    /// it; then the follower is past it.
    async fn follow(&mut self, recorded: &RecordedEvent) -> anyhow::Result<()> {
        let position = recorded.global_position;
        if let Some(id) = WebhookId::from_stream_id(&recorded.stream_id) {
            self.webhook_event(id, recorded).await?;
        } else if let Some(kind) = kind_of(&recorded.event_type) {
            if let Some(tenant) = self.tenants.of(self.store, recorded, true).await? {
                let mut followed = self
                    .followed
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut body = None;
                for entry in self.webhooks.values().filter(|entry| {
                    entry.webhook.tenant == tenant
                        && entry.webhook.status == WebhookStatus::Enabled
                        && wants(&entry.webhook.event_kinds, kind)
                }) {
                    let Some(queue) = &entry.queue else { continue };
                    let body = body
                        .get_or_insert_with(|| Arc::new(self::body(recorded, kind, &tenant)))
                        .clone();
                    let job = Job {
                        message_id: message_id(entry.webhook.id, recorded.event_id),
                        position,
                        kind,
                        body,
                    };
                    entry.shared.hand_over(queue, job);
                }
                *followed = position;
                return Ok(());
            }
        } else {
            self.tenants.remember(recorded);
        }
        *self
            .followed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = position;
        Ok(())
    }

    async fn webhook_event(
        &mut self,
        id: WebhookId,
        recorded: &RecordedEvent,
    ) -> anyhow::Result<()> {
        let event = WebhookEvent::from_recorded(recorded)?;
        if let WebhookEvent::Created(_) = &event {
            if let Some(webhook) = webhook::apply(None, &event) {
                if !self.webhooks.contains_key(&id) {
                    self.add(webhook, recorded.global_position).await?;
                }
            }
            return Ok(());
        }
        let Some(entry) = self.webhooks.get_mut(&id) else {
            return Ok(());
        };
        let previous = entry.webhook.clone();
        let Some(webhook) = webhook::apply(Some(previous), &event) else {
            return Ok(());
        };
        entry.webhook = webhook;
        let shared = &entry.shared;
        match &event {
            WebhookEvent::Disabled(_) => {
                shared.status.store(DISABLED, Ordering::Release);
                shared.fall_behind();
            }
            WebhookEvent::Enabled(_) => {
                shared.status.store(ENABLED, Ordering::Release);
                shared.wake.notify_one();
            }
            WebhookEvent::Deleted(_) => {
                shared.status.store(DELETED, Ordering::Release);
                entry.queue = None;
                shared.wake.notify_one();
            }
            WebhookEvent::ReplayRequested(replay) => shared.rewind(replay.from_position),
            _ => {}
        }
        Ok(())
    }
}

fn code(status: WebhookStatus) -> u8 {
    match status {
        WebhookStatus::Enabled => ENABLED,
        WebhookStatus::Disabled => DISABLED,
        WebhookStatus::Deleted => DELETED,
    }
}

/// The delivery's body (Standard Webhooks' `type`, `timestamp`, `data`):
/// the event as stored, with where it is in the log. The same bytes on
/// every attempt and every replay.
fn body(recorded: &RecordedEvent, kind: &str, tenant: &TenantName) -> Vec<u8> {
    let body = json!({
        "type": kind,
        "timestamp": recorded.recorded_at,
        "data": {
            "tenant": tenant.as_str(),
            "stream_id": recorded.stream_id,
            "event_id": recorded.event_id,
            "event_type": recorded.event_type,
            "version": recorded.version,
            "position": recorded.global_position,
            "event": recorded.data,
        },
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
}
