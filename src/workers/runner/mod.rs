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
//!   runner that held it went away: a Slurm kind's job is adopted (it runs
//!   on without its runner; [`slurm`]); otherwise the runner records
//!   `RetryTask`, which
//!   queues another attempt while attempts remain and fails the task
//!   otherwise; the task's attempt numbers make the dead runner's late
//!   report, if it ever comes, a refused stale command — so a task ends
//!   with exactly one terminal event;
//! - a job for a task this process is already running (the broker
//!   redelivered it after a reconnect) is acknowledged and left alone;
//! - a job whose task waits for a retry's backoff (`next_attempt_at` in
//!   the log is ahead) is not run: it waits, without a slot, until due
//!   ([`wait`]);
//! - an attempt takes its lease before its claim, and a job whose kind
//!   already runs its `max_running` across the runners waits likewise
//!   ([`limit`]).

mod collect;
pub mod executor;
mod intake;
mod lease;
mod limit;
mod out_dir;
mod outcome;
mod parents;
mod pending;
mod slurm;
mod wait;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use chrono::{SubsecRound, Utc};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{Map, Value};
use taskledger_events::command::{load, CommandError, Loaded};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{
    Artifact, CompleteTask, FailTask, RetryTask, StartTask, TaskCommand, TaskEvent, TaskId,
    TaskStatus, Tasks, TimeOutTask,
};
use taskledger_events::{Direction, EventStore, Metadata, RefusalKind};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::adapters::blobs::BlobStore;
use crate::adapters::rabbitmq::{self, Job, Topology};
use crate::commands::execute_known;
use crate::config::kind::Executor;
use crate::config::FileConfig;
use crate::metrics;
use crate::workers::backoff::{stopped_during, Pauses};
use crate::workers::leader::AbortOnDrop;
use executor::{End, OutMount, Outcome, RunError, RunSpec};
use intake::{consume, sweep_containers};
use lease::{drop_dead_lease, hold_lease, lease_is_fresh, release_lease, release_own_lease};
use limit::{take_slot, Slot};
use outcome::{outcome_command, report, report_known};

/// The default [`RunnerOptions::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a running attempt checks whether its task was canceled.
const CANCEL_POLL: Duration = Duration::from_millis(500);
/// How long a stopping runner lets running attempts finish before it
/// abandons them (their jobs are redelivered and retried).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a job that must be put back waits first (so a redelivery loop
/// while another runner's lease is fresh does not spin).
const REQUEUE_DELAY: Duration = Duration::from_secs(1);
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
    /// Where attempts get their working directories: Docker's
    /// bind-mounted `/out` (`docker-out/`), Slurm jobs' (`slurm/`), local
    /// commands'.
    pub work_dir: PathBuf,
    /// Whether a Docker attempt's `/out` is bind-mounted from `work_dir`
    /// (the engine must be on this host) rather than copied out through
    /// the engine (`[docker] out`, resolved by [`crate::config::DockerOut::binds`]).
    pub bind_out: bool,
    /// A running attempt's lease is renewed every third of this; a job the
    /// broker redelivers is retried only once its lease is this old.
    pub lease_ttl: Duration,
}

/// What the runner shares with its attempts.
#[derive(Debug, Clone)]
struct Context {
    store: PgEventStore,
    options: RunnerOptions,
    docker: Option<Docker>,
    /// Tasks this process is running right now, with their containers'
    /// names.
    running: Arc<Mutex<HashMap<Uuid, String>>>,
    /// Free slots.
    slots: Arc<Semaphore>,
}

/// What to do with a job's message after handling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// Done with (its outcome is in the log, or it needs nothing).
    Ack,
    /// Not handled (the database was unavailable, or the job is another
    /// installation's): deliver it again.
    Requeue,
    /// Not ours to run and nobody's to drop: to the dead letters, where it
    /// is kept (a job of no stated installation whose task this log does
    /// not hold, or of this installation whose task is missing).
    DeadLetter,
    /// Not now: try again at this instant (a retry's backoff, or the kind
    /// at its `max_running`); wait for it without a slot.
    Wait(chrono::DateTime<Utc>),
}

