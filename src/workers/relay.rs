//! The relay: follows the global order from its own checkpoint and
//! publishes, with publisher confirms, every event to the events exchange
//! and a job per `TaskSubmitted` (of a task without parents) /
//! `TaskReleased` / `TaskRetried` to the jobs exchange.
//!
//! - **Checkpoint after confirm**: a batch is published, every confirm is
//!   awaited, and only then may the checkpoint (`relay_checkpoints`) move:
//!   at most once per [`CHECKPOINT_LAG`] while events flow, and that long
//!   after the last confirmed batch when they stop (one write per second
//!   under load instead of one per batch, about two per task). A crash, a
//!   stop or a broker failure republishes what was confirmed since the row
//!   last moved: at-least-once on the wire, exactly once for a consumer that
//!   dedupes by message id (= event id). Runners dedupe jobs through the
//!   task's stream version (a second claim of one attempt loses).
//! - **Order**: one channel, published in global order; after a failure the
//!   relay starts again from its checkpoint, so nothing is reordered past a
//!   confirmed batch.
//! - **One active relay** across processes: a session advisory lock on the
//!   connection that writes the checkpoint (as for projectors); the others
//!   stand by.
//! - **Reconnects** with exponential backoff (up to 10 s) after any broker or
//!   database failure, declaring the topology again each time.
//! - **Priorities**: a job's message carries its task's priority as its
//!   `priority` property ([`rabbitmq::priority_level`]); a retry's or a
//!   release's job too, its priority read from the task's `TaskSubmitted` (remembered
//!   from the submission, or read once from the log).
//! - **Upgrade**: after declaring, it moves the jobs left in queues of
//!   releases before priority queues into the priority queues
//!   ([`move_legacy_jobs`]).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::{Direction, EventStore, RecordedEvent};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::adapters::rabbitmq::{self, Job, Topology};
use crate::adapters::rabbitmq_upgrade::move_legacy_jobs;
use crate::workers::leader;

/// Events published per confirmed batch, at most.
const BATCH: usize = 500;
/// The relay's name in `relay_checkpoints` and its lock.
const NAME: &str = "relay";
/// How far the checkpoint row may trail what the broker confirmed: what a
/// restart publishes again, at most.
const CHECKPOINT_LAG: Duration = Duration::from_secs(1);

/// How the relay is set up.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The broker.
    pub amqp_url: String,
    /// Exchange and queue names.
    pub topology: Topology,
    /// The kinds whose work queues it declares.
    pub kinds: Vec<String>,
}

/// Where the relay is, for status reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStatus {
    /// The last position the broker confirmed.
    pub confirmed: u64,
    /// Whether this process's relay is the active one.
    pub active: bool,
}

/// Runs the relay until `stop` resolves.
pub async fn run(
    store: PgEventStore,
    options: RelayOptions,
    status: watch::Sender<RelayStatus>,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    leader::run("relay", leader::OnStop::Drop, stop, |_| async {
        let life = relay_once(&store, &options, &status).await;
        status.send_modify(|status| status.active = false);
        life
    })
    .await;
}

/// One life of the relay: lock, connect, publish until something fails.
/// `Ok` when another process's relay is active.
async fn relay_once(
    store: &PgEventStore,
    options: &RelayOptions,
    status: &watch::Sender<RelayStatus>,
) -> anyhow::Result<()> {
    // The checkpoint is written on the connection that holds the lock.
    let Some(leadership) = leader::try_lead(store, NAME).await? else {
        return Ok(());
    };
    let mut position = leadership
        .checkpoint("relay_checkpoints", "relay", NAME)
        .await?;

    let amqp = rabbitmq::connect(&options.amqp_url, "taskledger-relay")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = amqp.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    options.topology.declare(&channel, &options.kinds).await?;
    move_legacy_jobs(&amqp, &options.topology, &options.kinds).await?;
    status.send_modify(|status| {
        status.active = true;
        status.confirmed = position;
    });
    tracing::info!(position, "relay active");

    let mut relay = Batches {
        store,
        client: &leadership.client,
        channel: &channel,
        topology: &options.topology,
        kinds: HashMap::new(),
    };
    let mut feed = store.subscribe_all(position);
    // Where the checkpoint row stands, and since when.
    let mut recorded = (position, Instant::now());
    loop {
        // While the row trails, wait for the next event only until it is
        // due to move (`None`: the log stayed quiet that long).
        let next = if position > recorded.0 {
            tokio::time::timeout_at(recorded.1 + CHECKPOINT_LAG, feed.next())
                .await
                .ok()
        } else {
            Some(feed.next().await)
        };
        if let Some(next) = next {
            let first = next.context("the event feed ended")?;
            let batch = feed.batch_from(first, BATCH).context("reading the log")?;
            position = relay.confirm(position, &batch).await?;
            status.send_modify(|status| status.confirmed = position);
        }
        if position > recorded.0 && recorded.1.elapsed() >= CHECKPOINT_LAG {
            relay.record(recorded.0, position).await?;
            recorded = (position, Instant::now());
        }
    }
}

