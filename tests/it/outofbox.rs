//! What a newcomer meets first, for real (PostgreSQL, RabbitMQ, the Docker
//! engine and the busybox test image): input files uploaded and mounted
//! read-only, failed tasks that keep their logs, the list of kinds with
//! what the engine can give them, readiness that counts Docker and
//! RabbitMQ, and two installations sharing one broker.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskledger::adapters::blobs::BlobStore;
use taskledger::adapters::rabbitmq::{self, Topology};
use taskledger::config::settings::Role;
use taskledger::config::FileConfig;
use taskledger::workers::runner::{self, RunnerOptions};
use taskledger_events::apikey::Scope;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::running::{amqp_url, delete_topology, BROKER};
use crate::support::http::{assert_text_contains, item_fields, item_with, send, send_text};

const IMAGE: &str = "taskledger-test-busybox:latest";

fn kinds() -> String {
    format!(
        r#"
[kinds.read-input]
image = "{IMAGE}"
command = ["sh", "-c", "cp /in/data.txt /out/copy.txt; if echo x > /in/data.txt 2>/dev/null; then w=writable; else w=read-only; fi; printf '{{\"mount\": \"%s\"}}' $w > /out/result.json"]
required_inputs = ["data.txt"]
optional_inputs = ["extra.bin"]
timeout_seconds = 60
max_attempts = 1
memory_mb = 64

[kinds.fails]
image = "{IMAGE}"
command = ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"]
timeout_seconds = 60
max_attempts = 1
memory_mb = 64

[kinds.silent-failure]
image = "{IMAGE}"
command = ["sh", "-c", "exit 4"]
max_attempts = 1
memory_mb = 64

[kinds.ghost]
image = "taskledger-no-such-image:latest"
command = ["true"]
max_attempts = 1

[kinds.online]
image = "{IMAGE}"
command = ["true"]
network = "bridge"
max_attempts = 1
"#
    )
}

/// A service that runs tasks in-process on the Docker engine, on a fresh
/// data directory; the service and the directory.
/// A submission of `kind` (no parameters) by frontend `web` of the default
/// tenant.
fn web_task(kind: &str) -> Value {
    json!({"kind": kind, "tenant": "default", "frontend_id": "web"})
}

async fn runner_app() -> (TestApp, PathBuf) {
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let dir = data_dir.clone();
    let app = TestApp::spawn_with_config(&kinds(), move |settings| {
        settings.roles = vec![Role::Api, Role::Projector, Role::Runner];
        settings.amqp_url = None;
        settings.data_dir = dir;
    })
    .await;
    (app, data_dir)
}

/// Stops a [`runner_app`] and removes its data directory.
async fn finish_runner_app(app: TestApp, data_dir: &Path) {
    app.finish().await;
    let _ = std::fs::remove_dir_all(data_dir);
}

/// Uploads `bytes` for the `default` tenant (a platform key must name one).
async fn upload(app: &TestApp, key: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    upload_to(app, key, "/v1/blobs?tenant=default", bytes).await
}

