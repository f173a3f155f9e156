//! The graph follower: follows the global order from its own checkpoint
//! and resolves every waiting task (one submitted with `depends_on`) whose
//! parents' outcomes it meets, releasing it (`TaskReleased`, after which
//! the relay publishes its job) or canceling it ("parent {id} failed").
//!
//! - **Decided from the log.** A task's parents are its `TaskSubmitted`'s
//!   `depends_on`; a parent's children are found by that field in the log
//!   itself (a partial GIN index, migration 22), never in a read model, so
//!   nothing here lags behind the log. Each resolution loads the child and
//!   its parents from their streams and decides `ResolveDependencies`,
//!   appended at the version read with an event id derived from the child
//!   ([`resolve`]), so two followers, or a follower redoing a batch after a
//!   crash, append the same decision once.
//! - **Every order of events is met.** A child is resolved when its own
//!   `TaskSubmitted` is met (a parent that ended before the child was
//!   submitted: the child is found then) and when any parent's final
//!   event is met (a child submitted before its parent ended). A parent's
//!   final status never changes, so whichever comes last sees every parent
//!   final and decides; the submission itself resolves its task at once,
//!   so a child of parents that had all succeeded is never seen waiting.
//!   A retry (`TaskRetried`) is not final and resolves nothing.
//! - **Checkpoint after the appends**: a batch's resolutions are appended,
//!   then the checkpoint (`graph_checkpoints`) moves. A crash in between
//!   resolves the batch again, which finds its children no longer waiting.
//! - **Transitive**: a canceled child is itself a parent that ended, so its
//!   own children are met in a later batch and canceled in turn.
//! - **One active follower** across processes (a session advisory lock on
//!   the connection that writes the checkpoint); the others stand by.

use std::collections::BTreeSet;

use anyhow::Context;
use chrono::{DateTime, SubsecRound, Utc};
use taskledger_events::command::{load, CommandError};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{
    ResolveDependencies, Task, TaskCommand, TaskEvent, TaskId, TaskStatus, Tasks,
};
use taskledger_events::{EventStore, Metadata, RecordedEvent};
use uuid::Uuid;

use crate::commands::execute;
use crate::workers::leader;

/// Events read per batch, at most.
const BATCH: usize = 500;
/// The follower's name in `graph_checkpoints`, its lock, and its actor.
const NAME: &str = "graphs";

/// Runs the graph follower until `stop` resolves.
pub async fn run(store: PgEventStore, stop: impl std::future::Future<Output = ()> + Send) {
    leader::run("graph follower", leader::OnStop::Drop, stop, |_| {
        follow_once(&store)
    })
    .await;
}

/// One life of the follower: lock, read from the checkpoint, resolve until
/// something fails. `Ok` when another process's follower is active.
async fn follow_once(store: &PgEventStore) -> anyhow::Result<()> {
    let Some(leadership) = leader::try_lead(store, NAME).await? else {
        return Ok(());
    };
    let mut position = leadership
        .checkpoint("graph_checkpoints", "follower", NAME)
        .await?;
    tracing::info!(position, "graph follower active");
    let mut feed = store.subscribe_all(position);
    loop {
        let first = feed.next().await.context("the event feed ended")?;
        let batch = feed.batch_from(first, BATCH).context("reading the log")?;
        let mut children = BTreeSet::new();
        for recorded in &batch {
            children.extend(children_to_resolve(store, recorded).await?);
        }
        for child in children {
            resolve(store, child, now()).await?;
        }
        let last = batch.last().map_or(position, |event| event.global_position);
        let moved = leader::move_checkpoint(
            &leadership.client,
            ("graph_checkpoints", "follower", NAME),
            position,
            last,
        )
        .await?;
        anyhow::ensure!(
            moved,
            "the graph checkpoint moved under this follower; another one is active"
        );
        position = last;
    }
}

/// The waiting tasks `recorded` may decide: the task itself when it is
/// submitted with parents; a task's children when it reaches a final
/// status.
async fn children_to_resolve(
    store: &PgEventStore,
    recorded: &RecordedEvent,
) -> anyhow::Result<Vec<TaskId>> {
    let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) else {
        return Ok(Vec::new());
    };
    let Ok(event) = TaskEvent::from_recorded(recorded) else {
        // Not this follower's to judge: the projectors stop on it.
        return Ok(Vec::new());
    };
    match event {
        TaskEvent::Submitted(submitted) if !submitted.depends_on.is_empty() => Ok(vec![task_id]),
        TaskEvent::Succeeded(_)
        | TaskEvent::Failed(_)
        | TaskEvent::TimedOut(_)
        | TaskEvent::Canceled(_) => children_of(store, task_id).await,
        _ => Ok(Vec::new()),
    }
}

/// The tasks whose `TaskSubmitted` names `parent` in `depends_on`, read
/// from the log (the index of migration 22).
///
/// # Errors
/// When the database cannot be read.
pub async fn children_of(store: &PgEventStore, parent: TaskId) -> anyhow::Result<Vec<TaskId>> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT DISTINCT stream_id FROM events
             WHERE event_type = 'TaskSubmitted'
               AND tl_task_depends_on(data) @> jsonb_build_array($1::text)",
            &[&parent.0.to_string()],
        )
        .await
        .context("finding a task's children in the log")?;
    Ok(rows
        .iter()
        .filter_map(|row| TaskId::from_stream_id(row.get::<_, &str>(0)))
        .collect())
}

/// Resolves the task `task_id` if it waits: loads it and each of its
/// parents from the log and decides `ResolveDependencies` (release, cancel
/// or nothing yet). The task after it, or `None` when there is no such task
/// or it does not wait (already resolved, canceled by its owner).
///
/// The command's id is derived from the task, so a resolution repeated
/// (another follower, a redone batch, the submission and the follower at
/// once) is the same append and is stored once.
///
/// # Errors
/// When the store fails or the task kept changing; a refusal (the task was
/// resolved or canceled meanwhile) is not an error.
pub async fn resolve(
    store: &impl EventStore,
    task_id: TaskId,
    resolved_at: DateTime<Utc>,
) -> Result<Option<Task>, CommandError> {
    let loaded = load::<Tasks>(store, &task_id.stream_id()).await?;
    let Some(task) = loaded.state else {
        return Ok(None);
    };
    if task.status != TaskStatus::Waiting {
        return Ok(None);
    }
    let mut parents = Vec::with_capacity(task.depends_on.len());
    for parent in &task.depends_on {
        let status = load::<Tasks>(store, &parent.stream_id())
            .await?
            .state
            // Checked at submission; a parent that is not in the log
            // never ends, so the child waits (and can be canceled).
            .map_or(TaskStatus::Waiting, |parent| parent.status);
        parents.push((*parent, status));
    }
    let command = TaskCommand::ResolveDependencies(ResolveDependencies {
        task_id,
        parents,
        resolved_at,
    });
    match execute::<Tasks>(
        store,
        &task_id.stream_id(),
        command,
        Uuid::new_v5(&task_id.0, b"resolve-dependencies"),
        Metadata::of_actor(NAME),
    )
    .await
    {
        Ok(executed) => {
            if let Some(appended) = executed.events.first() {
                tracing::info!(task = %task_id, event = appended.event_type(), "task resolved");
            }
            Ok(executed.state)
        }
        Err(CommandError::Rejected(refusal)) => {
            tracing::debug!(task = %task_id, %refusal, "task no longer waits");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The time a resolution is recorded with, as the log stores times.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
