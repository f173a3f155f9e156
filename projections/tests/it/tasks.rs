//! The `tasks` projector: rows follow a task's life as the aggregate folds
//! it, and a rebuild from scratch gives the same rows.

use std::time::Duration;

use serde_json::json;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{
    Artifact, TaskCanceled, TaskEvent, TaskFailed, TaskId, TaskRetried, TaskStarted, TaskSubmitted,
    TaskSucceeded,
};
use taskledger_events::{EventStore, ExpectedVersion};
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::tasks::TasksProjector;
use taskledger_projections::ProjectorRuntime;

use crate::helpers::{at, column, database, quick_retries, reset, row, scalar};

fn submitted(task_id: TaskId, frontend: &str) -> TaskEvent {
    TaskEvent::Submitted(TaskSubmitted {
        inputs: Default::default(),
        task_id,
        kind: "batch".into(),
        params: json!({ "script": "echo hi" }).as_object().unwrap().clone(),
        tenant: taskledger_events::tenant::TenantName::default_tenant(),
        frontend_id: frontend.into(),
        client_task_id: Some("client-1".into()),
        priority: 5,
        timeout_seconds: 60,
        max_attempts: 2,
        submitted_at: at(0),
        submitted_by: Some("key-1".into()),
        depends_on: Vec::new(),
        on_parent_failure: Default::default(),
    })
}

fn started(worker_id: &str, attempt: u32, second: u32) -> TaskEvent {
    TaskEvent::Started(TaskStarted {
        worker_id: worker_id.into(),
        attempt,
        started_at: at(second),
    })
}

fn succeeded(attempt: u32, artifacts: Vec<Artifact>, second: u32) -> TaskEvent {
    TaskEvent::Succeeded(TaskSucceeded {
        attempt,
        result: json!({ "verdict": "clean" }).as_object().unwrap().clone(),
        exit_code: 0,
        artifacts,
        finished_at: at(second),
    })
}

/// Attempt `attempt` failed with exit code 3.
fn attempt_failed(attempt: u32, second: u32) -> TaskEvent {
    TaskEvent::Failed(TaskFailed {
        artifacts: Default::default(),
        attempt,
        error: "exit 3".into(),
        exit_code: Some(3),
        failed_at: at(second),
    })
}

async fn record(store: &PgEventStore, task_id: TaskId, events: &[TaskEvent]) {
    crate::helpers::record(store, &task_id.stream_id(), ExpectedVersion::Any, events).await;
}

/// A task's row: status, attempts, worker, error, exit code, stream version.
type TaskRow = (
    String,
    i32,
    Option<String>,
    Option<String>,
    Option<i32>,
    i64,
);

/// The one row `sql` answers for the task `task_id` (its `$1`).
async fn row_of(
    client: &tokio_postgres::Client,
    sql: &str,
    task_id: TaskId,
) -> tokio_postgres::Row {
    client
        .query_one(sql, &[&task_id.0])
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

async fn task_row(client: &tokio_postgres::Client, task_id: TaskId) -> TaskRow {
    let sql = "SELECT status, attempts, worker_id, error, exit_code, stream_version FROM tasks WHERE task_id = $1";
    let row = row_of(client, sql, task_id).await;
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    )
}

async fn rows(client: &tokio_postgres::Client) -> Vec<String> {
    let sql = "SELECT row_to_json(t)::text FROM (SELECT * FROM tasks ORDER BY task_id) t
               UNION ALL
               SELECT row_to_json(r)::text FROM (SELECT * FROM results ORDER BY task_id) r";
    column(client, sql).await
}

