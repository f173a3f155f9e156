//! Auditing over HTTP against real PostgreSQL: a task as it was
//! (`as_of`, `at_version`), any stream's events as stored, and chain
//! verification of a range — on a clean log and after a row was altered in
//! the database.

use chrono::{DateTime, Duration as TimeDelta, SubsecRound, Utc};
use reqwest::{Response, StatusCode};
use serde_json::{json, Map, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::task::{CompleteTask, StartTask, TaskCommand, TaskId};
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::support::http::{assert_text_contains, ok_json, problem, send};

/// A query string's pairs.
type Query = Vec<(&'static str, String)>;

/// A service with task kinds, a frontend's key and an auditor's key.
struct Audit {
    app: TestApp,
    frontend: String,
    auditor: String,
}

impl Audit {
    async fn spawn() -> Self {
        let app = TestApp::spawn_with_kinds(|_| {}).await;
        let frontend = app.key(&[Scope::TasksRead, Scope::TasksWrite]).await;
        let auditor = app.key(&[Scope::AuditRead]).await;
        Self {
            app,
            frontend,
            auditor,
        }
    }

    /// Submits an echo task; its id.
    async fn submit(&self, message: &str) -> TaskId {
        let (status, task) = self
            .app
            .submit(
                &self.frontend,
                json!({"kind": "echo", "params": {"message": message}, "tenant": "default", "frontend_id": "audit"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        TaskId(Uuid::parse_str(task["id"].as_str().unwrap()).unwrap())
    }

    /// A worker command, as the runner issues it (in-process).
    async fn worker(&self, task_id: TaskId, command: TaskCommand) {
        self.app.as_worker(task_id, command).await;
    }

    /// Submits a task and runs it to success: three events.
    async fn task_through_its_life(&self) -> TaskId {
        let task_id = self.submit("audited").await;
        // Microseconds, as the database keeps them: the read model and the
        // folded log then agree to the digit.
        let now = || Utc::now().trunc_subsecs(6);
        self.worker(
            task_id,
            TaskCommand::Start(StartTask {
                task_id,
                worker_id: "worker-1".into(),
                attempt: 1,
                started_at: now(),
            }),
        )
        .await;
        self.worker(
            task_id,
            TaskCommand::Complete(CompleteTask {
                task_id,
                attempt: 1,
                result: Map::new(),
                exit_code: 0,
                artifacts: Vec::new(),
                finished_at: now(),
            }),
        )
        .await;
        task_id
    }

    async fn get(&self, key: &str, path: &str, query: &[(&str, String)]) -> Response {
        send(self.app.get(key, path).query(query)).await
    }

    /// Expects the auditor's GET of `path` with `query` to be refused with a
    /// problem of `status` whose detail holds every one of `needles`.
    async fn refused(
        &self,
        path: &str,
        query: &[(&str, String)],
        status: StatusCode,
        needles: &[&str],
    ) {
        problem(self.get(&self.auditor, path, query).await, status, needles).await;
    }

    async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Value {
        let response = self.get(&self.auditor, path, query).await;
        ok_json(response, &format!("{path} {query:?}")).await
    }
}

fn instant(event: &Value) -> DateTime<Utc> {
    event["recorded_at"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_as_it_was_at_each_point_of_its_life() {
    let audit = Audit::spawn().await;
    let task_id = audit.task_through_its_life().await;
    let path = format!("/v1/tasks/{}", task_id.0);
    let history = audit
        .get_json(&format!("/v1/tasks/{}/events", task_id.0), &[])
        .await;
    let events = history["items"].as_array().unwrap();
    assert_eq!(events.len(), 3);

    // As of each event's own instant (inclusive), and at each version.
    for (event, status) in events.iter().zip(["queued", "running", "succeeded"]) {
        let version = event["version"].as_u64().unwrap();
        let as_of = audit
            .get_json(&path, &[("as_of", instant(event).to_rfc3339())])
            .await;
        assert_eq!(as_of["status"], status, "as of version {version}: {as_of}");
        assert_eq!(as_of["stream_version"], version);
        assert_eq!(as_of["position"], event["position"]);
        let at_version = audit
            .get_json(&path, &[("at_version", version.to_string())])
            .await;
        assert_eq!(at_version, as_of);
    }
    // Between events: the earlier one's state.
    let between = instant(&events[1]) + (instant(&events[2]) - instant(&events[1])) / 2;
    if between > instant(&events[1]) {
        let running = audit
            .get_json(&path, &[("as_of", between.to_rfc3339())])
            .await;
        assert_eq!(running["status"], "running");
    }
    let running = audit
        .get_json(&path, &[("at_version", "2".to_owned())])
        .await;
    assert_eq!(running["worker_id"], "worker-1");
    assert!(running["started_at"].is_string());
    assert_eq!(running["finished_at"], Value::Null);

    // The folded task is the same document the read model serves.
    let now: Value = audit
        .get(&audit.frontend, &path, &[("min_version", "3".to_owned())])
        .await
        .json()
        .await
        .unwrap();
    let folded = audit
        .get_json(&path, &[("as_of", Utc::now().to_rfc3339())])
        .await;
    assert_eq!(folded, now);

    let before = instant(&events[0]) - TimeDelta::microseconds(1);
    let unknown = format!("/v1/tasks/{}", Uuid::new_v4());
    let refusals: [(&str, Query, StatusCode, &[&str]); 7] = [
        // Before the task existed, and past its stream.
        (
            &path,
            vec![("as_of", before.to_rfc3339())],
            StatusCode::NOT_FOUND,
            &["did not exist yet"],
        ),
        (
            &path,
            vec![("at_version", "0".to_owned())],
            StatusCode::NOT_FOUND,
            &["did not exist yet", "version 0"],
        ),
        (
            &path,
            vec![("at_version", "4".to_owned())],
            StatusCode::UNPROCESSABLE_ENTITY,
            &["version 4 is beyond", "at version 3"],
        ),
        (
            &unknown,
            vec![("at_version", "1".to_owned())],
            StatusCode::NOT_FOUND,
            &["does not exist"],
        ),
        // One point in time at most.
        (
            &path,
            vec![
                ("as_of", Utc::now().to_rfc3339()),
                ("at_version", "1".to_owned()),
            ],
            StatusCode::BAD_REQUEST,
            &["as_of", "at_version"],
        ),
        (
            &path,
            vec![
                ("at_version", "1".to_owned()),
                ("min_version", "1".to_owned()),
            ],
            StatusCode::BAD_REQUEST,
            &["at_version", "min_version"],
        ),
        (
            &path,
            vec![("as_of", "yesterday".to_owned())],
            StatusCode::BAD_REQUEST,
            &["RFC 3339"],
        ),
    ];
    for (path, query, status, needles) in refusals {
        audit.refused(path, &query, status, needles).await;
    }
    audit.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_stream_pages_as_stored() {
    let audit = Audit::spawn().await;
    let task_id = audit.task_through_its_life().await;
    let path = format!("/v1/streams/task-{}/events", task_id.0);

    let first = audit.get_json(&path, &[("limit", "2".to_owned())]).await;
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["event_type"], "TaskSubmitted");
    assert_eq!(items[0]["version"], 1);
    assert_eq!(items[1]["version"], 2);
    assert_eq!(items[0]["hash"].as_str().unwrap().len(), 64);
    assert_eq!(first["next_cursor"], "2");
    let rest = audit
        .get_json(
            &path,
            &[("after_version", "2".to_owned()), ("limit", "2".to_owned())],
        )
        .await;
    let rest_items = rest["items"].as_array().unwrap();
    assert_eq!(rest_items.len(), 1);
    assert_eq!(rest_items[0]["event_type"], "TaskSucceeded");
    assert_eq!(rest["next_cursor"], Value::Null);
    // The same events as the task's own history.
    let history = audit
        .get_json(&format!("/v1/tasks/{}/events", task_id.0), &[])
        .await;
    let all = audit.get_json(&path, &[]).await;
    assert_eq!(all["items"], history["items"]);
    // Past the end of a stream: an empty page.
    let past = audit
        .get_json(&path, &[("after_version", "3".to_owned())])
        .await;
    assert_eq!(past["items"], json!([]));

    // Streams of other aggregates: the auditor's own key.
    let key_stream: String = audit
        .app
        .row("SELECT stream_id FROM events WHERE stream_id LIKE 'apikey-%' ORDER BY global_position LIMIT 1")
        .await
        .get(0);
    let keys = audit
        .get_json(&format!("/v1/streams/{key_stream}/events"), &[])
        .await;
    assert_eq!(keys["items"][0]["event_type"], "ApiKeyCreated");
    assert_eq!(keys["items"][0]["stream_id"], key_stream);

    // Unknown and malformed streams.
    for (stream, status) in [
        (format!("task-{}", Uuid::new_v4()), StatusCode::NOT_FOUND),
        ("ledger-nobody".to_owned(), StatusCode::NOT_FOUND),
        ("device-300434065197640".to_owned(), StatusCode::NOT_FOUND),
        ("nonsense".to_owned(), StatusCode::BAD_REQUEST),
        ("task-not-a-uuid".to_owned(), StatusCode::BAD_REQUEST),
        ("device-123".to_owned(), StatusCode::BAD_REQUEST),
        ("ledger-UPPER".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let response = audit
            .get(&audit.auditor, &format!("/v1/streams/{stream}/events"), &[])
            .await;
        assert_eq!(response.status(), status, "{stream}");
    }
    audit
        .refused(
            &path,
            &[("limit", "1001".to_owned())],
            StatusCode::BAD_REQUEST,
            &["limit"],
        )
        .await;
    // A frontend's key reads tasks, not the log.
    let forbidden = audit.get(&audit.frontend, &path, &[]).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    audit.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_the_exact_row_altered_in_the_database() {
    let audit = Audit::spawn().await;
    for index in 0..5 {
        audit.submit(&format!("verify-{index}")).await;
    }
    let client = audit.app.database.client().await;
    let head: i64 = client
        .query_one("SELECT max(global_position) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let head = u64::try_from(head).unwrap();
    let verify = |query: Vec<(&'static str, String)>| {
        let audit = &audit;
        async move { audit.get_json("/v1/audit/verify", &query).await }
    };

    let clean = verify(Vec::new()).await;
    assert_eq!(
        clean,
        json!({"ok": true, "from": 1, "to": head, "checked": head,
               "first_bad_sequence": null, "problem": null})
    );
    // A range starting mid-log continues from the hash stored before it.
    let middle = verify(vec![("from", "3".into()), ("to", (head - 1).to_string())]).await;
    assert_eq!(middle["ok"], true, "{middle}");
    assert_eq!(middle["checked"], head - 3);

    // Alter one submission's data as someone with database access could.
    let altered: i64 = client
        .query_one(
            "SELECT global_position FROM events WHERE data::text LIKE '%verify-2%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let altered = u64::try_from(altered).unwrap();
    assert!(altered > 3 && altered < head, "{altered} of {head}");
    client
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER events_append_only;
             UPDATE events SET data = replace(data::text, 'verify-2', 'verify-X')::json
              WHERE global_position = {altered};
             ALTER TABLE events ENABLE TRIGGER events_append_only;"
        ))
        .await
        .unwrap();

    let tampered = verify(Vec::new()).await;
    assert_eq!(tampered["ok"], false, "{tampered}");
    assert_eq!(tampered["first_bad_sequence"], altered);
    assert_eq!(tampered["checked"], altered - 1);
    let does_not_verify = format!("global position {altered} does not verify");
    assert_text_contains(&tampered["problem"], &does_not_verify, &tampered);
    let around = verify(vec![
        ("from", "2".into()),
        ("to", (altered + 1).to_string()),
    ])
    .await;
    assert_eq!(around["first_bad_sequence"], altered, "{around}");
    assert_eq!(around["checked"], altered - 2);
    let before = verify(vec![("to", (altered - 1).to_string())]).await;
    assert_eq!(before["ok"], true, "{before}");
    // After the altered row, the chain goes on from the hash stored there.
    let after = verify(vec![("from", (altered + 1).to_string())]).await;
    assert_eq!(after["ok"], true, "{after}");
    assert_eq!(after["to"], head);

    // Ranges one request does not take.
    audit
        .refused(
            "/v1/audit/verify",
            &[("from", "1".into()), ("to", "100001".into())],
            StatusCode::UNPROCESSABLE_ENTITY,
            &["100001 events", "taskledger replay verify"],
        )
        .await;
    for (query, needle) in [
        (
            vec![("from", "4".to_owned()), ("to", "3".to_owned())],
            "after",
        ),
        (vec![("to", (head + 1).to_string())], "beyond the log"),
        (vec![("from", "0".to_owned())], "at least 1"),
    ] {
        audit
            .refused(
                "/v1/audit/verify",
                &query,
                StatusCode::UNPROCESSABLE_ENTITY,
                &[needle],
            )
            .await;
    }
    let forbidden = audit.get(&audit.frontend, "/v1/audit/verify", &[]).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    drop(client);
    audit.app.finish().await;
}