/// Runs the runner until `stop` resolves. Then it takes no new job, lets
/// running attempts finish for up to [`SHUTDOWN_GRACE`] (still connected,
/// so their jobs are acknowledged), and abandons the rest: their
/// containers are removed and their leases dropped, so their redelivered
/// jobs are retried at once.
///
/// Attempts run as tasks owned by the runner: dropping (aborting) the
/// runner stops them too, as a crash would.
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
    // Counted in `/metrics` while the runner runs.
    let _slots = metrics::runner_started(options.slots.max(1));
    let context = Context {
        slots: Arc::new(Semaphore::new(options.slots.max(1))),
        store,
        options,
        docker,
        running: Arc::new(Mutex::new(HashMap::new())),
    };
    sweep_containers(&context).await;
    out_dir::sweep(&context).await;
    let (stopping_sender, stopping) = watch::channel(false);
    let mut jobs = JoinSet::new();
    let work = async {
        let mut pauses = Pauses::reconnect();
        while !*stopping.borrow() {
            let began = tokio::time::Instant::now();
            let outcome = consume(&context, &mut jobs, stopping.clone()).await;
            if *stopping.borrow() {
                break;
            }
            // A connection that held for a while was a success: start the
            // pauses again from the first.
            if began.elapsed() > Duration::from_secs(30) {
                pauses.reset();
            }
            let pause = match outcome {
                Ok(()) => pauses.next_pause(),
                Err(error) => pauses.interrupted("runner", &error),
            };
            let mut stopping = stopping.clone();
            if stopped_during(pause, stopping.wait_for(|stopping| *stopping)).await {
                break;
            }
        }
        // Stopped while not connected: finish what runs all the same.
        finish_jobs(&context, &mut jobs).await;
    };
    tokio::pin!(work);
    tokio::select! {
        () = stop => {
            let _ = stopping_sender.send(true);
            work.await;
        }
        () = &mut work => {}
    }
    tracing::info!("runner stopped");
}

