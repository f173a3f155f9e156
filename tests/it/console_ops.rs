//! The console's operations pages in a real browser (`tests/console/ops.mjs`):
//! `/console/projections` (rebuild with its progress, pause and resume, the
//! lag chart) and `/console/audit` (a verify that passes, one that names
//! the first bad sequence of a tampered log, the stream browser), and
//! both refused to a tenant key.

use reqwest::StatusCode;
use serde_json::json;
use taskledger_events::apikey::Scope;
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};
use uuid::Uuid;

use crate::console::run_browser_script;
use crate::helpers::{local_sh, TestApp};
use crate::support::cli::taskledger_ok;

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
    let data_dir = std::env::temp_dir().join(format!("taskledger-console-ops-{}", Uuid::new_v4()));
    let app = TestApp::spawn_in_process(&local_sh(), &data_dir, |_| {}).await;
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
    // A verification recorded through the event before the tampered one,
    // as an auditor's daily run leaves it: the page can resume from there.
    let recorded_through = tampered - 1;
    taskledger_ok(
        &app.database.url,
        &[
            "replay",
            "verify",
            "--to",
            &recorded_through.to_string(),
            "--record",
        ],
    );

    run_browser_script(
        "ops.mjs",
        &[
            ("CONSOLE_URL", app.url("")),
            ("CONSOLE_ADMIN_KEY", admin.clone()),
            ("CONSOLE_AUDITOR_KEY", auditor.clone()),
            ("CONSOLE_TENANT_KEY", tenant.clone()),
            ("CONSOLE_TASK", task.clone()),
            ("CONSOLE_TAMPERED_STREAM", format!("task-{tampered_task}")),
            ("CONSOLE_TAMPERED_SEQUENCE", tampered.to_string()),
        ],
    )
    .await;

    // What the pages did is what /v1 says now.
    let (status, tasks) = app.read(Some(&admin), "/v1/projections/tasks").await;
    assert_eq!(status, StatusCode::OK, "{tasks}");
    assert_eq!(tasks["state"], "running", "{tasks}");
    assert_eq!(tasks["rebuild"]["state"], "done", "{tasks}");
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
