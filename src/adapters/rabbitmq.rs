//! RabbitMQ: the topology taskledger declares, the job message runners
//! consume, and connecting.
//!
//! Names start with a prefix: `taskledger-` and the first 12 hex digits of
//! the installation's id unless `TASKLEDGER_AMQP_PREFIX` says otherwise, so
//! installations sharing a broker never share queues. Jobs also carry the
//! installation's id: a runner puts back a job of another installation (two
//! installations given one prefix) instead of taking it.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `{prefix}.events` | topic exchange, durable | every event, routing key = event type |
//! | `{prefix}.jobs` | direct exchange, durable | one job per `TaskSubmitted` / `TaskRetried`, routing key = task kind |
//! | `{prefix}.priority-jobs.{kind}` | classic queue, durable, `x-max-priority` 9 | the jobs of one kind, higher [level](priority_level) first; dead-letters to `{prefix}.dead` |
//! | `{prefix}.dead` | fanout exchange + queue, durable | rejected jobs, and jobs of kinds no queue is bound for |
//! | `{prefix}.wait` | headers exchange, durable | jobs whose retry is not due yet, by their `taskledger-wait-ms` header |
//! | `{prefix}.wait.{n}ms` | classic queue, durable, `x-message-ttl` n | one per power of two from 128 ms to 2²⁶ ms (18.6 h); expired jobs dead-letter to `{prefix}.jobs` under their kind |
//!
//! A job that is early (its task's `next_attempt_at` is ahead) hops through
//! the wait queues, each time into the longest that is not longer than what
//! remains, and is back on its kind's queue when it is due. Every wait
//! queue holds one delay, so its messages expire in the order they came:
//! none waits behind a longer one. The due time itself is in the log; the
//! runner checks it on every delivery.
//!
//! Messages are persistent; `message_id` is the event id, and the headers
//! carry `position` (the event's place in the global order), `stream`,
//! `version` and `hash`. A job's `priority` property is its task's priority
//! as a [level](priority_level) from 1 to [`MAX_PRIORITY`]; every hop (a
//! wait queue's dead-lettering, a runner's republish) keeps it, because
//! both copy the message's properties.
//!
//! Releases before priority queues kept a kind's jobs in
//! `{prefix}.jobs.{kind}`, declared without `x-max-priority`: a queue's
//! arguments cannot change, so the priority queues have new names and
//! [`move_legacy_jobs`](crate::adapters::rabbitmq_upgrade::move_legacy_jobs)
//! empties the old ones into them.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use taskledger_events::task::TaskEvent;
use taskledger_events::RecordedEvent;
use uuid::Uuid;

/// The exchange and queue names of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    installation: Option<Uuid>,
}

