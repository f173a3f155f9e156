//! `taskledger-bench api`: the HTTP API under load, served by this process
//! on a loopback port against the database in `DATABASE_URL`.
//!
//! For each connection count: `POST /v1/tasks` for the run's duration, then
//! `GET /v1/tasks/{id}` over the tasks just made; each prints requests/s,
//! p50 and p99. Last, command-to-visible: tasks are submitted by a few
//! clients, each polling `GET /v1/tasks/{id}` (without `min_version`) right
//! after its 201 until it answers 200; the time from the 201 to that 200 is
//! how long a write takes to show in the read model.
//!
//! The load generator shares the machine (and this process) with the
//! server, so the figures are a floor of what the server alone does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use taskledger::commands::execute;
use taskledger::config::settings::Settings;
use taskledger::http::keys::new_secret;
use taskledger::service::shutdown;
use taskledger::service::startup::Application;
use taskledger_events::apikey::{
    hash_secret, ApiKeyCommand, ApiKeyId, ApiKeys, CreateApiKey, Scope,
};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::tenant::Access;
use taskledger_events::{EventStore, Metadata};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::measure::{millis, percentile};

/// The task kind the benchmark submits (never run: no runner is started).
const BENCH_KINDS: &str = r#"
[kinds.bench-echo]
image = "taskledger-test-busybox:latest"
command = ["echo", "{message}"]
required_params = ["message"]
"#;

/// Options of `taskledger-bench api`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApiBenchArgs {
    /// Concurrent connections to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub(crate) connections: Vec<usize>,
    /// Seconds each POST and each GET run lasts.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) seconds: f64,
    /// Submissions timed from 201 to visible.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) visible_samples: usize,
    /// Clients submitting concurrently while visibility is timed.
    #[arg(long, default_value_t = 4)]
    pub(crate) visible_clients: usize,
}

/// What one load run measured.
#[derive(Debug, Clone)]
struct LoadRun {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl LoadRun {
    fn line(&self, what: &str, connections: usize) -> String {
        format!(
            "{what} connections={connections} requests_per_s={:.0} p50_ms={:.2} p99_ms={:.2} errors={}",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            millis(percentile(&self.latencies, 0.50)),
            millis(percentile(&self.latencies, 0.99)),
            self.errors
        )
    }
}

/// Starts the service on a loopback port and runs the load.
///
/// # Errors
/// When the service cannot start, or a request fails in a way that makes
/// the figures meaningless (every request failing).
pub(crate) async fn api(settings: &Settings, args: &ApiBenchArgs) -> anyhow::Result<()> {
    let config_path =
        std::env::temp_dir().join(format!("taskledger-bench-{}.toml", Uuid::new_v4()));
    std::fs::write(&config_path, BENCH_KINDS).context("writing the benchmark's task kinds")?;
    let mut settings = settings.clone();
    settings.config = Some(config_path.clone());
    settings.listen = ([127, 0, 0, 1], 0).into();
    let (stop, signal) = shutdown::channel();
    let application = Application::build(&settings, signal).await?;
    let base = format!("http://{}", application.local_addr()?);
    let store = application.store().clone();
    let server = tokio::spawn(application.run_until_stopped());
    let _ = std::fs::remove_file(&config_path);

    let key = bench_key(&store).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections.iter().copied().max().unwrap_or(16))
        .build()?;
    let target = Target { client, base, key };
    // Warm the pools and prepared statements.
    load(&target, 4, Duration::from_millis(500), &Op::Submit, None).await?;

    let duration = Duration::from_secs_f64(args.seconds);
    for &connections in &args.connections {
        let ids = Arc::new(Mutex::new(Vec::new()));
        let run = load(
            &target,
            connections,
            duration,
            &Op::Submit,
            Some(ids.clone()),
        )
        .await?;
        println!("{}", run.line("POST /v1/tasks", connections));
        let ids = Arc::new(std::mem::take(&mut *ids.lock().await));
        // Reads of tasks the projection has not reached would be 404s:
        // wait for it, and say how far behind the writes it was.
        let behind = catch_up(&store).await?;
        println!(
            "tasks projection caught up {:.0} ms after the POST run ended",
            millis(behind)
        );
        let run = load(&target, connections, duration, &Op::Read(ids), None).await?;
        println!("{}", run.line("GET /v1/tasks/{id}", connections));
    }
    catch_up(&store).await?;
    let visible = visibility(&target, args.visible_samples, args.visible_clients).await?;
    println!(
        "submit-to-visible samples={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        visible.len(),
        millis(percentile(&visible, 0.50)),
        millis(percentile(&visible, 0.99)),
        millis(visible.last().copied().unwrap_or_default()),
    );
    stop.trigger();
    server.await.context("the server task failed")??;
    Ok(())
}

/// Waits until the tasks projection's checkpoint reaches the log's head;
/// how long that took.
async fn catch_up(store: &PgEventStore) -> anyhow::Result<Duration> {
    catch_up_within(store, Duration::from_secs(120)).await
}

