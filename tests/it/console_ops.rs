//! The console's operations pages in a real browser (`tests/console/ops.mjs`):
//! `/console/projections` (rebuild with its progress, pause and resume, the
//! lag chart) and `/console/audit` (a verify that passes, one that names
//! the first bad sequence of a tampered log, the stream browser), and
//! both refused to a tenant key.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use taskledger_events::apikey::Scope;
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};
use uuid::Uuid;

use crate::console::playwright_dir;
use crate::helpers::{TestApp, LOCAL_SH};

/// Events no projector reads, appended so that a rebuild of `tasks` has a
/// log long enough to show its progress on the way.
const FILLER_EVENTS: u64 = 20_000;

/// Appends [`FILLER_EVENTS`] events to streams no projector follows.
async fn fill_the_log(app: &TestApp) {
    let store = app.store();
    let per_stream = 500;
    for stream in 0..FILLER_EVENTS / per_stream {
        let stream = StreamId::new(format!("filler-{stream}")).unwrap();
        let events = (0..per_stream)
            .map(|index| NewEvent::new("Filled", json!({ "index": index })))
            .collect();
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
}

/// Changes the stored text of the event at `sequence` as the superuser
/// with the append-only trigger off, as an attacker with database access
/// could (the way `replay.rs` tampers).
async fn tamper(app: &TestApp, sequence: u64, from: &str, to: &str) {
    let client = app.database.client().await;
    let trigger = |action: &str| format!("ALTER TABLE events {action} TRIGGER events_append_only");
    client.batch_execute(&trigger("DISABLE")).await.unwrap();
    let changed = client
        .execute(
            "UPDATE events SET data = replace(data::text, $2, $3)::json WHERE global_position = $1",
            &[&i64::try_from(sequence).unwrap(), &from, &to],
        )
        .await;
    client.batch_execute(&trigger("ENABLE")).await.unwrap();
    assert_eq!(changed.unwrap(), 1, "no event at sequence {sequence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_pages_work_in_a_real_browser() {
    let playwright = playwright_dir();
    let data_dir = std::env::temp_dir().join(format!("taskledger-console-ops-{}", Uuid::new_v4()));
    let app = TestApp::spawn_in_process(LOCAL_SH, &data_dir, |_| {}).await;
    let admin = app.key(&[Scope::Admin]).await;
    let auditor = app.key(&[Scope::AuditRead]).await;
    let tenant = app.tenant_key("acme", &[Scope::Admin]).await;

    let submit = |script: &str| {
        let body = json!({ "kind": "local-sh", "params": { "script": script }, "tenant": "acme" });
        let (app, admin) = (&app, &admin);
        async move {
            let task = app.submitted(admin, body).await;
            let id = task["id"].as_str().unwrap().to_owned();
            assert_eq!(app.finished(admin, &id).await["status"], "succeeded");
            (id, task["position"].as_u64().unwrap())
        }
    };
    let (task, _) = submit("echo kept").await;
    let (tampered_task, tampered) = submit("echo as submitted").await;
    fill_the_log(&app).await;
    tamper(&app, tampered, "echo as submitted", "echo tampered").await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let screenshots = root.join("target/console-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/console/ops.mjs"))
        .env("CONSOLE_URL", app.url(""))
        .env("CONSOLE_ADMIN_KEY", &admin)
        .env("CONSOLE_AUDITOR_KEY", &auditor)
        .env("CONSOLE_TENANT_KEY", &tenant)
        .env("CONSOLE_TASK", &task)
        .env("CONSOLE_TAMPERED_STREAM", format!("task-{tampered_task}"))
        .env("CONSOLE_TAMPERED_SEQUENCE", tampered.to_string())
        .env("CONSOLE_SCREENSHOTS", &screenshots)
        .env("TASKLEDGER_PLAYWRIGHT", &playwright)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test did not finish within 240 s")
        .expect("running node (scripts/browser.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "tests/console/ops.mjs failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    // What the pages did is what /v1 says now.
    let (status, tasks) = app.read(Some(&admin), "/v1/projections/tasks").await;
    assert_eq!(status, StatusCode::OK, "{tasks}");
    assert_eq!(tasks["state"], "running", "{tasks}");
    assert_eq!(tasks["rebuild"]["state"], "done", "{tasks}");
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