async fn run_until(
    store: &PgEventStore,
    client: &tokio_postgres::Client,
    head: u64,
    batch_size: usize,
) {
    let options = RuntimeOptions {
        batch_size,
        ..quick_retries()
    };
    let runtime = ProjectorRuntime::new(store.clone(), TasksProjector, options);
    crate::helpers::run_until(runtime, client, head).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_for_its_retry_shows_when_it_is_due_until_it_starts() {
    let (store, _database, client) = database().await;
    let waiting = TaskId(uuid::Uuid::new_v4());
    let retried = TaskEvent::Retried(TaskRetried {
        attempt: 1,
        reason: "exit 75".into(),
        exit_code: Some(75),
        retried_at: at(2),
        next_attempt_at: Some(at(30)),
    });
    record(
        &store,
        waiting,
        &[
            submitted(waiting, "frontend-a"),
            started("w1", 1, 1),
            retried,
        ],
    )
    .await;
    let select = "SELECT next_attempt_at FROM tasks WHERE task_id = $1";
    let due = |row: tokio_postgres::Row| row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0);
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head, 1).await;
    assert_eq!(due(row_of(&client, select, waiting).await), Some(at(30)));

    record(&store, waiting, &[started("w2", 2, 31)]).await;
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head, 1).await;
    assert_eq!(due(row_of(&client, select, waiting).await), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_slurm_job_waits_shows_queued_with_the_job_then_running() {
    use taskledger_events::task::{TaskJobRunning, TaskJobSubmitted};
    let (store, _database, client) = database().await;
    let task = TaskId(uuid::Uuid::new_v4());
    record(
        &store,
        task,
        &[
            submitted(task, "frontend-a"),
            started("w1", 1, 1),
            TaskEvent::JobSubmitted(TaskJobSubmitted {
                attempt: 1,
                executor: "slurm".into(),
                job_id: "4711".into(),
                submitted_at: at(2),
            }),
        ],
    )
    .await;
    let select = "SELECT status, executor, executor_job_id, executor_running_at
                  FROM tasks WHERE task_id = $1";
    let shown = |row: tokio_postgres::Row| {
        (
            row.get::<_, String>(0),
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<String>>(2),
            row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(3),
        )
    };
    let slurm = Some("slurm".to_owned());
    let job = Some("4711".to_owned());
    // One event per batch: each later event is folded into the task the
    // row reads back as.
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head, 1).await;
    assert_eq!(
        shown(row_of(&client, select, task).await),
        ("queued".into(), slurm.clone(), job.clone(), None)
    );
    record(
        &store,
        task,
        &[TaskEvent::JobRunning(TaskJobRunning {
            attempt: 1,
            job_id: "4711".into(),
            running_at: at(3),
        })],
    )
    .await;
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head, 1).await;
    assert_eq!(
        shown(row_of(&client, select, task).await),
        ("running".into(), slurm.clone(), job.clone(), Some(at(3)))
    );
    record(&store, task, &[succeeded(1, Vec::new(), 4)]).await;
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head, 1).await;
    assert_eq!(
        shown(row_of(&client, select, task).await),
        ("succeeded".into(), slurm, job, Some(at(3)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_rows_follow_the_lifecycle_and_a_rebuild_gives_the_same_rows() {
    let (store, database, client) = database().await;

    let done = TaskId(uuid::Uuid::new_v4());
    let artifact = Artifact {
        name: "report.json".into(),
        size: 12,
        sha256: "a".repeat(64),
        media_type: "application/json".into(),
    };
    record(
        &store,
        done,
        &[
            submitted(done, "frontend-a"),
            started("w1", 1, 1),
            TaskEvent::Retried(TaskRetried {
                attempt: 1,
                reason: "runner died".into(),
                exit_code: None,
                retried_at: at(2),
                next_attempt_at: None,
            }),
            started("w2", 2, 3),
            succeeded(2, vec![artifact], 4),
        ],
    )
    .await;
    let failed = TaskId(uuid::Uuid::new_v4());
    record(
        &store,
        failed,
        &[
            submitted(failed, "frontend-b"),
            started("w1", 1, 5),
            attempt_failed(1, 6),
        ],
    )
    .await;
    let canceled = TaskId(uuid::Uuid::new_v4());
    record(
        &store,
        canceled,
        &[
            submitted(canceled, "frontend-a"),
            TaskEvent::Canceled(TaskCanceled {
                reason: None,
                canceled_at: at(7),
                was_running: false,
            }),
        ],
    )
    .await;
    let queued = TaskId(uuid::Uuid::new_v4());
    record(&store, queued, &[submitted(queued, "frontend-c")]).await;
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head, 1).await;

    assert_eq!(
        task_row(&client, done).await,
        ("succeeded".into(), 2, Some("w2".into()), None, Some(0), 5)
    );
    assert_eq!(
        task_row(&client, failed).await,
        (
            "failed".into(),
            1,
            Some("w1".into()),
            Some("exit 3".into()),
            Some(3),
            3
        )
    );
    assert_eq!(
        task_row(&client, canceled).await,
        ("canceled".into(), 0, None, Some("canceled".into()), None, 2)
    );
    assert_eq!(
        task_row(&client, queued).await,
        ("queued".into(), 0, None, None, None, 1)
    );
    let sql = "SELECT result, exit_code, artifacts FROM results WHERE task_id = $1";
    let result = row_of(&client, sql, done).await;
    assert_eq!(
        result.get::<_, serde_json::Value>(0),
        json!({ "verdict": "clean" })
    );
    assert_eq!(
        result.get::<_, serde_json::Value>(2)[0]["name"],
        "report.json"
    );
    assert_eq!(
        scalar::<i64>(
            &client,
            "SELECT count(*) FROM results WHERE status = 'succeeded'"
        )
        .await,
        1
    );
    // A failed task has a row too (its logs, no result document).
    let failed = row(
        &client,
        "SELECT count(*), bool_and(result = '{}'::jsonb) FROM results WHERE status = 'failed'",
    )
    .await;
    assert_eq!(
        (failed.get::<_, i64>(0), failed.get::<_, Option<bool>>(1)),
        (1, Some(true))
    );

    // Rebuilt from scratch, the projection is the same, row for row.
    let live = rows(&client).await;
    reset(&client, "tasks", "tasks, results").await;
    run_until(&store, &client, head, 500).await;
    // One event per batch (above) and everything in one batch (here, where
    // each row is folded in memory from several events) give the same rows.
    assert_eq!(rows(&client).await, live);
    drop(client);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_submission_of_a_task_in_a_later_batch_stops_the_projector() {
    let (store, database, client) = database().await;
    let task = TaskId(uuid::Uuid::new_v4());
    record(&store, task, &[submitted(task, "frontend-a")]).await;
    let runtime = ProjectorRuntime::new(store.clone(), TasksProjector, RuntimeOptions::default());
    assert_eq!(runtime.catch_up(Duration::from_secs(20)).await.unwrap(), 1);
    // The log says it twice (it cannot through the aggregate): the
    // projection must stop at the event, not overwrite the row.
    record(&store, task, &[submitted(task, "frontend-b")]).await;
    let error = runtime
        .catch_up(Duration::from_secs(20))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("already in the projection"), "{error}");
    let sql = "SELECT frontend_id FROM tasks WHERE task_id = $1";
    let frontend: String = row_of(&client, sql, task).await.get(0);
    assert_eq!(frontend, "frontend-a");
    drop(client);
    database.drop_database().await;
}

/// The projector folds with the aggregate's own `apply`: an event that does
/// not fit its task (one only a hand-written log holds) changes nothing but
/// the row's version, exactly as the task folded from the log (what
/// `as_of` reads and command answers show) ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_does_not_fit_its_task_changes_only_the_version() {
    let (store, database, client) = database().await;
    let task = TaskId(uuid::Uuid::new_v4());
    let history = [
        submitted(task, "frontend-a"),
        started("w1", 1, 1),
        succeeded(1, Vec::new(), 2),
        // Neither fits a succeeded task.
        started("w2", 2, 3),
        attempt_failed(2, 4),
    ];
    record(&store, task, &history).await;
    let head = store.head_position().await.unwrap();
    // One event per batch: each later event meets the task read back from
    // its row.
    run_until(&store, &client, head, 1).await;
    let folded = taskledger_events::task::fold(&history).unwrap();
    let (status, attempts, worker_id, error, exit_code, stream_version) =
        task_row(&client, task).await;
    let sql = "SELECT count(*) FROM results WHERE task_id = $1";
    let results: i64 = row_of(&client, sql, task).await.get(0);
    assert_eq!(
        (
            status,
            attempts,
            worker_id,
            error,
            exit_code,
            stream_version,
            results
        ),
        (
            folded.status.as_str().to_owned(),
            1,
            folded.shown_worker_id().map(str::to_owned),
            folded.shown_error(),
            folded.exit_code,
            5,
            1
        )
    );
    assert_eq!(folded.shown_worker_id(), Some("w1"));
    drop(client);
    database.drop_database().await;
}

/// The indexes of `tasks` and `results`: name, definition and whether the
/// planner may use them.
async fn indexes(client: &tokio_postgres::Client) -> Vec<String> {
    let sql =
        "SELECT format('%s %s valid=%s', c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid)
                 FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_class t ON t.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                WHERE n.nspname = 'public' AND t.relname IN ('tasks', 'results')
                ORDER BY c.relname";
    column(client, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_builds_the_indexes_it_deferred_and_the_same_rows() {
    use taskledger_projections::rebuild::{rebuild, RebuildOptions};

    let (store, database, client) = database().await;
    for n in 0..30 {
        let task_id = TaskId(uuid::Uuid::new_v4());
        let mut events = vec![submitted(task_id, &format!("frontend-{}", n % 3))];
        if n % 2 == 0 {
            events.push(started("worker-1", 1, 1));
            events.push(succeeded(1, Vec::new(), 2));
        }
        record(&store, task_id, &events).await;
    }
    let head = store.head_position().await.unwrap();
    run_until(&store, &client, head, 7).await;
    let (live_indexes, live_rows) = (indexes(&client).await, rows(&client).await);
    assert!(
        live_indexes
            .iter()
            .any(|index| index.starts_with("tasks_by_status ")),
        "the live table has its secondary indexes: {live_indexes:?}"
    );

    let options = RebuildOptions {
        batch_size: 7,
        ..RebuildOptions::default()
    };
    rebuild(&store, &TasksProjector, &options, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        indexes(&client).await,
        live_indexes,
        "the rebuilt tables have every index the live ones had, each valid"
    );
    assert_eq!(rows(&client).await, live_rows);
    database.drop_database().await;
}
