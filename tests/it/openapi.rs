//! The OpenAPI document against the live server: it is valid
//! (openapi-spec-validator) and keeps its promises (unique operation ids,
//! shared error responses, headers typed as accepted); schemathesis finds no
//! answer it does not describe; and a client generated from it by
//! openapi-python-client submits, polls and reads a result without hand
//! edits.
//!
//! The Python tools are installed by `scripts/pytools.sh` (`scripts/test.sh`
//! runs it and exports `TASKLEDGER_PYTOOLS`, the venv's bin directory).
//! Without them these tests fail and say so; they never pass silently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskledger::http;
use taskledger_events::apikey::Scope;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::support::http::{send, send_json, send_text};
use crate::support::poll::eventually;

/// A kind a runner in the test process runs as a local child process: it
/// prints a line (`stdout.log`) and writes its result (`result.json`). It
/// takes no parameters, so nothing schemathesis submits runs anything else.
const CONFIG: &str = r#"
[kinds.ok]
image = "unused"
executor = "local"
command = ["sh", "-c", "echo done; printf '{\"ok\": true}' > \"$TASKLEDGER_OUT/result.json\""]
timeout_seconds = 30
max_attempts = 1

# Unsigned MO webhooks are accepted, so schemathesis's reach the event store.
[rockblock]
verify_mo_jwt = false
"#;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The venv's bin directory from `TASKLEDGER_PYTOOLS`, with every tool in it.
fn pytools() -> PathBuf {
    let Some(directory) = std::env::var_os("TASKLEDGER_PYTOOLS") else {
        panic!(
            "TASKLEDGER_PYTOOLS is not set: the OpenAPI tests need openapi-spec-validator, \
             schemathesis and openapi-python-client. Install them and run the tests with \
             `TASKLEDGER_PYTOOLS=$(scripts/pytools.sh) cargo test --test it openapi::` \
             (scripts/test.sh does both)"
        );
    };
    let directory = PathBuf::from(directory);
    for tool in [
        "python",
        "openapi-spec-validator",
        "schemathesis",
        "openapi-python-client",
    ] {
        assert!(
            directory.join(tool).is_file(),
            "TASKLEDGER_PYTOOLS={} has no {tool}; rerun scripts/pytools.sh",
            directory.display()
        );
    }
    directory
}

/// A fresh directory for a test's files (kept when the test fails, for a
/// look at what the tools wrote).
fn scratch(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("tl-openapi-{name}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// Runs `program` in `directory` for at most `limit` (then kills it and
/// fails the test, showing what it printed so far); what it printed. It
/// must succeed: otherwise the test fails with `refusal` and the output.
async fn run(
    program: &Path,
    args: &[&str],
    directory: &Path,
    environment: &[(&str, &str)],
    limit: Duration,
    refusal: &str,
) -> String {
    let name = program.file_name().unwrap().to_string_lossy().into_owned();
    let log_path = directory.join(format!("{name}-{}.log", Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(directory)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true);
    for (key, value) in environment {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("starting {}: {error}", program.display()));
    let status = tokio::time::timeout(limit, child.wait()).await;
    if status.is_err() {
        let _ = child.kill().await;
    }
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Ok(status) => {
            assert!(status.unwrap().success(), "{refusal}:\n{output}");
            output
        }
        Err(_) => panic!(
            "{name} {} ran longer than {} s and was stopped; it printed:\n{output}",
            args.join(" "),
            limit.as_secs()
        ),
    }
}

/// Every operation of `document`: (method, path, operation).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                operations.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    operations
}

/// `value`, or what it refers to when it is a `$ref` within `document`.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => document
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} does not resolve")),
        None => value,
    }
}

