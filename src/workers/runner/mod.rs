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
use taskledger_events::command::{load, CommandError};
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
use crate::commands::execute;
use crate::config::{Executor, FileConfig};
use crate::metrics;
use crate::workers::leader::AbortOnDrop;
use executor::{End, Outcome, RunError, RunSpec};

/// The default [`RunnerOptions::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
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
    /// Where local-executor attempts get their output directories.
    pub work_dir: PathBuf,
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
    let (stopping_sender, stopping) = watch::channel(false);
    let mut jobs = JoinSet::new();
    let work = async {
        let mut backoff = Duration::from_millis(100);
        while !*stopping.borrow() {
            let began = tokio::time::Instant::now();
            let outcome = consume(&context, &mut jobs, stopping.clone()).await;
            if *stopping.borrow() {
                break;
            }
            if began.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(100);
            }
            if let Err(error) = outcome {
                tracing::warn!(error = format!("{error:#}"), retry_in = ?backoff, "runner interrupted; reconnecting");
            }
            let mut stopping = stopping.clone();
            tokio::select! {
                _ = stopping.wait_for(|stopping| *stopping) => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
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
        release_lease(context, TaskId(task_id)).await;
    }
    while jobs.join_next().await.is_some() {}
}

/// Takes jobs until the source fails or the runner stops.
async fn consume(
    context: &Context,
    jobs: &mut JoinSet<()>,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    match &context.options.amqp_url {
        Some(url) => consume_amqp(context, url, jobs, stopping).await,
        None => consume_local(context, jobs, stopping).await,
    }
}

async fn consume_amqp(
    context: &Context,
    url: &str,
    jobs: &mut JoinSet<()>,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let kinds: Vec<String> = context.options.config.kinds.keys().cloned().collect();
    let connection = rabbitmq::connect(
        url,
        &format!("taskledger-runner-{}", context.options.worker_id),
    )
    .await
    .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    // Where another installation's jobs are put back: at the end of their
    // queue, with a publisher confirm before the delivery is acknowledged.
    // (A nack with requeue would put one back at the head, and the broker
    // hands it straight back to this consumer, which just freed the slot.)
    let republish = Arc::new(connection.create_channel().await?);
    republish
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let prefetch = u16::try_from(context.options.slots.max(1)).unwrap_or(u16::MAX);
    // Global: the limit is shared by this channel's consumers (one per
    // kind), so a runner holds at most `slots` jobs in all.
    channel
        .basic_qos(prefetch, BasicQosOptions { global: true })
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
    loop {
        while jobs.try_join_next().is_some() {}
        let delivery = tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => break,
            delivery = deliveries.next() => delivery,
        };
        let Some(delivery) = delivery else {
            anyhow::bail!("the broker closed the job stream");
        };
        let delivery = delivery.context("the job stream failed")?;
        let permit = context.slots.clone().acquire_owned().await?;
        let context = context.clone();
        let republish = republish.clone();
        jobs.spawn(async move {
            let disposition = match serde_json::from_slice::<Job>(&delivery.data) {
                Ok(job) if !context.options.topology.owns(&job) => {
                    foreign_job(&context, &job);
                    put_back(&context, &republish, &job, &delivery).await
                }
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
                    tokio::time::sleep(REQUEUE_DELAY).await;
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
                Disposition::DeadLetter => {
                    delivery
                        .nack(BasicNackOptions {
                            requeue: false,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
            };
            match acked {
                Ok(true) => {}
                // The channel is gone; the broker redelivers the job, and
                // the task's state decides what that delivery does.
                Ok(false) => tracing::debug!("a job's channel closed before its acknowledgement"),
                Err(error) => tracing::debug!(%error, "acknowledging a job failed"),
            }
            drop(permit);
        });
    }
    // Stopping: keep the connection while running attempts finish, so
    // their acknowledgements reach the broker.
    finish_jobs(context, jobs).await;
    let _ = connection.close(200, "runner stopping".into()).await;
    Ok(())
}

/// Jobs without a broker: every queued task found at start (and every
/// running one, left by a process that died), then every new
/// `TaskSubmitted` / `TaskRetried` as it is appended. A job that must be
/// put back is sent again after [`REQUEUE_DELAY`]. One process only.
async fn consume_local(
    context: &Context,
    jobs: &mut JoinSet<()>,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
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
                // A failed load ends the feed, and with it this intake: the
                // runner starts again and rescans, so no job is lost.
                let Ok(loaded) = load::<Tasks>(&store, &task_id.stream_id()).await else {
                    break;
                };
                let Some(task) = loaded.state else { continue };
                if let Some(job) = Job::for_event(&recorded, &event, &task.kind, None) {
                    if sender.send((job, false)).await.is_err() {
                        break;
                    }
                }
            }
        })
    };
    let _feed = AbortOnDrop::new(feed);
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
            installation: None,
        };
        sender.send((job, redelivered)).await?;
    }
    tracing::info!(worker = %context.options.worker_id, "runner taking jobs in-process (no AMQP_URL)");
    loop {
        while jobs.try_join_next().is_some() {}
        let next = tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => break,
            next = receiver.recv() => next,
        };
        let Some((job, redelivered)) = next else {
            anyhow::bail!("the in-process job feed ended");
        };
        if !context.options.config.kinds.contains_key(&job.kind) {
            continue;
        }
        let permit = context.slots.clone().acquire_owned().await?;
        let context = context.clone();
        let again = sender.clone();
        jobs.spawn(async move {
            let disposition = handle(&context, job.clone(), redelivered).await;
            drop(permit);
            if disposition == Disposition::Requeue {
                tokio::time::sleep(REQUEUE_DELAY).await;
                let _ = again.send((job, true)).await;
            }
        });
    }
    finish_jobs(context, jobs).await;
    Ok(())
}

