//! The webhook deliverer: follows the global order from its checkpoint and
//! delivers every event a webhook of the event's tenant wants, signed the
//! Standard Webhooks way ([`sign`]), to targets checked before every attempt
//! ([`target`]), one queue and task per webhook ([`deliver`]).
//!
//! - **At-least-once**: the checkpoint (`webhook_checkpoints`) moves past a
//!   position only once every delivery of its event has ended (delivered,
//!   or given up) and that outcome is recorded in the webhook's stream. A
//!   crash delivers again from the checkpoint, under the same `webhook-id`
//!   ([`taskledger_events::webhook::message_id`]: derived from the webhook
//!   and the event's id), so receivers can drop what they have.
//! - **The registry is folded from the same log**: at start, every webhook
//!   as of the checkpoint; then each webhook event in order as it is read,
//!   so an event goes exactly to the webhooks that were enabled when it
//!   happened.
//! - **Isolation**: each webhook's queue is its own task; a receiver that
//!   never answers holds back only its own queue (and the checkpoint, not
//!   the reading of the log or other webhooks' deliveries).
//! - **Replay**: a `WebhookReplayRequested` at position `p` queues, for that
//!   webhook, every wanted event from its `from_position` up to `p`; the
//!   checkpoint waits at `p` until they are delivered.
//! - **One active deliverer** across processes (a session advisory lock, as
//!   for the relay); the others stand by.

pub mod deliver;
pub mod sign;
pub mod target;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use taskledger_events::device::{DeviceEvent, Imei};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::tenant::TenantName;
use taskledger_events::webhook::{
    self, kind_of, message_id, wants, Webhook, WebhookEvent, WebhookId, WebhookStatus,
};
use taskledger_events::{Direction, EventStore, RecordedEvent, StreamId};
use tokio::sync::mpsc;

use crate::config::webhooks::WebhooksConfig;
use crate::workers::backoff::{stopped_during, Pauses};
use crate::workers::leader::{self, AbortOnDrop};
use deliver::{Delivery, Job, DELETED, DISABLED, ENABLED};

/// The deliverer's name in `webhook_checkpoints` and its lock.
const NAME: &str = "webhooks";
/// How often a standby deliverer tries to become the active one.
const STANDBY_RETRY: Duration = Duration::from_secs(2);

/// Runs the deliverer until `stop` resolves.
pub async fn run(
    store: PgEventStore,
    config: WebhooksConfig,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    let mut pauses = Pauses::reconnect();
    loop {
        let attempt = tokio::select! {
            () = &mut stop => break,
            outcome = deliver_once(&store, &config) => outcome,
        };
        let pause = match attempt {
            Ok(()) => {
                pauses.reset();
                STANDBY_RETRY
            }
            Err(error) => pauses.interrupted("webhook deliverer", &error),
        };
        if stopped_during(pause, &mut stop).await {
            break;
        }
    }
    tracing::info!("webhook deliverer stopped");
}

/// One webhook as the deliverer holds it.
struct Entry {
    webhook: Webhook,
    status: Arc<AtomicU8>,
    queue: Option<mpsc::UnboundedSender<Job>>,
    _task: Option<AbortOnDrop<()>>,
}

/// One life of the deliverer: lock, load, follow until something fails.
/// `Ok` when another process's deliverer is active.
async fn deliver_once(store: &PgEventStore, config: &WebhooksConfig) -> anyhow::Result<()> {
    let Some(leadership) = leader::try_lead(store, NAME).await? else {
        return Ok(());
    };
    let client = &leadership.client;
    let mut checkpoint = leadership
        .checkpoint("webhook_checkpoints", "deliverer", NAME)
        .await?;
    tracing::info!(position = checkpoint, "webhook deliverer active");

    let (done_sender, mut done) = mpsc::unbounded_channel();
    let mut follower = Follower {
        store,
        config,
        webhooks: HashMap::new(),
        tenants: HashMap::new(),
        pending: BTreeMap::new(),
        done: done_sender,
    };
    follower.load(checkpoint).await?;
    let mut feed = store.subscribe_all(checkpoint);
    let mut read = checkpoint;
    loop {
        tokio::select! {
            event = feed.next() => {
                let recorded = event.context("the event feed ended")?.context("reading the log")?;
                read = recorded.global_position;
                follower.follow(&recorded).await?;
            }
            Some(position) = done.recv() => follower.finished(position),
        }
        while let Ok(position) = done.try_recv() {
            follower.finished(position);
        }
        let safe = follower
            .pending
            .keys()
            .next()
            .map_or(read, |first| first.saturating_sub(1));
        if safe > checkpoint {
            client
                .execute(
                    "UPDATE webhook_checkpoints SET position = $2, updated_at = now()
                     WHERE deliverer = $1",
                    &[&NAME, &i64::try_from(safe).unwrap_or(i64::MAX)],
                )
                .await?;
            checkpoint = safe;
        }
    }
}

