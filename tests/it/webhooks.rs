//! Webhooks end to end: the service delivers to real HTTP receivers on
//! 127.0.0.1 (an axum server in the test, and a listener that never
//! answers), and every signature is checked by a verifier written here from
//! the Standard Webhooks specification, not by the service's code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use taskledger::config::settings::Role;
use taskledger_events::apikey::Scope;
use taskledger_events::task::TaskId;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::{complete_first_attempt, start_first_attempt, TestApp, KINDS};
use crate::support::http::send;
use crate::support::poll::eventually;

const SCOPES: &[Scope] = &[
    Scope::TasksRead,
    Scope::TasksWrite,
    Scope::WebhooksRead,
    Scope::WebhooksWrite,
];

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

/// A receiver: answers the statuses in `script` in turn, then 200.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> (Self, SocketAddr) {
        let receiver = Self::default();
        receiver.script.lock().unwrap().extend(script);
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, address)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn answer_always(&self, status: u16) {
        let mut script = self.script.lock().unwrap();
        script.clear();
        script.extend(std::iter::repeat_n(status, 10_000));
    }

    fn answer_ok_from_now(&self) {
        self.script.lock().unwrap().clear();
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let answered = receiver.script.lock().unwrap().pop_front().unwrap_or(200);
    receiver.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

/// The specification's check: the secret's bytes are the base64 after
/// `whsec_`; the signed content is `{id}.{timestamp}.{body}`; the header
/// lists space-separated `v1,<base64 HMAC-SHA256>` signatures, one of
/// which must match.
fn verify(secret: &str, received: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    received
        .signature
        .split(' ')
        .any(|signature| signature == expected)
}

#[test]
fn the_verifier_here_accepts_the_specifications_vector() {
    let received = Received {
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into(),
        timestamp: "1614265330".into(),
        signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into(),
        body: br#"{"test": 2432232314}"#.to_vec(),
        answered: 200,
    };
    assert!(verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &received));
    let tampered = Received {
        body: br#"{"test": 2432232315}"#.to_vec(),
        ..received
    };
    assert!(!verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &tampered));
}

/// The configuration of [`app_with`].
fn config_with(extra: &str) -> String {
    format!(
        "{KINDS}\n[webhooks]\nallow_private_targets = true\nfirst_retry_ms = 20\n\
         max_retry_seconds = 1\n{extra}"
    )
}

/// A service with the webhook deliverer, loopback targets allowed, and
/// `[webhooks]` lines `extra`.
async fn app_with(extra: &str) -> TestApp {
    TestApp::spawn_with_config(&config_with(extra), |settings| {
        settings.roles = vec![Role::Api, Role::Projector, Role::Webhooks];
    })
    .await
}

/// Creates a webhook to `url` for `events` with `key`: the answer.
async fn create(app: &TestApp, key: &str, url: &str, events: &[&str]) -> (StatusCode, Value) {
    let response = send(
        app.post(key, "/v1/webhooks")
            .json(&json!({"url": url, "events": events})),
    )
    .await;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap())
}

/// Submits a task with `key` and makes it succeed as a worker would.
async fn succeeded_task(app: &TestApp, key: &str) -> TaskId {
    let task = app
        .submitted(key, json!({"kind": "echo", "params": {"message": "hi"}}))
        .await;
    let task_id = TaskId(task["id"].as_str().unwrap().parse().unwrap());
    app.as_worker(task_id, start_first_attempt(task_id, "worker-1"))
        .await;
    app.as_worker(task_id, complete_first_attempt(task_id))
        .await;
    task_id
}

