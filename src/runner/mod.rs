//! The runner: takes jobs (from RabbitMQ with manual acks and a prefetch
//! of its slot count, or in-process when no broker is configured), claims
//! each task by appending `TaskStarted` at the version it read, runs the
//! attempt ([`executor`]), stores the files as content-addressed artifacts,
//! and appends the outcome. A job is acknowledged only after its outcome is
//! in the log.
//!
//! Duplicates and crashes:
//! - a second delivery of a job (a relay republish, two runners) loses the
//!   claim — the stream version moved — and is acknowledged;
//! - a job *redelivered* by the broker while its task is running means the
//!   runner that held it went away: the runner records `RetryTask`, which
//!   queues another attempt while attempts remain and fails the task
//!   otherwise; the task's attempt numbers make the dead runner's late
//!   report, if it ever comes, a refused stale command — so a task ends
//!   with exactly one terminal event;
//! - a job for a task this process is already running (the broker
//!   redelivered it after a reconnect) is acknowledged and left alone.

pub mod executor;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bollard::Docker;
use chrono::{SubsecRound, Utc};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{Map, Value};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{
    Artifact, CompleteTask, FailTask, RetryTask, StartTask, TaskCommand, TaskEvent, TaskId,
    TaskStatus, TimeOutTask,
};
use taskledger_events::{Direction, EventStore, Metadata};
use tokio::sync::{mpsc, watch, Semaphore};
use uuid::Uuid;

use crate::blobs::BlobStore;
use crate::broker::{self, Job, Topology};
use crate::commands::{execute, load, CommandError, Tasks};
use crate::config::{Executor, FileConfig};
use executor::{End, Outcome, RunError, RunSpec};

/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often a running attempt checks whether its task was canceled.
const CANCEL_POLL: Duration = Duration::from_millis(500);
/// How long a stopping runner lets running attempts finish before it
/// abandons them (their jobs are redelivered and retried).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How many bytes of stderr a failure's message quotes.
const ERROR_TAIL_BYTES: usize = 500;

/// How the runner is set up.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// The broker; `None` passes jobs in-process (one process only).
    pub amqp_url: Option<String>,
    /// Exchange and queue names.
    pub topology: Topology,
    /// Task kinds and their settings.
    pub config: Arc<FileConfig>,
    /// Attempts run at once.
    pub slots: usize,
    /// This runner's name in `TaskStarted` and in the log's actors.
    pub worker_id: String,
    /// Where artifacts are stored.
    pub blobs: BlobStore,
    /// Where local-executor attempts get their output directories.
    pub work_dir: PathBuf,
}

/// What the runner shares with its attempts.
#[derive(Debug, Clone)]
struct Context {
    store: PgEventStore,
    options: RunnerOptions,
    docker: Option<Docker>,
    /// Tasks this process is running right now.
    running: Arc<Mutex<HashSet<Uuid>>>,
    /// Free slots.
    slots: Arc<Semaphore>,
}

/// What to do with a job's message after handling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// Done with (its outcome is in the log, or it needs nothing).
    Ack,
    /// Not handled (the database was unavailable): deliver it again.
    Requeue,
}

/// Runs the runner until `stop` resolves, then lets running attempts
/// finish for up to [`SHUTDOWN_GRACE`].
pub async fn run(
    store: PgEventStore,
    options: RunnerOptions,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let docker = match Docker::connect_with_defaults() {
        Ok(docker) => Some(docker),
        Err(error) => {
            tracing::warn!(%error, "no Docker engine; kinds with executor = \"docker\" will fail");
            None
        }
    };
    let context = Context {
        slots: Arc::new(Semaphore::new(options.slots.max(1))),
        store,
        options,
        docker,
        running: Arc::new(Mutex::new(HashSet::new())),
    };
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            () = &mut stop => break,
            outcome = consume(&context) => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(error = format!("{error:#}"), retry_in = ?backoff, "runner interrupted; reconnecting");
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    // Wait for running attempts to finish, for a while.
    let all = u32::try_from(context.options.slots.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, context.slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            running = context
                .running
                .lock()
                .map(|running| running.len())
                .unwrap_or(0),
            "stopping with attempts still running; their jobs will be retried"
        );
    }
    tracing::info!("runner stopped");
}