/// Removes containers of attempts that no runner holds any more (left by a
/// runner that crashed): their task is not running that attempt, or its
/// lease has expired.
async fn sweep_containers(context: &Context) {
    let Some(docker) = &context.docker else {
        return;
    };
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([(
            "label",
            vec![format!(
                "taskledger.installation={}",
                context.options.topology.prefix()
            )],
        )]))
        .build();
    let containers = match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(error) => {
            tracing::warn!(%error, "listing containers to sweep failed");
            return;
        }
    };
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        let (Some(task), Some(attempt)) = (
            labels
                .get("taskledger.task")
                .and_then(|task| Uuid::parse_str(task).ok()),
            labels
                .get("taskledger.attempt")
                .and_then(|attempt| attempt.parse::<u32>().ok()),
        ) else {
            continue;
        };
        let held = match load::<Tasks>(&context.store, &TaskId(task).stream_id()).await {
            Ok(loaded) => match loaded.state {
                Some(state)
                    if state.status == TaskStatus::Running && state.attempts_started == attempt =>
                {
                    lease_is_fresh(context, TaskId(task), attempt).await
                }
                Some(_) => false,
                // Not a task of this database: not ours to judge.
                None => true,
            },
            Err(_) => true,
        };
        if !held {
            if let Some(id) = container.id {
                tracing::info!(task = %task, attempt, "removing a container no runner holds");
                executor::remove(docker, &id).await;
            }
        }
    }
}

/// Puts another installation's job back at the end of its queue, after
/// [`REQUEUE_DELAY`] (so a job whose own runners are all down circulates
/// slowly): published again with its properties, and acknowledged only once
/// the broker confirmed the copy. If that fails it is requeued instead;
/// either way it is never dropped.
async fn put_back(
    context: &Context,
    republish: &lapin::Channel,
    job: &Job,
    delivery: &lapin::message::Delivery,
) -> Disposition {
    tokio::time::sleep(REQUEUE_DELAY).await;
    let published = republish
        .basic_publish(
            context.options.topology.jobs_exchange().as_str().into(),
            job.kind.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            &delivery.data,
            delivery.properties.clone(),
        )
        .await;
    let confirmed = match published {
        Ok(confirm) => confirm
            .await
            .is_ok_and(|confirmation| confirmation.is_ack()),
        Err(_) => false,
    };
    if confirmed {
        Disposition::Ack
    } else {
        Disposition::Requeue
    }
}