impl Topology {
    /// Names starting with `prefix`, for no particular installation (jobs
    /// carry no installation id and any is taken: benchmarks and tests).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            installation: None,
        }
    }

    /// The names of `installation`: `prefix`, or by default one derived
    /// from its id.
    pub fn for_installation(installation: Uuid, prefix: Option<String>) -> Self {
        Self {
            prefix: prefix.unwrap_or_else(|| default_prefix(installation)),
            installation: Some(installation),
        }
    }

    /// The installation whose jobs these are, if one is set.
    pub fn installation(&self) -> Option<Uuid> {
        self.installation
    }

    /// Whether a runner of this installation may take `job`: jobs of no
    /// stated installation (an older relay's) and of this one.
    pub fn owns(&self, job: &Job) -> bool {
        match (self.installation, job.installation) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => true,
        }
    }

    /// The prefix: it names the installation (containers are labelled with
    /// it, so runners of different installations on one engine never touch
    /// each other's).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic exchange every event is published to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The direct exchange jobs are published to (routing key: the kind).
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// The work queue of `kind`: a priority queue.
    pub fn jobs_queue(&self, kind: &str) -> String {
        format!("{}.priority-jobs.{kind}", self.prefix)
    }

    /// The work queue of `kind` in releases before priority queues (no
    /// `x-max-priority`), emptied and deleted on upgrade.
    pub fn legacy_jobs_queue(&self, kind: &str) -> String {
        format!("{}.jobs.{kind}", self.prefix)
    }

    /// The dead-letter exchange and its queue (same name).
    pub fn dead_letters(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The headers exchange of jobs waiting for their retry to be due.
    pub fn wait_exchange(&self) -> String {
        format!("{}.wait", self.prefix)
    }

    /// The wait queue whose messages wait `millis` milliseconds.
    fn wait_queue(&self, millis: u64) -> String {
        format!("{}.wait.{millis}ms", self.prefix)
    }

    /// Declares the exchanges, the dead-letter queue, the wait queues and a
    /// work queue for each of `kinds` (idempotent: safe on every start).
    ///
    /// # Errors
    /// When the broker refuses a declaration (e.g. an existing queue with
    /// other arguments).
    pub async fn declare(&self, channel: &Channel, kinds: &[String]) -> lapin::Result<()> {
        let dead = self.dead_letters();
        durable_exchange(channel, &dead, ExchangeKind::Fanout, FieldTable::default()).await?;
        bound_queue(channel, &dead, FieldTable::default(), &dead, "").await?;
        let events = self.events_exchange();
        durable_exchange(channel, &events, ExchangeKind::Topic, FieldTable::default()).await?;
        // A job whose kind has no queue goes to the dead letters instead of
        // vanishing.
        let jobs = self.jobs_exchange();
        let to_dead = naming(&dead, "alternate-exchange");
        durable_exchange(channel, &jobs, ExchangeKind::Direct, to_dead).await?;
        for kind in kinds {
            // A rejected or expired job goes to the dead letters too.
            let mut arguments = naming(&dead, "x-dead-letter-exchange");
            arguments.insert(
                "x-max-priority".into(),
                AMQPValue::LongLongInt(i64::from(MAX_PRIORITY)),
            );
            bound_queue(channel, &self.jobs_queue(kind), arguments, &jobs, kind).await?;
        }
        let wait = self.wait_exchange();
        durable_exchange(channel, &wait, ExchangeKind::Headers, FieldTable::default()).await?;
        for millis in wait_queue_delays() {
            let queue = self.wait_queue(millis);
            let mut arguments = naming(&jobs, "x-dead-letter-exchange");
            arguments.insert("x-message-ttl".into(), wait_header_value(millis));
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::durable(),
                    arguments,
                )
                .await?;
            let mut matching = FieldTable::default();
            matching.insert(
                "x-match".into(),
                AMQPValue::LongString(LongString::from("all")),
            );
            matching.insert(WAIT_HEADER.into(), wait_header_value(millis));
            channel
                .queue_bind(
                    queue.as_str().into(),
                    wait.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    matching,
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes everything [`Topology::declare`] made for `kinds` (tests).
    ///
    /// # Errors
    /// When the broker refuses.
    pub async fn delete(&self, channel: &Channel, kinds: &[String]) -> lapin::Result<()> {
        for queue in kinds
            .iter()
            .map(|kind| self.jobs_queue(kind))
            .chain([self.dead_letters()])
            .chain(wait_queue_delays().map(|millis| self.wait_queue(millis)))
        {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            self.jobs_exchange(),
            self.events_exchange(),
            self.dead_letters(),
            self.wait_exchange(),
        ] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

/// The highest message priority of a kind's job queue (its
/// `x-max-priority`). RabbitMQ keeps a sub-queue per level and advises few
/// levels, so a task's priority (-1000 to 1000) is mapped onto nine.
pub const MAX_PRIORITY: u8 = 9;

/// The message priority of a job whose task has `priority`: 5 for 0, and
/// one level higher (lower) per decimal digit of a positive (negative)
/// priority, so the mapping is monotonic and orders priorities that differ
/// in sign or order of magnitude:
///
/// | task priority | level |
/// |---|---|
/// | 1000 | 9 |
/// | 100 to 999 | 8 |
/// | 10 to 99 | 7 |
/// | 1 to 9 | 6 |
/// | 0 | 5 |
/// | -9 to -1 | 4 |
/// | -99 to -10 | 3 |
/// | -999 to -100 | 2 |
/// | -1000 | 1 |
///
/// Jobs of one level are taken in the order they came. Level 0 is what
/// RabbitMQ gives a message without the property (a job published before
/// priorities were honoured): below every task's. Out-of-range priorities
/// (never accepted by `SubmitTask`) count as the nearest bound.
pub fn priority_level(priority: i32) -> u8 {
    let digits = match priority.unsigned_abs().min(1000) {
        0 => 0,
        1..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        _ => 4,
    };
    if priority < 0 {
        5 - digits
    } else {
        5 + digits
    }
}

/// The header that routes a job into the wait queue of that many
/// milliseconds.
pub const WAIT_HEADER: &str = "taskledger-wait-ms";

/// The wait queues' delays, in milliseconds: the powers of two from 2⁷ to
/// 2²⁶.
fn wait_queue_delays() -> impl Iterator<Item = u64> {
    (7..=26).map(|exponent| 1_u64 << exponent)
}

/// A wait queue's delay as a header and `x-message-ttl` value.
pub fn wait_header_value(millis: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(millis).unwrap_or(i64::MAX))
}

/// The delay of the wait queue a job with `remaining` to wait goes to
/// next: the longest not longer than `remaining`. `None` when `remaining`
/// is below the shortest (128 ms), which the runner waits itself.
pub fn wait_step(remaining: Duration) -> Option<u64> {
    let remaining = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
    wait_queue_delays()
        .filter(|millis| *millis <= remaining)
        .last()
}

/// The default prefix of `installation`: `taskledger-` and the first 12
/// hex digits of its id.
pub fn default_prefix(installation: Uuid) -> String {
    format!("taskledger-{}", &installation.simple().to_string()[..12])
}

/// Connects to `url`, naming the connection (shown by `rabbitmqctl
/// list_connections`).
///
/// # Errors
/// When the broker cannot be reached or refuses the credentials.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(LongString::from(name)),
    )
    .await
}

/// A job: "run the next attempt of this task". Runners load the task itself
/// from the log; the job only says which task and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The task.
    pub task_id: Uuid,
    /// Its kind (the queue it came from).
    pub kind: String,
    /// The attempt this job is for (1 for a submission, n + 1 after attempt
    /// n was retried).
    pub attempt: u32,
    /// The task's priority (-1000 to 1000, higher first); 0 in jobs of
    /// releases before it was added.
    #[serde(default)]
    pub priority: i32,
    /// The event that made the job.
    pub event_id: Uuid,
    /// That event's global position.
    pub position: u64,
    /// The installation whose log holds the task (absent in jobs of
    /// releases before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<Uuid>,
}