/// [`catch_up`] with a deadline of `within`.
pub(crate) async fn catch_up_within(
    store: &PgEventStore,
    within: Duration,
) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let head = store.head_position().await?;
    let client = store.pool().get().await?;
    loop {
        let position: i64 = client
            .query_opt(
                "SELECT position FROM projector_checkpoints WHERE projector = 'tasks'",
                &[],
            )
            .await?
            .map_or(0, |row| row.get(0));
        if u64::try_from(position).unwrap_or(0) >= head {
            return Ok(began.elapsed());
        }
        if began.elapsed() > within {
            bail!(
                "the tasks projection did not reach position {head} within {} s",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Creates an admin key and waits until the service accepts it.
pub(crate) async fn bench_key(store: &PgEventStore) -> anyhow::Result<String> {
    let key_id = ApiKeyId(Uuid::new_v4());
    let secret = new_secret(key_id).expose_secret().to_owned();
    execute::<ApiKeys>(
        store,
        &key_id.stream_id(),
        ApiKeyCommand::Create(CreateApiKey {
            key_id,
            name: "bench".into(),
            scopes: [Scope::Admin].into_iter().collect(),
            key_hash: hash_secret(&secret),
            created_at: Utc::now(),
            created_by: Some("bench".into()),
            access: Access::AllTenants,
            expires_at: None,
            rate_limit: None,
        }),
        Uuid::new_v4(),
        Metadata::default(),
    )
    .await
    .context("creating the benchmark's API key")?;
    let client = store.pool().get().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query_opt(
            "SELECT 1 FROM api_keys WHERE key_hash = $1",
            &[&hash_secret(&secret)],
        )
        .await?
        .is_none()
    {
        if Instant::now() > deadline {
            bail!("the api_keys projection did not show the benchmark's key within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(secret)
}

#[derive(Debug, Clone)]
struct Target {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Target {
    async fn submit(&self, sequence: u64) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let response = self
            .client
            .post(format!("{}/v1/tasks", self.base))
            .bearer_auth(&self.key)
            .json(&json!({
                "kind": "bench-echo",
                "params": {"message": format!("bench {sequence}")},
                "tenant": "bench",
                "frontend_id": "bench",
            }))
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await?))
    }

    async fn read(&self, id: &str) -> anyhow::Result<reqwest::StatusCode> {
        let response = self
            .client
            .get(format!("{}/v1/tasks/{id}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        Ok(status)
    }
}

#[derive(Debug)]
enum Op {
    Submit,
    Read(Arc<Vec<String>>),
}

/// `connections` clients doing `op` back to back for `duration`.
async fn load(
    target: &Target,
    connections: usize,
    duration: Duration,
    op: &Op,
    created: Option<Arc<Mutex<Vec<String>>>>,
) -> anyhow::Result<LoadRun> {
    let sequence = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let target = target.clone();
        let sequence = sequence.clone();
        let errors = errors.clone();
        let created = created.clone();
        let ids = match op {
            Op::Read(ids) if ids.is_empty() => bail!("no tasks to read"),
            Op::Read(ids) => Some(ids.clone()),
            Op::Submit => None,
        };
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut made = Vec::new();
            while Instant::now() < deadline {
                let number = sequence.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                let ok = match &ids {
                    None => match target.submit(number).await {
                        Ok((status, body)) if status == reqwest::StatusCode::CREATED => {
                            if let Some(id) = body["id"].as_str() {
                                made.push(id.to_owned());
                            }
                            true
                        }
                        _ => false,
                    },
                    Some(ids) => {
                        let id = &ids[(number as usize) % ids.len()];
                        matches!(target.read(id).await, Ok(status) if status.is_success())
                    }
                };
                if ok {
                    latencies.push(began.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(created) = created {
                created.lock().await.extend(made);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await?);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let errors = errors.load(Ordering::Relaxed);
    if latencies.is_empty() {
        bail!("every request failed ({errors} errors); is the service healthy?");
    }
    Ok(LoadRun {
        requests: latencies.len() as u64,
        errors,
        elapsed,
        latencies,
    })
}

/// Times from each 201 to the first 200 of `GET /v1/tasks/{id}`, polling
/// every 0.5 ms; `samples` tasks from `clients` concurrent submitters.
async fn visibility(
    target: &Target,
    samples: usize,
    clients: usize,
) -> anyhow::Result<Vec<Duration>> {
    let per_client = samples.div_ceil(clients.max(1));
    let mut tasks = Vec::new();
    for client in 0..clients.max(1) {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(per_client);
            for index in 0..per_client {
                let (status, body) = target.submit((client * per_client + index) as u64).await?;
                if status != reqwest::StatusCode::CREATED {
                    bail!("a submission answered {status}: {body}");
                }
                let acknowledged = Instant::now();
                let id = body["id"]
                    .as_str()
                    .context("a 201 without an id")?
                    .to_owned();
                loop {
                    if target.read(&id).await?.is_success() {
                        times.push(acknowledged.elapsed());
                        break;
                    }
                    if acknowledged.elapsed() > Duration::from_secs(10) {
                        bail!("task {id} was not visible 10 s after its 201");
                    }
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            }
            Ok(times)
        }));
    }
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await??);
    }
    times.sort_unstable();
    Ok(times)
}
