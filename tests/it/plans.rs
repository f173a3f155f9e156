//! Plans for real (PostgreSQL, RabbitMQ, the Docker engine and the busybox
//! test image): a task graph submitted in one request runs in the order of
//! its edges, a failing root cancels the rest naming its parent, a plan
//! canceled mid-run cancels only what had not finished, bad plans are
//! refused with nothing stored, and another tenant's plan is answered as
//! one that does not exist. Start and end times are read from the log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use taskledger::config::settings::Role;
use taskledger::config::FileConfig;
use taskledger_events::apikey::Scope;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::EventStore;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::running::{amqp_url, delete_topology, BROKER, IMAGE};
use crate::support::http::send;
use crate::support::kinds::sh_kind;
use crate::support::log::task_events;
use crate::support::poll::eventually;

fn kinds() -> String {
    sh_kind(
        "sh",
        &format!("image = \"{IMAGE}\"\ntimeout_seconds = 60\nmax_attempts = 1\nmemory_mb = 64\n"),
    )
}

/// A service with every role a plan needs (API, projectors, relay, runner
/// with `slots`, graph follower) on its own broker prefix; its prefix.
async fn running_app(slots: usize) -> (TestApp, String, std::path::PathBuf) {
    let prefix = format!("tl-test-{}", Uuid::new_v4().simple());
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let (p, d) = (prefix.clone(), data_dir.clone());
    let app = TestApp::spawn_with_config(&kinds(), move |settings| {
        settings.roles = vec![
            Role::Api,
            Role::Projector,
            Role::Relay,
            Role::Runner,
            Role::Graphs,
        ];
        settings.amqp_url = Some(amqp_url());
        settings.amqp_prefix = Some(p);
        settings.data_dir = d;
        settings.runner_slots = slots;
    })
    .await;
    (app, prefix, data_dir)
}

async fn finish(app: TestApp, prefix: &str, data_dir: &std::path::Path) {
    app.finish().await;
    delete_topology(prefix, &FileConfig::parse(&kinds()).unwrap()).await;
    let _ = std::fs::remove_dir_all(data_dir);
}

fn sh(name: &str, depends_on: &[&str], script: &str) -> Value {
    json!({"name": name, "depends_on": depends_on, "kind": "sh", "params": {"script": script}})
}

