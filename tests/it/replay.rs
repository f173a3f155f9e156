//! `taskledger replay verify` on real PostgreSQL, with rows tampered with
//! directly in the database: the verdict names the exact first bad sequence.

use std::process::{Command, Output};

use serde_json::json;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::task::{TaskCommand, TaskId};
use taskledger_events::testing::TestDatabase;
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};

use crate::helpers::{complete_first_attempt, start_first_attempt};
use crate::support::cli::{stdout, taskledger, taskledger_ok, BINARY};
use crate::support::log::execute_on_task;

/// A database holding 12 events over two streams (alternating).
pub(crate) async fn log() -> TestDatabase {
    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    for index in 0..12_u64 {
        let stream = StreamId::new(format!("audit-{}", index % 2)).unwrap();
        let version = index / 2;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        store
            .append(
                &stream,
                expected,
                vec![NewEvent::new("Audited", json!({ "index": index }))],
            )
            .await
            .unwrap();
    }
    assert_eq!(store.head_position().await.unwrap(), 12);
    database
}

/// Runs SQL as the superuser with the append-only trigger off, as an
/// attacker with database access could.
pub(crate) async fn tamper(database: &TestDatabase, sql: &str) {
    database
        .client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER events_append_only;
             {sql};
             ALTER TABLE events ENABLE TRIGGER events_append_only;"
        ))
        .await
        .unwrap();
}

/// `taskledger replay verify args…` against `database`.
pub(crate) fn verify(database: &TestDatabase, args: &[&str]) -> Output {
    taskledger(&database.url, &[&["replay", "verify"], args].concat())
}

/// Submitting an echo task with no parameters, from `frontend_id`.
fn submit_echo(task_id: TaskId, frontend_id: &str) -> TaskCommand {
    use taskledger_events::task::SubmitTask;

    TaskCommand::Submit(SubmitTask {
        inputs: Default::default(),
        task_id,
        kind: "echo".into(),
        params: serde_json::Map::new(),
        tenant: taskledger_events::tenant::TenantName::default_tenant(),
        frontend_id: frontend_id.into(),
        client_task_id: None,
        priority: 0,
        timeout_seconds: 60,
        max_attempts: 1,
        submitted_at: chrono::Utc::now(),
        submitted_by: None,
        depends_on: Vec::new(),
        on_parent_failure: Default::default(),
    })
}

#[tokio::test]
async fn an_untouched_log_verifies() {
    let database = log().await;
    let output = verify(&database, &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).starts_with("OK: 12 events verified, sequences 1..=12"),
        "{output:?}"
    );
    database.drop_database().await;
}

#[tokio::test]
async fn each_kind_of_tampering_is_found_at_its_place() {
    let cases = [
        (
            "altered data",
            "UPDATE events SET data = '{\"index\":99}' WHERE global_position = 5",
            5,
        ),
        ("deleted row", "DELETE FROM events WHERE global_position = 7", 7),
        (
            "swapped rows",
            "UPDATE events SET data = CASE global_position WHEN 3 THEN (SELECT data FROM events WHERE global_position = 4)
                                                          ELSE (SELECT data FROM events WHERE global_position = 3) END
             WHERE global_position IN (3, 4)",
            3,
        ),
        (
            "broken version",
            "UPDATE events SET version = 40 WHERE global_position = 6",
            6,
        ),
    ];
    for (what, sql, position) in cases {
        let database = log().await;
        tamper(&database, sql).await;
        let output = verify(&database, &[]);
        assert!(!output.status.success(), "{what}: {output:?}");
        assert!(
            stdout(&output).starts_with(&format!("FAILED at sequence {position}:")),
            "{what}: {}",
            stdout(&output)
        );
        // The range before the damage still verifies.
        let before = verify(&database, &["--to", &(position - 1).to_string()]);
        assert!(before.status.success(), "{what}: {before:?}");
        database.drop_database().await;
    }
}