/// What an active relay publishes batches with.
struct Batches<'a> {
    store: &'a PgEventStore,
    /// The connection that holds the relay's lock and writes its checkpoint.
    client: &'a tokio_postgres::Client,
    /// A channel in confirm mode.
    channel: &'a lapin::Channel,
    topology: &'a Topology,
    /// Kinds and priorities of tasks that may be retried, so a retry's job
    /// needs no read.
    kinds: HashMap<TaskId, Routing>,
}

/// What a task's jobs need from its `TaskSubmitted`.
#[derive(Debug, Clone)]
struct Routing {
    kind: String,
    priority: i32,
}

impl Batches<'_> {
    /// Publishes `batch` (each event, and the job it makes) and waits for
    /// every confirm; the batch's last position (`position` if it is
    /// empty). An error leaves the checkpoint where it was, so the batch is
    /// published again.
    #[tracing::instrument(
        name = "relay_batch",
        skip_all,
        fields(
            from = batch.first().map(|event| event.global_position),
            to = batch.last().map(|event| event.global_position),
            events = batch.len(),
            trace_id = batch.iter().find_map(|event| event.metadata.trace_id.as_deref()),
        )
    )]
    async fn confirm(&mut self, position: u64, batch: &[RecordedEvent]) -> anyhow::Result<u64> {
        let events_exchange = self.topology.events_exchange();
        let jobs_exchange = self.topology.jobs_exchange();
        let mut confirms = Vec::with_capacity(batch.len() * 2);
        for recorded in batch {
            let properties = rabbitmq::properties(recorded, "application/json");
            confirms.push(
                self.publish(&events_exchange, &recorded.event_type, recorded, properties)
                    .await?,
            );
            if let Some(job) = self.job(recorded).await? {
                let properties = rabbitmq::job_properties(recorded, &job);
                confirms.push(
                    self.publish(&jobs_exchange, &job.kind, &job, properties)
                        .await?,
                );
            }
        }
        for confirm in confirms {
            let confirmation = confirm.await?;
            if !confirmation.is_ack() {
                anyhow::bail!("the broker refused (nacked) a message; publishing the batch again");
            }
        }
        Ok(batch.last().map_or(position, |event| event.global_position))
    }

    /// Moves the checkpoint row from `from` (where this relay left it) to
    /// `to`, which the broker confirmed.
    ///
    /// # Errors
    /// The database failed, or the row is not at `from`: another relay
    /// moved it, so this one stops.
    async fn record(&self, from: u64, to: u64) -> anyhow::Result<()> {
        let moved =
            leader::move_checkpoint(self.client, ("relay_checkpoints", "relay", NAME), from, to)
                .await?;
        anyhow::ensure!(
            moved,
            "the relay checkpoint moved under this relay; another relay is active"
        );
        Ok(())
    }

    /// Publishes `message` (as JSON) with `properties`; its confirm is to
    /// be awaited.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &impl serde::Serialize,
        properties: lapin::BasicProperties,
    ) -> anyhow::Result<lapin::PublisherConfirm> {
        let body = serde_json::to_vec(message)?;
        Ok(self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?)
    }

    /// The job `recorded` makes, if any. A store failure ends the batch; a
    /// task event no job can be made from is logged here and skipped: the
    /// event itself is published, and stopping would hold back every later
    /// event.
    async fn job(&mut self, recorded: &RecordedEvent) -> anyhow::Result<Option<Job>> {
        match job_for(
            self.store,
            &mut self.kinds,
            recorded,
            self.topology.installation(),
        )
        .await
        {
            Ok(job) => Ok(job),
            Err(error)
                if error
                    .downcast_ref::<taskledger_events::StoreError>()
                    .is_some() =>
            {
                Err(error)
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    position = recorded.global_position,
                    "no job can be made from this task event; the task will not run"
                );
                Ok(None)
            }
        }
    }
}

/// The job `recorded` makes, looking up a retried task's kind and
/// priority in the log (once: then they are remembered).
async fn job_for(
    store: &PgEventStore,
    kinds: &mut HashMap<TaskId, Routing>,
    recorded: &RecordedEvent,
    installation: Option<uuid::Uuid>,
) -> anyhow::Result<Option<Job>> {
    let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) else {
        return Ok(None);
    };
    let event = TaskEvent::from_recorded(recorded)
        .with_context(|| format!("reading the task event at {}", recorded.global_position))?;
    let routing = match &event {
        TaskEvent::Submitted(submitted) => Routing {
            kind: submitted.kind.clone(),
            priority: submitted.priority,
        },
        TaskEvent::Retried(_) | TaskEvent::Released(_) => match kinds.get(&task_id) {
            Some(routing) => routing.clone(),
            None => {
                let first = store
                    .read_stream(&task_id.stream_id(), 1, Direction::Forward, 1)
                    .await?;
                match first.first().map(TaskEvent::from_recorded) {
                    Some(Ok(TaskEvent::Submitted(submitted))) => Routing {
                        kind: submitted.kind,
                        priority: submitted.priority,
                    },
                    _ => anyhow::bail!("task {task_id} has no TaskSubmitted event"),
                }
            }
        },
        _ => return Ok(None),
    };
    // Remember kinds of tasks that may be retried; forget finished ones.
    if kinds.len() > 100_000 {
        kinds.clear();
    }
    kinds.insert(task_id, routing.clone());
    Ok(Job::for_event(
        recorded,
        &event,
        &routing.kind,
        routing.priority,
        installation,
    ))
}