/// Says, at most once a minute, that another installation's jobs arrive
/// on this runner's queues.
fn foreign_job(context: &Context, job: &Job) {
    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    let Ok(mut last) = LAST.lock() else { return };
    if last.is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    tracing::error!(
        queue = %context.options.topology.jobs_queue(&job.kind),
        ours = ?context.options.topology.installation(),
        theirs = ?job.installation,
        "this queue carries another installation's jobs (two installations share one \
         TASKLEDGER_AMQP_PREFIX); putting them back, never running or dropping them. \
         Give each installation its own prefix (the default is per installation)"
    );
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
    let Some(task) = loaded.state else {
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
        TaskStatus::Queued if task.attempts_started + 1 == job.attempt => {}
        TaskStatus::Running if redelivered && !ours && task.attempts_started == job.attempt => {
            // The broker took the job back from its runner. If that runner
            // still renews its lease it is alive (only its connection
            // dropped): put the job back until the attempt ends. Otherwise
            // it died: clean up after it and record a retry.
            if lease_is_fresh(context, task_id, job.attempt).await {
                return Disposition::Requeue;
            }
            if let Some(docker) = &context.docker {
                executor::remove(docker, &container_name(task_id, job.attempt)).await;
            }
            let reason = format!(
                "the runner of attempt {} stopped responding before reporting",
                job.attempt
            );
            let command = TaskCommand::Retry(RetryTask {
                task_id,
                reason,
                retried_at: now(),
            });
            report(context, task_id, command).await;
            release_lease(context, task_id).await;
            return Disposition::Ack;
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
        running.insert(job.task_id, container_name(task_id, job.attempt));
    }
    // A busy slot in `/metrics` until this attempt ends (or is aborted).
    let _busy = metrics::attempt_running();
    let heartbeat = AbortOnDrop::new(tokio::spawn(hold_lease(
        context.clone(),
        task_id,
        job.attempt,
    )));
    let outcome = attempt(context, &task, job.attempt, started.stream_version).await;
    let command = match outcome {
        Ok(outcome) => outcome_command(context, task_id, job.attempt, outcome).await,
        Err(error) => Some(TaskCommand::Fail(FailTask {
            artifacts: Vec::new(),
            task_id,
            attempt: job.attempt,
            error: error.to_string(),
            exit_code: None,
            retryable: error.retryable(),
            failed_at: now(),
        })),
    };
    if let Some(command) = command {
        report(context, task_id, command).await;
    }
    drop(heartbeat);
    release_lease(context, task_id).await;
    if let Ok(mut running) = context.running.lock() {
        running.remove(&job.task_id);
    }
    Disposition::Ack
}

/// Holds the attempt's lease: takes it, then renews it every third of
/// [`RunnerOptions::lease_ttl`] until aborted.
async fn hold_lease(context: Context, task_id: TaskId, attempt: u32) {
    let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
    let mut first = true;
    loop {
        let renewed = async {
            let client = context.store.pool().get().await.ok()?;
            let sql = if first {
                "INSERT INTO attempt_leases (task_id, attempt, worker_id) VALUES ($1, $2, $3)
                 ON CONFLICT (task_id) DO UPDATE
                 SET attempt = $2, worker_id = $3, renewed_at = now()"
            } else {
                "UPDATE attempt_leases SET renewed_at = now()
                 WHERE task_id = $1 AND attempt = $2 AND worker_id = $3"
            };
            client
                .execute(sql, &[&task_id.0, &attempt, &context.options.worker_id])
                .await
                .ok()
        }
        .await;
        if renewed.is_some() {
            first = false;
        } else {
            tracing::warn!(task = %task_id, "renewing an attempt's lease failed");
        }
        tokio::time::sleep(context.options.lease_ttl / 3).await;
    }
}

/// Whether a runner renewed the lease of this attempt within the TTL.
async fn lease_is_fresh(context: &Context, task_id: TaskId, attempt: u32) -> bool {
    let Ok(client) = context.store.pool().get().await else {
        // Cannot tell: assume alive; the job comes back later.
        return true;
    };
    let ttl = context.options.lease_ttl.as_secs_f64();
    client
        .query_opt(
            "SELECT 1 FROM attempt_leases
             WHERE task_id = $1 AND attempt = $2
               AND renewed_at > now() - make_interval(secs => $3)",
            &[
                &task_id.0,
                &i32::try_from(attempt).unwrap_or(i32::MAX),
                &ttl,
            ],
        )
        .await
        .map_or(true, |row| row.is_some())
}

async fn release_lease(context: &Context, task_id: TaskId) {
    if let Ok(client) = context.store.pool().get().await {
        let _ = client
            .execute(
                "DELETE FROM attempt_leases WHERE task_id = $1",
                &[&task_id.0],
            )
            .await;
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
    let spec = RunSpec {
        inputs,
        name: container_name(task.id, attempt),
        argv: kind.argv(&task.params),
        timeout: Duration::from_secs(task.timeout_seconds),
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
            artifacts: Vec::new(),
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
                let error = format!(
                    "the command exited with code {code}{}",
                    stderr_tail(&outcome.stderr.bytes)
                );
                // The logs are kept as for a success: they are what a
                // failure is understood from.
                let logs = Outcome {
                    files: Vec::new(),
                    ..outcome
                };
                let artifacts = match store_artifacts(&context.options.blobs, logs).await {
                    Ok(artifacts) => artifacts,
                    Err(error) => {
                        tracing::warn!(%error, task = %task_id, "storing a failed attempt's logs failed; recording the failure without them");
                        Vec::new()
                    }
                };
                return Some(TaskCommand::Fail(FailTask {
                    task_id,
                    attempt,
                    error,
                    exit_code: Some(exit_code),
                    artifacts,
                    retryable: false,
                    failed_at: now(),
                }));
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

/// Appends a worker command. Store failures are retried until it is
/// stored (the attempt's outcome exists nowhere else); the job stays
/// unacknowledged meanwhile and the lease renewed. A refusal because the
/// task moved on (canceled, or the attempt is stale) is the end of it; a
/// refusal of the outcome itself (e.g. a result the log cannot hold) is
/// recorded as the attempt's failure instead, so the task never stays
/// running.
async fn report(context: &Context, task_id: TaskId, command: TaskCommand) {
    let stream = task_id.stream_id();
    let mut command = command;
    let mut command_id = Uuid::new_v4();
    let mut pause = Duration::from_millis(200);
    loop {
        match execute::<Tasks>(
            &context.store,
            &stream,
            command.clone(),
            command_id,
            metadata(context),
        )
        .await
        {
            Ok(_) => return,
            Err(CommandError::Rejected(error)) if error.kind() == RefusalKind::Invalid => {
                let attempt = match &command {
                    TaskCommand::Complete(complete) => complete.attempt,
                    TaskCommand::Fail(fail) => fail.attempt,
                    TaskCommand::RecordProgress(progress) => progress.attempt,
                    TaskCommand::TimeOut(time_out) => time_out.attempt,
                    _ => {
                        tracing::error!(%error, task = %task_id, "a worker command was refused as invalid");
                        return;
                    }
                };
                if matches!(&command, TaskCommand::Fail(fail) if fail.error.starts_with("the attempt's outcome was refused"))
                {
                    tracing::error!(%error, task = %task_id, "even the failure report was refused");
                    return;
                }
                tracing::warn!(%error, task = %task_id, "an attempt's outcome was refused; recording it as a failure");
                command = TaskCommand::Fail(FailTask {
                    artifacts: Vec::new(),
                    task_id,
                    attempt,
                    error: format!("the attempt's outcome was refused: {}", error.message()),
                    exit_code: None,
                    retryable: false,
                    failed_at: now(),
                });
                command_id = Uuid::new_v4();
            }
            Err(CommandError::Rejected(error)) => {
                tracing::info!(%error, task = %task_id, "an attempt's report was refused");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, task = %task_id, retry_in = ?pause, "recording an attempt's outcome failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn metadata(context: &Context) -> Metadata {
    Metadata {
        actor: Some(context.options.worker_id.clone()),
        ..Metadata::default()
    }
}

/// The container (or local work directory) of a task's attempt.
fn container_name(task_id: TaskId, attempt: u32) -> String {
    format!("taskledger-{task_id}-{attempt}")
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
