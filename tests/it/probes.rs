//! `/healthz` and `/readyz`.

use std::time::Duration;

use serde_json::Value;
use taskledger_events::apikey::Scope;
use taskledger_events::postgres::{append_in_transaction, AppendRequest};
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};

use crate::helpers::{local_sh, TestApp};
use crate::support::cli::taskledger_ok;
use crate::support::http::{assert_text_contains, item_fields, item_with, metric, send, send_json};
use crate::support::poll::eventually;

/// Appends `event` as the first of the task's stream, as a worker or the
/// API would; its global position.
async fn first_event(
    store: &taskledger_events::postgres::PgEventStore,
    task_id: TaskId,
    event: TaskEvent,
) -> u64 {
    store
        .append(
            &task_id.stream_id(),
            ExpectedVersion::NoStream,
            vec![event.to_new_event(uuid::Uuid::new_v4(), Metadata::default())],
        )
        .await
        .unwrap()
        .last_position
}

#[tokio::test]
async fn healthz_answers_and_readyz_reports_each_check() {
    let app = TestApp::spawn().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    for check in ["database", "log_appender", "log_lock"] {
        assert_eq!(body["checks"][check]["ok"], true, "{check}: {body}");
    }
    app.finish().await;
}

/// Every answer names its request: the client's `X-Request-Id` comes back
/// as sent, and a request without one is given a UUID, on every route
/// (an error or an unknown path as well).
#[tokio::test]
async fn every_answer_carries_its_request_id() {
    let app = TestApp::spawn().await;
    let echoed = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "frontend-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "frontend-7f3a");
    for (path, status) in [
        ("/healthz", 200),
        ("/v1/tasks", 401),
        ("/no/such/route", 404),
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let made = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(made).is_ok(), "{path}: {made}");
    }
    app.finish().await;
}

#[tokio::test]
async fn readyz_fails_when_the_database_goes_away() {
    let app = TestApp::spawn().await;
    let admin = {
        let mut config: tokio_postgres::Config = app.database.url.parse().unwrap();
        config.dbname("postgres");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    // Renaming the database away cuts the service off from it (its pooled
    // connections are terminated and new ones find no database).
    let name = app.database.name.clone();
    // The service's projectors and feeds reconnect at once: refuse new
    // connections first (on a loaded machine they can otherwise win the race
    // against the rename for as long as the test waits), then cut off the
    // open ones until the rename gets through.
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async {
            admin
                .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';
                 ALTER DATABASE {name} RENAME TO {name}_away"
            ))
                .await
                .map_err(|error| format!("could not take the database away: {error}"))
        },
    )
    .await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"]["ok"], false, "{body}");

    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name}_away RENAME TO {name};
             ALTER DATABASE {name} ALLOW_CONNECTIONS true"
        ))
        .await
        .unwrap();
    app.wait_until_ready(Duration::from_secs(10)).await;
    app.finish().await;
}

