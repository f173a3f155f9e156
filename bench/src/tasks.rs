//! `taskledger-bench tasks`: tasks per second end to end (submit → relay →
//! RabbitMQ → runner → container or Slurm job → succeeded) for a trivial
//! command at several runner slot counts, each run followed by the same
//! command on the bare engine at the same parallelism (see [`crate::bare`]),
//! then the overhead per task and the ratio; and the relay's events per
//! second to RabbitMQ with publisher confirms, and what a priority queue
//! costs the broker against a classic one ([`crate::queues`]).
//!
//! Needs the database in `DATABASE_URL` (a scratch one), RabbitMQ
//! (`AMQP_URL`, default the local broker) and a Docker engine with the image
//! `taskledger-test-busybox:latest` (`scripts/services.sh` builds it), or
//! for `--executor slurm` the Slurm cluster's partition `debug`
//! (`scripts/slurm.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::Docker;
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
use taskledger_events::task::TaskId;
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::bare::Bare;
use crate::measure::{millis, next_task_end};

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

const DOCKER_KIND: &str = r#"
[kinds.bench-true]
image = "taskledger-test-busybox:latest"
command = ["true"]
memory_mb = 32
max_attempts = 1
"#;

/// The Slurm kind, in the shape of issue 15's `executor = "slurm"`. A build
/// whose configuration does not know that executor refuses it: then only
/// the bare `sbatch` runs are measured and the benchmark fails saying so.
const SLURM_KIND: &str = r#"
[kinds.bench-true]
executor = "slurm"
command = ["true"]
max_attempts = 1
slurm = { partition = "debug" }
"#;

/// The Slurm partition of [`SLURM_KIND`] and of the bare `sbatch` runs.
const SLURM_PARTITION: &str = "debug";

/// Which executor `tasks` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchExecutor {
    /// A busybox container through the Docker engine, against `docker run --rm`.
    Docker,
    /// A Slurm job on partition `debug`, against `sbatch --wait`.
    Slurm,
}

/// How the runner's containers hand back `/out` (`[docker] out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchOut {
    /// Bind-mounted from the runner's work directory.
    Bind,
    /// An anonymous volume copied out through the engine.
    Archive,
}

/// Options of `taskledger-bench tasks`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TasksBenchArgs {
    /// Runner slot counts to measure (and the bare engine's parallelism),
    /// comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub(crate) slots: Vec<usize>,
    /// Tasks submitted per run (and bare jobs per bare run).
    #[arg(long, default_value_t = 100)]
    pub(crate) tasks: usize,
    /// The executor measured: `docker` (against `docker run --rm` and the
    /// engine API) or `slurm` (against `sbatch --wait`).
    #[arg(long, value_enum, default_value_t = BenchExecutor::Docker)]
    pub(crate) executor: BenchExecutor,
    /// How the runner's containers hand back `/out` (`[docker] out`).
    #[arg(long, value_enum, default_value_t = BenchOut::Bind)]
    pub(crate) docker_out: BenchOut,
    /// Rounds: each runs, for each slot count, taskledger and then each bare
    /// engine, one after the other; the overhead lines sum all rounds.
    #[arg(long, default_value_t = 1)]
    pub(crate) rounds: usize,
    /// Events appended for the relay run (0: no relay run).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) relay_events: usize,
    /// Messages per round of the classic-against-priority queue run (0
    /// skips it).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) queue_messages: usize,
    /// Instead of the container runs: a no-op task (`true` as a local
    /// process) through taskledger and through Celery, alternating
    /// ([`crate::noop`]); installs Celery in a virtual environment under
    /// the cache directory where missing.
    #[arg(long)]
    pub(crate) celery: bool,
    /// With `--celery`: the submitter counts measured, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub(crate) submitters: Vec<usize>,
    /// With `--celery`: the paced run's tasks per second (0: none).
    #[arg(long, default_value_t = 100.0)]
    pub(crate) paced_rate: f64,
}

/// One run's count and time.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    tasks: usize,
    failed: usize,
    elapsed: Duration,
}

impl Figures {
    fn add(&mut self, other: Figures) {
        self.tasks += other.tasks;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
    }

    fn per_second(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64()
    }

