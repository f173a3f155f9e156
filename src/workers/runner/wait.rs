//! A retry's backoff: when the next attempt after a retryable failure is
//! due (the kind's [`RetryPolicy`](crate::config::retry::RetryPolicy), its
//! jitter drawn here so that `decide` stays pure, the chosen instant stored
//! in `TaskRetried`'s `next_attempt_at`), and how a job that arrives before
//! that instant waits without holding a slot: through RabbitMQ's wait
//! queues (see [`rabbitmq`]) or, without a broker, on a timer that sends it
//! again. The due time lives in the log, so whichever process restarts, the
//! next delivery of the job (a redelivery, the relay's republish, the
//! in-process rescan) finds it there and waits again: no attempt starts
//! early and none is lost.

use chrono::DateTime;
use lapin::types::{AMQPValue, FieldTable};
use rand::Rng as _;

use super::*;

/// When the attempt after `attempt` of a task of `kind`, which failed at
/// `failed_at`, may start, if the failure is `retryable` (else `None`:
/// nothing is retried).
pub(super) fn next_attempt_at(
    context: &Context,
    kind: &str,
    attempt: u32,
    retryable: bool,
    failed_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !retryable {
        return None;
    }
    let policy = context
        .options
        .config
        .kinds
        .get(kind)
        .map(|kind| kind.retry.clone())
        .unwrap_or_default();
    let draw = rand::rng().random_range(-1.0..=1.0);
    let wait = chrono::Duration::from_std(policy.backoff(attempt, draw))
        .unwrap_or(chrono::Duration::zero());
    // Rounded up to the database's precision, so it is never early.
    Some((failed_at + wait + chrono::Duration::microseconds(1)).trunc_subsecs(6))
}

/// How long until `due` (zero once it is past).
fn until(due: DateTime<Utc>) -> Duration {
    (due - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

/// [`handle`], waiting itself for a due time nearer than the shortest wait
/// queue (so the slot is held for at most that, 128 ms). Any other early
/// job comes back as [`Disposition::Wait`].
pub(super) async fn handle_when_due(
    context: &Context,
    job: &Job,
    redelivered: bool,
) -> Disposition {
    loop {
        match handle(context, job.clone(), redelivered).await {
            Disposition::Wait(due) if rabbitmq::wait_step(until(due)).is_none() => {
                tokio::time::sleep(until(due)).await;
            }
            disposition => return disposition,
        }
    }
}

/// Sends an early job (or one whose kind is at its `max_running`) into the
/// wait queue that brings it back nearest its due time without passing it:
/// published again (its body and
/// properties, a fresh dead-letter history) and acknowledged only once the
/// broker confirmed the copy; otherwise it is requeued, never dropped.
pub(super) async fn park(
    context: &Context,
    republish: &lapin::Channel,
    job: &Job,
    delivery: &lapin::message::Delivery,
    due: DateTime<Utc>,
) -> Disposition {
    let Some(millis) = rabbitmq::wait_step(until(due)) else {
        // Due meanwhile: back to its queue.
        return Disposition::Requeue;
    };
    let mut headers = FieldTable::default();
    if let Some(old) = delivery.properties.headers() {
        for (name, value) in old {
            // The broker's record of earlier hops: a copy starts afresh.
            if !name.as_str().starts_with("x-") {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    headers.insert(
        rabbitmq::WAIT_HEADER.into(),
        rabbitmq::wait_header_value(millis),
    );
    headers.insert(
        "next-attempt-at".into(),
        AMQPValue::LongString(due.to_rfc3339().into()),
    );
    tracing::debug!(task = %job.task_id, attempt = job.attempt, %due, wait_ms = millis, "a job is not to run yet (a retry's backoff, or its kind at max_running); parking it");
    let exchange = context.options.topology.wait_exchange();
    let mut properties = delivery.properties.clone().with_headers(headers);
    if properties.priority().is_none() {
        // Published before priorities were honoured: from now on, it has
        // its task's (the job's) level.
        properties = properties.with_priority(rabbitmq::priority_level(job.priority));
    }
    super::intake::republished(republish, &exchange, job, delivery, properties).await
}

/// Sends `job` to the in-process intake again at `due` (no broker: one
/// process, whose restart rescans the log and finds the due time again).
pub(super) fn send_when_due(
    sender: mpsc::Sender<(Job, bool)>,
    job: Job,
    due: DateTime<Utc>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(until(due)).await;
        let _ = sender.send((job, false)).await;
    })
}