#[tokio::test]
async fn readyz_fails_while_a_transaction_sits_on_the_log_lock() {
    let app = TestApp::spawn_with(|settings| settings.log_lock_stall_seconds = 0.3).await;
    let store =
        taskledger_events::postgres::PgEventStore::connect(&app.database.url, Default::default())
            .unwrap();
    let mut client = store.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let request = AppendRequest::new(
        StreamId::new("task-stuck").unwrap(),
        ExpectedVersion::Any,
        vec![NewEvent::new("Stuck", serde_json::json!({}))],
    )
    .unwrap();
    append_in_transaction(&tx, &[request]).await.unwrap();

    let readyz = || async {
        let response = app.http.get(app.url("/readyz")).send().await.unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    };
    let body = eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let (status, body) = readyz().await;
            if status == 503 {
                return Ok(body);
            }
            assert_eq!(body["checks"]["log_lock"]["ok"], true, "{body}");
            Err(format!("readyz never noticed the held lock: {body}"))
        },
    )
    .await;
    assert_eq!(body["checks"]["log_lock"]["ok"], false, "{body}");
    let held = &body["checks"]["log_lock"]["detail"];
    assert_text_contains(held, "held the log lock", &body);
    assert!(
        body["checks"]["oldest_transaction_seconds"]
            .as_f64()
            .unwrap()
            >= 0.3,
        "{body}"
    );

    tx.rollback().await.unwrap();
    let (status, body) = readyz().await;
    assert_eq!(status, 200, "ready again once the lock is released: {body}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_the_projectors() {
    use taskledger_events::task::TaskSubmitted;

    let app = TestApp::spawn().await;
    let store =
        taskledger_events::postgres::PgEventStore::connect(&app.database.url, Default::default())
            .unwrap();
    let task_id = TaskId(uuid::Uuid::new_v4());
    let submitted = TaskEvent::Submitted(TaskSubmitted {
        inputs: Default::default(),
        task_id,
        kind: "batch".into(),
        params: serde_json::Map::new(),
        tenant: taskledger_events::tenant::TenantName::default_tenant(),
        frontend_id: "frontend-1".into(),
        client_task_id: None,
        priority: 0,
        timeout_seconds: 10,
        max_attempts: 1,
        submitted_at: chrono::Utc::now(),
        submitted_by: None,
        depends_on: Vec::new(),
        on_parent_failure: Default::default(),
    });
    first_event(&store, task_id, submitted).await;
    let client = app.database.client().await;
    // One deadline for both waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let status = eventually(left(), Duration::from_millis(20), || async {
        client
            .query_opt("SELECT status FROM tasks WHERE task_id = $1", &[&task_id.0])
            .await
            .unwrap()
            .map(|row| row.get::<_, String>(0))
            .ok_or_else(|| "the tasks projector did not run in the service".to_owned())
    })
    .await;
    assert_eq!(status, "queued");
    // Every projector of the service registers its checkpoint.
    eventually(left(), Duration::from_millis(20), || async {
        let checkpoints: Vec<String> = client
            .query(
                "SELECT projector FROM projector_checkpoints ORDER BY projector",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        if checkpoints == ["api_keys", "devices", "ledgers", "plans", "tasks"] {
            return Ok(());
        }
        Err(format!("projectors registered: {checkpoints:?}"))
    })
    .await;
    drop(client);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_routes_by_template_and_projection_lag() {
    let app = TestApp::spawn().await;
    let key = app.key(&[Scope::TasksRead]).await;
    for _ in 0..3 {
        app.http.get(app.url("/healthz")).send().await.unwrap();
    }
    let missing_id = uuid::Uuid::new_v4().to_string();
    let missing = send(app.get(&key, &format!("/v1/tasks/{missing_id}"))).await;
    assert_eq!(missing.status(), 404);
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let value = |series: &str| metric(&text, series);
    assert_eq!(
        value(
            r#"taskledger_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            r#"taskledger_http_request_duration_seconds_count{method="GET",route="/v1/tasks/{id}",status="404"}"#
        ),
        1.0
    );
    assert!(
        !text.contains("/v1/tasks/0") && !text.contains("/v1/tasks/1"),
        "concrete paths leak into labels"
    );
    assert!(value(r#"taskledger_projection_lag_events{projector="tasks"}"#) >= 0.0);
    assert_eq!(value("taskledger_database_up"), 1.0);
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (series, number) = line.rsplit_once(' ').unwrap();
        assert!(number.parse::<f64>().is_ok(), "{line}");
        assert!(series.starts_with("taskledger_"), "{line}");
    }
    app.finish().await;
}

/// Label values are escaped: a projector's name is whatever text its
/// checkpoint row holds, and a quote, backslash or newline in it must not
/// end the label or the line (which would make the whole scrape fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_escape_label_values() {
    let app = TestApp::spawn().await;
    let client = app.database.client().await;
    client
        .execute(
            "INSERT INTO projector_checkpoints (projector, version, position) VALUES ($1, 1, 0)",
            &[&"odd \"name\" \\ with\na newline"],
        )
        .await
        .unwrap();
    let text = app.metrics().await;
    assert!(
        text.contains(
            r#"taskledger_projection_lag_events{projector="odd \"name\" \\ with\na newline"} "#
        ),
        "{text}"
    );
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        assert!(
            line.starts_with("taskledger_"),
            "a label split a line: {line}"
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commands_by_outcome_and_time_appends() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let key = app.key(&[Scope::TasksRead, Scope::TasksWrite]).await;
    let (_, submitted) = app
        .submit(
            &key,
            serde_json::json!({"kind": "echo", "params": {"message": "count me"}, "tenant": "default", "frontend_id": "metrics"}),
        )
        .await;
    let cancel = format!("/v1/tasks/{}/cancel", submitted["id"].as_str().unwrap());
    // A canceled task cannot be canceled again: the aggregate refuses.
    for status in [200, 409] {
        assert_eq!(send(app.post(&key, &cancel)).await.status(), status);
    }

    let text = app.metrics().await;
    // The registry is shared by every test in this process: at least.
    let value = |series: &str| metric(&text, series);
    for series in [
        r#"taskledger_commands_total{aggregate="tasks",command="Submit",outcome="ok"}"#,
        r#"taskledger_commands_total{aggregate="tasks",command="Cancel",outcome="ok"}"#,
        r#"taskledger_commands_total{aggregate="tasks",command="Cancel",outcome="refused"}"#,
        r#"taskledger_commands_total{aggregate="api_keys",command="Create",outcome="ok"}"#,
    ] {
        assert!(value(series) >= 1.0, "{series}");
    }
    assert!(value("taskledger_append_seconds_count") >= 2.0);
    assert!(value(r#"taskledger_append_seconds_bucket{le="+Inf"}"#) >= 2.0);
    assert!(value("taskledger_append_seconds_sum") > 0.0);
    assert!(value(r#"taskledger_runner_slots{state="busy"}"#) >= 0.0);
    assert!(value(r#"taskledger_runner_slots{state="total"}"#) >= 0.0);
    for (name, kind) in [
        ("taskledger_commands_total", "counter"),
        ("taskledger_append_seconds", "histogram"),
        ("taskledger_runner_slots", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "no TYPE line for {name}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP line for {name}"
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_runner_slots_while_an_attempt_runs() {
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let release = data_dir.join("release");
    let app = TestApp::spawn_in_process(&local_sh(), &data_dir, |settings| {
        settings.runner_slots = 3;
    })
    .await;
    let key = app.key(&[Scope::TasksRead, Scope::TasksWrite]).await;
    // The attempt runs until the test lets it end.
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done",
        release.display()
    );
    let (_, submitted) = app
        .submit(
            &key,
            serde_json::json!({"kind": "local-sh", "params": {"script": script}, "tenant": "default", "frontend_id": "metrics"}),
        )
        .await;
    let id = submitted["id"].as_str().unwrap();
    let slots = |text: &str, state: &str| {
        metric(
            text,
            &format!("taskledger_runner_slots{{state=\"{state}\"}} "),
        )
    };
    // Other tests in this process may run runners too: at least.
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let text = app.metrics().await;
            if slots(&text, "busy") >= 1.0 {
                assert!(slots(&text, "total") >= 3.0, "{text}");
                return Ok(());
            }
            Err(format!("no busy runner slot within 20 s:\n{text}"))
        },
    )
    .await;
    std::fs::write(&release, b"").unwrap();
    app.task_with_status(&key, id, "succeeded", Duration::from_secs(20))
        .await;
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_every_projector_over_http_and_the_command_line() {
    let app = TestApp::spawn().await;
    let admin = app.key(&[Scope::Admin]).await;
    let page = eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            // Each projector lists itself when it first runs, and is
            // `running` once it holds its lock: right after start, one may
            // not have got there yet.
            let page = send_json(app.get(&admin, "/v1/projections")).await;
            let items = page["items"].as_array().unwrap();
            if items.len() == 5 && items.iter().all(|item| item["state"] == "running") {
                return Ok(page);
            }
            Err(page.to_string())
        },
    )
    .await;
    assert_eq!(
        item_fields(&page, "name"),
        ["api_keys", "devices", "ledgers", "plans", "tasks"]
    );
    let items = page["items"].as_array().unwrap();
    assert!(items.iter().all(|item| item["state"] == "running"));
    let text = taskledger_ok(&app.database.url, &["projections", "list"]);
    assert!(
        text.lines().next().unwrap().starts_with("projector"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("tasks") && line.ends_with("running")),
        "{text}"
    );
    app.finish().await;
}

/// A projector whose handler fails on an event stops there (never skipping
/// it) and says so in `GET /v1/projections`, `projections list`, `/metrics`
/// and `/readyz`; once the cause is repaired it resumes by itself. A pause
/// shows in the same places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_projector_is_reported_everywhere_and_resumes_after_a_repair() {
    use taskledger_events::task::TaskStarted;

    let app = TestApp::spawn().await;
    let admin = app.key(&[Scope::Admin]).await;
    let store = app.store();
    // A start for a task that was never submitted: the tasks projector has
    // no row to apply it to.
    let orphan = TaskId(uuid::Uuid::new_v4());
    let started = TaskEvent::Started(TaskStarted {
        worker_id: "w1".into(),
        attempt: 1,
        started_at: chrono::Utc::now(),
    });
    let position = first_event(&store, orphan, started).await;
    let (app_ref, admin) = (&app, &admin);
    let wait_for = |state: &'static str| {
        eventually(
            Duration::from_secs(20),
            Duration::from_millis(50),
            move || async move {
                let view = send_json(app_ref.get(admin, "/v1/projections/tasks")).await;
                if view["state"] == state {
                    return Ok(view);
                }
                Err(view.to_string())
            },
        )
    };
    let view = wait_for("failed").await;
    assert_eq!(view["failed_position"], position, "{view}");
    assert!(
        view["failure"].as_str().unwrap().contains("no task row"),
        "{view}"
    );
    assert_eq!(
        view["position"],
        position - 1,
        "it stopped before the event"
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("taskledger_projection_failed{projector=\"tasks\"} 1"),
        "{metrics}"
    );
    let ready = send_json(app.http.get(app.url("/readyz"))).await;
    let check = item_with(&ready["checks"]["projections"], "name", "tasks");
    assert_eq!(check["ok"], false, "{ready}");
    let stopped = format!("stopped at the event at position {position}");
    assert_text_contains(&check["detail"], &stopped, &ready);
    let cli = |args: &[&str]| taskledger_ok(&app.database.url, args);
    let list = cli(&["projections", "list"]);
    assert!(
        list.lines().any(
            |line| line.starts_with("tasks") && line.contains(&format!("failed at {position}"))
        ),
        "{list}"
    );

    // Repair: the row the event needs (as an operator restoring it would).
    let client = app.database.client().await;
    client
        .execute(
            "INSERT INTO tasks (task_id, kind, status, frontend_id, params, priority,
                 timeout_seconds, max_attempts, submitted_at, updated_at, stream_version,
                 last_position, tenant)
             VALUES ($1, 'echo', 'queued', 'repair', '{}', 0, 60, 1, now(), now(), 0, 0,
                 'default')",
            &[&orphan.0],
        )
        .await
        .unwrap();
    let view = wait_for("running").await;
    assert_eq!(view["lag_events"], 0, "{view}");
    assert!(view["failure"].is_null(), "{view}");
    let status: String = client
        .query_one("SELECT status FROM tasks WHERE task_id = $1", &[&orphan.0])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "running", "the event it stopped at was applied");

    // A pause shows too, and a resume lifts it.
    cli(&["projections", "pause", "tasks"]);
    wait_for("paused").await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("taskledger_projection_paused{projector=\"tasks\"} 1"),
        "{metrics}"
    );
    cli(&["projections", "resume", "tasks"]);
    wait_for("running").await;
    app.finish().await;
}

/// `POST /v1/projections/{name}/pause` stops a projector (what is written
/// meanwhile waits, as lag) until `…/resume`, which it then catches up on;
/// a projection that does not exist is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_paused_over_http_applies_nothing_until_resumed() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let admin = app.key(&[Scope::Admin]).await;
    let post = |path: &'static str| {
        let (app, admin) = (&app, &admin);
        async move {
            let response = send(app.post(admin, path)).await;
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // The projector records itself when it first runs, a moment after the
    // service starts; until then its projection "has never run" (404).
    let (app_ref, admin_ref) = (&app, &admin);
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async move {
            let (status, view) = app_ref.read(Some(admin_ref), "/v1/projections/tasks").await;
            (status == 200)
                .then_some(())
                .ok_or_else(|| view.to_string())
        },
    )
    .await;
    let (status, paused) = post("/v1/projections/tasks/pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "paused", "{paused}");
    let echo = serde_json::json!({"kind": "echo", "params": {"message": "hi"}, "tenant": "default", "frontend_id": "web"});
    let submitted = app.submitted(&admin, echo).await;
    let (status, view) = app.read(Some(&admin), "/v1/projections/tasks").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "paused", "{view}");
    assert_eq!(view["position"], paused["position"], "it applied an event");
    assert!(
        view["head"].as_u64().unwrap() >= submitted["position"].as_u64().unwrap(),
        "{view}"
    );
    assert!(view["lag_events"].as_u64().unwrap() >= 1, "{view}");

    let (status, resumed) = post("/v1/projections/tasks/resume").await;
    assert_eq!(status, 200, "{resumed}");
    assert_ne!(resumed["state"], "paused", "{resumed}");
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async move {
            let view = send_json(app_ref.get(admin_ref, "/v1/projections/tasks")).await;
            (view["lag_events"] == 0)
                .then_some(())
                .ok_or_else(|| view.to_string())
        },
    )
    .await;

    for path in [
        "/v1/projections/nothing/pause",
        "/v1/projections/nothing/resume",
    ] {
        let (status, problem) = post(path).await;
        assert_eq!(status, 404, "{path}: {problem}");
        assert_text_contains(&problem["detail"], "no projection called", &problem);
    }
    app.finish().await;
}