impl Job {
    /// The job an event of a task of `kind` and `priority` makes, if any:
    /// `TaskSubmitted` and `TaskRetried` do.
    pub fn for_event(
        recorded: &RecordedEvent,
        event: &TaskEvent,
        kind: &str,
        priority: i32,
        installation: Option<Uuid>,
    ) -> Option<Self> {
        let attempt = match event {
            // A task with parents waits for its release instead.
            TaskEvent::Submitted(submitted) if submitted.depends_on.is_empty() => 1,
            TaskEvent::Released(_) => 1,
            TaskEvent::Retried(retried) => retried.attempt.saturating_add(1),
            _ => return None,
        };
        let task_id = taskledger_events::task::TaskId::from_stream_id(&recorded.stream_id)?;
        Some(Self {
            task_id: task_id.0,
            kind: kind.to_owned(),
            attempt,
            priority,
            event_id: recorded.event_id,
            position: recorded.global_position,
            installation,
        })
    }
}

/// Declares the durable exchange `name`.
async fn durable_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
    arguments: FieldTable,
) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, durable, arguments)
        .await
}

/// Declares the durable queue `queue` and binds it to `exchange` under
/// `routing_key`.
async fn bound_queue(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
    exchange: &str,
    routing_key: &str,
) -> lapin::Result<()> {
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declaration arguments with one entry: `argument` naming the exchange
/// `exchange`.
fn naming(exchange: &str, argument: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        argument.into(),
        AMQPValue::LongString(LongString::from(exchange)),
    );
    arguments
}

