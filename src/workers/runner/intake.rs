//! Where jobs come from: RabbitMQ (manual acks, a prefetch of the slot
//! count, another installation's jobs put back at the end of their queue) or,
//! without a broker, the log itself; and the start-up sweep of containers no
//! runner holds.
//!
//! Priorities: a kind's queue is a priority queue, and the prefetch equals
//! the slots (a delivery holds its slot until it is acknowledged), so the
//! broker hands out nothing while every slot is busy and, when one frees,
//! the highest-priority job waiting. Without a broker the jobs wait in
//! [`Pending`], compared when a slot frees.

use super::pending::Pending;
use super::*;
use crate::adapters::rabbitmq_upgrade::move_legacy_jobs;

/// Takes jobs until the source fails or the runner stops.
pub(super) async fn consume(
    context: &Context,
    jobs: &mut JoinSet<()>,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    match &context.options.amqp_url {
        Some(url) => consume_amqp(context, url, jobs, stopping).await,
        None => consume_local(context, jobs, stopping).await,
    }
}

pub(super) async fn consume_amqp(
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
    // kind), so a runner holds at most `slots` jobs in all. Not more: a job
    // prefetched while every slot is busy would skip ahead of a
    // higher-priority one published after it.
    channel
        .basic_qos(prefetch, BasicQosOptions { global: true })
        .await?;
    context.options.topology.declare(&channel, &kinds).await?;
    move_legacy_jobs(&connection, &context.options.topology, &kinds).await?;
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
                Ok(job) => {
                    match wait::handle_when_due(&context, &job, delivery.redelivered).await {
                        Disposition::Wait(due) => {
                            wait::park(&context, &republish, &job, &delivery, due).await
                        }
                        disposition => disposition,
                    }
                }
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
                // Handled above: parked, then acknowledged or requeued.
                Disposition::Requeue | Disposition::Wait(_) => {
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
/// `TaskSubmitted` / `TaskRetried` as it is appended, each slot given to
/// the highest-priority job the log holds when it frees ([`Pending`]). A
/// job that must be put back is sent again after [`REQUEUE_DELAY`]. One
/// process only.
pub(super) async fn consume_local(
    context: &Context,
    jobs: &mut JoinSet<()>,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let store = &context.store;
    let head = store.head_position().await?;
    let (sender, mut receiver) = mpsc::channel::<(Job, bool)>(1024);
    // The feed's place: every job of the log up to it has been sent.
    let (fed_to, mut fed) = watch::channel(head);
    let feed = {
        let store = store.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut events = store.subscribe_all(head);
            while let Some(event) = events.next().await {
                let Ok(recorded) = event else { break };
                // A failed load ends the feed, and with it this intake: the
                // runner starts again and rescans, so no job is lost.
                let Ok(job) = local_job(&store, &recorded).await else {
                    break;
                };
                if let Some(job) = job {
                    if sender.send((job, false)).await.is_err() {
                        break;
                    }
                }
                fed_to.send_replace(recorded.global_position);
            }
        })
    };
    let _feed = AbortOnDrop::new(feed);
    let mut pending = Pending::default();
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
            priority: task.priority,
            event_id: Uuid::nil(),
            position: loaded.position,
            installation: None,
        };
        pending.push(job, redelivered);
    }
    tracing::info!(worker = %context.options.worker_id, "runner taking jobs in-process (no AMQP_URL)");
    loop {
        while jobs.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => break,
            permit = context.slots.clone().acquire_owned() => permit?,
        };
        // Every job appended before the slot freed is compared.
        let head = store.head_position().await?;
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => break,
            caught_up = pending.caught_up(&mut receiver, &mut fed, head) => caught_up?,
        }
        let Some((job, redelivered)) = pending.pop() else {
            // Nothing waits: the slot goes to the next job that comes.
            drop(permit);
            tokio::select! {
                _ = stopping.wait_for(|stopping| *stopping) => break,
                next = receiver.recv() => match next {
                    Some((job, redelivered)) => pending.push(job, redelivered),
                    None => anyhow::bail!("the in-process job feed ended"),
                },
                // The feed moved on (or stopped: then start again from the
                // log, which the intake's own sender would hide).
                changed = fed.changed() => {
                    changed.map_err(|_| anyhow::anyhow!("the in-process job feed stopped"))?;
                }
            }
            continue;
        };
        if !context.options.config.kinds.contains_key(&job.kind) {
            continue;
        }
        let context = context.clone();
        let again = sender.clone();
        jobs.spawn(async move {
            let disposition = wait::handle_when_due(&context, &job, redelivered).await;
            drop(permit);
            match disposition {
                Disposition::Requeue => {
                    tokio::time::sleep(REQUEUE_DELAY).await;
                    let _ = again.send((job, true)).await;
                }
                Disposition::Wait(due) => {
                    wait::send_when_due(again, job, due);
                }
                Disposition::Ack | Disposition::DeadLetter => {}
            }
        });
    }
    finish_jobs(context, jobs).await;
    Ok(())
}