/// Takes jobs until the source fails.
async fn consume(context: &Context) -> anyhow::Result<()> {
    match &context.options.amqp_url {
        Some(url) => consume_amqp(context, url).await,
        None => consume_local(context).await,
    }
}

async fn consume_amqp(context: &Context, url: &str) -> anyhow::Result<()> {
    let kinds: Vec<String> = context.options.config.kinds.keys().cloned().collect();
    let connection = broker::connect(
        url,
        &format!("taskledger-runner-{}", context.options.worker_id),
    )
    .await
    .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    let prefetch = u16::try_from(context.options.slots.max(1)).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    context.options.topology.declare(&channel, &kinds).await?;
    let mut consumers = Vec::with_capacity(kinds.len());
    for kind in &kinds {
        consumers.push(
            channel
                .basic_consume(
                    context.options.topology.jobs_queue(kind).as_str().into(),
                    format!("{}-{kind}", context.options.worker_id)
                        .as_str()
                        .into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?,
        );
    }
    tracing::info!(kinds = ?kinds, worker = %context.options.worker_id, "runner consuming");
    let mut deliveries = futures::stream::select_all(consumers);
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery.context("the job stream failed")?;
        let permit = context.slots.clone().acquire_owned().await?;
        let context = context.clone();
        tokio::spawn(async move {
            let disposition = match serde_json::from_slice::<Job>(&delivery.data) {
                Ok(job) => handle(&context, job, delivery.redelivered).await,
                Err(error) => {
                    tracing::error!(%error, "an unreadable job message; dead-lettering it");
                    let _ = delivery
                        .nack(BasicNackOptions {
                            requeue: false,
                            ..BasicNackOptions::default()
                        })
                        .await;
                    return;
                }
            };
            let acked = match disposition {
                Disposition::Ack => delivery.ack(BasicAckOptions::default()).await,
                Disposition::Requeue => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
            };
            if let Err(error) = acked {
                // The channel is gone; the broker redelivers the job, and the
                // task's state decides what that delivery does.
                tracing::debug!(%error, "acknowledging a job failed");
            }
            drop(permit);
        });
    }
    anyhow::bail!("the broker closed the job stream")
}

