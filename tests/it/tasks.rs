//! `/v1/tasks` over real HTTP against real PostgreSQL: submit, read, list,
//! filter, page, export CSV, cancel, the worker commands' lifecycle,
//! idempotent retries, read-your-writes, and a rebuilt projection equal to
//! the live one.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use reqwest::{Response, StatusCode};
use serde_json::{json, Map, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::task::{
    Artifact, CompleteTask, FailTask, RecordTaskProgress, StartTask, TaskCommand, TaskId,
    TimeOutTask,
};
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::tasks::TasksProjector;
use taskledger_projections::ProjectorRuntime;
use uuid::Uuid;

use crate::helpers::{complete_first_attempt, start_first_attempt, TestApp};
use crate::support;
use crate::support::http::{item_fields, ok_json, send};
use crate::support::poll::eventually;

/// A client with a key for frontends (`tasks:read`, `tasks:write`).
struct Frontend {
    app: TestApp,
    key: String,
}

impl Frontend {
    async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    async fn spawn_with(adjust: impl FnOnce(&mut taskledger::config::settings::Settings)) -> Self {
        let app = TestApp::spawn_with_kinds(adjust).await;
        let key = app.key(&[Scope::TasksRead, Scope::TasksWrite]).await;
        Self { app, key }
    }

    async fn submit(&self, body: &Value) -> Response {
        self.submit_with(body, None).await
    }

    async fn submit_with(&self, body: &Value, idempotency_key: Option<&str>) -> Response {
        let mut request = self.app.post(&self.key, "/v1/tasks").json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        send(request).await
    }

    /// Submits and expects 201; the task as answered.
    async fn created(&self, body: &Value) -> Value {
        let response = self.submit(body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Response {
        send(self.app.get(&self.key, path)).await
    }

    /// GET `path` asking for CSV.
    async fn csv(&self, path: &str) -> Response {
        send(self.app.get(&self.key, path).header("accept", "text/csv")).await
    }

    async fn get_json(&self, path: &str) -> Value {
        ok_json(self.get(path).await, path).await
    }

    /// Executes a worker's `command` on the task `id`; the task as read at
    /// the version that command made.
    async fn after_worker(&self, id: &str, command: TaskCommand) -> Value {
        let version = worker(&self.app, id, command).await;
        self.get_json(&format!("/v1/tasks/{id}?min_version={version}"))
            .await
    }

    /// Expects GET `path` to be refused with a problem of `status` whose
    /// detail holds `needle`.
    async fn refused(&self, path: &str, status: StatusCode, needle: &str) {
        problem(self.get(path).await, status, needle).await;
    }

    async fn cancel(&self, id: &str, body: Option<Value>) -> Response {
        let mut request = self.app.post(&self.key, &format!("/v1/tasks/{id}/cancel"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    /// Every task the listing with `query` returns, following cursors with
    /// pages of `limit`.
    async fn list_all(&self, query: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tasks?limit={limit}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get_json(&path).await;
            let page_items = page["items"].as_array().unwrap();
            assert!(page_items.len() <= limit as usize);
            items.extend(page_items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => {
                    assert_eq!(
                        page_items.len(),
                        limit as usize,
                        "only full pages have a next page"
                    );
                    cursor = Some(next.to_owned());
                }
                None => return items,
            }
        }
    }
}

/// Asserts that the live `tasks` and `results` tables (service stopped)
/// equal, row for row, a projection built from scratch from the whole log;
/// their row counts.
async fn live_equals_a_projection_from_scratch(
    database: &taskledger_events::testing::TestDatabase,
    store: taskledger_events::postgres::PgEventStore,
) -> (usize, usize) {
    let client = database.client().await;
    let snapshot = || async {
        let rows = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .query(sql, &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get::<_, String>(0))
                    .collect::<Vec<_>>()
            }
        };
        (
            rows("SELECT row_to_json(t)::text FROM tasks t ORDER BY task_id").await,
            rows("SELECT row_to_json(r)::text FROM results r ORDER BY task_id").await,
        )
    };
    let live = snapshot().await;
    client
        .batch_execute(
            "TRUNCATE tasks, results;
             UPDATE projector_checkpoints SET position = 0 WHERE projector = 'tasks'",
        )
        .await
        .unwrap();
    ProjectorRuntime::new(store, TasksProjector, RuntimeOptions::default())
        .catch_up(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(snapshot().await, live);
    (live.0.len(), live.1.len())
}

fn echo(message: &str, frontend: &str) -> Value {
    json!({"kind": "echo", "params": {"message": message}, "tenant": "default", "frontend_id": frontend})
}

/// Expects a problem with `status` whose detail holds `needle`; the body.
async fn problem(response: Response, status: StatusCode, needle: &str) -> Value {
    support::http::problem(response, status, &[needle]).await
}

async fn worker(app: &TestApp, id: &str, command: TaskCommand) -> u64 {
    app.as_worker(TaskId(Uuid::parse_str(id).unwrap()), command)
        .await
}

/// How many task events and task streams the log holds.
async fn task_events_and_streams(app: &TestApp) -> (i64, i64) {
    let row = app
        .row("SELECT count(*), count(DISTINCT stream_id) FROM events WHERE stream_id LIKE 'task-%'")
        .await;
    (row.get(0), row.get(1))
}

fn task_id(task: &Value) -> TaskId {
    TaskId(Uuid::parse_str(task["id"].as_str().unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_read_cancel_and_history() {
    let frontend = Frontend::spawn().await;
    let response = frontend.submit(&echo("hello", "web")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let submitted: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/tasks/{}", submitted["id"].as_str().unwrap())
    );
    assert_eq!(submitted["status"], "queued");
    assert_eq!(submitted["kind"], "echo");
    assert_eq!(submitted["params"], json!({"message": "hello"}));
    assert_eq!(submitted["stream_version"], 1);
    // The kind's limits fill what the submission left out.
    assert_eq!(submitted["timeout_seconds"], 60);
    assert_eq!(submitted["max_attempts"], 2);
    assert_eq!(submitted["priority"], 0);

    // Read-your-writes: the projection's answer equals the command's.
    let read = frontend
        .get_json(&format!("{location}?min_version=1"))
        .await;
    assert_eq!(read, submitted);

    let id = submitted["id"].as_str().unwrap();
    problem(
        frontend
            .cancel(id, Some(json!({"reason": "bad\u{0}reason"})))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "NUL",
    )
    .await;
    problem(
        frontend.cancel(id, Some(json!({"reasons": "typo"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field `reasons`",
    )
    .await;
    let canceled = frontend
        .cancel(id, Some(json!({"reason": "not needed"})))
        .await;
    assert_eq!(canceled.status(), StatusCode::OK);
    let canceled: Value = canceled.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["error"], "not needed");
    assert_eq!(canceled["stream_version"], 2);
    let read = frontend
        .get_json(&format!("{location}?min_version=2"))
        .await;
    assert_eq!(read, canceled);

    let again = frontend.cancel(id, None).await;
    problem(again, StatusCode::CONFLICT, "already canceled").await;
    let result = frontend.get(&format!("{location}/result")).await;
    let body = problem(result, StatusCode::NOT_FOUND, "canceled").await;
    assert_eq!(body["type"], "/v1/problems/no-result");

    let history = frontend.get_json(&format!("{location}/events")).await;
    let types = item_fields(&history, "event_type");
    assert_eq!(types, ["TaskSubmitted", "TaskCanceled"]);
    assert_eq!(history["next_cursor"], Value::Null);
    let first = &history["items"][0];
    assert_eq!(first["version"], 1);
    assert_eq!(first["hash"].as_str().unwrap().len(), 64);
    assert!(first["metadata"]["actor"].is_string(), "{first}");
    // Paged one event at a time, the history is the same.
    let page = frontend
        .get_json(&format!("{location}/events?limit=1"))
        .await;
    assert_eq!(page["items"][0], history["items"][0]);
    let next = page["next_cursor"].as_str().unwrap();
    let page = frontend
        .get_json(&format!("{location}/events?limit=1&cursor={next}"))
        .await;
    assert_eq!(page["items"][0], history["items"][1]);
    frontend
        .refused(
            &format!("{location}/events?cursor={}", u64::MAX),
            StatusCode::BAD_REQUEST,
            "cursor",
        )
        .await;
    // A position the log does not have is the caller's mistake, not lag.
    frontend
        .refused(
            "/v1/tasks?min_position=999999",
            StatusCode::UNPROCESSABLE_ENTITY,
            "beyond the log",
        )
        .await;
    // The scheme name is case-insensitive.
    let lowercase = send(
        frontend
            .app
            .http
            .get(frontend.app.url(&location))
            .header("authorization", format!("bearer {}", frontend.key)),
    )
    .await;
    assert_eq!(lowercase.status(), StatusCode::OK);

    let missing = Uuid::new_v4();
    for path in [
        format!("/v1/tasks/{missing}"),
        format!("/v1/tasks/{missing}/result"),
        format!("/v1/tasks/{missing}/events"),
    ] {
        frontend
            .refused(&path, StatusCode::NOT_FOUND, "does not exist")
            .await;
    }
    problem(
        frontend.cancel(&missing.to_string(), None).await,
        StatusCode::NOT_FOUND,
        "does not exist",
    )
    .await;
    frontend
        .refused(
            "/v1/tasks/not-a-uuid",
            StatusCode::BAD_REQUEST,
            "not a task id",
        )
        .await;
    frontend.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_and_store_nothing() {
    let frontend = Frontend::spawn().await;
    // Every one of these is a well-formed request the service cannot accept.
    let unprocessable: Vec<(Value, &str)> = vec![
        (
            json!({"kind": "nope", "params": {}, "tenant": "default", "frontend_id": "web"}),
            "unknown task kind \"nope\"",
        ),
        (
            json!({"kind": "echo", "params": {}, "tenant": "default", "frontend_id": "web"}),
            "needs the parameter \"message\"",
        ),
        (
            json!({"kind": "echo", "params": {"message": "x", "colour": "red"}, "tenant": "default", "frontend_id": "web"}),
            "has no parameter \"colour\"",
        ),
        (
            json!({"kind": "echo", "params": {"message": {"nested": 1}}, "tenant": "default", "frontend_id": "web"}),
            "must be a string, number or boolean",
        ),
        (
            json!({"kind": "echo", "params": {"message": "x"}, "tenant": "default", "frontend_id": "web", "urgent": true}),
            "unknown field `urgent`",
        ),
        (
            // A platform key names the task's tenant (frontend_id is
            // optional: the tenant's name).
            json!({"kind": "echo", "params": {"message": "x"}}),
            "must name the task's tenant",
        ),
        (
            json!({"kind": "echo", "params": {"message": "x"}, "tenant": "default", "frontend_id": "web", "priority": 5000}),
            "priority must be from -1000 to 1000",
        ),
        (
            json!({"kind": "echo", "params": {"message": "x"}, "tenant": "default", "frontend_id": ""}),
            "frontend_id",
        ),
        (
            json!({"kind": "echo", "params": {"message": "x"}, "tenant": "default", "frontend_id": "web", "timeout_seconds": 0}),
            "timeout_seconds",
        ),
        // PostgreSQL's jsonb cannot hold \u0000: stored, it would stop the
        // tasks projector for good.
        (
            json!({"kind": "echo", "params": {"message": "a\u{0}b"}, "tenant": "default", "frontend_id": "web"}),
            "NUL",
        ),
    ];
    for (body, needle) in unprocessable {
        problem(
            frontend.submit(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            needle,
        )
        .await;
    }
    let malformed = send(
        frontend
            .app
            .post(&frontend.key, "/v1/tasks")
            .header("content-type", "application/json")
            .body(r#"{"kind": "echo","#),
    )
    .await;
    problem(malformed, StatusCode::BAD_REQUEST, "EOF").await;
    let not_json = send(
        frontend
            .app
            .post(&frontend.key, "/v1/tasks")
            .header("content-type", "text/plain")
            .body(echo("x", "web").to_string()),
    )
    .await;
    problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type").await;
    let huge = echo(&"x".repeat(300 * 1024), "web");
    problem(
        frontend.submit(&huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger",
    )
    .await;
    problem(
        frontend
            .submit_with(&echo("x", "web"), Some("has space"))
            .await,
        StatusCode::BAD_REQUEST,
        "Idempotency-Key",
    )
    .await;

    let (events, _) = task_events_and_streams(&frontend.app).await;
    assert_eq!(events, 0, "a refused submission stored an event");
    frontend.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_submissions_return_the_same_task() {
    let frontend = Frontend::spawn().await;
    let with_client_id = json!({
        "kind": "echo", "params": {"message": "once"}, "tenant": "default", "frontend_id": "web",
        "client_task_id": "order-17"
    });
    let first = frontend.created(&with_client_id).await;
    let retry = frontend.submit(&with_client_id).await;
    assert_eq!(retry.status(), StatusCode::OK);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(retry["stream_version"], 1);
    // The same client id from another frontend is another task.
    let mut other_frontend = with_client_id.clone();
    other_frontend["frontend_id"] = json!("mobile");
    let other = frontend.created(&other_frontend).await;
    assert_ne!(other["id"], first["id"]);
    // The same client id with different contents is refused.
    let mut changed = with_client_id.clone();
    changed["params"]["message"] = json!("twice");
    problem(
        frontend.submit(&changed).await,
        StatusCode::CONFLICT,
        "order-17",
    )
    .await;

    // Eight concurrent tries with one Idempotency-Key: one task, one 201.
    let body = echo("concurrent", "web");
    let tries = (0..8).map(|_| frontend.submit_with(&body, Some("retry-abc")));
    let responses = futures::future::join_all(tries).await;
    let mut created = 0;
    let mut ids = BTreeSet::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
        let task: Value = response.json().await.unwrap();
        ids.insert(task["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let reused = frontend
        .submit_with(&echo("something else", "web"), Some("retry-abc"))
        .await;
    let body = problem(reused, StatusCode::UNPROCESSABLE_ENTITY, "Idempotency-Key").await;
    assert_eq!(body["type"], "/v1/problems/idempotency-key-reused");

    let (events, streams) = task_events_and_streams(&frontend.app).await;
    assert_eq!(streams, 3, "order-17, order-17 from mobile, and retry-abc");
    assert_eq!(events, 3, "one TaskSubmitted each");
    frontend.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_pages_and_exports_csv() {
    let frontend = Frontend::spawn().await;
    let mut submitted = Vec::new();
    for index in 0..23 {
        let body = if index % 3 == 0 {
            json!({"kind": "url-analysis", "params": {"url": format!("http://example.test/{index}")},
                   "tenant": "default", "frontend_id": "mobile"})
        } else {
            echo(&format!("message, \"quoted\" {index}"), "web")
        };
        submitted.push(frontend.created(&body).await);
    }
    let cut = submitted[10]["submitted_at"].as_str().unwrap().to_owned();
    // Start two, cancel one.
    for task in &submitted[..2] {
        let start = start_first_attempt(task_id(task), "worker-1");
        worker(&frontend.app, task["id"].as_str().unwrap(), start).await;
    }
    let canceled: Value = frontend
        .cancel(submitted[2]["id"].as_str().unwrap(), None)
        .await
        .json()
        .await
        .unwrap();
    let position = canceled["position"].as_u64().unwrap();
    // A list waits for its writer's position; afterwards everything shows.
    let all = frontend
        .list_all(&format!("min_position={position}"), 7)
        .await;
    assert_eq!(all.len(), 23);
    let ids: Vec<&str> = all
        .iter()
        .map(|task| task["id"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 23, "a task appeared on two pages");
    // Newest first.
    let mut expected: Vec<&Value> = submitted.iter().collect();
    expected.reverse();
    let expected_ids: Vec<&str> = expected
        .iter()
        .map(|task| task["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected_ids);

    let count = |items: &[Value], check: &dyn Fn(&Value) -> bool| {
        items.iter().filter(|task| check(task)).count()
    };
    let running = frontend.list_all("status=running", 5).await;
    assert_eq!(running.len(), 2);
    let open = frontend.list_all("status=running,canceled", 5).await;
    assert_eq!(open.len(), 3);
    let mobile = frontend.list_all("frontend_id=mobile", 3).await;
    assert_eq!(mobile.len(), 8);
    assert_eq!(count(&mobile, &|task| task["kind"] == "url-analysis"), 8);
    let echo_queued = frontend.list_all("kind=echo&status=queued", 100).await;
    // 15 echo tasks, of which #1 runs and #2 is canceled.
    assert_eq!(echo_queued.len(), 13);
    assert_eq!(
        count(&all, &|task| task["kind"] == "echo"
            && task["status"] == "queued"),
        13
    );
    let after = frontend
        .list_all(&format!("submitted_after={}", cut.replace('+', "%2B")), 4)
        .await;
    assert_eq!(after.len(), 12, "tasks 11 to 22");
    let before = frontend
        .list_all(&format!("submitted_before={}", cut.replace('+', "%2B")), 4)
        .await;
    assert_eq!(before.len(), 10, "tasks 0 to 9");
    let from = submitted[5]["submitted_at"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");
    let between = frontend
        .list_all(
            &format!(
                "submitted_after={from}&submitted_before={}",
                cut.replace('+', "%2B")
            ),
            4,
        )
        .await;
    assert_eq!(between.len(), 4, "tasks 6 to 9");

    // CSV: every matching task, in the same order, with quoting intact.
    let response = frontend.csv("/v1/tasks?kind=echo").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[0], "id");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let json_echo = frontend.list_all("kind=echo", 1000).await;
    assert_eq!(rows.len(), json_echo.len());
    let params_column = header.iter().position(|name| name == "params").unwrap();
    let tenant_column = header.iter().position(|name| name == "tenant").unwrap();
    for (row, task) in rows.iter().zip(&json_echo) {
        assert_eq!(&row[0], task["id"].as_str().unwrap());
        assert_eq!(&row[tenant_column], task["tenant"].as_str().unwrap());
        let params: Value = serde_json::from_str(&row[params_column]).unwrap();
        assert_eq!(params, task["params"]);
    }
    // A CSV export honours limit.
    let limited = frontend
        .csv("/v1/tasks?limit=3")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(limited.lines().count(), 4, "{limited}");

    for (query, needle) in [
        ("status=done", "unknown status"),
        ("cursor=garbage", "cursor"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("submitted_after=yesterday", "RFC 3339"),
        ("submitted_before=tomorrow", "submitted_before"),
        ("stauts=queued", "stauts"),
        ("kind=%00", "control characters"),
    ] {
        problem(
            frontend.get(&format!("/v1/tasks?{query}")).await,
            StatusCode::BAD_REQUEST,
            needle,
        )
        .await;
    }
    frontend.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_commands_move_a_task_through_its_life() {
    let frontend = Frontend::spawn().await;
    let task = frontend.created(&echo("work", "web")).await;
    let id = task["id"].as_str().unwrap();
    let the_task = task_id(&task);
    let app = &frontend.app;
    let start = |attempt| {
        TaskCommand::Start(StartTask {
            task_id: the_task,
            worker_id: format!("worker-{attempt}"),
            attempt,
            started_at: Utc::now(),
        })
    };
    worker(app, id, start(1)).await;
    let running = frontend
        .after_worker(
            id,
            TaskCommand::RecordProgress(RecordTaskProgress {
                task_id: the_task,
                attempt: 1,
                percent: Some(40.0),
                message: Some("fetching".into()),
                recorded_at: Utc::now(),
            }),
        )
        .await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["worker_id"], "worker-1");
    assert_eq!(
        running["progress"],
        json!({"percent": 40.0, "message": "fetching"})
    );

    // A retryable failure with an attempt left queues it again, until the
    // due time its worker chose.
    let due = Utc::now().trunc_subsecs(6) + chrono::Duration::seconds(30);
    let queued = frontend
        .after_worker(
            id,
            TaskCommand::Fail(FailTask {
                artifacts: Default::default(),
                task_id: the_task,
                attempt: 1,
                error: "connection reset".into(),
                exit_code: Some(2),
                retryable: true,
                next_attempt_at: Some(due),
                failed_at: Utc::now(),
            }),
        )
        .await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(
        queued["next_attempt_at"]
            .as_str()
            .and_then(|at| at.parse::<chrono::DateTime<Utc>>().ok()),
        Some(due),
        "{queued}"
    );
    assert_eq!(queued["attempts"], 1);
    assert_eq!(queued["error"], "connection reset");
    assert_eq!(queued["progress"], Value::Null);

    worker(app, id, start(2)).await;
    let mut result = Map::new();
    result.insert("verdict".into(), json!("clean"));
    let artifact = Artifact {
        name: "report.txt".into(),
        size: 5,
        sha256: "a".repeat(64),
        media_type: "text/plain".into(),
    };
    let version = worker(
        app,
        id,
        TaskCommand::Complete(CompleteTask {
            task_id: the_task,
            attempt: 2,
            result: result.clone(),
            exit_code: 0,
            artifacts: vec![artifact],
            finished_at: Utc::now(),
        }),
    )
    .await;
    let done = frontend
        .get_json(&format!("/v1/tasks/{id}?min_version={version}"))
        .await;
    assert_eq!(done["status"], "succeeded");
    assert!(done.get("next_attempt_at").is_none(), "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["exit_code"], 0);
    assert!(done["finished_at"].is_string());
    let outcome = frontend
        .get_json(&format!("/v1/tasks/{id}/result?min_version={version}"))
        .await;
    assert_eq!(outcome["result"], json!({"verdict": "clean"}));
    assert_eq!(outcome["attempt"], 2);
    assert_eq!(
        outcome["artifacts"],
        json!([{"name": "report.txt", "size": 5, "sha256": "a".repeat(64), "media_type": "text/plain"}])
    );
    problem(
        frontend.cancel(id, None).await,
        StatusCode::CONFLICT,
        "already succeeded",
    )
    .await;

    // Another task times out.
    let slow = frontend.created(&echo("slow", "web")).await;
    let slow_id = slow["id"].as_str().unwrap();
    let slow_task = task_id(&slow);
    worker(app, slow_id, start_first_attempt(slow_task, "worker-9")).await;
    let timed_out = frontend
        .after_worker(
            slow_id,
            TaskCommand::TimeOut(TimeOutTask {
                task_id: slow_task,
                attempt: 1,
                timed_out_at: Utc::now(),
            }),
        )
        .await;
    assert_eq!(timed_out["status"], "timed_out");
    assert_eq!(timed_out["error"], "attempt 1 ran past the task's timeout");
    frontend.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_wait_for_their_version_and_say_when_they_cannot() {
    let frontend = Frontend::spawn_with(|settings| settings.read_wait_ms = 300).await;
    let task = frontend.created(&echo("wait", "web")).await;
    let id = task["id"].as_str().unwrap();
    // A version the task does not have is the caller's mistake.
    frontend
        .refused(
            &format!("/v1/tasks/{id}?min_version=5"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at version 1",
        )
        .await;

    // Hold the projector back: it cannot write `tasks` while this lock lasts.
    let mut blocker = frontend.app.database.client().await;
    let transaction = blocker.transaction().await.unwrap();
    transaction
        .execute("LOCK TABLE tasks IN EXCLUSIVE MODE", &[])
        .await
        .unwrap();
    let canceled: Value = frontend.cancel(id, None).await.json().await.unwrap();
    assert_eq!(canceled["stream_version"], 2);
    let late = frontend.get(&format!("/v1/tasks/{id}?min_version=2")).await;
    assert_eq!(late.headers()["retry-after"], "1");
    problem(late, StatusCode::SERVICE_UNAVAILABLE, "has not caught up").await;
    let position = canceled["position"].as_u64().unwrap();
    let late_list = frontend
        .get(&format!("/v1/tasks?min_position={position}"))
        .await;
    problem(
        late_list,
        StatusCode::SERVICE_UNAVAILABLE,
        "has not caught up",
    )
    .await;

    // Released, the same read waits and answers.
    let path = format!("/v1/tasks/{id}?min_version=2");
    let waiting = frontend.get(&path);
    let release = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        transaction.rollback().await.unwrap();
    };
    let (response, ()) = tokio::join!(waiting, release);
    assert_eq!(response.status(), StatusCode::OK);
    let read: Value = response.json().await.unwrap();
    assert_eq!(read, canceled);
    frontend.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_projection_equals_the_live_one() {
    let frontend = Frontend::spawn().await;
    let mut last_position = 0;
    for index in 0..12 {
        let task = frontend.created(&echo(&format!("m{index}"), "web")).await;
        let id = task["id"].as_str().unwrap().to_owned();
        last_position = task["position"].as_u64().unwrap();
        if index % 2 == 0 {
            let start = start_first_attempt(task_id(&task), "w");
            worker(&frontend.app, &id, start).await;
        }
        if index % 4 == 0 {
            let complete = complete_first_attempt(task_id(&task));
            worker(&frontend.app, &id, complete).await;
        }
        if index % 3 == 1 && index % 4 != 0 {
            let canceled: Value = frontend.cancel(&id, None).await.json().await.unwrap();
            last_position = canceled["position"].as_u64().unwrap();
        }
    }
    let store = frontend.app.store();
    let head = taskledger_events::EventStore::head_position(&store)
        .await
        .unwrap();
    assert!(head >= last_position);
    frontend
        .get_json(&format!("/v1/tasks?min_position={head}&limit=1"))
        .await;
    let database = frontend.app.stop().await;
    let (tasks, results) = live_equals_a_projection_from_scratch(&database, store).await;
    assert_eq!((tasks, results), (12, 3));
    database.drop_database().await;
}

/// A blue/green rebuild started over HTTP while frontends keep submitting
/// and reading: every request is answered, the tables are swapped, and the
/// result equals a projection built from scratch from the whole log (the
/// old projection plus what came during the rebuild).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_over_http_swaps_tables_while_the_api_keeps_answering() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let frontend = Arc::new(Frontend::spawn().await);
    let admin = frontend.app.key(&[Scope::Admin]).await;
    let mut ids = Vec::new();
    for index in 0..150 {
        let task = frontend
            .created(&echo(&format!("before {index}"), "web"))
            .await;
        let id = task["id"].as_str().unwrap().to_owned();
        if index % 5 == 0 {
            assert_eq!(frontend.cancel(&id, None).await.status(), StatusCode::OK);
        }
        ids.push(id);
    }
    let client = frontend.app.database.client().await;
    let table_oid = || async {
        client
            .query_one("SELECT 'tasks'::regclass::oid", &[])
            .await
            .unwrap()
            .get::<_, u32>(0)
    };
    let live_table = table_oid().await;

    let running = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (frontend, running) = (frontend.clone(), running.clone());
        async move {
            let mut submitted = 0;
            while running.load(Ordering::SeqCst) {
                let response = frontend
                    .submit(&echo(&format!("during {submitted}"), "web"))
                    .await;
                assert_eq!(response.status(), StatusCode::CREATED);
                submitted += 1;
            }
            submitted
        }
    });
    let reader = tokio::spawn({
        let (frontend, running, ids) = (frontend.clone(), running.clone(), ids.clone());
        async move {
            let mut reads = 0;
            while running.load(Ordering::SeqCst) {
                let id = &ids[reads % ids.len()];
                let task = frontend.get_json(&format!("/v1/tasks/{id}")).await;
                assert_eq!(task["id"], id.as_str());
                let page = frontend.get_json("/v1/tasks?limit=20").await;
                assert_eq!(page["items"].as_array().unwrap().len(), 20);
                reads += 1;
            }
            reads
        }
    });

    let admin_get = |path: String| {
        let (frontend, admin) = (frontend.clone(), admin.clone());
        async move {
            let response = send(frontend.app.get(&admin, &path)).await;
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let post_rebuild = |name: &'static str| {
        let (frontend, admin) = (frontend.clone(), admin.clone());
        async move {
            send(
                frontend
                    .app
                    .post(&admin, &format!("/v1/projections/{name}/rebuild")),
            )
            .await
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = post_rebuild("tasks").await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    assert_eq!(
        started.headers()["location"].to_str().unwrap(),
        "/v1/projections/tasks"
    );
    let started: Value = started.json().await.unwrap();
    assert_eq!(started["name"], "tasks");
    assert!(
        ["building", "swapping", "done"].contains(&started["rebuild"]["state"].as_str().unwrap()),
        "{started}"
    );
    let done = eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let (status, view) = admin_get("/v1/projections/tasks".into()).await;
            assert_eq!(status, StatusCode::OK, "{view}");
            if view["rebuild"]["state"] == "done" {
                return Ok(view);
            }
            Err(view.to_string())
        },
    )
    .await;
    let rebuild = &done["rebuild"];
    assert!(rebuild["position"].as_u64().unwrap() >= 150, "{done}");
    assert!(rebuild["events_per_s"].as_f64().unwrap() > 0.0, "{done}");
    assert!(rebuild["finished_at"].is_string(), "{done}");
    assert_eq!(done["version"], 4);

    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::SeqCst);
    let submitted = writer.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(
        submitted > 0 && reads > 0,
        "{submitted} submits, {reads} reads"
    );
    assert_ne!(table_oid().await, live_table, "the tables were swapped");

    // A second rebuild while one holds the lock is refused; unknown names
    // are 404.
    let lock = frontend.app.database.client().await;
    lock.execute(
        "SELECT pg_advisory_lock($1)",
        &[&taskledger_projections::runtime::lock_key("rebuild:tasks")],
    )
    .await
    .unwrap();
    assert_eq!(post_rebuild("tasks").await.status(), StatusCode::CONFLICT);
    let (status, view) = admin_get("/v1/projections/tasks".into()).await;
    assert_eq!(
        (status, &view["rebuild"]["state"]),
        (StatusCode::OK, &json!("done"))
    );
    drop(lock);
    assert_eq!(post_rebuild("nope").await.status(), StatusCode::NOT_FOUND);

    let store = frontend.app.store();
    let head = taskledger_events::EventStore::head_position(&store)
        .await
        .unwrap();
    frontend
        .get_json(&format!("/v1/tasks?min_position={head}&limit=1"))
        .await;
    let frontend = Arc::into_inner(frontend).expect("the helpers are done");
    let database = frontend.app.stop().await;
    let (tasks, results) = live_equals_a_projection_from_scratch(&database, store).await;
    assert_eq!((tasks, results), (150 + submitted, 0));
    database.drop_database().await;
}
