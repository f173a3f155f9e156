//! Command handling against the real store: load, decide, append, retry on
//! conflict, refuse with the aggregate's message.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;
use taskledger_events::command::{execute, execute_known, load, CommandError, Executed, Loaded};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::task::{
    CompleteTask, StartTask, SubmitTask, TaskCommand, TaskEvent, TaskId, TaskStatus, Tasks,
};
use taskledger_events::testing::TestDatabase;
use taskledger_events::{
    AppendError, AppendResult, Direction, EventStore, ExpectedVersion, Metadata, NewEvent,
    RecordedEvent, RefusalKind, StoreError, StreamId, Subscription,
};
use uuid::Uuid;

/// Runs `command` as a new command: a fresh command id, no metadata.
async fn run(
    store: &impl EventStore,
    stream: &StreamId,
    command: TaskCommand,
) -> Result<Executed<Tasks>, CommandError> {
    execute::<Tasks>(store, stream, command, Uuid::new_v4(), Metadata::default()).await
}

fn submit(task_id: TaskId) -> TaskCommand {
    TaskCommand::Submit(SubmitTask {
        inputs: Default::default(),
        task_id,
        kind: "batch".into(),
        params: json!({ "script": "true" }).as_object().unwrap().clone(),
        tenant: taskledger_events::tenant::TenantName::default_tenant(),
        frontend_id: "frontend-1".into(),
        client_task_id: None,
        priority: 0,
        timeout_seconds: 30,
        max_attempts: 2,
        submitted_at: Utc::now(),
        submitted_by: Some("key-1".into()),
        depends_on: Vec::new(),
        on_parent_failure: Default::default(),
    })
}

fn start(task_id: TaskId, worker: &str) -> TaskCommand {
    TaskCommand::Start(StartTask {
        task_id,
        worker_id: worker.into(),
        attempt: 1,
        started_at: Utc::now(),
    })
}

/// The first attempt of `task_id` succeeded.
fn complete(task_id: TaskId) -> TaskCommand {
    TaskCommand::Complete(CompleteTask {
        task_id,
        attempt: 1,
        result: json!({ "ok": true }).as_object().unwrap().clone(),
        exit_code: 0,
        artifacts: vec![],
        finished_at: Utc::now(),
    })
}

async fn store() -> (PgEventStore, TestDatabase) {
    let database = TestDatabase::create().await;
    (
        PgEventStore::connect(&database.url, StoreOptions::default()).unwrap(),
        database,
    )
}

#[tokio::test]
async fn a_task_moves_through_its_life_and_illegal_moves_are_refused() {
    let (store, database) = store().await;
    let task_id = TaskId(Uuid::new_v4());
    let stream = task_id.stream_id();
    let submitted = run(&store, &stream, submit(task_id)).await.unwrap();
    assert_eq!(submitted.stream_version, 1);
    assert!(matches!(submitted.events[..], [TaskEvent::Submitted(_)]));
    execute::<Tasks>(
        &store,
        &stream,
        start(task_id, "w1"),
        Uuid::new_v4(),
        Metadata::default(),
    )
    .await
    .unwrap();
    let done = run(&store, &stream, complete(task_id)).await.unwrap();
    assert_eq!(done.stream_version, 3);
    assert_eq!(done.state.as_ref().unwrap().status, TaskStatus::Succeeded);

    let cancel = TaskCommand::Cancel(taskledger_events::task::CancelTask {
        task_id,
        reason: None,
        canceled_at: Utc::now(),
    });
    let error = run(&store, &stream, cancel).await.unwrap_err();
    match error {
        CommandError::Rejected(error) => {
            assert_eq!(error.kind(), RefusalKind::InvalidTransition);
            assert!(
                error
                    .to_string()
                    .contains("is already succeeded; it cannot be canceled"),
                "{error}"
            );
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let loaded = load::<Tasks>(&store, &stream).await.unwrap();
    let (state, version) = (loaded.state, loaded.version);
    assert_eq!((state.unwrap().status, version), (TaskStatus::Succeeded, 3));
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_eight_runners_claiming_one_task_exactly_one_wins() {
    let (store, database) = store().await;
    let task_id = TaskId(Uuid::new_v4());
    let stream = task_id.stream_id();
    run(&store, &stream, submit(task_id)).await.unwrap();
    let claims = (0..8).map(|n| {
        let store = store.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            execute::<Tasks>(
                &store,
                &stream,
                start(task_id, &format!("w{n}")),
                Uuid::new_v4(),
                Metadata::default(),
            )
            .await
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes.iter().filter(|outcome| outcome.is_ok()).count(), 1);
    for outcome in outcomes.iter().filter(|outcome| outcome.is_err()) {
        match outcome {
            Err(CommandError::Rejected(error)) => {
                assert!(error.to_string().contains("running"), "{error}")
            }
            Err(other) => panic!("a losing runner should be refused, not {other}"),
            Ok(_) => unreachable!(),
        }
    }
    let version = load::<Tasks>(&store, &stream).await.unwrap().version;
    assert_eq!(version, 2, "one TaskStarted");
    database.drop_database().await;
}

/// The real store, with version conflicts injected into the first appends.
struct Conflicting {
    inner: PgEventStore,
    conflicts_left: AtomicU32,
}

#[async_trait]
impl EventStore for Conflicting {
    async fn append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        let left = self.conflicts_left.load(Ordering::SeqCst);
        if left > 0 {
            self.conflicts_left.store(left - 1, Ordering::SeqCst);
            return Err(AppendError::WrongExpectedVersion {
                stream_id: stream_id.to_string(),
                expected,
                actual: 99,
            });
        }
        self.inner.append(stream_id, expected, events).await
    }
    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner
            .read_stream(stream_id, from_version, direction, limit)
            .await
    }
    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after_position, limit).await
    }
    fn subscribe_all(&self, after_position: u64) -> Subscription {
        self.inner.subscribe_all(after_position)
    }
    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }
}