/// Jobs without a broker: every queued task found at start (and every
/// running one, left by a process that died), then every new
/// `TaskSubmitted` / `TaskRetried` as it is appended.
async fn consume_local(context: &Context) -> anyhow::Result<()> {
    let store = &context.store;
    let head = store.head_position().await?;
    let (sender, mut receiver) = mpsc::channel::<(Job, bool)>(1024);
    let feed = {
        let store = store.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut events = store.subscribe_all(head);
            while let Some(event) = events.next().await {
                let Ok(recorded) = event else { break };
                let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) else {
                    continue;
                };
                let Ok(event) = TaskEvent::from_recorded(&recorded) else {
                    continue;
                };
                if !matches!(event, TaskEvent::Submitted(_) | TaskEvent::Retried(_)) {
                    continue;
                }
                let Ok(loaded) = load::<Tasks>(&store, &task_id.stream_id()).await else {
                    continue;
                };
                let Some(task) = loaded.state else { continue };
                if let Some(job) = Job::for_event(&recorded, &event, &task.kind) {
                    if sender.send((job, false)).await.is_err() {
                        break;
                    }
                }
            }
        })
    };
    // Tasks waiting from before: read from the log, not a read model that
    // may lag (streams are few enough in a one-process installation).
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT DISTINCT stream_id FROM events
             WHERE stream_id LIKE 'task-%' AND global_position <= $1",
            &[&i64::try_from(head).unwrap_or(i64::MAX)],
        )
        .await?;
    drop(client);
    for row in rows {
        let stream: String = row.get(0);
        let Some(task_id) = TaskId::from_stream_id(&stream) else {
            continue;
        };
        let loaded = load::<Tasks>(store, &task_id.stream_id()).await?;
        let Some(task) = loaded.state else { continue };
        let (attempt, redelivered) = match task.status {
            TaskStatus::Queued => (task.attempts_started + 1, false),
            TaskStatus::Running => (task.attempts_started, true),
            _ => continue,
        };
        let job = Job {
            task_id: task_id.0,
            kind: task.kind.clone(),
            attempt,
            event_id: Uuid::nil(),
            position: loaded.position,
        };
        sender.send((job, redelivered)).await?;
    }
    drop(sender);
    tracing::info!(worker = %context.options.worker_id, "runner taking jobs in-process (no AMQP_URL)");
    while let Some((job, redelivered)) = receiver.recv().await {
        if !context.options.config.kinds.contains_key(&job.kind) {
            continue;
        }
        let permit = context.slots.clone().acquire_owned().await?;
        let context = context.clone();
        tokio::spawn(async move {
            if handle(&context, job.clone(), redelivered).await == Disposition::Requeue {
                tracing::warn!(task = %job.task_id, "an in-process job could not be handled; it is taken up again at the next start");
            }
            drop(permit);
        });
    }
    feed.abort();
    anyhow::bail!("the in-process job feed ended")
}

/// Handles one job; see the module documentation.
async fn handle(context: &Context, job: Job, redelivered: bool) -> Disposition {
    let task_id = TaskId(job.task_id);
    let stream = task_id.stream_id();
    let loaded = match load::<Tasks>(&context.store, &stream).await {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::warn!(%error, task = %task_id, "cannot load a job's task");
            return Disposition::Requeue;
        }
    };
    let Some(task) = loaded.state else {
        tracing::warn!(task = %task_id, "a job for a task that does not exist");
        return Disposition::Ack;
    };
    let ours = context
        .running
        .lock()
        .map(|running| running.contains(&job.task_id))
        .unwrap_or(false);
    match task.status {
        TaskStatus::Queued if task.attempts_started + 1 == job.attempt => {}
        TaskStatus::Running if redelivered && !ours && task.attempts_started == job.attempt => {
            let reason = format!(
                "the runner of attempt {} stopped before reporting (its job was redelivered)",
                job.attempt
            );
            let command = TaskCommand::Retry(RetryTask {
                task_id,
                reason,
                retried_at: now(),
            });
            return match report(context, task_id, command).await {
                Ok(()) => Disposition::Ack,
                Err(()) => Disposition::Requeue,
            };
        }
        // A duplicate, a stale job, or a task that is ours or finished.
        _ => return Disposition::Ack,
    }
    let claim = TaskCommand::Start(StartTask {
        task_id,
        worker_id: context.options.worker_id.clone(),
        attempt: job.attempt,
        started_at: now(),
    });
    let started = match execute::<Tasks>(
        &context.store,
        &stream,
        claim,
        Uuid::new_v4(),
        metadata(context),
    )
    .await
    {
        Ok(executed) => executed,
        Err(CommandError::Rejected(_) | CommandError::Conflict { .. }) => {
            // Another runner claimed it first.
            return Disposition::Ack;
        }
        Err(error) => {
            tracing::warn!(%error, task = %task_id, "claiming a task failed");
            return Disposition::Requeue;
        }
    };
    if let Ok(mut running) = context.running.lock() {
        running.insert(job.task_id);
    }
    let outcome = attempt(context, &task, job.attempt, started.stream_version).await;
    let command = match outcome {
        Ok(outcome) => outcome_command(context, task_id, job.attempt, outcome).await,
        Err(error) => Some(TaskCommand::Fail(FailTask {
            task_id,
            attempt: job.attempt,
            error: error.to_string(),
            exit_code: None,
            retryable: error.retryable(),
            failed_at: now(),
        })),
    };
    let reported = match command {
        Some(command) => report(context, task_id, command).await,
        None => Ok(()),
    };
    if let Ok(mut running) = context.running.lock() {
        running.remove(&job.task_id);
    }
    match reported {
        Ok(()) => Disposition::Ack,
        Err(()) => Disposition::Requeue,
    }
}