/// What the issue found and what generated clients trip over, held for
/// every operation, today's and tomorrow's.
#[test]
fn the_document_keeps_its_promises() {
    let document = serde_json::to_value(http::openapi()).unwrap();
    let mut ids = BTreeSet::new();
    for (method, path, operation) in operations(&document) {
        let at = format!("{method} {path}");
        // Unique operation ids: generated clients name functions after them.
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at} has no operationId"));
        assert!(ids.insert(id.to_owned()), "{at}: operationId {id} is taken");

        let responses = operation["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        // Every route behind an API key looks the key up in the database.
        if operation.get("security").is_some() {
            for status in ["401", "403", "503"] {
                assert!(has(status), "{at} does not document {status}");
            }
        }
        // What the JSON extractor answers (the MO webhook, also taking a
        // form, parses its body by hand).
        let body_types: Vec<&String> = operation["requestBody"]["content"]
            .as_object()
            .map(|content| content.keys().collect())
            .unwrap_or_default();
        if body_types == ["application/json"] {
            for status in ["400", "413", "415", "422"] {
                assert!(
                    has(status),
                    "{at} takes JSON but does not document {status}"
                );
            }
        }
        for (status, response) in responses {
            let response = resolve(&document, response);
            let content = response["content"].as_object();
            // Errors are problems (readiness reports its checks instead).
            if status.starts_with('4') || (status.starts_with('5') && path != "/readyz") {
                let types: Vec<&String> = content.map(|c| c.keys().collect()).unwrap_or_default();
                assert_eq!(types, ["application/problem+json"], "{at} {status}");
            }
            // A 503 problem tells when to retry.
            if status == "503" && path != "/readyz" {
                assert!(
                    response["headers"].get("Retry-After").is_some(),
                    "{at}: its 503 does not document Retry-After"
                );
            }
        }
        // Headers typed as they are accepted: optional is left out, never
        // sent as null (a generated client passed None and crashed).
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] == "header" {
                let types = &parameter["schema"]["type"];
                assert!(
                    types.is_string(),
                    "{at}: header {} is typed {types}",
                    parameter["name"]
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_passes_openapi_spec_validator() {
    let tools = pytools();
    let app = TestApp::spawn().await;
    let response = send(app.http.get(app.url("/v1/openapi.json"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    // The document the Rust checks above hold is the one served.
    let served: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(served, serde_json::to_value(http::openapi()).unwrap());

    let directory = scratch("validator");
    std::fs::write(directory.join("openapi.json"), &text).unwrap();
    let output = run(
        &tools.join("openapi-spec-validator"),
        &["openapi.json"],
        &directory,
        &[],
        Duration::from_secs(60),
        "openapi-spec-validator refuses /v1/openapi.json",
    )
    .await;
    assert!(output.contains("OK"), "{output}");
    app.finish().await;
    let _ = std::fs::remove_dir_all(&directory);
}

/// The service with a runner of [`CONFIG`]'s kind in this process (jobs
/// pass in-process; no broker, no Docker).
async fn spawn_with_runner(data_dir: &Path) -> TestApp {
    TestApp::spawn_in_process(CONFIG, data_dir, |_| {}).await
}

/// Submits a task of kind `ok` and waits until it succeeded; its id.
async fn succeeded_task(app: &TestApp, key: &str) -> String {
    let (status, created) = app
        .submit(
            key,
            json!({"kind": "ok", "tenant": "default", "frontend_id": "seed"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/tasks/{id}?min_version=1");
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let task = send_json(app.get(key, &path)).await;
            if task["status"] == "succeeded" {
                return Ok(());
            }
            assert!(
                ["queued", "running"].contains(&task["status"].as_str().unwrap()),
                "{task}"
            );
            Err(format!("not done within 30 s: {task}"))
        },
    )
    .await;
    id
}

/// schemathesis's standard checks against the live server, every operation
/// included; the real resources made first are offered as parameters (a
/// task with a result and files, a device, a ledger, their streams), so
/// reads reach their 200s and not only 404s. Bounded: a fixed number of
/// examples per operation and one worker (Python 3.11's AST construction is
/// not thread-safe, which hypothesis trips over with several), a fixed seed
/// so a failure reproduces, and a hard limit on the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_answer_the_document_does_not_describe() {
    let tools = pytools();
    let directory = scratch("schemathesis");
    let app = spawn_with_runner(&directory.join("data")).await;
    let key = app.key(&[Scope::Admin]).await;
    let task = succeeded_task(&app, &key).await;
    let imei = "300434065197640";
    let queued = send(
        app.post(&key, &format!("/v1/devices/{imei}/messages"))
            .json(&json!({"text": "hello"})),
    )
    .await;
    assert_eq!(queued.status(), StatusCode::ACCEPTED);
    let confirmed = send(
        app.post(&key, "/v1/ledgers/chain-a/confirmations")
            .json(&json!({"from_sequence": 1, "to_sequence": 1, "reference": "tx-seed"})),
    )
    .await;
    assert_eq!(confirmed.status(), StatusCode::CREATED);

    // `path.X` values are offered with that probability; the rest are
    // generated. The event streams never end: each request reads at most
    // three events, or two seconds of silence.
    let config = format!(
        r#"
[dictionaries.tasks]
values = ["{task}"]
[dictionaries.devices]
values = ["{imei}"]
[dictionaries.ledgers]
values = ["chain-a"]
[dictionaries.streams]
values = ["task-{task}", "device-{imei}", "ledger-chain-a"]

[parameters]
"path.id" = {{ dictionary = "tasks", probability = 0.7 }}
"path.imei" = {{ dictionary = "devices", probability = 0.7 }}
"path.ledger" = {{ dictionary = "ledgers", probability = 0.7 }}
"path.stream" = {{ dictionary = "streams", probability = 0.7 }}

[[operations]]
include-path = "/v1/tasks/{{id}}/artifacts/{{name}}"
parameters = {{ "path.name" = "stdout.log" }}

[[operations]]
include-path = "/v1/projections/{{name}}"
parameters = {{ "path.name" = "tasks" }}

# Rebuilds of a small projection really start (202), or find one running
# (409).
[dictionaries.projections]
values = ["devices"]
[[operations]]
include-path = "/v1/projections/{{name}}/rebuild"
parameters = {{ "path.name" = {{ dictionary = "projections", probability = 0.5 }} }}

[[operations]]
include-path = "/v1/events/stream"
request-timeout = 2
max-stream-events = 3

[[operations]]
include-path = "/v1/tasks/stream"
request-timeout = 2
max-stream-events = 3
"#
    );
    std::fs::write(directory.join("schemathesis.toml"), config).unwrap();
    let document = send_json(app.http.get(app.url("/v1/openapi.json"))).await;
    let count = operations(&document).len();

    let started = Instant::now();
    let output = run(
        &tools.join("schemathesis"),
        &[
            "--no-color",
            "--config-file",
            "schemathesis.toml",
            "run",
            &app.url("/v1/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {key}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            // schemathesis leaves out the operation that served the
            // document unless a filter selects it; this selects them all.
            "--include-path-regex",
            "^/",
        ],
        &directory,
        &[("NO_COLOR", "1")],
        Duration::from_secs(240),
        "schemathesis found answers the document does not describe",
    )
    .await;
    // Nothing was left out: every documented operation was tested.
    for needle in [
        format!("Selected: {count}/{count}"),
        format!("Tested: {count}"),
    ] {
        assert!(output.contains(&needle), "{needle}:\n{output}");
    }
    println!(
        "schemathesis: {count} operations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(&directory);
}

/// What a frontend's developer would do: generate a client from the
/// document and use it as generated.
const CLIENT_SCRIPT: &str = r#"
import json
import sys
import time

from taskledger_client import AuthenticatedClient
from taskledger_client.api.tasks import get_artifact, get_result, get_task, submit_task
from taskledger_client.models import ResultView, Status, SubmitTaskRequest, TaskView
from taskledger_client.types import File

client = AuthenticatedClient(base_url=sys.argv[1], token=sys.argv[2], raise_on_unexpected_status=True)
request = SubmitTaskRequest(kind="ok", frontend_id="python-client")

# Without an Idempotency-Key (the header left out, not sent as None) ...
plain = submit_task.sync_detailed(client=client, body=request)
assert plain.status_code == 201, plain
# ... and with one: a retry answers the same task.
first = submit_task.sync_detailed(client=client, body=request, idempotency_key="python-client-1")
again = submit_task.sync_detailed(client=client, body=request, idempotency_key="python-client-1")
assert (first.status_code, again.status_code) == (201, 200), (first, again)
task = first.parsed
assert isinstance(task, TaskView), task
assert again.parsed.id == task.id

# Read your write, then poll until it is finished.
seen = get_task.sync(id=task.id, client=client, min_version=task.stream_version)
assert isinstance(seen, TaskView), seen
deadline = time.monotonic() + 30
while seen.status in (Status.QUEUED, Status.RUNNING):
    assert time.monotonic() < deadline, seen
    time.sleep(0.05)
    seen = get_task.sync(id=task.id, client=client)
    assert isinstance(seen, TaskView), seen
assert seen.status == Status.SUCCEEDED, seen

result = get_result.sync(id=task.id, client=client)
assert isinstance(result, ResultView), result
names = sorted(artifact.name for artifact in result.artifacts)
content = get_artifact.sync(id=task.id, name="result.json", client=client)
assert isinstance(content, File), content
print("RESULT " + json.dumps({
    "id": str(task.id),
    "result": result.result.to_dict(),
    "artifacts": names,
    "result.json": json.loads(content.payload.read()),
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_submits_polls_and_reads_a_result() {
    let tools = pytools();
    let directory = scratch("client");
    let app = spawn_with_runner(&directory.join("data")).await;
    let key = app
        .tenant_key("python", &[Scope::TasksWrite, Scope::TasksRead])
        .await;
    let document = send_text(app.http.get(app.url("/v1/openapi.json"))).await;
    std::fs::write(directory.join("openapi.json"), document).unwrap();
    // No post-generation hooks (formatters): the code is used as generated.
    std::fs::write(directory.join("generator.yaml"), "post_hooks: []\n").unwrap();

    let started = Instant::now();
    run(
        &tools.join("openapi-python-client"),
        &[
            "generate",
            "--path",
            "openapi.json",
            "--meta",
            "none",
            "--output-path",
            "taskledger_client",
            "--config",
            "generator.yaml",
            "--fail-on-warning",
        ],
        &directory,
        &[],
        Duration::from_secs(120),
        "openapi-python-client could not generate a whole client",
    )
    .await;
    std::fs::write(directory.join("use_client.py"), CLIENT_SCRIPT).unwrap();
    let used = run(
        &tools.join("python"),
        &["use_client.py", &app.url(""), &key],
        &directory,
        &[("PYTHONPATH", directory.to_str().unwrap())],
        Duration::from_secs(120),
        "the generated client failed",
    )
    .await;
    let line = used
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{used}"));
    let seen: Value = serde_json::from_str(line).unwrap();
    assert_eq!(seen["result"], json!({"ok": true}));
    assert_eq!(seen["result.json"], json!({"ok": true}));
    assert_eq!(seen["artifacts"], json!(["result.json", "stdout.log"]));
    // The service agrees.
    let task =
        send_json(app.get(&key, &format!("/v1/tasks/{}", seen["id"].as_str().unwrap()))).await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["frontend_id"], "python-client");
    println!(
        "openapi-python-client: generated and used in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(&directory);
}

/// A `min_position` or `min_version` the log does not have can never be
/// waited for: every route says so at once with a 422 (found by
/// schemathesis: the ledger routes answered 503 with `Retry-After` after
/// the whole wait, so a client retried forever, and tasks waited the whole
/// wait before their 422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_log_is_a_prompt_422_on_every_route() {
    let wait = Duration::from_secs(10);
    let app = TestApp::spawn_with_kinds(|settings| {
        settings.read_wait_ms = u64::try_from(wait.as_millis()).unwrap();
    })
    .await;
    let key = app.key(&[Scope::Admin]).await;
    let echo = json!({"kind": "echo", "params": {"message": "hi"}, "tenant": "default", "frontend_id": "web"});
    let created = app.submitted(&key, echo).await;
    let id = created["id"].as_str().unwrap();
    let beyond = created["position"].as_u64().unwrap() + 1_000;
    let unknown = Uuid::new_v4();
    for (path, status) in [
        (
            format!("/v1/tasks?min_position={beyond}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/v1/ledgers/chain-a/status?min_position={beyond}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/v1/ledgers/chain-a/holes?min_position={beyond}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/v1/ledgers/chain-a/status?min_position={}", u64::MAX),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/v1/tasks/{id}?min_version=99"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/v1/tasks/{id}/result?min_version=99"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/v1/tasks/{unknown}?min_version=1"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let asked = Instant::now();
        let response = send(app.get(&key, &path)).await;
        let took = asked.elapsed();
        assert_eq!(response.status(), status, "{path}");
        assert!(response.headers().get("retry-after").is_none(), "{path}");
        assert!(
            took < wait / 4,
            "{path} took {} ms (the read wait is {} s)",
            took.as_millis(),
            wait.as_secs()
        );
    }
    app.finish().await;
}

#[test]
fn the_task_view_documents_when_a_waiting_retry_is_due() {
    let document = serde_json::to_value(http::openapi()).unwrap();
    let view = &document["components"]["schemas"]["TaskView"];
    let field = &view["properties"]["next_attempt_at"];
    assert!(
        field["description"]
            .as_str()
            .is_some_and(|text| text.contains("retry's backoff")),
        "{field}"
    );
    assert!(
        !view["required"]
            .as_array()
            .unwrap()
            .contains(&json!("next_attempt_at")),
        "present only while a retry waits: {view}"
    );
}

#[test]
fn the_task_view_documents_a_slurm_jobs_id_and_queued_while_it_waits() {
    let document = serde_json::to_value(http::openapi()).unwrap();
    let schemas = &document["components"]["schemas"];
    let view = &schemas["TaskView"];
    assert!(
        view["properties"]["executor_job"]
            .to_string()
            .contains("ExecutorJobView"),
        "{view}"
    );
    assert!(
        view["properties"]["status"]["description"]
            .as_str()
            .is_some_and(|text| text.contains("queued") && text.contains("Slurm")),
        "{view}"
    );
    let job = &schemas["ExecutorJobView"];
    for field in ["executor", "job_id", "running_at"] {
        assert!(job["properties"].get(field).is_some(), "{field}: {job}");
    }
    assert_eq!(job["required"], json!(["executor", "job_id"]), "{job}");
}