/// Waits until `receiver` has answered 200 for a delivery about `task`.
async fn delivered(receiver: &Receiver, task: TaskId) -> Vec<Received> {
    let stream = format!("task-{}", task.0);
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let about: Vec<Received> = receiver
                .got()
                .into_iter()
                .filter(|received| {
                    serde_json::from_slice::<Value>(&received.body).unwrap()["data"]["stream_id"]
                        == stream.as_str()
                })
                .collect();
            if about.iter().any(|received| received.answered == 200) {
                Ok(about)
            } else {
                Err(format!(
                    "no delivery of {stream} answered 200 yet: {about:?}"
                ))
            }
        },
    )
    .await
}

async fn deliveries(app: &TestApp, key: &str, webhook: &str) -> Vec<Value> {
    let (status, page) = app
        .read(Some(key), &format!("/v1/webhooks/{webhook}/deliveries"))
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_is_delivered_signed_retried_under_one_id_and_logged() {
    let app = app_with("").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, address) = Receiver::start(&[500, 500]).await;
    let (status, webhook) = create(
        &app,
        &key,
        &format!("http://{address}/hook"),
        &["task.succeeded"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let id = webhook["id"].as_str().unwrap().to_owned();
    assert_eq!(webhook["tenant"], "acme");
    assert_eq!(webhook["status"], "enabled");

    // The secret is shown once: never in a read or the list.
    for path in [format!("/v1/webhooks/{id}"), "/v1/webhooks".to_owned()] {
        let text = send(app.get(&key, &path)).await.text().await.unwrap();
        assert!(
            !text.contains(&secret) && !text.contains("whsec_"),
            "{text}"
        );
        assert!(text.contains(&id), "{text}");
    }

    let task = succeeded_task(&app, &key).await;
    let about = delivered(&receiver, task).await;
    assert_eq!(
        about
            .iter()
            .map(|received| received.answered)
            .collect::<Vec<_>>(),
        vec![500, 500, 200],
        "two failures, then the retry that worked"
    );
    for received in &about {
        assert!(verify(&secret, received), "signature of {received:?}");
        assert_eq!(received.id, about[0].id, "one webhook-id for every attempt");
        assert!(received.id.starts_with("msg_"), "{}", received.id);
        let sent_at: i64 = received.timestamp.parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 300);
    }
    let body: Value = serde_json::from_slice(&about[2].body).unwrap();
    assert_eq!(body["type"], "task.succeeded");
    assert_eq!(body["data"]["tenant"], "acme");
    assert_eq!(body["data"]["event_type"], "TaskSucceeded");
    assert_eq!(body["data"]["stream_id"], format!("task-{}", task.0));
    assert_eq!(
        about[0].body, about[2].body,
        "the same body on every attempt"
    );

    // Only succeeded tasks were wanted: the submission and start were not
    // delivered, and a second task's delivery comes after the first's only
    // success (one queue per webhook, in order).
    let second = succeeded_task(&app, &key).await;
    delivered(&receiver, second).await;
    let got = receiver.got();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.iter().all(|received| {
        serde_json::from_slice::<Value>(&received.body).unwrap()["type"] == "task.succeeded"
    }));

    // The delivery log: every attempt, with its outcome and status.
    let log = eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let log = deliveries(&app, &key, &id).await;
            if log.len() == 4 {
                Ok(log)
            } else {
                Err(format!("{} attempts logged", log.len()))
            }
        },
    )
    .await;
    let outcomes: Vec<(&str, u64, u64)> = log
        .iter()
        .map(|attempt| {
            (
                attempt["outcome"].as_str().unwrap(),
                attempt["status_code"].as_u64().unwrap(),
                attempt["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("retrying", 500, 1),
            ("retrying", 500, 2),
            ("delivered", 200, 3),
            ("delivered", 200, 1)
        ]
    );
    assert_eq!(log[0]["message_id"], about[0].id.as_str());
    assert!(log[0]["error"].as_str().unwrap().contains("500"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_delay_another_tenant() {
    // One attempt may take a minute: the dead receiver's first attempt is
    // still open when the other tenant's delivery arrives.
    let app = app_with("timeout_seconds = 60\n").await;
    let acme = app.tenant_key("acme", SCOPES).await;
    let globex = app.tenant_key("globex", SCOPES).await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_address = dead.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = dead.accept().await {
                accepted.lock().unwrap().push(socket);
            }
        });
    }
    let (status, globex_hook) = create(
        &app,
        &globex,
        &format!("http://{dead_address}/hook"),
        &["task.*"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{globex_hook}");
    let (receiver, address) = Receiver::start(&[]).await;
    let (status, acme_hook) =
        create(&app, &acme, &format!("http://{address}/hook"), &["task.*"]).await;
    assert_eq!(status, StatusCode::CREATED, "{acme_hook}");

    let globex_task = succeeded_task(&app, &globex).await;
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            if accepted.lock().unwrap().is_empty() {
                Err("the dead receiver got no connection yet".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    let acme_task = succeeded_task(&app, &acme).await;
    delivered(&receiver, acme_task).await;
    let globex_log = deliveries(&app, &globex, globex_hook["id"].as_str().unwrap()).await;
    assert!(
        globex_log.is_empty(),
        "globex's first attempt is still waiting for its receiver: {globex_log:?}"
    );
    // Acme's receiver only ever got acme's events.
    for received in receiver.got() {
        let body: Value = serde_json::from_slice(&received.body).unwrap();
        assert_eq!(body["data"]["tenant"], "acme", "{body}");
        assert_ne!(body["data"]["stream_id"], format!("task-{}", globex_task.0));
    }
    app.finish().await;
}

/// A receiver that answers every delivery with `status`, and acme's
/// webhook of `task.succeeded` on it (as created: with its secret).
async fn failing_hook(app: &TestApp, key: &str, status: u16) -> (Receiver, Value) {
    let (receiver, address) = Receiver::start(&[]).await;
    receiver.answer_always(status);
    let (_, webhook) = create(
        app,
        key,
        &format!("http://{address}/hook"),
        &["task.succeeded"],
    )
    .await;
    (receiver, webhook)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_keeps_failing_is_disabled_then_enabled_and_replayed() {
    let app = app_with("retry_for_seconds = 1\n").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, webhook) = failing_hook(&app, &key, 503).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let task = succeeded_task(&app, &key).await;

    let disabled = eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let (_, webhook) = app.read(Some(&key), &format!("/v1/webhooks/{id}")).await;
            if webhook["status"] == "disabled" {
                Ok(webhook)
            } else {
                Err(format!("not disabled yet: {webhook}"))
            }
        },
    )
    .await;
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("503"), "{reason}");
    let log = deliveries(&app, &key, &id).await;
    assert_eq!(log.last().unwrap()["outcome"], "gave_up", "{log:?}");
    assert!(log.iter().all(|attempt| attempt["status_code"] == 503));
    let failed_ids: Vec<String> = receiver.got().iter().map(|got| got.id.clone()).collect();
    assert!(!failed_ids.is_empty());

    // A replay needs an enabled webhook.
    let replay = |from: u64| {
        app.post(&key, &format!("/v1/webhooks/{id}/replay"))
            .json(&json!({"from_position": from}))
    };
    assert_eq!(send(replay(1)).await.status(), 409);
    receiver.answer_ok_from_now();
    let enabled = send(app.post(&key, &format!("/v1/webhooks/{id}/enable"))).await;
    assert_eq!(enabled.status(), 200);
    let enabled: Value = enabled.json().await.unwrap();
    assert_eq!(enabled["status"], "enabled");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(send(replay(0)).await.status(), 422);
    assert_eq!(send(replay(1)).await.status(), 202);

    let about = delivered(&receiver, task).await;
    let redelivered = about.iter().find(|got| got.answered == 200).unwrap();
    assert_eq!(
        redelivered.id, failed_ids[0],
        "the same webhook-id on a replay"
    );
    assert!(verify(&secret, redelivered));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_and_kinds_are_refused_and_tenants_see_only_their_own() {
    // The default: private targets are not allowed.
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let acme = app.tenant_key("acme", SCOPES).await;
    for (url, rule) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://10.0.0.7/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://[::1]:9/hook", "loopback"),
        ("ftp://127.0.0.1/hook", "http:// or https://"),
        ("https://user:pw@127.0.0.1/hook", "credentials"),
    ] {
        let (status, problem) = create(&app, &acme, url, &["task.*"]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(rule), "{url}: {detail}");
    }
    let (status, problem) = create(&app, &acme, "http://127.0.0.1:9/", &["task.exploded"]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("task.exploded") && detail.contains("task.succeeded"),
        "{detail}"
    );
    let (_, listed) = app.read(Some(&acme), "/v1/webhooks").await;
    assert_eq!(listed["items"], json!([]), "nothing was created");
    app.finish().await;

    let app = app_with("").await;
    let acme_key = app.tenant_key("acme", SCOPES).await;
    let (_, mine) = create(&app, &acme_key, "http://127.0.0.1:9/hook", &["task.*"]).await;
    let id = mine["id"].as_str().unwrap();
    let missing = Uuid::new_v4().to_string();
    let globex = app.tenant_key("globex", SCOPES).await;
    for (method, suffix) in [
        ("GET", ""),
        ("GET", "/deliveries"),
        ("POST", "/enable"),
        ("DELETE", ""),
    ] {
        let answer = |webhook: String| {
            let path = format!("/v1/webhooks/{webhook}{suffix}");
            let request = match method {
                "GET" => app.get(&globex, &path),
                "POST" => app.post(&globex, &path),
                _ => app.http.delete(app.url(&path)).bearer_auth(&globex),
            };
            async move {
                let response = send(request).await;
                (response.status(), response.text().await.unwrap())
            }
        };
        let (theirs, theirs_body) = answer(id.to_owned()).await;
        let (none, none_body) = answer(missing.clone()).await;
        assert_eq!(
            (theirs.as_u16(), none.as_u16()),
            (404, 404),
            "{method} {suffix}"
        );
        assert_eq!(
            theirs_body.replace(id, &missing),
            none_body,
            "{method} {suffix}"
        );
    }
    let (_, listed) = app.read(Some(&globex), "/v1/webhooks").await;
    assert_eq!(listed["items"], json!([]));
    let (_, listed) = app.read(Some(&acme_key), "/v1/webhooks").await;
    assert_eq!(listed["items"][0]["id"], id);
    // Still there for its owner, who can delete it.
    let deleted = send(
        app.http
            .delete(app.url(&format!("/v1/webhooks/{id}")))
            .bearer_auth(&acme_key),
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let (status, _) = app
        .read(Some(&acme_key), &format!("/v1/webhooks/{id}"))
        .await;
    assert_eq!(status, 404);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_deliverer_delivers_again_under_the_same_webhook_id() {
    let app = app_with("").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, webhook) = failing_hook(&app, &key, 500).await;
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let task = succeeded_task(&app, &key).await;
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            if receiver.got().is_empty() {
                Err("no attempt yet".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    // The process stops while the delivery is still failing: its
    // checkpoint has not passed the event.
    let database = app.stop().await;
    let before = receiver.got()[0].id.clone();
    receiver.answer_ok_from_now();
    let path = std::env::temp_dir().join(format!("taskledger-kinds-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, config_with("")).unwrap();
    let app = TestApp::spawn_on(database, |settings| {
        settings.config = Some(path);
        settings.roles = vec![Role::Api, Role::Projector, Role::Webhooks];
    })
    .await;
    let about = delivered(&receiver, task).await;
    let success = about.iter().find(|got| got.answered == 200).unwrap();
    assert_eq!(success.id, before, "the same webhook-id after a restart");
    assert!(verify(&secret, success));
    app.finish().await;
}