/// The registry of webhooks and what is still being delivered.
struct Follower<'a> {
    store: &'a PgEventStore,
    config: &'a WebhooksConfig,
    webhooks: HashMap<WebhookId, Entry>,
    /// Tenants of task and device streams seen (or looked up).
    tenants: HashMap<String, TenantName>,
    /// Deliveries not yet ended, by the position that waits for them.
    pending: BTreeMap<u64, usize>,
    done: mpsc::UnboundedSender<u64>,
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
                self.add(webhook).await?;
            }
        }
        Ok(())
    }

    /// Starts a webhook's queue (none for a deleted one).
    async fn add(&mut self, webhook: Webhook) -> anyhow::Result<()> {
        let status = Arc::new(AtomicU8::new(code(webhook.status)));
        let (queue, task) = if webhook.status == WebhookStatus::Deleted {
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
            let (sender, receiver) = mpsc::unbounded_channel();
            let delivery = Delivery {
                store: self.store.clone(),
                webhook_id: webhook.id,
                url: webhook.url.clone(),
                key: sign::key_bytes(&secret)?,
                status: status.clone(),
                config: self.config.clone(),
                done: self.done.clone(),
            };
            let task = AbortOnDrop::new(tokio::spawn(delivery.run(receiver)));
            (Some(sender), Some(task))
        };
        self.webhooks.insert(
            webhook.id,
            Entry {
                webhook,
                status,
                queue,
                _task: task,
            },
        );
        Ok(())
    }

    /// One event of the log, in order.
    async fn follow(&mut self, recorded: &RecordedEvent) -> anyhow::Result<()> {
        if let Some(id) = WebhookId::from_stream_id(&recorded.stream_id) {
            return self.webhook_event(id, recorded).await;
        }
        let Some(kind) = kind_of(&recorded.event_type) else {
            self.remember_tenant(recorded);
            return Ok(());
        };
        let Some(tenant) = self.tenant_of(recorded, true).await? else {
            return Ok(());
        };
        let wanting: Vec<WebhookId> = self
            .webhooks
            .values()
            .filter(|entry| {
                entry.webhook.tenant == tenant
                    && entry.webhook.status == WebhookStatus::Enabled
                    && wants(&entry.webhook.event_kinds, kind)
            })
            .map(|entry| entry.webhook.id)
            .collect();
        for id in wanting {
            self.enqueue(id, recorded, kind, &tenant, recorded.global_position);
        }
        Ok(())
    }

    /// Queues `recorded` for webhook `id`; the checkpoint waits at `holds`.
    fn enqueue(
        &mut self,
        id: WebhookId,
        recorded: &RecordedEvent,
        kind: &'static str,
        tenant: &TenantName,
        holds: u64,
    ) {
        let Some(queue) = self
            .webhooks
            .get(&id)
            .and_then(|entry| entry.queue.as_ref())
        else {
            return;
        };
        let job = Job {
            message_id: message_id(id, recorded.event_id),
            position: recorded.global_position,
            kind,
            body: Arc::new(body(recorded, kind, tenant)),
            holds,
        };
        if queue.send(job).is_ok() {
            *self.pending.entry(holds).or_default() += 1;
        }
    }

    /// A delivery that held `position` ended.
    fn finished(&mut self, position: u64) {
        if let Some(count) = self.pending.get_mut(&position) {
            *count -= 1;
            if *count == 0 {
                self.pending.remove(&position);
            }
        }
    }

    async fn webhook_event(
        &mut self,
        id: WebhookId,
        recorded: &RecordedEvent,
    ) -> anyhow::Result<()> {
        let event = WebhookEvent::from_recorded(recorded)?;
        if let WebhookEvent::Created(_) = &event {
            if let Some(webhook) = webhook::apply(None, &event) {
                self.add(webhook).await?;
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
        match &event {
            WebhookEvent::Disabled(_) => entry.status.store(DISABLED, Ordering::Release),
            WebhookEvent::Enabled(_) => entry.status.store(ENABLED, Ordering::Release),
            WebhookEvent::Deleted(_) => {
                entry.status.store(DELETED, Ordering::Release);
                entry.queue = None;
            }
            WebhookEvent::ReplayRequested(replay) => {
                self.replay(id, replay.from_position, recorded.global_position)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Queues every event webhook `id` wants from `from` up to (not
    /// including) `until`, all holding `until`.
    async fn replay(&mut self, id: WebhookId, from: u64, until: u64) -> anyhow::Result<()> {
        let Some(entry) = self.webhooks.get(&id) else {
            return Ok(());
        };
        let (tenant, kinds) = (
            entry.webhook.tenant.clone(),
            entry.webhook.event_kinds.clone(),
        );
        let mut after = from.saturating_sub(1);
        while after + 1 < until {
            let batch = self.store.read_all(after, 500).await?;
            let Some(last) = batch.last() else { break };
            after = last.global_position;
            for recorded in batch.iter().filter(|event| event.global_position < until) {
                let Some(kind) = kind_of(&recorded.event_type) else {
                    continue;
                };
                if !wants(&kinds, kind)
                    || self.tenant_of(recorded, false).await?.as_ref() != Some(&tenant)
                {
                    continue;
                }
                self.enqueue(id, recorded, kind, &tenant, until);
            }
        }
        Ok(())
    }

    /// The tenant of the last `DeviceAssigned` before `recorded` in its
    /// device's stream, if any.
    async fn device_tenant_before(
        &self,
        recorded: &RecordedEvent,
    ) -> anyhow::Result<Option<TenantName>> {
        let stream = StreamId::new(recorded.stream_id.clone())?;
        let mut from_version = recorded.version;
        while from_version > 0 {
            let batch = self
                .store
                .read_stream(&stream, from_version, Direction::Backward, 500)
                .await?;
            let Some(last) = batch.last() else { break };
            from_version = last.version.saturating_sub(1);
            for event in &batch {
                if let Ok(DeviceEvent::Assigned(assigned)) = DeviceEvent::from_recorded(event) {
                    return Ok(Some(assigned.tenant));
                }
            }
        }
        Ok(None)
    }

    /// Keeps the tenant a `TaskSubmitted` or `DeviceAssigned` names.
    fn remember_tenant(&mut self, recorded: &RecordedEvent) {
        if recorded.event_type == "DeviceAssigned" {
            if let Ok(DeviceEvent::Assigned(assigned)) = DeviceEvent::from_recorded(recorded) {
                self.tenants
                    .insert(recorded.stream_id.clone(), assigned.tenant);
            }
        }
    }

    /// The tenant of a task or device event: from a `TaskSubmitted` (this
    /// one, or the stream's first), or the device's assignment when the
    /// event happened. `live`: `recorded` is the event just read, so the
    /// assignments remembered are the ones in force; a replay reads an older
    /// event, whose device may have been reassigned since, so it looks the
    /// assignment before it up in the log.
    async fn tenant_of(
        &mut self,
        recorded: &RecordedEvent,
        live: bool,
    ) -> anyhow::Result<Option<TenantName>> {
        let is_device = Imei::from_stream_id(&recorded.stream_id).is_some();
        if is_device && !live {
            return self.device_tenant_before(recorded).await;
        }
        if let Some(tenant) = self.tenants.get(&recorded.stream_id) {
            return Ok(Some(tenant.clone()));
        }
        if self.tenants.len() > 100_000 {
            self.tenants.clear();
        }
        let stream = StreamId::new(recorded.stream_id.clone())?;
        let tenant = if TaskId::from_stream_id(&recorded.stream_id).is_some() {
            let first = if recorded.version == 1 {
                vec![recorded.clone()]
            } else {
                self.store
                    .read_stream(&stream, 1, Direction::Forward, 1)
                    .await?
            };
            match first.first().map(TaskEvent::from_recorded) {
                Some(Ok(TaskEvent::Submitted(submitted))) => Some(submitted.tenant),
                _ => None,
            }
        } else if is_device {
            match self.store.latest_of_type(&stream, "DeviceAssigned").await? {
                Some(assigned) => match DeviceEvent::from_recorded(&assigned) {
                    Ok(DeviceEvent::Assigned(assigned)) => Some(assigned.tenant),
                    _ => None,
                },
                None => None,
            }
        } else {
            None
        };
        if let Some(tenant) = &tenant {
            self.tenants
                .insert(recorded.stream_id.clone(), tenant.clone());
        }
        Ok(tenant)
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
