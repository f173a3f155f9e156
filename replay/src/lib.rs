//! Reading history for auditors: chain verification over ranges with
//! progress ([`verify`]) or resumed from an anchor ([`resume`]), and a task
//! as it was at an instant or a stream version ([`task_at`]).
//!
//! The verifier of the stored rows lives beside the storage format in
//! `taskledger_events::postgres::verify`; this crate drives it over a range
//! and reports progress for the `taskledger replay verify` command and
//! `GET /v1/audit/verify`. [`task_at`] serves `taskledger replay state` and
//! `GET /v1/tasks/{id}?as_of=…|at_version=…`, so both fold the same way.

use std::time::{Duration, Instant};

pub mod resume;

use chrono::{DateTime, Utc};
use taskledger_events::postgres::verify::{verify_range, Verification};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{self, Task, TaskEvent, TaskId};
use taskledger_events::{Direction, EventStore, StoreError};

/// Rows read per query while verifying.
pub const VERIFY_BATCH: usize = 5_000;

/// How far a verification has got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The last position checked.
    pub position: u64,
    /// The first position of the range.
    pub from: u64,
    /// The last position of the range.
    pub to: u64,
    /// Events checked per second so far.
    pub events_per_second: f64,
    /// The estimated time left.
    pub remaining: Duration,
}

impl Progress {
    /// How much of the range is done, from 0 to 1.
    pub fn fraction(&self) -> f64 {
        let total = self.to.saturating_sub(self.from) + 1;
        let done = self.position.saturating_sub(self.from) + 1;
        (done as f64 / total.max(1) as f64).min(1.0)
    }
}

/// Verifies positions `from..=to` (`to = None`: up to the head when it
/// starts): no missing position, every stream's versions consecutive, and
/// the hash chain recomputed from the stored text. Calls `progress` after
/// every batch. Stops at the first defect, which the result names.
///
/// # Errors
/// [`StoreError`] when the database fails.
pub async fn verify(
    store: &PgEventStore,
    from: u64,
    to: Option<u64>,
    mut progress: impl FnMut(Progress),
) -> Result<Verification, StoreError> {
    let from = from.max(1);
    let to = match to {
        Some(to) => to,
        None => store.head_position().await?,
    };
    let client = store.pool().get().await?;
    let began = Instant::now();
    verify_range(&client, from, Some(to), VERIFY_BATCH, |position| {
        let elapsed = began.elapsed().as_secs_f64().max(1e-6);
        let done = position.saturating_sub(from) + 1;
        let rate = done as f64 / elapsed;
        let left = to.saturating_sub(position) as f64 / rate.max(1e-6);
        progress(Progress {
            position,
            from,
            to,
            events_per_second: rate,
            remaining: Duration::from_secs_f64(left.min(1e9)),
        });
    })
    .await
}

/// Events read per query while folding a stream.
const FOLD_PAGE: usize = 1_000;

/// How far into a stream's history to fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Every event stored so far.
    Head,
    /// The events recorded at or before this instant.
    Instant(DateTime<Utc>),
    /// The events up to this stream version (inclusive).
    Version(u64),
}

/// A task as it was at some point of its history.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAt {
    /// The task folded from its events up to that point.
    pub task: Task,
    /// The version of the last event folded.
    pub version: u64,
    /// The global position of the last event folded.
    pub position: u64,
}

/// Why [`task_at`] has no task to show.
#[derive(Debug, thiserror::Error)]
pub enum TaskAtError {
    /// The task's stream holds no event.
    #[error("task {0} does not exist")]
    NoSuchTask(TaskId),
    /// The task's first event came after the point asked for.
    #[error("task {task_id} did not exist yet {point}")]
    NotYet {
        /// The task.
        task_id: TaskId,
        /// The point asked for, in words (`at 2026-…`, `at version 0`).
        point: String,
    },
    /// The version asked for is beyond the stream's newest event.
    #[error("version {asked} is beyond task {task_id}, which is at version {version}")]
    BeyondStream {
        /// The task.
        task_id: TaskId,
        /// The version asked for.
        asked: u64,
        /// The stream's version.
        version: u64,
    },
    /// A stored event is not a task event this code can read.
    #[error("task {task_id} version {version} cannot be read: {reason}")]
    Unreadable {
        /// The task.
        task_id: TaskId,
        /// The event's version.
        version: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Folds task `task_id`'s events from the log (never a read model) up to
/// `until`: events recorded at or before an instant, or up to a stream
/// version. Reads the stream a page at a time and stops at the first event
/// past the point.
///
/// # Errors
/// [`TaskAtError::NoSuchTask`] for a stream without events,
/// [`TaskAtError::NotYet`] when the task's first event is past the point,
/// [`TaskAtError::BeyondStream`] for a version the stream has not reached,
/// [`TaskAtError::Unreadable`] for an event that is not a task's, and
/// [`TaskAtError::Store`] when the database fails.
pub async fn task_at(
    store: &impl EventStore,
    task_id: TaskId,
    until: Until,
) -> Result<TaskAt, TaskAtError> {
    let stream_id = task_id.stream_id();
    let past = |recorded: &taskledger_events::RecordedEvent| match until {
        Until::Head => false,
        Until::Instant(instant) => recorded.recorded_at > instant,
        Until::Version(version) => recorded.version > version,
    };
    let mut state: task::TaskState = None;
    let mut version = 0;
    let mut position = 0;
    let mut stopped = false;
    while !stopped {
        let page = store
            .read_stream(&stream_id, version + 1, Direction::Forward, FOLD_PAGE)
            .await?;
        if page.is_empty() && version == 0 {
            return Err(TaskAtError::NoSuchTask(task_id));
        }
        stopped = page.len() < FOLD_PAGE;
        for recorded in &page {
            if past(recorded) {
                stopped = true;
                break;
            }
            let event =
                TaskEvent::from_recorded(recorded).map_err(|error| TaskAtError::Unreadable {
                    task_id,
                    version: recorded.version,
                    reason: error.to_string(),
                })?;
            state = task::apply(state, &event);
            version = recorded.version;
            position = recorded.global_position;
        }
    }
    if let Until::Version(asked) = until {
        if asked > version {
            return Err(TaskAtError::BeyondStream {
                task_id,
                asked,
                version,
            });
        }
    }
    let Some(task) = state else {
        let point = match until {
            Until::Head => "at its head".to_owned(),
            Until::Instant(instant) => format!("at {}", instant.to_rfc3339()),
            Until::Version(asked) => format!("at version {asked}"),
        };
        return Err(TaskAtError::NotYet { task_id, point });
    };
    Ok(TaskAt {
        task,
        version,
        position,
    })
}
