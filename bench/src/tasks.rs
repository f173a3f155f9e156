//! `taskledger-bench tasks`: tasks per second end to end (submit → relay →
//! RabbitMQ → runner → container → succeeded) for a trivial container at
//! several runner slot counts, the relay's events per second to
//! RabbitMQ with publisher confirms, and what a priority queue costs the
//! broker against a classic one ([`crate::queues`]).
//!
//! Needs the database in `DATABASE_URL` (a scratch one), RabbitMQ
//! (`AMQP_URL`, default the local broker) and a Docker engine with the image
//! `taskledger-test-busybox:latest` (`scripts/services.sh` builds it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Map};
use taskledger::adapters::blobs::BlobStore;
use taskledger::adapters::rabbitmq::{self, Topology};
use taskledger::config::settings::Settings;
use taskledger::config::FileConfig;
use taskledger::submission::{self, Submission, Submitter};
use taskledger::workers::relay::{self, RelayOptions, RelayStatus};
use taskledger::workers::runner::{self, RunnerOptions};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

const BENCH_KINDS: &str = r#"
[kinds.bench-true]
image = "taskledger-test-busybox:latest"
command = ["true"]
memory_mb = 32
max_attempts = 1
"#;

/// Options of `taskledger-bench tasks`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TasksBenchArgs {
    /// Runner slot counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub(crate) slots: Vec<usize>,
    /// Tasks submitted per run.
    #[arg(long, default_value_t = 100)]
    pub(crate) tasks: usize,
    /// Events appended for the relay run.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) relay_events: usize,
    /// Messages per round of the classic-against-priority queue run (0
    /// skips it).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) queue_messages: usize,
}

/// Runs the benchmark and prints a line per run.
///
/// # Errors
/// When a service is missing or a task does not succeed.
pub(crate) async fn tasks(settings: &Settings, args: &TasksBenchArgs) -> anyhow::Result<()> {
    let amqp_url = settings
        .amqp_url
        .clone()
        .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned());
    let store = PgEventStore::connect(
        settings.database_url.expose_secret(),
        StoreOptions::default(),
    )?;
    let config = Arc::new(FileConfig::parse(BENCH_KINDS)?);
    let data_dir = std::env::temp_dir().join(format!("taskledger-bench-{}", Uuid::new_v4()));
    let topology = Topology::new(format!("tl-bench-{}", Uuid::new_v4().simple()));
    let kinds: Vec<String> = config.kinds.keys().cloned().collect();

    for &slots in &args.slots {
        let relay = start_relay(&store, &amqp_url, &topology, &kinds);
        let (stop_runner, runner_stopped) = oneshot::channel::<()>();
        let runner = tokio::spawn(runner::run(
            store.clone(),
            RunnerOptions {
                amqp_url: Some(amqp_url.clone()),
                topology: topology.clone(),
                config: config.clone(),
                slots,
                worker_id: format!("bench-runner-{slots}"),
                blobs: BlobStore::new(data_dir.join("blobs")),
                work_dir: data_dir.join("work"),
                lease_ttl: runner::DEFAULT_LEASE_TTL,
            },
            async move {
                let _ = runner_stopped.await;
            },
        ));
        let head = store.head_position().await?;
        let began = Instant::now();
        let mut ids = std::collections::HashSet::with_capacity(args.tasks);
        for _ in 0..args.tasks {
            let submitted = submission::submit(
                &store,
                &config,
                Submission::new("bench-true", Map::new(), "bench"),
                Submitter {
                    key_id: Uuid::nil(),
                    idempotency_key: None,
                },
                Utc::now(),
            )
            .await?;
            ids.insert(submitted.task.id);
        }
        let (succeeded, failed) = wait_all(&store, head, &ids).await?;
        let elapsed = began.elapsed();
        println!(
            "tasks slots={slots} tasks={} succeeded={succeeded} failed={failed} tasks_per_s={:.1} seconds={:.1}",
            args.tasks,
            args.tasks as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
        let _ = stop_runner.send(());
        runner.await?;
        stop_relay(relay).await?;
    }

    // The relay alone: a backlog of events, published from its checkpoint.
    let stream = StreamId::new(format!("bench-relay-{}", Uuid::new_v4().simple()))?;
    let mut version = 0_u64;
    while (version as usize) < args.relay_events {
        let batch: Vec<NewEvent> = (0..100)
            .map(|index| NewEvent::new("BenchEvent", json!({"index": version + index})))
            .collect();
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        version = store.append(&stream, expected, batch).await?.stream_version;
    }
    let head = store.head_position().await?;
    let relay = start_relay(&store, &amqp_url, &topology, &kinds);
    let began = Instant::now();
    let start = {
        let mut status = relay.2.clone();
        status
            .wait_for(|status| status.active)
            .await
            .context("the relay stopped")?;
        let started = status.borrow().confirmed;
        started
    };
    let mut status = relay.2.clone();
    tokio::time::timeout(
        Duration::from_secs(300),
        status.wait_for(|status| status.confirmed >= head),
    )
    .await
    .context("the relay did not catch up within 300 s")?
    .context("the relay stopped")?;
    let elapsed = began.elapsed();
    println!(
        "relay events={} events_per_s={:.0} seconds={:.2} (publisher confirms, persistent messages)",
        head - start,
        (head - start) as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    stop_relay(relay).await?;
    let connection = rabbitmq::connect(&amqp_url, "taskledger-bench-cleanup").await?;
    let channel = connection.create_channel().await?;
    topology.delete(&channel, &kinds).await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    if args.queue_messages > 0 {
        crate::queues::priority_queue_cost(&amqp_url, args.queue_messages).await?;
    }
    Ok(())
}

type Relay = (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    watch::Receiver<RelayStatus>,
);

fn start_relay(
    store: &PgEventStore,
    amqp_url: &str,
    topology: &Topology,
    kinds: &[String],
) -> Relay {
    let (stop, stopped) = oneshot::channel::<()>();
    let (status, watch) = watch::channel(RelayStatus::default());
    let handle = tokio::spawn(relay::run(
        store.clone(),
        RelayOptions {
            amqp_url: amqp_url.to_owned(),
            topology: topology.clone(),
            kinds: kinds.to_vec(),
        },
        status,
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, handle, watch)
}

async fn stop_relay(relay: Relay) -> anyhow::Result<()> {
    let _ = relay.0.send(());
    relay.1.await?;
    Ok(())
}

/// Follows the log from `after` until every task in `ids` has a terminal
/// event; (succeeded, failed otherwise).
async fn wait_all(
    store: &PgEventStore,
    after: u64,
    ids: &std::collections::HashSet<TaskId>,
) -> anyhow::Result<(usize, usize)> {
    let mut feed = store.subscribe_all(after);
    let (mut succeeded, mut failed) = (0, 0);
    while succeeded + failed < ids.len() {
        let recorded = tokio::time::timeout(Duration::from_secs(120), feed.next())
            .await
            .context("no task finished for 120 s")?
            .context("the feed ended")??;
        let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) else {
            continue;
        };
        if !ids.contains(&task_id) {
            continue;
        }
        match TaskEvent::from_recorded(&recorded)? {
            TaskEvent::Succeeded(_) => succeeded += 1,
            TaskEvent::Failed(_) | TaskEvent::TimedOut(_) | TaskEvent::Canceled(_) => failed += 1,
            _ => {}
        }
    }
    if succeeded == 0 {
        bail!("no task succeeded; is the Docker engine up with taskledger-test-busybox:latest?");
    }
    Ok((succeeded, failed))
}