/// The job `recorded` makes for the in-process intake, if any (its task
/// loaded for its kind and priority).
///
/// # Errors
/// When the task cannot be loaded.
async fn local_job(
    store: &PgEventStore,
    recorded: &taskledger_events::RecordedEvent,
) -> Result<Option<Job>, CommandError> {
    let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) else {
        return Ok(None);
    };
    let Ok(event) = TaskEvent::from_recorded(recorded) else {
        return Ok(None);
    };
    if !matches!(
        event,
        TaskEvent::Submitted(_) | TaskEvent::Released(_) | TaskEvent::Retried(_)
    ) {
        return Ok(None);
    }
    let loaded = load::<Tasks>(store, &task_id.stream_id()).await?;
    let Some(task) = loaded.state else {
        return Ok(None);
    };
    Ok(Job::for_event(
        recorded,
        &event,
        &task.kind,
        task.priority,
        None,
    ))
}

/// Removes containers of attempts that no runner holds any more (left by a
/// runner that crashed): their task is not running that attempt, or its
/// lease has expired.
pub(super) async fn sweep_containers(context: &Context) {
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
        let held = attempt_is_held(context, task, attempt).await;
        if !held {
            if let Some(id) = container.id {
                tracing::info!(task = %task, attempt, "removing a container no runner holds");
                executor::remove(docker, &id).await;
            }
        }
    }
}

/// Whether a runner may still hold `attempt` of `task`: the log shows it
/// running and its lease was renewed within the TTL, or it cannot tell (a
/// task this log does not hold is not ours to judge; a failed read is
/// taken as held). What the start-up sweeps of containers and of `/out`
/// directories leave alone.
pub(super) async fn attempt_is_held(context: &Context, task: Uuid, attempt: u32) -> bool {
    match load::<Tasks>(&context.store, &TaskId(task).stream_id()).await {
        Ok(loaded) => match loaded.state {
            Some(state)
                if state.status == TaskStatus::Running && state.attempts_started == attempt =>
            {
                lease_is_fresh(context, TaskId(task), attempt).await
            }
            Some(_) => false,
            None => true,
        },
        Err(_) => true,
    }
}

/// Puts another installation's job back at the end of its queue, after
/// [`REQUEUE_DELAY`] (so a job whose own runners are all down circulates
/// slowly): published again with its properties, and acknowledged only once
/// the broker confirmed the copy. If that fails it is requeued instead;
/// either way it is never dropped.
pub(super) async fn put_back(
    context: &Context,
    republish: &lapin::Channel,
    job: &Job,
    delivery: &lapin::message::Delivery,
) -> Disposition {
    tokio::time::sleep(REQUEUE_DELAY).await;
    let exchange = context.options.topology.jobs_exchange();
    let properties = delivery.properties.clone();
    republished(republish, &exchange, job, delivery, properties).await
}

/// Publishes `delivery`'s job again to `exchange` (under its kind) with
/// `properties`: [`Disposition::Ack`] once the broker confirmed the copy,
/// [`Disposition::Requeue`] if it did not, so the job is never dropped.
pub(super) async fn republished(
    republish: &lapin::Channel,
    exchange: &str,
    job: &Job,
    delivery: &lapin::message::Delivery,
    properties: lapin::BasicProperties,
) -> Disposition {
    let published = republish
        .basic_publish(
            exchange.into(),
            job.kind.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            &delivery.data,
            properties,
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
pub(super) fn foreign_job(context: &Context, job: &Job) {
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