async fn upload_to(app: &TestApp, key: &str, path: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let response = send(
        app.post(key, path)
            .header("content-type", "application/octet-stream")
            .body(bytes),
    )
    .await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_uses_and_learns_of_only_its_own_uploads() {
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let dir = data_dir.clone();
    let app = TestApp::spawn_with_config(&kinds(), move |settings| {
        settings.roles = vec![Role::Api];
        settings.amqp_url = None;
        settings.data_dir = dir;
    })
    .await;
    let acme = app.tenant_key("acme", &[Scope::TasksWrite]).await;
    let globex = app.tenant_key("globex", &[Scope::TasksWrite]).await;
    let platform = app.key(&[Scope::TasksWrite]).await;
    let content = format!("acme's secret {}\n", Uuid::new_v4()).into_bytes();

    let (status, blob) = upload_to(&app, &acme, "/v1/blobs", content.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{blob}");
    let sha256 = blob["sha256"].as_str().unwrap().to_owned();
    let (status, _) = upload_to(&app, &acme, "/v1/blobs", content.clone()).await;
    assert_eq!(status, StatusCode::OK, "acme uploaded these bytes before");

    // globex names acme's digest: refused exactly as a digest nobody
    // uploaded, and nothing is written.
    let nobodys = "0".repeat(64);
    let mut details = Vec::new();
    for digest in [&sha256, &nobodys] {
        let (status, problem) = app
            .submit(
                &globex,
                json!({"kind": "read-input", "inputs": {"data.txt": digest}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        details.push(
            problem["detail"]
                .as_str()
                .unwrap()
                .replace(digest.as_str(), "<digest>"),
        );
    }
    assert_eq!(details[0], details[1]);
    assert!(details[0].contains("was not uploaded"), "{}", details[0]);
    let client = app.database.client().await;
    let tasks: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'TaskSubmitted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tasks, 0);

    // globex uploading the same bytes is told they are new (to it).
    let (status, _) = upload_to(&app, &globex, "/v1/blobs", content.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "not a word of acme's upload");

    // Who may upload for whom.
    let (status, problem) = upload_to(&app, &platform, "/v1/blobs", content.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("?tenant="),
        "{problem}"
    );
    let (status, problem) =
        upload_to(&app, &acme, "/v1/blobs?tenant=globex", content.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, _) = upload_to(&app, &platform, "/v1/blobs?tenant=initech", content).await;
    assert_eq!(status, StatusCode::CREATED);
    let owners: Vec<String> = client
        .query(
            "SELECT tenant FROM blob_owners WHERE sha256 = $1 ORDER BY tenant",
            &[&sha256],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(owners, ["acme", "globex", "initech"]);
    drop(client);
    finish_runner_app(app, &data_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_are_uploaded_checked_and_mounted_read_only() {
    let (app, data_dir) = runner_app().await;
    let key = app.key(&[Scope::TasksRead, Scope::TasksWrite]).await;
    let reader = app.key(&[Scope::TasksRead]).await;

    let content = format!("input {}\n", Uuid::new_v4()).into_bytes();
    let (status, blob) = upload(&app, &key, content.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{blob}");
    assert_eq!(blob["size"], content.len());
    let sha256 = blob["sha256"].as_str().unwrap().to_owned();
    assert_eq!(
        sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&content))
    );
    // The same bytes again: the same name, nothing new stored.
    let (status, again) = upload(&app, &key, content.clone()).await;
    assert_eq!(
        (status, &again["sha256"]),
        (StatusCode::OK, &blob["sha256"])
    );
    // Uploading is writing: a read-only key may not.
    let (status, _) = upload(&app, &reader, b"x".to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Over 16 MiB: 413, and nothing stored.
    let (status, problem) = upload(&app, &key, vec![b'a'; 16 * 1024 * 1024 + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");

    // Submissions that name inputs wrongly change nothing.
    let refusals = [
        (json!({}), "needs the input file \"data.txt\""),
        (
            json!({"data.txt": sha256, "other.txt": sha256}),
            "has no input file \"other.txt\"",
        ),
        (json!({"data.txt": "0".repeat(64)}), "was not uploaded"),
        (
            json!({"data.txt": "not-a-digest"}),
            "64 lowercase hexadecimal",
        ),
    ];
    for (inputs, expected) in refusals {
        let (status, problem) = app
            .submit(
                &key,
                json!({"kind": "read-input", "tenant": "default", "frontend_id": "web", "inputs": inputs}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(expected),
            "{problem} should say {expected:?}"
        );
    }
    let (_, page) = app.read(Some(&key), "/v1/tasks").await;
    assert_eq!(
        page["items"],
        json!([]),
        "a refused submission stored a task"
    );

    let (status, task) = app
        .submit(
            &key,
            json!({"kind": "read-input", "tenant": "default", "frontend_id": "web", "inputs": {"data.txt": sha256}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["inputs"], json!({"data.txt": sha256}));
    let id = task["id"].as_str().unwrap().to_owned();
    let done = app.finished(&key, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["inputs"],
        json!({"data.txt": sha256}),
        "the read model"
    );
    let (_, result) = app
        .read(Some(&key), &format!("/v1/tasks/{id}/result"))
        .await;
    assert_eq!(result["result"]["mount"], "read-only", "{result}");
    let copy = send(app.get(&key, &format!("/v1/tasks/{id}/artifacts/copy.txt")))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(copy.as_ref(), content.as_slice());
    finish_runner_app(app, &data_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_task_keeps_its_logs_as_artifacts() {
    let (app, data_dir) = runner_app().await;
    let key = app.key(&[Scope::TasksRead, Scope::TasksWrite]).await;

    let (_, task) = app.submit(&key, web_task("fails")).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let done = app.finished(&key, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["exit_code"], 3);
    let (status, list) = app
        .read(Some(&key), &format!("/v1/tasks/{id}/artifacts"))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names = item_fields(&list, "name");
    assert_eq!(names, ["stderr.log", "stdout.log"]);
    for (name, text) in [("stdout.log", "to-stdout\n"), ("stderr.log", "to-stderr\n")] {
        let body = send_text(app.get(&key, &format!("/v1/tasks/{id}/artifacts/{name}"))).await;
        assert_eq!(body, text);
    }
    // A failed task has no result; the answer says where its logs are.
    let (status, problem) = app
        .read(Some(&key), &format!("/v1/tasks/{id}/result"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        problem["detail"].as_str().unwrap().contains("/artifacts"),
        "{problem}"
    );

    // A failure that printed nothing: the same answers, with no files.
    let (_, task) = app.submit(&key, web_task("silent-failure")).await;
    let silent = task["id"].as_str().unwrap().to_owned();
    assert_eq!(app.finished(&key, &silent).await["status"], "failed");
    let (status, list) = app
        .read(Some(&key), &format!("/v1/tasks/{silent}/artifacts"))
        .await;
    assert_eq!((status, &list["items"]), (StatusCode::OK, &json!([])));
    let (status, _) = app
        .read(Some(&key), &format!("/v1/tasks/{silent}/result"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The read model equals a rebuild from the log (projector v3 writes
    // failed tasks' rows).
    let client = app.database.client().await;
    let rows = client
        .query(
            "SELECT task_id, status, artifacts FROM results ORDER BY task_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row.get::<_, String>(1) == "failed"));
    finish_runner_app(app, &data_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kinds_and_readiness_say_what_the_engine_can_give() {
    let (app, data_dir) = runner_app().await;
    let key = app.key(&[Scope::TasksWrite]).await;
    let (status, page) = app.read(Some(&key), "/v1/kinds").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let kind = |name: &str| item_with(&page["items"], "name", name).clone();
    let reading = kind("read-input");
    assert_eq!(reading["executor"], "docker");
    assert_eq!(reading["image"], IMAGE);
    assert_eq!(reading["required_inputs"], json!(["data.txt"]));
    assert_eq!(reading["timeout_seconds"], 60);
    assert_eq!(reading["availability"]["available"], true, "{reading}");
    let ghost = kind("ghost");
    assert_eq!(ghost["availability"]["available"], false);
    let not_there = "is not on the Docker engine";
    assert_text_contains(&ghost["availability"]["problem"], not_there, &ghost);
    // The project's engine runs with --bridge=none: a bridge kind would get
    // no network at all, and says so before any task fails.
    let online = kind("online");
    assert_eq!(online["availability"]["available"], false, "{online}");
    let no_network = "no bridge network";
    assert_text_contains(&online["availability"]["problem"], no_network, &online);
    // ... and a task of it fails with that reason instead of running
    // without a network.
    let (_, task) = app.submit(&key, web_task("online")).await;
    let reader = app.key(&[Scope::TasksRead]).await;
    let done = app.finished(&reader, task["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_text_contains(&done["error"], no_network, &done);

    let (_, ready) = app.read(None, "/readyz").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["docker"]["ok"], true);
    assert_eq!(ready["checks"]["kinds"]["ghost"]["available"], false);
    assert!(ready["installation"]["amqp_prefix"]
        .as_str()
        .unwrap()
        .starts_with("taskledger-"));
    // Kinds are for frontends: a key without task scopes may not list them.
    let auditor = app.key(&[Scope::AuditRead]).await;
    assert_eq!(
        app.read(Some(&auditor), "/v1/kinds").await.0,
        StatusCode::FORBIDDEN
    );
    finish_runner_app(app, &data_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_fails_while_rabbitmq_does_not_answer() {
    // Port 1 on loopback: nothing listens there.
    let app = TestApp::spawn_with_config(&kinds(), |settings| {
        settings.roles = vec![Role::Api, Role::Projector, Role::Relay];
        settings.amqp_url = Some("amqp://guest:guest@127.0.0.1:1/%2f".into());
    })
    .await;
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["rabbitmq"]["ok"], false, "{body}");
    assert!(
        body["checks"].get("docker").is_none(),
        "a relay runs no containers: {body}"
    );
    app.finish().await;
}

/// Two installations (two databases) on one RabbitMQ, given the same prefix
/// by mistake. At first only the first installation has a runner: it gets
/// the second's jobs too, and must put them back, not run or drop them, so
/// the second's tasks wait queued while the first's finish. Once the second
/// has a runner, its tasks finish too. With default prefixes the two would
/// never share a queue at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installations_sharing_a_broker_never_lose_each_others_jobs() {
    let _broker = BROKER.read().await;
    let prefix = format!("tl-test-{}", Uuid::new_v4().simple());
    let config = format!(
        r#"
[kinds.quick]
image = "{IMAGE}"
command = ["sh", "-c", "echo {{n}} > /out/n.txt"]
required_params = ["n"]
max_attempts = 1
memory_mb = 64
"#
    );
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let mut apps = Vec::new();
    for roles in [
        vec![Role::Api, Role::Projector, Role::Relay, Role::Runner],
        vec![Role::Api, Role::Projector, Role::Relay],
    ] {
        let (prefix, data_dir) = (prefix.clone(), data_dir.clone());
        apps.push(
            TestApp::spawn_with_config(&config, move |settings| {
                settings.roles = roles;
                settings.amqp_url = Some(amqp_url());
                settings.amqp_prefix = Some(prefix);
                settings.data_dir = data_dir;
            })
            .await,
        );
    }
    let mut keys = Vec::new();
    for app in &apps {
        keys.push(app.key(&[Scope::TasksRead, Scope::TasksWrite]).await);
    }
    let mut submitted: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for n in 0..4 {
        for (index, app) in apps.iter().enumerate() {
            let (status, task) = app
                .submit(
                    &keys[index],
                    json!({"kind": "quick", "tenant": "default", "frontend_id": "web", "params": {"n": n.to_string()}}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{task}");
            submitted[index].push(task["id"].as_str().unwrap().to_owned());
        }
    }
    for id in &submitted[0] {
        let done = apps[0].finished(&keys[0], id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    // The first installation's runner has had the second's jobs in hand by
    // now (one queue, one consumer) and put each back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &submitted[1] {
        let (_, task) = apps[1]
            .read(Some(&keys[1]), &format!("/v1/tasks/{id}"))
            .await;
        assert_eq!(
            task["status"], "queued",
            "run or lost by the other installation: {task}"
        );
    }
    let mut ids = Vec::new();
    for app in &apps {
        let (_, ready) = app.read(None, "/readyz").await;
        ids.push(Uuid::parse_str(ready["installation"]["id"].as_str().unwrap()).unwrap());
    }
    assert_ne!(ids[0], ids[1]);
    assert_ne!(
        rabbitmq::default_prefix(ids[0]),
        rabbitmq::default_prefix(ids[1])
    );

    // Now the second installation gets a runner of its own.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = RunnerOptions {
        amqp_url: Some(amqp_url()),
        topology: Topology::for_installation(ids[1], Some(prefix.clone())),
        config: Arc::new(FileConfig::parse(&config).unwrap()),
        slots: 2,
        worker_id: "second-installation".into(),
        blobs: BlobStore::new(data_dir.join("blobs")),
        work_dir: data_dir.join("work"),
        bind_out: true,
        lease_ttl: Duration::from_secs(15),
    };
    let runner = tokio::spawn(runner::run(apps[1].store(), options, async move {
        let _ = stopped.await;
    }));
    for id in &submitted[1] {
        let done = apps[1].finished(&keys[1], id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["worker_id"], "second-installation", "{done}");
    }
    let _ = stop.send(());
    runner.await.unwrap();
    for app in apps {
        app.finish().await;
    }
    delete_topology(&prefix, &FileConfig::parse(&config).unwrap()).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The shipped `page-analysis` kind, as configured: the real Thug (V8) in
/// the sandbox (no network, read-only root) analyses an uploaded page with
/// JavaScript, and its own report comes back as the result and artifacts.
/// Needs the image `taskledger-thug:latest` (scripts/images.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thug_analyses_an_uploaded_page_for_real() {
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let dir = data_dir.clone();
    let app = TestApp::spawn_with(move |settings| {
        settings.default_config = true;
        settings.roles = vec![Role::Api, Role::Projector, Role::Runner];
        settings.amqp_url = None;
        settings.data_dir = dir;
    })
    .await;
    let key = app.key(&[Scope::TasksRead, Scope::TasksWrite]).await;
    let (_, kinds) = app.read(Some(&key), "/v1/kinds").await;
    let page_kind = item_with(&kinds["items"], "name", "page-analysis").clone();
    assert_eq!(
        page_kind["availability"]["available"], true,
        "build it with scripts/images.sh: {page_kind}"
    );
    let sample = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/thug/sample.html"),
    )
    .unwrap();
    let (_, blob) = upload(&app, &key, sample).await;
    let (status, task) = app
        .submit(
            &key,
            json!({"kind": "page-analysis", "tenant": "default", "frontend_id": "analyst",
               "inputs": {"page.html": blob["sha256"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let done = app.finished(&key, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (_, result) = app
        .read(Some(&key), &format!("/v1/tasks/{id}/result"))
        .await;
    let report = &result["result"];
    assert_eq!(report["tool"], "thug");
    assert_eq!(report["mode"], "file");
    assert_eq!(report["thug_exit_code"], 0);
    let analysis = &report["analysis"];
    assert_eq!(
        analysis["thug"]["jsengine"]["engine"], "Google V8",
        "{report}"
    );
    let behaviour = analysis["behavior"].to_string();
    // Only running the page's script reveals these: the iframe's src is
    // computed, and the eval'd code is built from character codes.
    assert!(
        behaviour.contains("http://127.0.0.1:9/tl-iframe-42.html"),
        "{behaviour}"
    );
    assert!(behaviour.contains("tl-eval-payload.js"), "{behaviour}");
    let (_, artifacts) = app
        .read(Some(&key), &format!("/v1/tasks/{id}/artifacts"))
        .await;
    let names = item_fields(&artifacts, "name");
    for name in ["result.json", "thug-analysis.json", "thug.log"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let (_, own) = app
        .read(
            Some(&key),
            &format!("/v1/tasks/{id}/artifacts/thug-analysis.json"),
        )
        .await;
    assert_eq!(&own, analysis, "result.json embeds Thug's report verbatim");
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
