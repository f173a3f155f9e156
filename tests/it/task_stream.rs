//! A tenant's change stream (`GET /v1/tasks/stream`) over real HTTP against
//! real PostgreSQL: two tenants' tasks interleaved, each tenant hearing of
//! its own only, in the log's order, and a platform key of all; a resume
//! with `Last-Event-ID` giving exactly the rest; the frontend and kind
//! filters; scopes; a revoked key's open stream ending.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use taskledger_events::apikey::{ApiKeyId, Scope};
use taskledger_events::task::{
    RecordJobRunning, RecordJobSubmitted, RecordTaskProgress, RetryTask, StartTask, TaskCommand,
    TaskId,
};
use taskledger_events::tenant::Access;
use taskledger_events::EventStore;

use crate::helpers::{
    complete_first_attempt, create_key_with, random_bytes, start_first_attempt, TestApp,
};
use crate::limits::{ends_within, revoke};
use crate::support::http::{problem, send};
use crate::support::sse::SseReader;

/// What a test compares of a change: task, status, attempt, event type.
type Seen = (String, String, u64, String);

fn seen(data: &Value) -> Seen {
    (
        data["task_id"].as_str().unwrap().to_owned(),
        data["status"].as_str().unwrap().to_owned(),
        data["attempt"].as_u64().unwrap(),
        data["event_type"].as_str().unwrap().to_owned(),
    )
}

fn change(task: &str, status: &str, attempt: u64, event_type: &str) -> Seen {
    (
        task.to_owned(),
        status.to_owned(),
        attempt,
        event_type.to_owned(),
    )
}

fn task_id(id: &str) -> TaskId {
    TaskId(id.parse().unwrap())
}

/// Opens `GET /v1/tasks/stream{query}` with `key`; 200 expected.
async fn open(app: &TestApp, key: &str, query: &str) -> SseReader {
    let response = send(app.get(key, &format!("/v1/tasks/stream{query}"))).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    SseReader::new(response)
}

/// The stream's events up to and including the first of task `last`:
/// (id, data) each, checking each is a `task` event whose id is its
/// position.
async fn read_through(stream: &mut SseReader, last: &str) -> Vec<(u64, Value)> {
    let mut events = Vec::new();
    loop {
        let (id, event, data) = stream.next_event().await;
        assert_eq!(event, "task", "{data}");
        assert_eq!(data["position"], id, "{data}");
        let done = data["task_id"] == last;
        events.push((id, data));
        if done {
            return events;
        }
    }
}

/// Submits an `echo` task as `key` with `extra` fields; its id.
async fn submit(app: &TestApp, key: &str, message: &str, extra: Value) -> String {
    let mut body = json!({"kind": "echo", "params": {"message": message}});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let task = app.submitted(key, body).await;
    task["id"].as_str().unwrap().to_owned()
}

async fn cancel(app: &TestApp, key: &str, id: &str) {
    let canceled = send(app.post(key, &format!("/v1/tasks/{id}/cancel"))).await;
    assert_eq!(canceled.status(), StatusCode::OK);
}

/// The changes [`interleave`] made, in the log's order: acme's, globex's,
/// and all; the last of each tenant's is its marker task, submitted at the
/// end.
struct Interleaved {
    acme: Vec<Seen>,
    globex: Vec<Seen>,
    all: Vec<Seen>,
    acme_marker: String,
    globex_marker: String,
}

