//! `taskledger-bench tasks --celery`: the same no-op workload (a task that
//! runs `true` as a local process, 4 at a time, jobs through RabbitMQ)
//! through taskledger and through Celery ([`crate::celery`]), one system at
//! a time, alternating: tasks/s and p50/p99 submit → done with 1 and 8
//! submitters, the ratio, and a paced run's p50.
//!
//! taskledger's side is the whole service in this process (API, projectors,
//! relay, runner with 4 slots), its clients submitting over HTTP; a task is
//! done when its `TaskSucceeded` is in the log (its `recorded_at`). Celery's
//! is done when its result row is in the backend (its `date_done`). Both
//! are observed alike: once every submission is in, by polling every 50 ms
//! (the log's new events; the backend's pending rows), so that neither
//! system carries an observer while it works.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde_json::json;
use taskledger::config::settings::{Role, Settings};
use taskledger::service::shutdown;
use taskledger::service::startup::Application;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::TaskId;
use taskledger_events::EventStore;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::celery::Celery;
use crate::measure::{millis, percentile, task_end};

const NOOP_KIND: &str = r#"
[kinds.bench-noop]
image = "unused"
executor = "local"
command = ["true"]
max_attempts = 1
timeout_seconds = 60
"#;

/// Options of the comparison, from `tasks`' own.
pub(crate) struct Compare {
    pub(crate) tasks: usize,
    pub(crate) rounds: usize,
    pub(crate) submitters: Vec<usize>,
    /// Tasks per second of the paced run (0: none).
    pub(crate) paced_rate: f64,
    pub(crate) amqp_url: String,
}

/// One run of either system.
#[derive(Debug, Default)]
struct Run {
    tasks: usize,
    failed: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.tasks += other.tasks;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }

    fn per_second(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn line(&self, system: &str, what: &str) -> String {
        format!(
            "{system} {what} tasks={} failed={} tasks_per_s={:.1} p50_ms={:.1} p99_ms={:.1}",
            self.tasks,
            self.failed,
            self.per_second(),
            millis(percentile(&self.latencies, 0.50)),
            millis(percentile(&self.latencies, 0.99)),
        )
    }
}

/// Runs the comparison and prints a line per run, then the ratios.
///
/// # Errors
/// When a service is missing, Celery cannot be installed or a task fails
/// to finish.
pub(crate) async fn compare(settings: &Settings, args: &Compare) -> anyhow::Result<()> {
    let ours = Ours::start(settings, &args.amqp_url).await?;
    let results = scratch_database(settings).await?;
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: no place for Celery's environment")?
        .join("taskledger-bench");
    let queue = format!("tl-bench-celery-{}", Uuid::new_v4().simple());
    let celery = Celery::start(&cache, &args.amqp_url, &results.1, &queue).await?;
    println!(
        "# bench tasks --celery tasks={} per run, rounds={}: a no-op task (runs `true` as a local process) through taskledger (HTTP submit → relay → RabbitMQ → runner, 4 slots → TaskSucceeded) and Celery (prefork 4, RabbitMQ, PostgreSQL result backend, acks_late), alternating",
        args.tasks, args.rounds
    );
    // Warm both: pools, prepared statements, queues, Celery's result table.
    ours.run(20.min(args.tasks), 1, 0.0).await?;
    celery.run(20.min(args.tasks), 1, 0.0).await?;
    let mut plans: Vec<(String, usize, f64)> = args
        .submitters
        .iter()
        .map(|&submitters| (format!("submitters={submitters}"), submitters, 0.0))
        .collect();
    if args.paced_rate > 0.0 {
        plans.push((format!("paced={}/s", args.paced_rate), 1, args.paced_rate));
    }
    let mut totals: Vec<(Run, Run)> = plans.iter().map(|_| Default::default()).collect();
    for _round in 0..args.rounds.max(1) {
        for (index, (what, submitters, rate)) in plans.iter().enumerate() {
            let run = ours.run(args.tasks, *submitters, *rate).await?;
            println!("{}", run.line("taskledger", what));
            totals[index].0.add(run);
            let theirs = celery.run(args.tasks, *submitters, *rate).await?;
            let run = Run {
                tasks: theirs.tasks,
                failed: theirs.failed,
                elapsed: theirs.elapsed,
                latencies: theirs.latencies,
            };
            println!("{}", run.line("celery", what));
            totals[index].1.add(run);
        }
    }
    for ((what, _, rate), (ours, theirs)) in plans.iter().zip(&totals) {
        println!(
            "ratio {what} tasks_per_s={:.3} p50={:.2} p99={:.2} (taskledger over Celery; {}goal: tasks_per_s >= 1.0{})",
            ours.per_second() / theirs.per_second(),
            millis(percentile(&ours.latencies, 0.50)) / millis(percentile(&theirs.latencies, 0.50)),
            millis(percentile(&ours.latencies, 0.99)) / millis(percentile(&theirs.latencies, 0.99)),
            if *rate > 0.0 { "paced: the rate is fixed, so tasks/s says little; " } else { "" },
            if *rate > 0.0 { ", p50 <= 1.0" } else { "" },
        );
    }
    celery.stop().await?;
    ours.stop().await?;
    drop_database(settings, &results.0).await?;
    Ok(())
}