async fn post_plan(app: &TestApp, key: &str, body: &Value) -> (StatusCode, Value) {
    let response = send(app.post(key, "/v1/plans").json(body)).await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The task id of `name` in a plan view.
pub(crate) fn id_of(plan: &Value, name: &str) -> TaskId {
    let task = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {plan}"));
    TaskId(task["task_id"].as_str().unwrap().parse().unwrap())
}

/// Waits until `GET /v1/plans/{id}` shows `counts`; the plan then.
async fn plan_with_counts(app: &TestApp, key: &str, id: &str, counts: Value) -> Value {
    eventually(
        Duration::from_secs(120),
        Duration::from_millis(100),
        || async {
            let (status, plan) = app.read(Some(key), &format!("/v1/plans/{id}")).await;
            if status == StatusCode::OK && plan["counts"] == counts {
                return Ok(plan);
            }
            Err(format!("{status}: {plan}"))
        },
    )
    .await
}

/// When the task's attempt started and when it succeeded, by the log.
async fn span(store: &PgEventStore, task_id: TaskId) -> (DateTime<Utc>, DateTime<Utc>) {
    let events = task_events(store, task_id).await;
    let started = events.iter().find_map(|event| match event {
        TaskEvent::Started(started) => Some(started.started_at),
        _ => None,
    });
    let ended = events.iter().find_map(|event| match event {
        TaskEvent::Succeeded(succeeded) => Some(succeeded.finished_at),
        _ => None,
    });
    (
        started.unwrap_or_else(|| panic!("{task_id} started: {events:?}")),
        ended.unwrap_or_else(|| panic!("{task_id} succeeded: {events:?}")),
    )
}

async fn cancel_reason(store: &PgEventStore, task_id: TaskId) -> String {
    let events = task_events(store, task_id).await;
    events
        .iter()
        .find_map(|event| match event {
            TaskEvent::Canceled(canceled) => canceled.reason.clone(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{task_id} was canceled with a reason: {events:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_diamond_plan_runs_in_order_and_only_its_tenant_sees_it() {
    let _broker = BROKER.read().await;
    let (app, prefix, data_dir) = running_app(3).await;
    let acme = app
        .tenant_key("acme", &[Scope::TasksWrite, Scope::TasksRead])
        .await;
    let globex = app
        .tenant_key("globex", &[Scope::TasksWrite, Scope::TasksRead])
        .await;
    // Children listed before their parents: the edges decide the order.
    let body = json!({"tasks": [
        sh(
            "d",
            &["b", "c"],
            "test \"$(ls /in | wc -l)\" -eq 2 && cat /in/*/b.txt /in/*/c.txt > /out/d.txt",
        ),
        sh("b", &["a"], "echo b > /out/b.txt"),
        sh("c", &["a"], "sleep 1; echo c > /out/c.txt"),
        sh("a", &[], "sleep 1; echo a > /out/a.txt"),
    ]});
    let response = send(
        app.post(&acme, "/v1/plans")
            .header("idempotency-key", "diamond-1")
            .json(&body),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let plan: Value = response.json().await.unwrap();
    let id = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/plans/{id}"));
    assert_eq!(plan["tenant"], "acme");
    let names: Vec<&str> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d"], "parents first: {plan}");
    assert_eq!(plan["counts"], json!({"queued": 1, "waiting": 3}));
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| id_of(&plan, name));

    // A retry with the same key is the same plan; another body is refused.
    let (status, again) = {
        let response = send(
            app.post(&acme, "/v1/plans")
                .header("idempotency-key", "diamond-1")
                .json(&body),
        )
        .await;
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], plan["id"]);
    assert_eq!(id_of(&again, "d"), d);
    let other = json!({"tasks": [sh("a", &[], "true")]});
    let response = send(
        app.post(&acme, "/v1/plans")
            .header("idempotency-key", "diamond-1")
            .json(&other),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused: Value = response.json().await.unwrap();
    assert!(refused["type"]
        .as_str()
        .unwrap()
        .ends_with("idempotency-key-reused"));

    // Each task carries its parents' ids, so the graph machinery runs it.
    let (_, d_task) = app
        .read(Some(&acme), &format!("/v1/tasks/{}?min_version=1", d.0))
        .await;
    assert_eq!(d_task["depends_on"], json!([b.0, c.0]), "{d_task}");
    assert_eq!(d_task["status"], "waiting");

    let done = plan_with_counts(&app, &acme, &id, json!({"succeeded": 4})).await;
    assert!(done["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|task| task["status"] == "succeeded"));
    let store = app.store();
    let (_, a_ended) = span(&store, a).await;
    let (b_started, b_ended) = span(&store, b).await;
    let (c_started, c_ended) = span(&store, c).await;
    let (d_started, _) = span(&store, d).await;
    assert!(
        b_started >= a_ended && c_started >= a_ended,
        "B and C after A"
    );
    assert!(
        d_started >= b_ended && d_started >= c_ended,
        "D after B and C"
    );

    // Another tenant's plan is one that does not exist, for every route.
    let unknown = Uuid::new_v4();
    for (path, missing) in [
        (format!("/v1/plans/{id}"), format!("/v1/plans/{unknown}")),
        (
            format!("/v1/plans/{id}/cancel"),
            format!("/v1/plans/{unknown}/cancel"),
        ),
    ] {
        let (theirs, nobodys) = if path.ends_with("cancel") {
            (
                send(app.post(&globex, &path)).await,
                send(app.post(&globex, &missing)).await,
            )
        } else {
            (
                send(app.get(&globex, &path)).await,
                send(app.get(&globex, &missing)).await,
            )
        };
        assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
        assert_eq!(nobodys.status(), StatusCode::NOT_FOUND);
        let theirs = theirs.text().await.unwrap();
        let nobodys = nobodys.text().await.unwrap();
        assert_eq!(
            theirs.replace(&id, "ID"),
            nobodys.replace(&unknown.to_string(), "ID")
        );
    }
    let (status, listed) = app.read(Some(&globex), "/v1/plans").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"], json!([]));
    let (_, listed) = app.read(Some(&acme), "/v1/plans").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], plan["id"]);
    assert_eq!(listed["items"][0]["counts"], json!({"succeeded": 4}));
    finish(app, &prefix, &data_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_root_cancels_the_plan_and_a_canceled_plan_keeps_what_finished() {
    let _broker = BROKER.read().await;
    let (app, prefix, data_dir) = running_app(2).await;
    let acme = app
        .tenant_key("acme", &[Scope::TasksWrite, Scope::TasksRead])
        .await;
    let store = app.store();

    // A fails: B and C are canceled naming it, D naming B or C.
    let (status, failing) = post_plan(
        &app,
        &acme,
        &json!({"tasks": [
            sh("a", &[], "exit 3"),
            sh("b", &["a"], "true"),
            sh("c", &["a"], "true"),
            sh("d", &["b", "c"], "true"),
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{failing}");
    let id = failing["id"].as_str().unwrap();
    let done = plan_with_counts(&app, &acme, id, json!({"canceled": 3, "failed": 1})).await;
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| id_of(&done, name));
    for child in [b, c] {
        let reason = cancel_reason(&store, child).await;
        assert_eq!(reason, format!("parent {a} failed"));
    }
    let reason = cancel_reason(&store, d).await;
    assert!(
        reason == format!("parent {b} canceled") || reason == format!("parent {c} canceled"),
        "{reason}"
    );

    // Canceled while its second task runs: the first stays succeeded.
    let (status, plan) = post_plan(
        &app,
        &acme,
        &json!({"tasks": [
            sh("first", &[], "true"),
            sh("slow", &["first"], "sleep 60"),
            sh("last", &["slow"], "true"),
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let id = plan["id"].as_str().unwrap();
    plan_with_counts(
        &app,
        &acme,
        id,
        json!({"running": 1, "succeeded": 1, "waiting": 1}),
    )
    .await;
    let canceled = app
        .cancel(&acme, &format!("/v1/plans/{id}/cancel"), "not needed")
        .await;
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|task| {
                format!(
                    "{}:{}",
                    task["name"].as_str().unwrap(),
                    task["status"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(&canceled["canceled"]),
        ["slow:canceled", "last:canceled"]
    );
    assert_eq!(names(&canceled["finished"]), ["first:succeeded"]);
    let after = plan_with_counts(&app, &acme, id, json!({"canceled": 2, "succeeded": 1})).await;
    let slow = id_of(&after, "slow");
    assert_eq!(
        cancel_reason(&store, slow).await,
        format!("plan {id} canceled: not needed")
    );
    // A second cancellation finds nothing left to cancel.
    let again: Value = send(app.post(&acme, &format!("/v1/plans/{id}/cancel")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["canceled"], json!([]));
    assert_eq!(again["finished"].as_array().unwrap().len(), 3);

    // The read model is the log's: rebuilt from position 0, it shows the
    // same plans, tasks and counts.
    let (_, before) = app.read(Some(&acme), "/v1/plans").await;
    assert_eq!(before["items"].as_array().unwrap().len(), 2, "{before}");
    let admin = app.key(&[Scope::Admin]).await;
    let started = send(app.post(&admin, "/v1/projections/plans/rebuild")).await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let (_, view) = app.read(Some(&admin), "/v1/projections/plans").await;
            if view["rebuild"]["state"] == "done" {
                return Ok(());
            }
            Err(view.to_string())
        },
    )
    .await;
    let (_, rebuilt) = app.read(Some(&acme), "/v1/plans").await;
    assert_eq!(rebuilt, before);
    finish(app, &prefix, &data_dir).await;
}

/// Refusals: each a 422 naming what is wrong, and the log does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plans_are_refused_naming_the_problem_and_store_nothing() {
    let app = TestApp::spawn_with_kinds(|settings| {
        settings.roles = vec![Role::Api, Role::Projector];
    })
    .await;
    let acme = app
        .tenant_key("acme", &[Scope::TasksWrite, Scope::TasksRead])
        .await;
    let globex = app.tenant_key("globex", &[Scope::TasksWrite]).await;
    let store = app.store();
    let echo = |name: &str, depends_on: &[&str]| json!({"name": name, "depends_on": depends_on, "kind": "echo", "params": {"message": "hi"}});
    let globex_task = app
        .submitted(
            &globex,
            json!({"kind": "echo", "params": {"message": "hi"}}),
        )
        .await;
    let globex_task = globex_task["id"].as_str().unwrap().to_owned();
    let head = store.head_position().await.unwrap();
    let many: Vec<Value> = (0..101).map(|n| echo(&format!("t{n}"), &[])).collect();
    let unknown_id = Uuid::new_v4().to_string();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"tasks": [echo("root", &[]), echo("a", &["root", "c"]), echo("b", &["a"]), echo("c", &["b"])]}),
            r#"the plan has a cycle: "a" → "c" → "b" → "a""#,
        ),
        (json!({"tasks": [echo("a", &["a"])]}), r#"cycle: "a" → "a""#),
        (
            json!({"tasks": [echo("a", &["nope", "b"]), echo("b", &["gone"])]}),
            r#"depends_on names no task of the plan: "nope", "gone""#,
        ),
        (
            json!({"tasks": [echo("a", &[]), echo("a", &[])]}),
            "must be unique",
        ),
        (json!({"tasks": []}), "at least one task"),
        (json!({"tasks": many}), "at most 100 tasks"),
        (
            json!({"tasks": [echo("a", &[]), {"name": "b", "depends_on": ["a"], "kind": "no-such-kind"}]}),
            r#"task "b": "#,
        ),
        (
            json!({"tasks": [echo("a", &[]), echo("b", &["a", &globex_task])]}),
            r#"task "b": depends_on[1] names no task of this plan or this tenant"#,
        ),
        (
            json!({"tasks": [echo("a", &[]), echo("b", &["a", &unknown_id])]}),
            r#"task "b": depends_on[1] names no task of this plan or this tenant"#,
        ),
    ];
    for (body, says) in cases {
        let (status, problem) = post_plan(&app, &acme, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail:?} should say {says:?}");
        assert!(!detail.contains(&globex_task), "{detail}");
    }
    assert_eq!(
        store.head_position().await.unwrap(),
        head,
        "nothing was appended"
    );
    let (status, listed) = app.read(Some(&acme), "/v1/plans").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"], json!([]));

    // Two tries of one plan at once, under one Idempotency-Key: one plan.
    let body = json!({"tasks": [echo("x", &[]), echo("y", &["x"])]});
    let try_once = || {
        send(
            app.post(&acme, "/v1/plans")
                .header("idempotency-key", "concurrent-1")
                .json(&body),
        )
    };
    let (first, second) = tokio::join!(try_once(), try_once());
    let mut statuses = [first.status(), second.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED]);
    let (first, second): (Value, Value) =
        (first.json().await.unwrap(), second.json().await.unwrap());
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["tasks"], second["tasks"]);
    let plan_streams = app
        .database
        .client()
        .await
        .query_one(
            "SELECT count(DISTINCT stream_id) FROM events WHERE stream_id LIKE 'plan-%'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(plan_streams, 1);

    // An existing task of the same tenant may be a parent by its id.
    let parent = app
        .submitted(&acme, json!({"kind": "echo", "params": {"message": "hi"}}))
        .await;
    let parent_id = parent["id"].as_str().unwrap().to_owned();
    let (status, plan) = post_plan(
        &app,
        &acme,
        &json!({"tasks": [echo("child", &[&parent_id])]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    assert_eq!(plan["counts"], json!({"waiting": 1}));
    let child = id_of(&plan, "child");
    let (_, task) = app
        .read(Some(&acme), &format!("/v1/tasks/{}?min_version=1", child.0))
        .await;
    assert_eq!(task["depends_on"], json!([parent_id]));
    let read = app
        .read(
            Some(&acme),
            &format!(
                "/v1/plans/{}?min_position={}",
                plan["id"].as_str().unwrap(),
                plan["position"]
            ),
        )
        .await;
    assert_eq!(read.0, StatusCode::OK, "{}", read.1);
    assert_eq!(read.1["counts"], json!({"waiting": 1}));
    assert_eq!(read.1["tasks"][0]["name"], "child");
    app.finish().await;
}