/// Acme's and globex's tasks, interleaved: submitted, started, progress
/// (no change of status), retried and started again, succeeded, canceled.
async fn interleave(app: &TestApp, acme: &str, globex: &str) -> Interleaved {
    let mut all = Vec::new();
    let a1 = submit(app, acme, "a1", json!({})).await;
    all.push(("acme", change(&a1, "queued", 0, "TaskSubmitted")));
    let g1 = submit(app, globex, "g1", json!({})).await;
    all.push(("globex", change(&g1, "queued", 0, "TaskSubmitted")));
    let a2 = submit(app, acme, "a2", json!({})).await;
    all.push(("acme", change(&a2, "queued", 0, "TaskSubmitted")));
    app.as_worker(task_id(&g1), start_first_attempt(task_id(&g1), "w"))
        .await;
    all.push(("globex", change(&g1, "running", 1, "TaskStarted")));
    app.as_worker(task_id(&a1), start_first_attempt(task_id(&a1), "w"))
        .await;
    all.push(("acme", change(&a1, "running", 1, "TaskStarted")));
    let progress = TaskCommand::RecordProgress(RecordTaskProgress {
        task_id: task_id(&a1),
        attempt: 1,
        percent: Some(50.0),
        message: Some("half".into()),
        recorded_at: Utc::now(),
    });
    app.as_worker(task_id(&a1), progress).await;
    let retry = TaskCommand::Retry(RetryTask {
        task_id: task_id(&a1),
        reason: "the runner stopped".into(),
        retried_at: Utc::now(),
        next_attempt_at: None,
    });
    app.as_worker(task_id(&a1), retry).await;
    all.push(("acme", change(&a1, "queued", 1, "TaskRetried")));
    app.as_worker(task_id(&g1), complete_first_attempt(task_id(&g1)))
        .await;
    all.push(("globex", change(&g1, "succeeded", 1, "TaskSucceeded")));
    let second = TaskCommand::Start(StartTask {
        task_id: task_id(&a1),
        worker_id: "w".into(),
        attempt: 2,
        started_at: Utc::now(),
    });
    app.as_worker(task_id(&a1), second).await;
    all.push(("acme", change(&a1, "running", 2, "TaskStarted")));
    cancel(app, acme, &a2).await;
    all.push(("acme", change(&a2, "canceled", 0, "TaskCanceled")));
    let g2 = submit(app, globex, "g2", json!({})).await;
    all.push(("globex", change(&g2, "queued", 0, "TaskSubmitted")));
    cancel(app, globex, &g2).await;
    all.push(("globex", change(&g2, "canceled", 0, "TaskCanceled")));
    let acme_marker = submit(app, acme, "end", json!({})).await;
    all.push(("acme", change(&acme_marker, "queued", 0, "TaskSubmitted")));
    let globex_marker = submit(app, globex, "end", json!({})).await;
    all.push((
        "globex",
        change(&globex_marker, "queued", 0, "TaskSubmitted"),
    ));
    let of = |tenant: &str| {
        all.iter()
            .filter(|(owner, _)| *owner == tenant)
            .map(|(_, change)| change.clone())
            .collect()
    };
    Interleaved {
        acme: of("acme"),
        globex: of("globex"),
        all: all.iter().map(|(_, change)| change.clone()).collect(),
        acme_marker,
        globex_marker,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_hears_only_of_its_own_tasks_in_the_logs_order() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let scopes = [Scope::TasksRead, Scope::TasksWrite];
    let acme = app.tenant_key("acme", &scopes).await;
    let globex = app.tenant_key("globex", &scopes).await;
    let platform = app.key(&[Scope::TasksRead]).await;
    // Opened before anything happens: each starts at the log's head.
    let mut acme_stream = open(&app, &acme, "").await;
    let mut globex_stream = open(&app, &globex, "").await;
    let mut platform_stream = open(&app, &platform, "").await;
    let mut platform_acme = open(&app, &platform, "?tenant=acme").await;

    let expected = interleave(&app, &acme, &globex).await;
    let acme_seen = read_through(&mut acme_stream, &expected.acme_marker).await;
    let globex_seen = read_through(&mut globex_stream, &expected.globex_marker).await;
    let platform_seen = read_through(&mut platform_stream, &expected.globex_marker).await;
    let platform_acme_seen = read_through(&mut platform_acme, &expected.acme_marker).await;
    let changes = |events: &[(u64, Value)]| -> Vec<Seen> {
        events.iter().map(|(_, data)| seen(data)).collect()
    };
    assert_eq!(changes(&acme_seen), expected.acme);
    assert_eq!(changes(&globex_seen), expected.globex);
    assert_eq!(changes(&platform_seen), expected.all);
    assert_eq!(changes(&platform_acme_seen), expected.acme);

    // In the log's order, each id the position of the very event.
    let store = app.store();
    let log = store.read_all(0, 10_000).await.unwrap();
    for (id, data) in acme_seen.iter().chain(&globex_seen).chain(&platform_seen) {
        let event = &log[usize::try_from(*id).unwrap() - 1];
        assert_eq!(event.global_position, *id);
        assert_eq!(
            event.stream_id,
            format!("task-{}", data["task_id"].as_str().unwrap())
        );
        assert_eq!(event.event_type, data["event_type"]);
        assert_eq!(event.version, data["stream_version"]);
    }
    for events in [&acme_seen, &globex_seen, &platform_seen] {
        assert!(events.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }
    // A change carries the task's own fields and nothing of anyone else.
    let (_, first) = &acme_seen[0];
    let fields: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "attempt",
            "client_task_id",
            "error",
            "event_type",
            "frontend_id",
            "kind",
            "position",
            "recorded_at",
            "status",
            "stream_version",
            "task_id",
            "tenant"
        ]
    );
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["frontend_id"], "acme");
    assert_eq!(first["kind"], "echo");
    let retried = &acme_seen[3].1;
    assert_eq!(retried["event_type"], "TaskRetried");
    assert_eq!(retried["error"], "the runner stopped");
    for (_, data) in &acme_seen {
        assert_eq!(data["tenant"], "acme", "{data}");
    }

    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_gives_exactly_the_rest() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let scopes = [Scope::TasksRead, Scope::TasksWrite];
    let acme = app.tenant_key("acme", &scopes).await;
    let globex = app.tenant_key("globex", &scopes).await;
    let expected = interleave(&app, &acme, &globex).await;

    // From the start of the log: everything acme's, as it happened.
    let mut whole = open(&app, &acme, "?after=0").await;
    let all = read_through(&mut whole, &expected.acme_marker).await;
    let changes: Vec<Seen> = all.iter().map(|(_, data)| seen(data)).collect();
    assert_eq!(changes, expected.acme);

    // Resumed after each change in turn (with `after`, which Last-Event-ID
    // overrides): exactly the changes after it, equal to the field, though
    // the stream meets tasks whose earlier events it never read.
    for (index, (id, _)) in all.iter().enumerate().take(all.len() - 1) {
        let response = send(
            app.get(&acme, "/v1/tasks/stream?after=0")
                .header("last-event-id", id.to_string()),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut resumed = SseReader::new(response);
        let rest = read_through(&mut resumed, &expected.acme_marker).await;
        assert_eq!(rest, all[index + 1..], "resumed after {id}");
    }
    // After the last: nothing until the next change.
    let (last, _) = all.last().unwrap();
    let mut resumed = open(&app, &acme, &format!("?after={last}")).await;
    let late = submit(&app, &acme, "late", json!({})).await;
    let events = read_through(&mut resumed, &late).await;
    let late_changes: Vec<Seen> = events.iter().map(|(_, data)| seen(data)).collect();
    assert_eq!(
        late_changes,
        vec![change(&late, "queued", 0, "TaskSubmitted")]
    );
    let (first, _) = &all[0];
    let mut by_after = open(&app, &acme, &format!("?after={first}")).await;
    let rest = read_through(&mut by_after, &expected.acme_marker).await;
    assert_eq!(rest, all[1..]);

    let bad = send(
        app.get(&acme, "/v1/tasks/stream")
            .header("last-event-id", "yesterday"),
    )
    .await;
    problem(bad, StatusCode::BAD_REQUEST, &["Last-Event-ID"]).await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_filters_by_frontend_and_kind() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let key = app
        .tenant_key("acme", &[Scope::TasksRead, Scope::TasksWrite])
        .await;
    let head = app.store().head_position().await.unwrap();
    let task = |kind: &str, frontend: &str, label: &str| {
        let params = if kind == "echo" {
            json!({"message": label})
        } else {
            json!({"url": "http://127.0.0.1:9/"})
        };
        let body = json!({"kind": kind, "params": params, "frontend_id": frontend, "client_task_id": label});
        let app = &app;
        let key = key.clone();
        async move {
            app.submitted(&key, body).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let mut ids = std::collections::HashMap::new();
    for (kind, frontend, label) in [
        ("echo", "web", "echo-web"),
        ("echo", "mobile", "echo-mobile"),
        ("url-analysis", "web", "url-web"),
        ("url-analysis", "mobile", "url-mobile"),
        ("echo", "web", "end-web"),
        ("url-analysis", "mobile", "end-url"),
        ("echo", "mobile", "end-echo-mobile"),
    ] {
        ids.insert(label, task(kind, frontend, label).await);
    }
    for (query, last, expected) in [
        (
            "frontend_id=web",
            "end-web",
            &["echo-web", "url-web", "end-web"][..],
        ),
        (
            "kind=url-analysis",
            "end-url",
            &["url-web", "url-mobile", "end-url"][..],
        ),
        (
            "kind=echo&frontend_id=mobile",
            "end-echo-mobile",
            &["echo-mobile", "end-echo-mobile"][..],
        ),
    ] {
        let mut stream = open(&app, &key, &format!("?after={head}&{query}")).await;
        let events = read_through(&mut stream, &ids[last]).await;
        let labels: Vec<&str> = events
            .iter()
            .map(|(_, data)| data["client_task_id"].as_str().unwrap())
            .collect();
        assert_eq!(labels, expected, "{query}");
    }

    for (query, needle) in [
        ("?kind=%07", "kind must not contain control characters"),
        ("?colour=red", "colour"),
        ("?after=minus", "after"),
    ] {
        let refused = send(app.get(&key, &format!("/v1/tasks/stream{query}"))).await;
        problem(refused, StatusCode::BAD_REQUEST, &[needle]).await;
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_needs_tasks_read_and_ends_when_its_key_is_revoked() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let anonymous = send(app.http.get(app.url("/v1/tasks/stream"))).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    for scopes in [&[Scope::TasksWrite][..], &[Scope::AuditRead][..]] {
        let key = app.tenant_key("acme", scopes).await;
        let refused = send(app.get(&key, "/v1/tasks/stream")).await;
        problem(refused, StatusCode::FORBIDDEN, &["tasks:read"]).await;
    }

    let (doomed_id, doomed): (ApiKeyId, String) =
        create_key_with(&app.store(), &[Scope::TasksRead], random_bytes(), |key| {
            key.access = Access::Tenant("acme".parse().unwrap());
        })
        .await;
    let kept = app.tenant_key("acme", &[Scope::TasksRead]).await;
    let writer = app.tenant_key("acme", &[Scope::TasksWrite]).await;
    let doomed_stream = send(app.get(&doomed, "/v1/tasks/stream")).await;
    assert_eq!(doomed_stream.status(), StatusCode::OK);
    let mut lasting = open(&app, &kept, "").await;

    revoke(&app, doomed_id).await;
    ends_within(doomed_stream, Duration::from_secs(20)).await;
    // Only that one: the other key's stream still hears of acme's tasks.
    let still_here = submit(&app, &writer, "still here", json!({})).await;
    let events = read_through(&mut lasting, &still_here).await;
    assert_eq!(events.len(), 1);
    app.finish().await;
}

/// A task whose attempt waits in an outside executor's queue (a Slurm job
/// recorded, not yet running) is shown `queued`, as `GET /v1/tasks/{id}`
/// shows it; so the stream tells of the hand-over and of the job starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_in_an_outside_queue_is_heard_as_queued_then_running() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let key = app
        .tenant_key("acme", &[Scope::TasksRead, Scope::TasksWrite])
        .await;
    let mut stream = open(&app, &key, "").await;
    let id = submit(&app, &key, "hpc", json!({})).await;
    let task = task_id(&id);
    app.as_worker(task, start_first_attempt(task, "w")).await;
    let submitted = TaskCommand::RecordJobSubmitted(RecordJobSubmitted {
        task_id: task,
        attempt: 1,
        executor: "slurm".into(),
        job_id: "42".into(),
        submitted_at: Utc::now(),
    });
    app.as_worker(task, submitted).await;
    let running = TaskCommand::RecordJobRunning(RecordJobRunning {
        task_id: task,
        attempt: 1,
        job_id: "42".into(),
        running_at: Utc::now(),
    });
    app.as_worker(task, running).await;
    app.as_worker(task, complete_first_attempt(task)).await;
    let mut heard = Vec::new();
    while heard.last().map(|(_, _, _, event): &Seen| event.as_str()) != Some("TaskSucceeded") {
        let (_, _, data) = stream.next_event().await;
        heard.push(seen(&data));
    }
    assert_eq!(
        heard,
        vec![
            change(&id, "queued", 0, "TaskSubmitted"),
            change(&id, "running", 1, "TaskStarted"),
            change(&id, "queued", 1, "TaskJobSubmitted"),
            change(&id, "running", 1, "TaskJobRunning"),
            change(&id, "succeeded", 1, "TaskSucceeded"),
        ]
    );
    let view = send(app.get(&key, &format!("/v1/tasks/{id}"))).await;
    assert_eq!(view.status(), StatusCode::OK);
    app.finish().await;
}
