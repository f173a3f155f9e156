//! Priorities honoured: with every slot busy, a high-priority task
//! submitted after many low-priority ones starts before all of them —
//! through RabbitMQ's priority queues and through the in-process intake —
//! and a job left in a kind's queue by a release before priority queues
//! still runs after the upgrade. A retry keeps its priority through the
//! relay (read from the log) and the wait queues.
//!
//! Needs `scripts/services.sh` (RabbitMQ, dockerd and the image
//! `taskledger-test-busybox:latest`).

use std::time::Duration;

use chrono::Utc;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{json, Value};
use taskledger::adapters::blobs::BlobStore;
use taskledger::adapters::rabbitmq;
use taskledger::adapters::rabbitmq::Job;
use taskledger::submission::Submission;
use taskledger::workers::runner::{self, RunnerOptions};
use taskledger_events::task::{RetryTask, StartTask, TaskCommand, TaskId, TaskStatus};
use taskledger_events::{Direction, EventStore};
use tokio::sync::oneshot;

use crate::running::{amqp_url, Cluster};
use crate::support::log::execute_on_task;
use crate::support::poll::eventually;

/// How many low-priority tasks wait behind the busy slot.
const LOW: usize = 8;
const LOW_PRIORITY: i32 = 0;
const HIGH_PRIORITY: i32 = 50;

/// Submits a `sh` task running `script` with `priority`; its id.
async fn submit(cluster: &Cluster, script: &str, priority: i32) -> TaskId {
    submit_kind(cluster, "sh", script, priority).await
}

/// Submits a task of `kind` (`sh` or `flaky`) running `script` with
/// `priority`; its id.
async fn submit_kind(cluster: &Cluster, kind: &str, script: &str, priority: i32) -> TaskId {
    let Value::Object(params) = json!({ "script": script }) else {
        unreachable!()
    };
    let submission = Submission {
        priority: Some(priority),
        ..Submission::new(kind, params, "tests")
    };
    crate::running::submit_as_tests(&cluster.store, &cluster.config, submission).await
}

async fn cancel(cluster: &Cluster, task_id: TaskId) {
    cluster
        .cancel(task_id, Some("the test is done with it"))
        .await;
}

/// The global position of the task's first `TaskStarted`.
async fn started_at(cluster: &Cluster, task_id: TaskId) -> u64 {
    cluster
        .store
        .read_stream(&task_id.stream_id(), 1, Direction::Forward, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|event| event.event_type == "TaskStarted")
        .unwrap_or_else(|| panic!("task {task_id} never started"))
        .global_position
}

/// A blocker holds the one slot; `LOW` low-priority tasks are submitted,
/// then one high-priority task; `before_release` runs (it may wait until
/// the jobs are where it wants them); the blocker ends. The high-priority
/// task must start before every low one.
async fn the_high_priority_task_goes_first(
    cluster: &Cluster,
    before_release: impl std::future::Future<Output = ()>,
) {
    let blocker = submit(cluster, "sleep 120", LOW_PRIORITY).await;
    cluster.wait_running(blocker).await;
    let mut lows = Vec::with_capacity(LOW);
    for index in 0..LOW {
        lows.push(submit(cluster, &format!("echo low {index}"), LOW_PRIORITY).await);
    }
    let high = submit(cluster, "echo high", HIGH_PRIORITY).await;
    before_release.await;
    cancel(cluster, blocker).await;
    cluster.wait_succeeded(high, Duration::from_secs(60)).await;
    let high_started = started_at(cluster, high).await;
    for (index, low) in lows.iter().enumerate() {
        cluster.wait_succeeded(*low, Duration::from_secs(120)).await;
        let low_started = started_at(cluster, *low).await;
        assert!(
            high_started < low_started,
            "low-priority task {index} started (position {low_started}) before the \
             high-priority one (position {high_started})"
        );
    }
}