#[tokio::test]
async fn export_writes_events_as_stored_one_per_line() {
    let database = log().await;
    let run = |args: &[&str]| {
        taskledger_ok(&database.url, &[&["replay", "export"], args].concat())
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .collect::<Vec<_>>()
    };
    let all = run(&[]);
    assert_eq!(all.len(), 12);
    let positions: Vec<u64> = all
        .iter()
        .map(|event| event["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=12).collect::<Vec<_>>());
    assert_eq!(all[0]["hash"].as_str().unwrap().len(), 64);
    assert_eq!(all[4]["data"]["index"], 4);
    assert_eq!(run(&["--from", "3", "--to", "5"]).len(), 3);
    let stream = run(&["--stream", "audit-1"]);
    assert_eq!(stream.len(), 6);
    assert!(stream.iter().all(|event| event["stream_id"] == "audit-1"));
    database.drop_database().await;
}

#[tokio::test]
async fn state_shows_a_task_as_it_was() {
    use chrono::Utc;
    use taskledger::commands::execute;
    use taskledger_events::task::Tasks;
    use taskledger_events::Metadata;
    use uuid::Uuid;

    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    let task_id = TaskId(Uuid::new_v4());
    let stream = task_id.stream_id();
    let run = |command: TaskCommand| {
        let store = store.clone();
        let stream = stream.clone();
        async move {
            execute::<Tasks>(
                &store,
                &stream,
                command,
                Uuid::new_v4(),
                Metadata::default(),
            )
            .await
            .unwrap();
        }
    };
    run(submit_echo(task_id, "audit")).await;
    run(start_first_attempt(task_id, "w")).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let while_running = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    run(complete_first_attempt(task_id)).await;
    let state = |args: Vec<String>| {
        let mut all = vec!["replay", "state", "--stream", stream.as_ref()];
        all.extend(args.iter().map(String::as_str));
        serde_json::from_str::<serde_json::Value>(&taskledger_ok(&database.url, &all)).unwrap()
    };
    assert_eq!(
        state(vec!["--at-version".into(), "1".into()])["status"],
        "queued"
    );
    assert_eq!(
        state(vec!["--at-version".into(), "2".into()])["status"],
        "running"
    );
    assert_eq!(
        state(vec!["--as-of".into(), while_running.to_rfc3339()])["status"],
        "running"
    );
    let now = state(Vec::new());
    assert_eq!(now["status"], "succeeded");
    assert_eq!(now["stream_version"], 3);
    database.drop_database().await;
}

#[tokio::test]
async fn cleanup_removes_only_unreferenced_blobs_and_never_an_event() {
    use chrono::Utc;
    use taskledger::adapters::blobs::BlobStore;

    use taskledger_events::task::{Artifact, CompleteTask};

    use uuid::Uuid;

    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    let data_dir = std::env::temp_dir().join(format!("tl-cleanup-{}", Uuid::new_v4()));
    let blobs = BlobStore::new(data_dir.join("blobs"));
    let kept = blobs.put(b"referenced by a task").await.unwrap();
    let orphan = blobs
        .put(b"left by an attempt that never completed")
        .await
        .unwrap();
    let task_id = TaskId(Uuid::new_v4());
    let commands = [
        submit_echo(task_id, "cleanup"),
        start_first_attempt(task_id, "w"),
        TaskCommand::Complete(CompleteTask {
            task_id,
            attempt: 1,
            result: serde_json::Map::new(),
            exit_code: 0,
            artifacts: vec![Artifact {
                name: "out.txt".into(),
                size: 20,
                sha256: kept.clone(),
                media_type: "text/plain".into(),
            }],
            finished_at: Utc::now(),
        }),
    ];
    for command in commands {
        execute_on_task(&store, task_id, command).await;
    }
    let head = store.head_position().await.unwrap();
    let cleanup = |args: &[&str]| {
        Command::new(BINARY)
            .arg("cleanup")
            .args(args)
            .env("DATABASE_URL", &database.url)
            .env("TASKLEDGER_DATA_DIR", &data_dir)
            .env("TASKLEDGER_LOG", "warn")
            .output()
            .unwrap()
    };
    // Young blobs are kept by default (an attempt may be storing them).
    let young = cleanup(&[]);
    assert!(
        stdout(&young).contains("removed 0 unreferenced blobs"),
        "{young:?}"
    );
    let dry = cleanup(&["--dry-run", "--min-age-seconds", "0"]);
    assert!(
        stdout(&dry).contains(&format!("would remove {orphan}")),
        "{dry:?}"
    );
    assert!(blobs.path(&orphan).unwrap().exists());
    let done = cleanup(&["--min-age-seconds", "0"]);
    assert!(done.status.success(), "{done:?}");
    assert!(
        stdout(&done).contains("removed 1 unreferenced blobs"),
        "{done:?}"
    );
    assert!(!blobs.path(&orphan).unwrap().exists());
    assert!(blobs.path(&kept).unwrap().exists());
    assert_eq!(
        store.head_position().await.unwrap(),
        head,
        "cleanup touched the log"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    database.drop_database().await;
}