/// Waits up to [`SHUTDOWN_GRACE`] for running attempts, then abandons the
/// rest (see [`run`]).
async fn finish_jobs(context: &Context, jobs: &mut JoinSet<()>) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !jobs.is_empty() {
        match tokio::time::timeout_at(deadline, jobs.join_next()).await {
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if jobs.is_empty() {
        return;
    }
    jobs.abort_all();
    let abandoned: Vec<(Uuid, String)> = context
        .running
        .lock()
        .map(|mut running| running.drain().collect())
        .unwrap_or_default();
    tracing::warn!(
        running = abandoned.len(),
        "stopping with attempts still running; removing their containers (their jobs will be retried)"
    );
    for (task_id, name) in abandoned {
        if let Some(docker) = &context.docker {
            executor::remove(docker, &name).await;
        }
        if context.options.bind_out {
            out_dir::remove(&out_dir::path(&context.options.work_dir, &name)).await;
        }
        release_own_lease(context, TaskId(task_id)).await;
    }
    while jobs.join_next().await.is_some() {}
}

/// Handles one job; see the module documentation.
#[tracing::instrument(
    name = "runner_job",
    skip_all,
    fields(task = %job.task_id, attempt = job.attempt, kind = %job.kind, position = job.position, redelivered)
)]
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
    let Some(task) = loaded.state.clone() else {
        // Never acknowledged away: it may be another installation's job (an
        // older relay's, which names none) on a shared queue.
        tracing::warn!(
            task = %task_id,
            queue = %context.options.topology.jobs_queue(&job.kind),
            "a job for a task this log does not hold; moving it to {}",
            context.options.topology.dead_letters()
        );
        return Disposition::DeadLetter;
    };
    let ours = context
        .running
        .lock()
        .map(|running| running.contains_key(&job.task_id))
        .unwrap_or(false);
    match task.status {
        TaskStatus::Queued if task.attempts_started + 1 == job.attempt => {
            if let Some(due) = task.next_attempt_at.filter(|due| *due > Utc::now()) {
                return Disposition::Wait(due);
            }
        }
        TaskStatus::Running if redelivered && !ours && task.attempts_started == job.attempt => {
            // The broker took the job back from its runner. If that runner
            // still renews its lease it is alive (only its connection
            // dropped): put the job back until the attempt ends. Otherwise
            // it died: clean up after it and record a retry.
            if lease_is_fresh(context, task_id, job.attempt).await {
                return Disposition::Requeue;
            }
            if slurm::runs_on_slurm(context, &task.kind) {
                // Its Slurm job outlives the runner: adopt it, and the
                // dead runner's lease with it (so the slot stays counted
                // and no third runner adopts it too), not retry.
                return match limit::take_over(context, task_id, job.attempt, &task.kind).await {
                    Slot::Taken => run_claimed(context, &task, job.attempt, loaded).await,
                    Slot::AtLimit { .. } | Slot::HeldElsewhere | Slot::Unknown => {
                        Disposition::Requeue
                    }
                };
            }
            if let Some(docker) = &context.docker {
                executor::remove(docker, &container_name(task_id, job.attempt)).await;
            }
            // Its `/out`, if that runner shared this host's work directory.
            out_dir::remove_attempt(context, task_id, job.attempt).await;
            let reason = format!(
                "the runner of attempt {} stopped responding before reporting",
                job.attempt
            );
            let retried_at = now();
            let command = TaskCommand::Retry(RetryTask {
                task_id,
                reason,
                retried_at,
                next_attempt_at: wait::next_attempt_at(
                    context,
                    &task.kind,
                    job.attempt,
                    true,
                    retried_at,
                ),
            });
            report(context, task_id, command).await;
            drop_dead_lease(context, task_id, job.attempt).await;
            return Disposition::Ack;
        }
        TaskStatus::Canceled
            if redelivered && !ours && slurm::runs_on_slurm(context, &task.kind) =>
        {
            // Canceled while no runner watched its job.
            slurm::cancel_leftover(task_id, task.attempts_started).await;
            return Disposition::Ack;
        }
        // A duplicate, a stale job, or a task that is ours or finished.
        _ => return Disposition::Ack,
    }
    match take_slot(context, task_id, job.attempt, &task.kind).await {
        Slot::Taken => {}
        Slot::AtLimit { .. } | Slot::HeldElsewhere => return Disposition::Wait(limit::retry_at()),
        Slot::Unknown => return Disposition::Requeue,
    }
    let claim = TaskCommand::Start(StartTask {
        task_id,
        worker_id: context.options.worker_id.clone(),
        attempt: job.attempt,
        started_at: now(),
    });
    // Decided on the stream as this job's handling just read it: one
    // append, unless another writer came between (then it is read again).
    let started = match execute_known::<Tasks>(
        &context.store,
        &stream,
        Some(loaded),
        claim,
        Uuid::new_v4(),
        metadata(context),
    )
    .await
    {
        Ok(executed) => executed,
        Err(CommandError::Rejected(_) | CommandError::Conflict { .. }) => {
            // Another runner claimed it first (or it was canceled).
            release_lease(context, task_id, job.attempt).await;
            return Disposition::Ack;
        }
        Err(error) => {
            tracing::warn!(%error, task = %task_id, "claiming a task failed");
            release_lease(context, task_id, job.attempt).await;
            return Disposition::Requeue;
        }
    };
    run_claimed(context, &task, job.attempt, Loaded::after(started)).await
}