/// How many jobs of `kind` are ready in its queue.
async fn ready_jobs(cluster: &Cluster, kind: &str) -> u32 {
    let connection = rabbitmq::connect(&amqp_url(), "taskledger-test-depth")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            cluster.topology.jobs_queue(kind).as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    queue.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_slot_busy_rabbitmq_hands_out_the_high_priority_job_first() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(1);
    the_high_priority_task_goes_first(&cluster, async {
        // All of them wait in the queue (none prefetched by the runner).
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                let ready = ready_jobs(&cluster, "sh").await;
                if ready == u32::try_from(LOW + 1).unwrap() {
                    return Ok(());
                }
                Err(format!("{ready} jobs ready in the queue, not {}", LOW + 1))
            },
        )
        .await;
    })
    .await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_slot_busy_the_in_process_intake_takes_the_high_priority_job_first() {
    let mut cluster = Cluster::start().await;
    // A runner with no broker: it takes its jobs from the log.
    let options = RunnerOptions {
        amqp_url: None,
        topology: cluster.topology.clone(),
        config: cluster.config.clone(),
        slots: 1,
        worker_id: "in-process".into(),
        blobs: BlobStore::new(&cluster.blobs),
        work_dir: cluster.blobs.join("work"),
        bind_out: true,
        lease_ttl: Duration::from_secs(3),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(runner::run(cluster.store.clone(), options, async move {
        let _ = stopped.await;
    }));
    cluster.runners.push(("in-process".into(), stop, handle));
    // Nothing to wait for: when the slot frees, the intake takes in every
    // job the log holds before it chooses.
    the_high_priority_task_goes_first(&cluster, async {}).await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_left_in_a_queue_without_priorities_runs_after_the_upgrade() {
    let mut cluster = Cluster::start_without_relay().await;
    let topology = cluster.topology.clone();
    let connection = rabbitmq::connect(&amqp_url(), "taskledger-test-old-release")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // The topology as releases before priority queues declared it.
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let naming = |argument: &str, exchange: &str| {
        let mut arguments = FieldTable::default();
        arguments.insert(
            argument.into(),
            AMQPValue::LongString(LongString::from(exchange)),
        );
        arguments
    };
    let dead = topology.dead_letters();
    let jobs = topology.jobs_exchange();
    let legacy = topology.legacy_jobs_queue("sh");
    channel
        .exchange_declare(
            dead.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .exchange_declare(
            jobs.as_str().into(),
            ExchangeKind::Direct,
            durable,
            naming("alternate-exchange", &dead),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            legacy.as_str().into(),
            QueueDeclareOptions::durable(),
            naming("x-dead-letter-exchange", &dead),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            legacy.as_str().into(),
            jobs.as_str().into(),
            "sh".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // A task whose job the old relay published (and confirmed: its
    // checkpoint is past the task's events), and no runner took.
    let task_id = submit(
        &cluster,
        r#"printf '{"moved": true}' > /out/result.json"#,
        LOW_PRIORITY,
    )
    .await;
    let submitted = cluster
        .store
        .read_stream(&task_id.stream_id(), 1, Direction::Forward, 1)
        .await
        .unwrap()
        .remove(0);
    let old_job = json!({
        "task_id": task_id.0,
        "kind": "sh",
        "attempt": 1,
        "event_id": submitted.event_id,
        "position": submitted.global_position,
    });
    let confirmation = channel
        .basic_publish(
            jobs.as_str().into(),
            "sh".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&old_job).unwrap(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(ShortString::from(submitted.event_id.to_string())),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirmation.is_ack());
    let head = i64::try_from(cluster.store.head_position().await.unwrap()).unwrap();
    cluster
        .store
        .pool()
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO relay_checkpoints (relay, position) VALUES ('relay', $1)",
            &[&head],
        )
        .await
        .unwrap();

    // The new release starts: its relay and runner declare priority queues.
    cluster.start_relay();
    cluster.start_runner(1);
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(60))
        .await;
    assert_eq!(task.result.unwrap()["moved"], true);
    cluster
        .assert_history(task_id, &["TaskSubmitted", "TaskStarted", "TaskSucceeded"])
        .await;
    // The old queue is gone, and new jobs reach the priority queue.
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let probe = connection.create_channel().await.unwrap();
            let found = probe
                .queue_declare(
                    legacy.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match found {
                Err(_) => Ok(()),
                Ok(queue) => Err(format!(
                    "{legacy} is still there, with {} jobs",
                    queue.message_count()
                )),
            }
        },
    )
    .await;
    let after = submit(&cluster, "echo after", LOW_PRIORITY).await;
    cluster.wait_succeeded(after, Duration::from_secs(60)).await;
    let _ = connection.close(200, "done".into()).await;
    cluster.finish().await;
}

/// Takes the next job message of `kind`'s queue (no runner consumes it):
/// its body and `priority` property.
async fn next_job(cluster: &Cluster, channel: &lapin::Channel, kind: &str) -> (Job, Option<u8>) {
    let queue = cluster.topology.jobs_queue(kind);
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let Some(message) = channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
            else {
                return Err(format!("no job in {queue}"));
            };
            let delivery = message.delivery;
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            let job: Job = serde_json::from_slice(&delivery.data).unwrap();
            Ok((job, *delivery.properties.priority()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_s_job_carries_its_task_s_priority() {
    let mut cluster = Cluster::start().await;
    let connection = rabbitmq::connect(&amqp_url(), "taskledger-test-jobs")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // Declared before the relay may have done it.
    let kinds: Vec<String> = cluster.config.kinds.keys().cloned().collect();
    cluster.topology.declare(&channel, &kinds).await.unwrap();
    let task_id = submit(&cluster, "true", 200).await;
    let (job, priority) = next_job(&cluster, &channel, "sh").await;
    assert_eq!((job.task_id, job.attempt), (task_id.0, 1));
    assert_eq!(job.priority, 200);
    assert_eq!(priority, Some(rabbitmq::priority_level(200)));
    // A relay that did not see the submission (restarted since) reads the
    // priority from the log.
    cluster.stop_relay().await;
    for command in [
        TaskCommand::Start(StartTask {
            task_id,
            worker_id: "test".into(),
            attempt: 1,
            started_at: Utc::now(),
        }),
        TaskCommand::Retry(RetryTask {
            task_id,
            reason: "the test retries it".into(),
            retried_at: Utc::now(),
            next_attempt_at: None,
        }),
    ] {
        execute_on_task(&cluster.store, task_id, command).await;
    }
    cluster.start_relay();
    loop {
        let (job, priority) = next_job(&cluster, &channel, "sh").await;
        assert_eq!(job.priority, 200, "{job:?}");
        assert_eq!(priority, Some(rabbitmq::priority_level(200)), "{job:?}");
        if job.attempt == 2 {
            break;
        }
        // The submission's job again: the relay stopped before its
        // checkpoint moved (at-least-once).
        assert_eq!(job.attempt, 1);
    }
    let _ = connection.close(200, "done".into()).await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_that_waited_in_the_wait_queues_keeps_its_priority() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(1);
    // Attempt 1 fails retryably; attempt 2 waits its backoff (2 s) in the
    // wait queues, which dead-letter it back to the kind's queue.
    let retried = submit_kind(
        &cluster,
        "flaky",
        r#"if [ "$TASKLEDGER_ATTEMPT" -lt 2 ]; then exit 75; fi; echo ok"#,
        HIGH_PRIORITY,
    )
    .await;
    let task = cluster
        .wait_for(retried, "a retry", Duration::from_secs(60), |task| {
            task.status == TaskStatus::Queued && task.attempts_started == 1
        })
        .await;
    let due = task.next_attempt_at.expect("the retry waits its backoff");
    let blocker = submit_kind(&cluster, "flaky", "sleep 120", LOW_PRIORITY).await;
    cluster.wait_running(blocker).await;
    let mut lows = Vec::with_capacity(LOW);
    for index in 0..LOW {
        lows.push(
            submit_kind(
                &cluster,
                "flaky",
                &format!("echo low {index}"),
                LOW_PRIORITY,
            )
            .await,
        );
    }
    // The retry is due and back in the queue, behind the low ones.
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let ready = ready_jobs(&cluster, "flaky").await;
            if Utc::now() > due && ready == u32::try_from(LOW + 1).unwrap() {
                return Ok(());
            }
            Err(format!("{ready} jobs ready; the retry is due at {due}"))
        },
    )
    .await;
    cancel(&cluster, blocker).await;
    cluster
        .wait_succeeded(retried, Duration::from_secs(60))
        .await;
    let second_start = cluster
        .store
        .read_stream(&retried.stream_id(), 1, Direction::Forward, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.event_type == "TaskStarted")
        .nth(1)
        .expect("a second attempt")
        .global_position;
    for (index, low) in lows.iter().enumerate() {
        cluster.wait_succeeded(*low, Duration::from_secs(120)).await;
        let low_started = started_at(&cluster, *low).await;
        assert!(
            second_start < low_started,
            "low-priority task {index} started (position {low_started}) before the \
             high-priority retry (position {second_start})"
        );
    }
    cluster.finish().await;
}