    /// How long each task held one of `parallel` slots, in milliseconds.
    fn slot_ms(&self, parallel: usize) -> f64 {
        millis(self.elapsed) * parallel as f64 / self.tasks.max(1) as f64
    }
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
    if args.celery {
        let compare = crate::noop::Compare {
            tasks: args.tasks,
            rounds: args.rounds,
            submitters: args.submitters.clone(),
            paced_rate: args.paced_rate,
            amqp_url,
        };
        return crate::noop::compare(settings, &compare).await;
    }
    let store = PgEventStore::connect(
        settings.database_url.expose_secret(),
        StoreOptions::default(),
    )?;
    let data_dir = std::env::temp_dir().join(format!("taskledger-bench-{}", Uuid::new_v4()));
    let topology = Topology::new(format!("tl-bench-{}", Uuid::new_v4().simple()));
    let argv = vec!["true".to_owned()];
    let (config, bares) = match args.executor {
        BenchExecutor::Docker => {
            let config = FileConfig::parse(DOCKER_KIND)?;
            let kind = config.kind(BENCH_KIND)?.clone();
            let docker =
                Docker::connect_with_defaults().context("connecting to the Docker engine")?;
            let bares = vec![
                Bare::docker_run(&kind, &argv),
                Bare::docker_api(docker, &kind, &argv),
            ];
            (Ok(config), bares)
        }
        BenchExecutor::Slurm => {
            let bare = Bare::sbatch(SLURM_PARTITION, &argv, &data_dir.join("sbatch"))?;
            (FileConfig::parse(SLURM_KIND), vec![bare])
        }
    };
    let config = config.map(Arc::new);
    let image = match &config {
        Ok(config) => config.kind(BENCH_KIND)?.image.clone(),
        Err(_) => String::new(),
    };
    println!(
        "# bench tasks executor={} docker_out={:?} tasks={} per run, rounds={}: taskledger end to end (submit → relay → RabbitMQ → runner → {} → succeeded) alternating with the bare engine at the same parallelism{}",
        match args.executor {
            BenchExecutor::Docker => "docker",
            BenchExecutor::Slurm => "slurm",
        },
        args.docker_out,
        args.tasks,
        args.rounds,
        match args.executor {
            BenchExecutor::Docker => "container",
            BenchExecutor::Slurm => "Slurm job",
        },
        if image.is_empty() { String::new() } else { format!("; image {image}") },
    );
    let kinds = vec![BENCH_KIND.to_owned()];
    let mut ours: Vec<Figures> = vec![Figures::default(); args.slots.len()];
    let mut theirs: Vec<Vec<Figures>> =
        vec![vec![Figures::default(); bares.len()]; args.slots.len()];
    for _round in 0..args.rounds.max(1) {
        for (index, &slots) in args.slots.iter().enumerate() {
            if let Ok(config) = &config {
                let run = run_taskledger(
                    &store,
                    config,
                    &amqp_url,
                    &topology,
                    &data_dir,
                    slots,
                    args.tasks,
                    args.docker_out == BenchOut::Bind,
                )
                .await?;
                println!(
                    "tasks slots={slots} tasks={} succeeded={} failed={} tasks_per_s={:.1} seconds={:.1}",
                    run.tasks,
                    run.tasks - run.failed,
                    run.failed,
                    run.per_second(),
                    run.elapsed.as_secs_f64()
                );
                ours[index].add(run);
            }
            for (which, bare) in bares.iter().enumerate() {
                let (failed, elapsed) = bare.run(args.tasks, slots).await?;
                let run = Figures {
                    tasks: args.tasks,
                    failed,
                    elapsed,
                };
                println!(
                    "bare {} parallel={slots} tasks={} failed={failed} tasks_per_s={:.1} seconds={:.1} ({})",
                    bare.name(),
                    run.tasks,
                    run.per_second(),
                    run.elapsed.as_secs_f64(),
                    bare.describe()
                );
                theirs[index][which].add(run);
            }
        }
    }
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&data_dir);
            bail!(
                "the bare sbatch runs are above, but this build's configuration refuses the benchmark's Slurm kind (executor = \"slurm\", slurm = {{ partition = {SLURM_PARTITION:?} }}), so taskledger's side was not measured: {error:#}"
            );
        }
    };
    for (index, &slots) in args.slots.iter().enumerate() {
        let ours = ours[index];
        for (which, bare) in bares.iter().enumerate() {
            let theirs = theirs[index][which];
            println!(
                "overhead {} slots={slots} ms_per_task={:.1} bare_ms_per_task={:.1} overhead_ms={:.1} ratio={:.3} tasks_per_s={:.2} bare_tasks_per_s={:.2} (slot time per task over {} round{}; goal: ratio >= 0.90)",
                bare.name(),
                ours.slot_ms(slots),
                theirs.slot_ms(slots),
                ours.slot_ms(slots) - theirs.slot_ms(slots),
                ours.per_second() / theirs.per_second(),
                ours.per_second(),
                theirs.per_second(),
                args.rounds.max(1),
                if args.rounds > 1 { "s" } else { "" },
            );
        }
    }

    if args.relay_events > 0 {
        relay_alone(&store, &amqp_url, &topology, &kinds, args.relay_events).await?;
    }
    let connection = rabbitmq::connect(&amqp_url, "taskledger-bench-cleanup").await?;
    let channel = connection.create_channel().await?;
    topology.delete(&channel, &kinds).await?;
    drop(config);
    let _ = std::fs::remove_dir_all(&data_dir);
    if args.queue_messages > 0 {
        crate::queues::priority_queue_cost(&amqp_url, args.queue_messages).await?;
    }
    Ok(())
}

