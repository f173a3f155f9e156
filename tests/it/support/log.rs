//! The log as tests read and write it directly: a task's events and state,
//! a command executed on a task as the service would, waiting for tasks
//! to reach a state, and filling the log with events no projector cares
//! about (verification ranges, resumed checks).

use std::time::Duration;

use serde_json::json;
use taskledger::commands::execute;
use taskledger_events::command::load;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{Task, TaskCommand, TaskEvent, TaskId, Tasks};
use taskledger_events::{
    Direction, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamId,
};
use uuid::Uuid;

use crate::support::poll::eventually;

/// The event types that end a task.
pub(crate) const FINAL_EVENT_TYPES: &[&str] = &[
    "TaskSucceeded",
    "TaskFailed",
    "TaskTimedOut",
    "TaskCanceled",
];

/// How many of the event types `history` holds end a task.
pub(crate) fn terminal_events(history: &[String]) -> usize {
    history
        .iter()
        .filter(|event| FINAL_EVENT_TYPES.contains(&event.as_str()))
        .count()
}

/// The events of task `task_id`'s stream (up to 1000), in order.
pub(crate) async fn task_history(store: &PgEventStore, task_id: TaskId) -> Vec<RecordedEvent> {
    store
        .read_stream(&task_id.stream_id(), 1, Direction::Forward, 1000)
        .await
        .unwrap()
}

/// [`task_history`], decoded.
pub(crate) async fn task_events(store: &PgEventStore, task_id: TaskId) -> Vec<TaskEvent> {
    task_history(store, task_id)
        .await
        .iter()
        .map(|recorded| TaskEvent::from_recorded(recorded).unwrap())
        .collect()
}

/// The task `task_id` folded from the log; panics if it does not exist.
pub(crate) async fn task_state(store: &PgEventStore, task_id: TaskId) -> Task {
    load::<Tasks>(store, &task_id.stream_id())
        .await
        .unwrap()
        .state
        .unwrap()
}

/// Executes `command` on task `task_id` with no actor; panics if it is
/// refused.
pub(crate) async fn execute_on_task(store: &PgEventStore, task_id: TaskId, command: TaskCommand) {
    execute::<Tasks>(
        store,
        &task_id.stream_id(),
        command,
        Uuid::new_v4(),
        Metadata::default(),
    )
    .await
    .unwrap();
}

/// Waits up to `within`, folding each of `tasks` from the log every
/// `every`, until `ready` holds for all of them; `not_ready` says what a
/// task that is not is instead (the message if time runs out).
pub(crate) async fn wait_for_tasks(
    store: &PgEventStore,
    tasks: &[TaskId],
    within: Duration,
    every: Duration,
    ready: impl Fn(&Task) -> bool,
    not_ready: impl Fn(TaskId, &Task) -> String,
) {
    eventually(within, every, || async {
        for task_id in tasks {
            let task = task_state(store, *task_id).await;
            if !ready(&task) {
                return Err(not_ready(*task_id, &task));
            }
        }
        Ok(())
    })
    .await;
}

/// Appends `count` events, each on a stream of its own.
pub(crate) async fn append_unrelated(store: &PgEventStore, count: u64) {
    for _ in 0..count {
        let stream = StreamId::new(format!("more-{}", Uuid::new_v4())).unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Added", json!({ "more": true }))],
            )
            .await
            .unwrap();
    }
}