/// taskledger running in this process, and an HTTP client with a key.
struct Ours {
    store: PgEventStore,
    http: reqwest::Client,
    base: String,
    key: String,
    stop: shutdown::ShutdownTrigger,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    data_dir: std::path::PathBuf,
    amqp_url: String,
    prefix: String,
}

impl Ours {
    async fn start(settings: &Settings, amqp_url: &str) -> anyhow::Result<Self> {
        let data_dir = std::env::temp_dir().join(format!("taskledger-bench-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&data_dir)?;
        let config_path = data_dir.join("kinds.toml");
        std::fs::write(&config_path, NOOP_KIND)?;
        let mut settings = settings.clone();
        settings.config = Some(config_path);
        settings.listen = ([127, 0, 0, 1], 0).into();
        settings.roles = vec![Role::Api, Role::Projector, Role::Relay, Role::Runner];
        settings.amqp_url = Some(amqp_url.to_owned());
        let prefix = format!("tl-bench-{}", Uuid::new_v4().simple());
        settings.amqp_prefix = Some(prefix.clone());
        settings.runner_slots = 4;
        settings.data_dir = data_dir.clone();
        let (stop, signal) = shutdown::channel();
        let application = Application::build(&settings, signal).await?;
        let base = format!("http://{}", application.local_addr()?);
        let store = application.store().clone();
        let server = tokio::spawn(application.run_until_stopped());
        let key = crate::api::bench_key(&store).await?;
        Ok(Self {
            store,
            http: reqwest::Client::new(),
            base,
            key,
            stop,
            server,
            data_dir,
            amqp_url: amqp_url.to_owned(),
            prefix,
        })
    }

    /// `tasks` submitted by `submitters` clients over HTTP (at `rate` per
    /// second in all; 0: unpaced), until each has its terminal event.
    async fn run(&self, tasks: usize, submitters: usize, rate: f64) -> anyhow::Result<Run> {
        let head = self.store.head_position().await?;
        let submitted = Arc::new(Mutex::new(HashMap::<TaskId, DateTime<Utc>>::new()));
        let began = Utc::now();
        let mut clients = Vec::new();
        for first in 0..submitters.max(1) {
            let (http, url, key) = (
                self.http.clone(),
                format!("{}/v1/tasks", self.base),
                self.key.clone(),
            );
            let submitted = submitted.clone();
            let step = submitters.max(1);
            clients.push(tokio::spawn(async move {
                for index in (first..tasks).step_by(step) {
                    if rate > 0.0 {
                        let due = began
                            + chrono::Duration::microseconds((index as f64 / rate * 1e6) as i64);
                        if let Ok(wait) = (due - Utc::now()).to_std() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    let at = Utc::now();
                    let response = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&json!({"kind": "bench-noop", "tenant": "bench",
                                      "frontend_id": "bench", "params": {}}))
                        .send()
                        .await?;
                    if response.status() != reqwest::StatusCode::CREATED {
                        bail!("POST /v1/tasks answered {}", response.status());
                    }
                    let body: serde_json::Value = response.json().await?;
                    let id = body["id"]
                        .as_str()
                        .and_then(|id| Uuid::parse_str(id).ok())
                        .context("the submission's answer has no task id")?;
                    submitted.lock().await.insert(TaskId(id), at);
                }
                anyhow::Ok(())
            }));
        }
        for client in clients {
            client.await??;
        }
        // Observed as Celery's driver observes its results: once every
        // submission is in, by reading the log every 50 ms (not a live
        // follower, which would load the system under test while it works).
        let mut done = HashMap::<TaskId, (DateTime<Utc>, bool)>::new();
        let mut position = head;
        let mut last_event = tokio::time::Instant::now();
        while done.len() < tasks {
            let events = self.store.read_all(position, 1_000).await?;
            for recorded in &events {
                if let Some((task_id, at, succeeded)) = task_end(recorded)? {
                    done.insert(task_id, (at, succeeded));
                }
            }
            match events.last() {
                Some(last) => {
                    position = last.global_position;
                    last_event = tokio::time::Instant::now();
                }
                None if last_event.elapsed() > Duration::from_secs(120) => {
                    bail!(
                        "no event for 120 s with {} of {tasks} tasks finished",
                        done.len()
                    )
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let submitted = submitted.lock().await;
        let mut latencies = Vec::with_capacity(tasks);
        let mut before_submit = 0;
        for (id, at) in submitted.iter() {
            let (finished, _) = done
                .get(id)
                .with_context(|| format!("task {} finished, but not one of this run's", id.0))?;
            let latency = (*finished - *at).to_std();
            before_submit += usize::from(latency.is_err());
            latencies.push(latency.unwrap_or_default());
        }
        if before_submit > 0 {
            // The database's clock and this process's disagree: the
            // figures below are not to be trusted.
            println!(
                "# warning: {before_submit} of {tasks} tasks finished (the log's recorded_at) before \
                 they were submitted (this process's clock): the clock moved during the run"
            );
        }
        latencies.sort();
        let first = submitted.values().min().copied().unwrap_or(began);
        let last = done.values().map(|(at, _)| *at).max().unwrap_or(first);
        Ok(Run {
            tasks,
            failed: done.values().filter(|(_, succeeded)| !succeeded).count(),
            elapsed: (last - first).to_std().unwrap_or_default(),
            latencies,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.trigger();
        self.server.await.context("the server task failed")??;
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let connection =
            taskledger::adapters::rabbitmq::connect(&self.amqp_url, "taskledger-bench-cleanup")
                .await?;
        let channel = connection.create_channel().await?;
        taskledger::adapters::rabbitmq::Topology::new(self.prefix)
            .delete(&channel, &["bench-noop".to_owned()])
            .await?;
        Ok(())
    }
}

/// Creates a scratch database for Celery's results beside the benchmark's
/// own: its name and URL.
async fn scratch_database(settings: &Settings) -> anyhow::Result<(String, String)> {
    use secrecy::ExposeSecret;
    let url = settings.database_url.expose_secret();
    let mut config: tokio_postgres::Config = url.parse()?;
    let name = format!("tl_bench_celery_{}", Uuid::new_v4().simple());
    admin(settings)
        .await?
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    config.dbname(&name);
    if !matches!(
        config.get_hosts().first(),
        Some(tokio_postgres::config::Host::Tcp(_))
    ) {
        bail!("Celery's result backend needs a TCP host in DATABASE_URL");
    }
    Ok((name, taskledger_events::testing::config_to_url(&config)))
}

async fn drop_database(settings: &Settings, name: &str) -> anyhow::Result<()> {
    admin(settings)
        .await?
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

async fn admin(settings: &Settings) -> anyhow::Result<tokio_postgres::Client> {
    use secrecy::ExposeSecret;
    let (client, connection) =
        tokio_postgres::connect(settings.database_url.expose_secret(), tokio_postgres::NoTls)
            .await
            .context("connecting to the benchmark's database")?;
    tokio::spawn(connection);
    Ok(client)
}