#[tokio::test]
async fn conflicts_are_retried_a_bounded_number_of_times() {
    let (inner, database) = store().await;
    let store = Conflicting {
        inner,
        conflicts_left: AtomicU32::new(3),
    };
    let task_id = TaskId(Uuid::new_v4());
    let done = run(&store, &task_id.stream_id(), submit(task_id))
        .await
        .unwrap();
    assert_eq!(done.stream_version, 1, "succeeds on the fourth attempt");

    store.conflicts_left.store(100, Ordering::SeqCst);
    let other = TaskId(Uuid::new_v4());
    let error = run(&store, &other.stream_id(), submit(other))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommandError::Conflict { attempts: 4, .. }),
        "{error}"
    );
    assert!(
        load::<Tasks>(&store, &other.stream_id())
            .await
            .unwrap()
            .state
            .is_none(),
        "nothing written"
    );
    database.drop_database().await;
}

#[tokio::test]
async fn a_retried_command_is_not_applied_twice() {
    let (store, database) = store().await;
    let task_id = TaskId(Uuid::new_v4());
    let stream = task_id.stream_id();
    let command_id = Uuid::new_v4();
    execute::<Tasks>(
        &store,
        &stream,
        submit(task_id),
        command_id,
        Metadata::default(),
    )
    .await
    .unwrap();
    // The same command again (its first answer was lost): refused, and
    // nothing new is stored.
    let again = execute::<Tasks>(
        &store,
        &stream,
        submit(task_id),
        command_id,
        Metadata::default(),
    )
    .await;
    assert!(
        matches!(again, Err(CommandError::Rejected(ref error)) if error.kind() == RefusalKind::AlreadyExists)
    );
    assert_eq!(store.head_position().await.unwrap(), 1);
    let stored = store
        .read_stream(&stream, 1, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(stored[0].metadata.command_id, Some(command_id));
    database.drop_database().await;
}

/// `execute_known` decides on the stream its caller last left, and when
/// another writer changed it since, decides again on the stream as it is:
/// an acceptance on the stale state appends nothing, and a refusal on it is
/// not the answer.
#[tokio::test]
async fn a_command_on_a_known_stream_is_decided_again_when_the_stream_changed() {
    let (store, database) = store().await;
    let known_run = |known: Executed<Tasks>, command: TaskCommand| {
        let store = store.clone();
        async move {
            let stream = known
                .state
                .as_ref()
                .map(|task| task.id.stream_id())
                .unwrap();
            execute_known::<Tasks>(
                &store,
                &stream,
                Some(Loaded::after(known)),
                command,
                Uuid::new_v4(),
                Metadata::default(),
                &(),
            )
            .await
        }
    };
    // Nobody else wrote: appended at the next version.
    let task_id = TaskId(Uuid::new_v4());
    let submitted = run(&store, &task_id.stream_id(), submit(task_id))
        .await
        .unwrap();
    let started = known_run(submitted, start(task_id, "w1")).await.unwrap();
    assert_eq!(started.stream_version, 2);

    // Started by another writer: w2's start, accepted on the stale state,
    // is refused on the stream as it is and appends nothing.
    let task_id = TaskId(Uuid::new_v4());
    let stream = task_id.stream_id();
    let submitted = run(&store, &stream, submit(task_id)).await.unwrap();
    run(&store, &stream, start(task_id, "w1")).await.unwrap();
    let late = known_run(submitted, start(task_id, "w2")).await;
    assert!(matches!(late, Err(CommandError::Rejected(_))), "{late:?}");
    let loaded = load::<Tasks>(&store, &stream).await.unwrap();
    assert_eq!(loaded.version, 2, "the stale start appended nothing");

    // Refused on the stale state (a queued task cannot complete), accepted
    // on the stream as it is (started meanwhile).
    let task_id = TaskId(Uuid::new_v4());
    let stream = task_id.stream_id();
    let submitted = run(&store, &stream, submit(task_id)).await.unwrap();
    run(&store, &stream, start(task_id, "w1")).await.unwrap();
    let done = known_run(submitted, complete(task_id)).await.unwrap();
    assert_eq!(done.stream_version, 3);
    assert_eq!(done.state.unwrap().status, TaskStatus::Succeeded);
    database.drop_database().await;
}