/// Runs the attempt, stopping it if the task is canceled meanwhile.
async fn attempt(
    context: &Context,
    task: &taskledger_events::task::Task,
    attempt: u32,
    version: u64,
) -> Result<Outcome, RunError> {
    let kind = context
        .options
        .config
        .kinds
        .get(&task.kind)
        .ok_or_else(|| {
            RunError::Start(format!(
                "task kind {:?} is not configured on this runner",
                task.kind
            ))
        })?
        .clone();
    let spec = RunSpec {
        name: format!("taskledger-{}-{attempt}", task.id),
        argv: kind.argv(&task.params),
        timeout: Duration::from_secs(task.timeout_seconds),
        labels: [
            ("taskledger.task".to_owned(), task.id.to_string()),
            ("taskledger.attempt".to_owned(), attempt.to_string()),
            (
                "taskledger.worker".to_owned(),
                context.options.worker_id.clone(),
            ),
        ]
        .into(),
        kind,
    };
    let (cancel, canceled) = watch::channel(false);
    let watcher = tokio::spawn(watch_for_cancel(
        context.store.clone(),
        task.id,
        version,
        cancel,
    ));
    let outcome = match spec.kind.executor {
        Executor::Docker => match &context.docker {
            Some(docker) => executor::run_docker(docker, &spec, canceled).await,
            None => Err(RunError::Engine(
                "no Docker engine is reachable from this runner".into(),
            )),
        },
        Executor::Local => executor::run_local(&spec, &context.options.work_dir, canceled).await,
    };
    watcher.abort();
    outcome
}

/// Sets `cancel` once a `TaskCanceled` follows `version` in the task's
/// stream.
async fn watch_for_cancel(
    store: PgEventStore,
    task_id: TaskId,
    mut version: u64,
    cancel: watch::Sender<bool>,
) {
    let stream = task_id.stream_id();
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        let Ok(events) = store
            .read_stream(&stream, version + 1, Direction::Forward, 100)
            .await
        else {
            continue;
        };
        for recorded in &events {
            version = recorded.version;
            if recorded.event_type == "TaskCanceled" {
                let _ = cancel.send(true);
                return;
            }
        }
    }
}

/// The command that records `outcome`; `None` when there is nothing to
/// record (the task was canceled).
async fn outcome_command(
    context: &Context,
    task_id: TaskId,
    attempt: u32,
    outcome: Outcome,
) -> Option<TaskCommand> {
    let failed = |error: String, exit_code: Option<i32>, retryable: bool| {
        Some(TaskCommand::Fail(FailTask {
            task_id,
            attempt,
            error,
            exit_code,
            retryable,
            failed_at: now(),
        }))
    };
    match outcome.end {
        End::Canceled => None,
        End::TimedOut => Some(TaskCommand::TimeOut(TimeOutTask {
            task_id,
            attempt,
            timed_out_at: now(),
        })),
        End::Exited(code) => {
            let exit_code = i32::try_from(code).unwrap_or(i32::MAX);
            if code != 0 {
                return failed(
                    format!(
                        "the command exited with code {code}{}",
                        stderr_tail(&outcome.stderr.bytes)
                    ),
                    Some(exit_code),
                    false,
                );
            }
            let result = match outcome.files.iter().find(|(name, _)| name == "result.json") {
                None => Map::new(),
                Some((_, bytes)) => match serde_json::from_slice::<Value>(bytes) {
                    Ok(Value::Object(result)) => result,
                    Ok(_) => {
                        return failed(
                            "/out/result.json is not a JSON object".into(),
                            Some(exit_code),
                            false,
                        )
                    }
                    Err(error) => {
                        return failed(
                            format!("/out/result.json is not valid JSON: {error}"),
                            Some(exit_code),
                            false,
                        )
                    }
                },
            };
            match store_artifacts(&context.options.blobs, outcome).await {
                Ok(artifacts) => Some(TaskCommand::Complete(CompleteTask {
                    task_id,
                    attempt,
                    result,
                    exit_code,
                    artifacts,
                    finished_at: now(),
                })),
                Err(error) => failed(
                    format!("storing the attempt's files failed: {error}"),
                    Some(exit_code),
                    true,
                ),
            }
        }
    }
}