/// The kind every run submits.
const BENCH_KIND: &str = "bench-true";

/// One run of taskledger end to end: a relay and a runner with `slots`,
/// `tasks` submissions, until each has a terminal event.
#[allow(clippy::too_many_arguments)] // one run's every setting, each used once
async fn run_taskledger(
    store: &PgEventStore,
    config: &Arc<FileConfig>,
    amqp_url: &str,
    topology: &Topology,
    data_dir: &std::path::Path,
    slots: usize,
    tasks: usize,
    bind_out: bool,
) -> anyhow::Result<Figures> {
    let kinds = vec![BENCH_KIND.to_owned()];
    let relay = start_relay(store, amqp_url, topology, &kinds);
    let (stop_runner, runner_stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(runner::run(
        store.clone(),
        RunnerOptions {
            amqp_url: Some(amqp_url.to_owned()),
            topology: topology.clone(),
            config: config.clone(),
            slots,
            worker_id: format!("bench-runner-{slots}"),
            blobs: BlobStore::new(data_dir.join("blobs")),
            work_dir: data_dir.join("work"),
            bind_out,
            lease_ttl: runner::DEFAULT_LEASE_TTL,
        },
        async move {
            let _ = runner_stopped.await;
        },
    ));
    let head = store.head_position().await?;
    let began = Instant::now();
    let mut ids = std::collections::HashSet::with_capacity(tasks);
    for _ in 0..tasks {
        let submitted = submission::submit(
            store,
            config,
            Submission::new(BENCH_KIND, Map::new(), "bench"),
            Submitter {
                key_id: Uuid::nil(),
                idempotency_key: None,
            },
            Utc::now(),
        )
        .await?;
        ids.insert(submitted.task.id);
    }
    let (succeeded, failed) = wait_all(store, head, &ids).await?;
    let elapsed = began.elapsed();
    let _ = stop_runner.send(());
    runner.await?;
    stop_relay(relay).await?;
    Ok(Figures {
        tasks: succeeded + failed,
        failed,
        elapsed,
    })
}

/// The relay alone: a backlog of `events` events, published from its
/// checkpoint.
async fn relay_alone(
    store: &PgEventStore,
    amqp_url: &str,
    topology: &Topology,
    kinds: &[String],
    events: usize,
) -> anyhow::Result<()> {
    let stream = StreamId::new(format!("bench-relay-{}", Uuid::new_v4().simple()))?;
    let mut version = 0_u64;
    while (version as usize) < events {
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
    let relay = start_relay(store, amqp_url, topology, kinds);
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
    stop_relay(relay).await
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
        match next_task_end(&mut feed).await? {
            Some((task_id, _, true)) if ids.contains(&task_id) => succeeded += 1,
            Some((task_id, _, false)) if ids.contains(&task_id) => failed += 1,
            _ => {}
        }
    }
    if succeeded == 0 {
        bail!("no task succeeded; is the engine up (Docker with taskledger-test-busybox:latest, or Slurm's partition debug)?");
    }
    Ok((succeeded, failed))
}
