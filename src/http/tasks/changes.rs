//! Task status changes, followed along the global order for
//! `GET /v1/tasks/stream` ([`super::stream`]): which events of the log
//! change a task's status, and whether the caller may hear of them.
//!
//! Each task is folded with the aggregate's own [`apply`], so a status is
//! exactly the one `GET /v1/tasks/{id}` shows after that event, and an
//! event that changes no status (progress) is no change. A task first met
//! past its submission (the stream began after it) is folded from its
//! stream in the log up to the version before, so the change an event makes
//! is the same whenever it is computed: a stream resumed at any position
//! gives exactly what an unbroken one would have given after it.
//!
//! Whom a task is shown to is decided from its `TaskSubmitted` (tenant,
//! frontend, kind), fields no later event changes: a task outside the
//! filter is remembered as hidden and its events are not even decoded.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{apply, fold, DecodeError, Task, TaskEvent, TaskId};
use taskledger_events::{Direction, EventStore, RecordedEvent, StoreError};
use utoipa::ToSchema;
use uuid::Uuid;

use super::views::Status;

/// The most tasks one stream remembers; past it, it forgets them all and
/// refolds from the log those it meets again (a miss costs a read, never a
/// different answer).
const REMEMBERED_TASKS: usize = 50_000;

/// One change of a task's status: the `data` of a `task` event of
/// `GET /v1/tasks/stream`. It carries only the caller's own task's fields
/// (and the event's place in the log), nothing of anything else.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskChangeView {
    /// The event's position in the global order: also the SSE `id`, which a
    /// reconnecting client sends back as `Last-Event-ID`, and a
    /// `min_position` for `GET /v1/tasks` to read the change.
    pub position: u64,
    /// The task.
    pub task_id: Uuid,
    /// The task's stream version after the change: a `min_version` for
    /// `GET /v1/tasks/{id}` to read it.
    pub stream_version: u64,
    /// The status it changed to.
    pub status: Status,
    /// Attempts started so far (0 while its first waits); while running,
    /// the current attempt.
    pub attempt: u32,
    /// The event that changed it (`TaskSubmitted`, `TaskStarted`,
    /// `TaskSucceeded`, ...).
    #[schema(example = "TaskSucceeded")]
    pub event_type: String,
    /// Its kind.
    pub kind: String,
    /// Its tenant (a tenant key's own).
    #[schema(example = "acme")]
    pub tenant: String,
    /// The frontend that submitted it.
    pub frontend_id: String,
    /// The frontend's own id for it.
    pub client_task_id: Option<String>,
    /// Why it failed, timed out or was canceled, or why its last attempt
    /// was retried (as `GET /v1/tasks/{id}` shows it).
    pub error: Option<String>,
    /// When the log recorded the change.
    pub recorded_at: DateTime<Utc>,
}

/// Which tasks a stream shows: every filter must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChangeFilter {
    /// Only tasks of each of these tenants (a tenant key's own, and the one
    /// asked for); none: every tenant's.
    pub(crate) tenants: Vec<String>,
    /// Only this frontend's tasks.
    pub(crate) frontend_id: Option<String>,
    /// Only tasks of this kind.
    pub(crate) kind: Option<String>,
}

impl ChangeFilter {
    fn admits(&self, task: &Task) -> bool {
        self.tenants
            .iter()
            .all(|tenant| tenant == task.tenant.as_str())
            && self
                .frontend_id
                .as_ref()
                .is_none_or(|frontend| *frontend == task.frontend_id)
            && self.kind.as_ref().is_none_or(|kind| *kind == task.kind)
    }
}