/// Runs an attempt this runner claimed (or adopted: a Slurm job whose
/// runner died) while holding its lease, and records its outcome.
async fn run_claimed(
    context: &Context,
    task: &taskledger_events::task::Task,
    attempt_number: u32,
    claimed: Loaded<Tasks>,
) -> Disposition {
    let task_id = task.id;
    let version = claimed.version;
    if let Ok(mut running) = context.running.lock() {
        running.insert(task_id.0, container_name(task_id, attempt_number));
    }
    // A busy slot in `/metrics` until this attempt ends (or is aborted).
    let _busy = metrics::attempt_running(&task.kind);
    let heartbeat = AbortOnDrop::new(tokio::spawn(hold_lease(
        context.clone(),
        task_id,
        attempt_number,
        task.kind.clone(),
    )));
    let outcome = attempt(context, task, attempt_number, version).await;
    let command = match outcome {
        Ok(outcome) => outcome_command(context, task, attempt_number, outcome).await,
        Err(error) => {
            let failed_at = now();
            Some(TaskCommand::Fail(FailTask {
                artifacts: Vec::new(),
                task_id,
                attempt: attempt_number,
                error: error.to_string(),
                exit_code: None,
                retryable: error.retryable(),
                next_attempt_at: wait::next_attempt_at(
                    context,
                    &task.kind,
                    attempt_number,
                    error.retryable(),
                    failed_at,
                ),
                failed_at,
            }))
        }
    };
    if let Some(command) = command {
        // Decided on the stream as the claim left it: one append, unless a
        // cancel or another writer came between.
        report_known(context, task_id, command, Some(claimed)).await;
    }
    // Only now that the outcome is in the log (see [`out_dir`]).
    out_dir::remove_attempt(context, task_id, attempt_number).await;
    drop(heartbeat);
    if slurm::runs_on_slurm(context, &task.kind) {
        slurm::clean_up(context, task_id, attempt_number).await;
    }
    release_lease(context, task_id, attempt_number).await;
    if let Ok(mut running) = context.running.lock() {
        running.remove(&task_id.0);
    }
    Disposition::Ack
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
    let mut inputs = Vec::with_capacity(task.inputs.len());
    for (name, sha256) in &task.inputs {
        let path = context
            .options
            .blobs
            .path(sha256)
            .filter(|path| path.is_file())
            .ok_or_else(|| {
                RunError::Start(format!(
                    "input {name:?} (blob {sha256}) is not in this runner's blob store; \
                     runners and the API must share TASKLEDGER_DATA_DIR"
                ))
            })?;
        let path = std::fs::canonicalize(&path)
            .map_err(|error| RunError::Start(format!("input {name:?}: {error}")))?;
        inputs.push((name.clone(), path));
    }
    inputs.extend(parents::parent_inputs(context, task).await?);
    let name = container_name(task.id, attempt);
    let out = if context.options.bind_out && kind.executor == Executor::Docker {
        OutMount::Bind(out_dir::path(&context.options.work_dir, &name))
    } else {
        OutMount::Archive
    };
    let spec = RunSpec {
        inputs,
        out,
        name,
        argv: kind.argv(&task.params),
        timeout: Duration::from_secs(task.timeout_seconds),
        attempt,
        labels: [
            ("taskledger.task".to_owned(), task.id.to_string()),
            ("taskledger.attempt".to_owned(), attempt.to_string()),
            (
                "taskledger.worker".to_owned(),
                context.options.worker_id.clone(),
            ),
            (
                "taskledger.installation".to_owned(),
                context.options.topology.prefix().to_owned(),
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
        Executor::Slurm => slurm::run(context, task, &spec, canceled).await,
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

fn metadata(context: &Context) -> Metadata {
    Metadata::of_actor(context.options.worker_id.clone())
}

/// The container (or local work directory) of a task's attempt.
fn container_name(task_id: TaskId, attempt: u32) -> String {
    format!("taskledger-{task_id}-{attempt}")
}

/// Whether this process runs as root, so that it can read and delete
/// whatever a container's user writes to a bind-mounted `/out`.
pub fn runs_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Now, at the database's precision.
fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