/// The properties of a message about `recorded`: persistent, its event id as
/// the message id, and the envelope's place in the headers.
pub fn properties(recorded: &RecordedEvent, content_type: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "position".into(),
        AMQPValue::LongLongInt(i64::try_from(recorded.global_position).unwrap_or(i64::MAX)),
    );
    headers.insert(
        "stream".into(),
        AMQPValue::LongString(LongString::from(recorded.stream_id.as_str())),
    );
    headers.insert(
        "version".into(),
        AMQPValue::LongLongInt(i64::try_from(recorded.version).unwrap_or(i64::MAX)),
    );
    headers.insert(
        "hash".into(),
        AMQPValue::LongString(LongString::from(hex::encode(recorded.hash))),
    );
    BasicProperties::default()
        .with_message_id(ShortString::from(recorded.event_id.to_string()))
        .with_delivery_mode(2)
        .with_content_type(ShortString::from(content_type))
        .with_type(ShortString::from(recorded.event_type.as_str()))
        .with_timestamp(u64::try_from(recorded.recorded_at.timestamp()).unwrap_or(0))
        .with_headers(headers)
}

/// [`properties`] of the message of `job`, made by `recorded`: with the
/// job's [priority level](priority_level).
pub fn job_properties(recorded: &RecordedEvent, job: &Job) -> BasicProperties {
    properties(recorded, "application/json").with_priority(priority_level(job.priority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_levels_rise_with_the_priority_by_order_of_magnitude() {
        let levels: Vec<(i32, u8)> = [
            -1000, -999, -100, -99, -10, -9, -1, 0, 1, 9, 10, 99, 100, 999, 1000,
        ]
        .into_iter()
        .map(|priority| (priority, priority_level(priority)))
        .collect();
        assert_eq!(
            levels,
            [
                (-1000, 1),
                (-999, 2),
                (-100, 2),
                (-99, 3),
                (-10, 3),
                (-9, 4),
                (-1, 4),
                (0, 5),
                (1, 6),
                (9, 6),
                (10, 7),
                (99, 7),
                (100, 8),
                (999, 8),
                (1000, 9)
            ]
        );
        assert_eq!(priority_level(i32::MAX), MAX_PRIORITY);
        assert_eq!(priority_level(i32::MIN), 1);
    }

    #[test]
    fn priority_levels_are_monotonic_and_within_the_queues_maximum() {
        let mut previous = priority_level(-1000);
        assert!(previous >= 1, "level 0 is left to jobs without a priority");
        for priority in -999..=1000 {
            let level = priority_level(priority);
            assert!(level >= previous, "{priority} maps below {}", priority - 1);
            assert!(level <= MAX_PRIORITY);
            previous = level;
        }
    }

    #[test]
    fn a_job_message_without_a_priority_reads_as_priority_zero() {
        let old = r#"{"task_id": "5f0c7b8e-4a51-4d8e-9a55-0d6c1c1f2a10", "kind": "echo",
                      "attempt": 1, "event_id": "5f0c7b8e-4a51-4d8e-9a55-0d6c1c1f2a11",
                      "position": 7}"#;
        let job: Job = serde_json::from_str(old).unwrap();
        assert_eq!(job.priority, 0);
    }

    #[test]
    fn a_wait_goes_to_the_longest_queue_not_longer_than_it() {
        assert_eq!(wait_step(Duration::from_millis(127)), None);
        assert_eq!(wait_step(Duration::from_millis(128)), Some(128));
        assert_eq!(wait_step(Duration::from_millis(3_000)), Some(2_048));
        assert_eq!(wait_step(Duration::from_secs(86_400)), Some(1 << 26));
    }
}