/// Why a stream of changes cannot go on: it ends there (an event is never
/// skipped), and the client's reconnect meets the same event again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChangeError {
    /// A task's history could not be read.
    #[error("reading task {task_id}'s history")]
    Store {
        /// The task.
        task_id: TaskId,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// An event of a task is not one the service can read.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// What a stream knows of a task.
#[derive(Debug)]
enum Known {
    /// Outside the stream's filter, for good.
    Hidden,
    /// Shown, as of the last event met (its parameters dropped: the fold
    /// never reads them).
    Shown(Box<Task>),
}

/// One stream's follower: the tasks it has met, by id.
#[derive(Debug)]
pub(crate) struct TaskChanges {
    store: PgEventStore,
    filter: ChangeFilter,
    known: HashMap<TaskId, Known>,
}

impl TaskChanges {
    /// A follower of the tasks `filter` admits, folding from `store`.
    pub(crate) fn new(store: PgEventStore, filter: ChangeFilter) -> Self {
        Self {
            store,
            filter,
            known: HashMap::new(),
        }
    }

    /// The change `recorded` (the next event of the global order) makes to
    /// a task the filter admits; `None` for any other event (not a task's,
    /// a task outside the filter, or no change of status).
    ///
    /// # Errors
    /// When the task's history cannot be read, or an event of it decoded.
    pub(crate) async fn change(
        &mut self,
        recorded: &RecordedEvent,
    ) -> Result<Option<TaskChangeView>, ChangeError> {
        let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) else {
            return Ok(None);
        };
        let before = match self.known.remove(&task_id) {
            Some(Known::Hidden) => {
                self.known.insert(task_id, Known::Hidden);
                return Ok(None);
            }
            Some(Known::Shown(task)) => Some(*task),
            None if recorded.version <= 1 => None,
            None => match self.history(task_id, recorded.version).await? {
                Known::Hidden => {
                    self.remember(task_id, Known::Hidden);
                    return Ok(None);
                }
                Known::Shown(task) => Some(*task),
            },
        };
        let event = TaskEvent::from_recorded(recorded)?;
        // The status readers are shown (a Slurm job waiting in its queue is
        // `queued`), so its start is a change too.
        let before_status = before.as_ref().map(Task::shown_status);
        let Some(mut task) = apply(before, &event) else {
            return Ok(None);
        };
        if !self.filter.admits(&task) {
            self.remember(task_id, Known::Hidden);
            return Ok(None);
        }
        let change = (before_status != Some(task.shown_status())).then(|| TaskChangeView {
            position: recorded.global_position,
            task_id: task_id.0,
            stream_version: recorded.version,
            status: task.shown_status().into(),
            attempt: task.attempts_started,
            event_type: recorded.event_type.clone(),
            kind: task.kind.clone(),
            tenant: task.tenant.as_str().to_owned(),
            frontend_id: task.frontend_id.clone(),
            client_task_id: task.client_task_id.clone(),
            error: task.shown_error(),
            recorded_at: recorded.recorded_at,
        });
        // A final task takes no more events (any that came would change
        // nothing); forgetting it keeps only live tasks in memory.
        if !task.status.is_final() {
            task.params.clear();
            task.inputs.clear();
            self.remember(task_id, Known::Shown(Box::new(task)));
        }
        Ok(change)
    }

    /// Task `task_id` as its events before `version` leave it, read from
    /// the log: its submission first, the rest only if the filter admits
    /// it.
    async fn history(&self, task_id: TaskId, version: u64) -> Result<Known, ChangeError> {
        let stream_id = task_id.stream_id();
        let read = |from: u64, count: u64| {
            let stream_id = stream_id.clone();
            async move {
                self.store
                    .read_stream(
                        &stream_id,
                        from,
                        Direction::Forward,
                        usize::try_from(count).unwrap_or(usize::MAX),
                    )
                    .await
                    .map_err(|source| ChangeError::Store { task_id, source })
            }
        };
        let mut events = decode(&read(1, 1).await?)?;
        let admitted = fold(&events)
            .as_ref()
            .is_some_and(|task| self.filter.admits(task));
        if !admitted {
            return Ok(Known::Hidden);
        }
        if version > 2 {
            events.extend(decode(&read(2, version - 2).await?)?);
        }
        Ok(fold(&events).map_or(Known::Hidden, |task| Known::Shown(Box::new(task))))
    }

    fn remember(&mut self, task_id: TaskId, known: Known) {
        if self.known.len() >= REMEMBERED_TASKS {
            self.known.clear();
        }
        self.known.insert(task_id, known);
    }
}

fn decode(events: &[RecordedEvent]) -> Result<Vec<TaskEvent>, DecodeError> {
    events.iter().map(TaskEvent::from_recorded).collect()
}
