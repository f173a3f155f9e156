//! Upgrading a broker from the releases before priority queues: moving
//! the jobs left in a kind's old queue (`{prefix}.jobs.{kind}`, declared
//! without `x-max-priority`) into its priority queue, then deleting the
//! old queue.
//!
//! A queue's arguments cannot change (declaring it again with others is
//! refused with PRECONDITION_FAILED, which closes the channel), so the
//! priority queues have their own names. The relay and every runner call
//! [`move_legacy_jobs`] after [`Topology::declare`] on each (re)connect:
//! the priority queue is bound first, then the old one unbound, so a job
//! published meanwhile reaches at least one of them (both, at worst: a
//! duplicate, which runners drop by the task's stream version), never
//! neither. (An installation that never had an old queue gets an empty
//! one for a moment: declared, found empty, deleted.) Each old job is
//! published to the priority queue and acknowledged from the old one only
//! once the broker confirmed the copy:
//! a crash in between leaves a duplicate, never a loss. An old queue that
//! an older runner still consumes is left (emptied) until the next call.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ErrorKind};

use crate::adapters::rabbitmq::{priority_level, Job, Topology};

/// Moves every job in the old queues of `kinds` into the kinds' priority
/// queues (which [`Topology::declare`] must have declared and bound), and
/// deletes each old queue once it is empty and unused. Returns how many
/// jobs were moved. A job published without a `priority` property gets
/// the level of its body's priority (0, the default, for jobs of those
/// releases).
///
/// # Errors
/// When the broker fails or refuses a copy; the jobs not yet moved stay
/// in the old queue, and the next call moves them.
pub async fn move_legacy_jobs(
    connection: &Connection,
    topology: &Topology,
    kinds: &[String],
) -> anyhow::Result<u64> {
    // One mover at a time in this process: the relay and the runner start
    // together, and one's delete of the empty old queue under the other's
    // `basic.get` closed that channel with NOT_FOUND (handled below, but
    // logged by lapin as an error on every start). Other processes' movers
    // still race; that arm stays for them.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut moved = 0;
    for kind in kinds {
        // Its own channel: a refusal closes it.
        let channel = connection.create_channel().await?;
        let legacy = topology.legacy_jobs_queue(kind);
        // Declared with the arguments those releases gave it: that finds
        // the old queue or makes an empty one, deleted below. (Asking
        // whether it exists would close the channel, and lapin log an
        // error, on every start of every installation that has none.)
        let found = channel
            .queue_declare(
                legacy.as_str().into(),
                QueueDeclareOptions::durable(),
                legacy_arguments(topology),
            )
            .await?;
        if found.message_count() > 0 {
            tracing::info!(queue = %legacy, jobs = found.message_count(), "moving jobs out of a queue without priorities");
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .queue_unbind(
                legacy.as_str().into(),
                topology.jobs_exchange().as_str().into(),
                kind.as_str().into(),
                FieldTable::default(),
            )
            .await?;
        let count = match move_all(&channel, &legacy, &topology.jobs_queue(kind)).await {
            Ok(count) => count,
            // Another process deleted it meanwhile, having moved its jobs.
            Err(error)
                if error
                    .downcast_ref::<lapin::Error>()
                    .is_some_and(|error| is_soft(error, &AMQPSoftError::NOTFOUND)) =>
            {
                continue
            }
            Err(error) => return Err(error),
        };
        moved += count;
        let deleted = channel
            .queue_delete(
                legacy.as_str().into(),
                QueueDeleteOptions {
                    if_unused: true,
                    if_empty: true,
                    ..QueueDeleteOptions::default()
                },
            )
            .await;
        match deleted {
            Ok(_) if count > 0 => tracing::info!(
                queue = %legacy,
                moved = count,
                "moved the jobs of a queue without priorities and deleted it"
            ),
            Ok(_) => {}
            Err(error) if is_soft(&error, &AMQPSoftError::PRECONDITIONFAILED) => tracing::warn!(
                queue = %legacy,
                moved = count,
                "a queue without priorities is still in use (a runner of an older release?); \
                 its jobs are moved again on the next start"
            ),
            Err(error) => return Err(error.into()),
        }
        let _ = channel.close(200, "moved".into()).await;
    }
    Ok(moved)
}

/// The arguments releases before priority queues declared a kind's queue
/// with: rejected jobs to the dead letters.
fn legacy_arguments(topology: &Topology) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(topology.dead_letters())),
    );
    arguments
}

/// Moves the messages of `from` to the queue `to`, one at a time, each
/// acknowledged after its copy was confirmed; how many.
async fn move_all(channel: &Channel, from: &str, to: &str) -> anyhow::Result<u64> {
    let mut moved = 0;
    while let Some(message) = channel
        .basic_get(from.into(), BasicGetOptions { no_ack: false })
        .await?
    {
        let delivery = message.delivery;
        let mut properties = delivery.properties.clone();
        if properties.priority().is_none() {
            let priority = serde_json::from_slice::<Job>(&delivery.data)
                .map(|job| job.priority)
                .unwrap_or(0);
            properties = properties.with_priority(priority_level(priority));
        }
        if let Some(headers) = delivery.properties.headers() {
            // The broker's record of the old queue's hops: a copy starts
            // afresh (as a parked job's does).
            let mut kept = FieldTable::default();
            for (name, value) in headers {
                if !name.as_str().starts_with("x-") {
                    kept.insert(name.clone(), value.clone());
                }
            }
            properties = properties.with_headers(kept);
        }
        let confirmed = channel
            .basic_publish(
                "".into(),
                to.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        if !confirmed.is_ack() || confirmed.take_message().is_some() {
            // Refused, or returned unroutable: it stays where it was.
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            anyhow::bail!("the broker did not take a job moved from {from} to {to}");
        }
        delivery.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Whether `error` is the broker's channel-level `kind`.
fn is_soft(error: &lapin::Error, kind: &AMQPSoftError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(soft) if soft == kind)
    )
}