/// Stores the files of `/out` and the two logs (`stdout.log`,
/// `stderr.log`, unless `/out` has files of those names).
async fn store_artifacts(blobs: &BlobStore, outcome: Outcome) -> std::io::Result<Vec<Artifact>> {
    let mut files = outcome.files;
    for (name, captured) in [
        ("stdout.log", outcome.stdout),
        ("stderr.log", outcome.stderr),
    ] {
        if captured.total > 0 && !files.iter().any(|(existing, _)| existing == name) {
            files.push((name.to_owned(), captured.into_log()));
        }
    }
    let mut artifacts = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        let sha256 = blobs.put(&bytes).await?;
        artifacts.push(Artifact {
            media_type: media_type(&name).to_owned(),
            size: bytes.len() as u64,
            sha256,
            name,
        });
    }
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(artifacts)
}

/// A media type from a file name's extension.
fn media_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("json") => "application/json",
        Some("txt" | "log") => "text/plain; charset=utf-8",
        Some("html" | "htm") => "text/html",
        Some("csv") => "text/csv",
        Some("xml") => "application/xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// ": <the end of stderr>" for a failure message, or nothing.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim().replace('\0', "");
    if text.is_empty() {
        return String::new();
    }
    let start = text
        .char_indices()
        .rev()
        .nth(ERROR_TAIL_BYTES - 1)
        .map_or(0, |(index, _)| index);
    format!("; stderr ends: {}", &text[start..])
}

/// Appends a worker command, retrying store failures for a while (the
/// outcome is lost to the log otherwise). A refusal (the task was canceled
/// meanwhile, or the attempt is stale) is logged and is not an error.
async fn report(context: &Context, task_id: TaskId, command: TaskCommand) -> Result<(), ()> {
    let stream = task_id.stream_id();
    let mut pause = Duration::from_millis(200);
    for _ in 0..8 {
        match execute::<Tasks>(
            &context.store,
            &stream,
            command.clone(),
            Uuid::new_v4(),
            metadata(context),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(CommandError::Rejected(error)) => {
                tracing::info!(%error, task = %task_id, "an attempt's report was refused");
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(%error, task = %task_id, "recording an attempt's outcome failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
    Err(())
}

fn metadata(context: &Context) -> Metadata {
    Metadata {
        actor: Some(context.options.worker_id.clone()),
        ..Metadata::default()
    }
}

/// Now, at the database's precision.
fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_extensions() {
        assert_eq!(media_type("result.json"), "application/json");
        assert_eq!(media_type("REPORT.TXT"), "text/plain; charset=utf-8");
        assert_eq!(media_type("blob"), "application/octet-stream");
    }

    #[test]
    fn failures_quote_the_end_of_stderr() {
        assert_eq!(stderr_tail(b""), "");
        assert_eq!(stderr_tail(b"boom\n"), "; stderr ends: boom");
        let long = "x".repeat(2_000);
        assert_eq!(
            stderr_tail(long.as_bytes()).len(),
            "; stderr ends: ".len() + 500
        );
    }
}
