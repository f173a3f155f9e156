//! The relay: follows the global order from its own checkpoint and
//! publishes, with publisher confirms, every event to the events exchange
//! and a job per `TaskSubmitted` / `TaskRetried` to the jobs exchange.
//!
//! - **Checkpoint after confirm**: a batch is published, every confirm is
//!   awaited, and only then does the checkpoint (`relay_checkpoints`) move.
//!   A crash or a broker failure in between republishes the batch:
//!   at-least-once on the wire, exactly once for a consumer that dedupes by
//!   message id (= event id). Runners dedupe jobs through the task's stream
//!   version (a second claim of one attempt loses).
//! - **Order**: one channel, published in global order; after a failure the
//!   relay starts again from its checkpoint, so nothing is reordered past a
//!   confirmed batch.
//! - **One active relay** across processes: a session advisory lock on the
//!   connection that writes the checkpoint (as for projectors); the others
//!   stand by.
//! - **Reconnects** with exponential backoff (up to 10 s) after any broker or
//!   database failure, declaring the topology again each time.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::{Direction, EventStore, RecordedEvent};
use tokio::sync::watch;

use crate::adapters::rabbitmq::{self, Job, Topology};
use crate::workers::leader;

/// Events published per confirmed batch, at most.
const BATCH: usize = 500;
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often a standby relay tries to become the active one.
const STANDBY_RETRY: Duration = Duration::from_secs(2);
/// The relay's name in `relay_checkpoints` and its lock.
const NAME: &str = "relay";

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
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            () = &mut stop => break,
            outcome = relay_once(&store, &options, &status) => outcome,
        };
        status.send_modify(|status| status.active = false);
        match attempt {
            Ok(Standby) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(STANDBY_RETRY) => {}
                }
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), retry_in = ?backoff, "relay interrupted; reconnecting");
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::info!("relay stopped");
}

/// Another process's relay is active.
struct Standby;

/// One life of the relay: lock, connect, publish until something fails.
async fn relay_once(
    store: &PgEventStore,
    options: &RelayOptions,
    status: &watch::Sender<RelayStatus>,
) -> anyhow::Result<Standby> {
    // The checkpoint is written on the connection that holds the lock.
    let Some(leadership) = leader::try_lead(store, NAME).await? else {
        return Ok(Standby);
    };
    let client = &leadership.client;
    client
        .execute(
            "INSERT INTO relay_checkpoints (relay) VALUES ($1) ON CONFLICT (relay) DO NOTHING",
            &[&NAME],
        )
        .await?;
    let position: i64 = client
        .query_one(
            "SELECT position FROM relay_checkpoints WHERE relay = $1",
            &[&NAME],
        )
        .await?
        .get(0);
    let mut position = u64::try_from(position).unwrap_or(0);

    let amqp = rabbitmq::connect(&options.amqp_url, "taskledger-relay")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = amqp.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    options.topology.declare(&channel, &options.kinds).await?;
    status.send_modify(|status| {
        status.active = true;
        status.confirmed = position;
    });
    tracing::info!(position, "relay active");

    let events_exchange = options.topology.events_exchange();
    let jobs_exchange = options.topology.jobs_exchange();
    let mut kinds: HashMap<TaskId, String> = HashMap::new();
    let mut feed = store.subscribe_all(position);
    loop {
        let first = feed
            .next()
            .await
            .context("the event feed ended")?
            .context("reading the log")?;
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match feed.try_next() {
                Some(event) => batch.push(event.context("reading the log")?),
                None => break,
            }
        }
        let mut confirms = Vec::with_capacity(batch.len() * 2);
        for recorded in &batch {
            let body = serde_json::to_vec(recorded)?;
            confirms.push(
                channel
                    .basic_publish(
                        events_exchange.as_str().into(),
                        recorded.event_type.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        rabbitmq::properties(recorded, "application/json"),
                    )
                    .await?,
            );
            let job =
                match job_for(store, &mut kinds, recorded, options.topology.installation()).await {
                    Ok(job) => job,
                    Err(error)
                        if error
                            .downcast_ref::<taskledger_events::StoreError>()
                            .is_some() =>
                    {
                        return Err(error)
                    }
                    Err(error) => {
                        // The event itself is published; only its job cannot be
                        // made. Stopping here would hold back every later event.
                        tracing::error!(
                            error = format!("{error:#}"),
                            position = recorded.global_position,
                            "no job can be made from this task event; the task will not run"
                        );
                        None
                    }
                };
            if let Some(job) = job {
                let body = serde_json::to_vec(&job)?;
                confirms.push(
                    channel
                        .basic_publish(
                            jobs_exchange.as_str().into(),
                            job.kind.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            rabbitmq::properties(recorded, "application/json"),
                        )
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
        let last = batch.last().map_or(position, |event| event.global_position);
        let updated = client
            .execute(
                "UPDATE relay_checkpoints SET position = $2, updated_at = now()
                 WHERE relay = $1 AND position = $3",
                &[
                    &NAME,
                    &i64::try_from(last).unwrap_or(i64::MAX),
                    &i64::try_from(position).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        anyhow::ensure!(
            updated == 1,
            "the relay checkpoint moved under this relay; another relay is active"
        );
        position = last;
        status.send_modify(|status| status.confirmed = position);
    }
}

/// The job `recorded` makes, looking up a retried task's kind in the log.
async fn job_for(
    store: &PgEventStore,
    kinds: &mut HashMap<TaskId, String>,
    recorded: &RecordedEvent,
    installation: Option<uuid::Uuid>,
) -> anyhow::Result<Option<Job>> {
    let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) else {
        return Ok(None);
    };
    let event = TaskEvent::from_recorded(recorded)
        .with_context(|| format!("reading the task event at {}", recorded.global_position))?;
    let kind = match &event {
        TaskEvent::Submitted(submitted) => submitted.kind.clone(),
        TaskEvent::Retried(_) => match kinds.get(&task_id) {
            Some(kind) => kind.clone(),
            None => {
                let first = store
                    .read_stream(&task_id.stream_id(), 1, Direction::Forward, 1)
                    .await?;
                match first.first().map(TaskEvent::from_recorded) {
                    Some(Ok(TaskEvent::Submitted(submitted))) => submitted.kind,
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
    kinds.insert(task_id, kind.clone());
    Ok(Job::for_event(recorded, &event, &kind, installation))
}
