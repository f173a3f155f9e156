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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use uuid::Uuid;

use crate::helpers::{complete_first_attempt, start_first_attempt, TestApp, KINDS};
use crate::support::http::send;
use crate::support::poll::eventually;

pub(crate) const SCOPES: &[Scope] = &[
    Scope::TasksRead,
    Scope::TasksWrite,
    Scope::WebhooksRead,
    Scope::WebhooksWrite,
];

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    timestamp: String,
    signature: String,
    pub(crate) body: Vec<u8>,
    pub(crate) answered: u16,
}

/// A receiver: answers the statuses in `script` in turn, then 200; a
/// gated one answers each request only once it takes a permit of `gate`.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    gate: Option<Arc<Semaphore>>,
}

impl Receiver {
    pub(crate) async fn start(script: &[u16]) -> (Self, SocketAddr) {
        Self::serve(Self::default(), script).await
    }

    /// A receiver that answers `permits` requests, then waits for more
    /// permits of its gate.
    async fn start_gated(permits: usize) -> (Self, Arc<Semaphore>, SocketAddr) {
        let gate = Arc::new(Semaphore::new(permits));
        let receiver = Self {
            gate: Some(gate.clone()),
            ..Self::default()
        };
        let (receiver, address) = Self::serve(receiver, &[]).await;
        (receiver, gate, address)
    }

    async fn serve(receiver: Self, script: &[u16]) -> (Self, SocketAddr) {
        let (receiver, app) = Self::app(receiver, script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, address)
    }

    /// The same receiver over https, showing `authority`'s certificate for
    /// `localhost`, on the address `localhost` resolves to first (the one
    /// the deliverer connects to).
    async fn start_tls(script: &[u16], authority: &Authority) -> (Self, SocketAddr) {
        let (receiver, app) = Self::app(Self::default(), script);
        let localhost = tokio::net::lookup_host(("localhost", 0))
            .await
            .unwrap()
            .next()
            .unwrap()
            .ip();
        assert!(localhost.is_loopback(), "localhost is {localhost}");
        let tcp = TcpListener::bind((localhost, 0)).await.unwrap();
        let address = tcp.local_addr().unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![authority.localhost_der.clone()],
                PrivatePkcs8KeyDer::from(authority.localhost_key.clone()).into(),
            )
            .unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, address)
    }

    fn app(receiver: Self, script: &[u16]) -> (Self, Router) {
        receiver.script.lock().unwrap().extend(script);
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        (receiver, app)
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub(crate) fn answer_always(&self, status: u16) {
        let mut script = self.script.lock().unwrap();
        script.clear();
        script.extend(std::iter::repeat_n(status, 10_000));
    }

    pub(crate) fn answer_ok_from_now(&self) {
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
    if let Some(gate) = &receiver.gate {
        gate.acquire().await.unwrap().forget();
    }
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
pub(crate) fn verify(secret: &str, received: &Received) -> bool {
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
pub(crate) fn config_with(extra: &str) -> String {
    format!(
        "{KINDS}\n[webhooks]\nallow_private_targets = true\nfirst_retry_ms = 20\n\
         max_retry_seconds = 1\n{extra}"
    )
}

/// A service with the webhook deliverer, loopback targets allowed, and
/// `[webhooks]` lines `extra`.
pub(crate) async fn app_with(extra: &str) -> TestApp {
    TestApp::spawn_with_config(&config_with(extra), |settings| {
        settings.roles = vec![Role::Api, Role::Projector, Role::Webhooks];
    })
    .await
}

/// Creates a webhook to `url` for `events` with `key`: the answer.
pub(crate) async fn create(
    app: &TestApp,
    key: &str,
    url: &str,
    events: &[&str],
) -> (StatusCode, Value) {
    let response = send(
        app.post(key, "/v1/webhooks")
            .json(&json!({"url": url, "events": events})),
    )
    .await;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap())
}

/// Submits a task with `key` and makes it succeed as a worker would.
pub(crate) async fn succeeded_task(app: &TestApp, key: &str) -> TaskId {
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
pub(crate) async fn delivered(receiver: &Receiver, task: TaskId) -> Vec<Received> {
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

pub(crate) async fn deliveries(app: &TestApp, key: &str, webhook: &str) -> Vec<Value> {
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

/// Waits until webhook `id` is disabled; it then.
async fn until_disabled(app: &TestApp, key: &str, id: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let (_, webhook) = app.read(Some(key), &format!("/v1/webhooks/{id}")).await;
            if webhook["status"] == "disabled" {
                Ok(webhook)
            } else {
                Err(format!("not disabled yet: {webhook}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_keeps_failing_is_disabled_then_enabled_and_replayed() {
    let app = app_with("retry_for_seconds = 1\n").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, webhook) = failing_hook(&app, &key, 503).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let task = succeeded_task(&app, &key).await;

    let disabled = until_disabled(&app, &key, &id).await;
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
async fn an_enabled_webhook_catches_up_from_the_event_it_gave_up_on_without_a_replay() {
    let app = app_with("retry_for_seconds = 1\n").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, webhook) = failing_hook(&app, &key, 503).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let given_up = succeeded_task(&app, &key).await;
    until_disabled(&app, &key, &id).await;
    let failed = receiver.got();
    assert!(!failed.is_empty());

    // Wanted while it is disabled; then enabled, with no replay.
    let while_disabled = [
        succeeded_task(&app, &key).await,
        succeeded_task(&app, &key).await,
    ];
    receiver.answer_ok_from_now();
    let enabled = send(app.post(&key, &format!("/v1/webhooks/{id}/enable"))).await;
    assert_eq!(enabled.status(), 200);
    let after = succeeded_task(&app, &key).await;
    delivered(&receiver, after).await;

    // The event it gave up on first, under its webhook-id, then the ones
    // appended while it was disabled, then the new one: each once, in
    // log order.
    let delivered: Vec<Received> = receiver
        .got()
        .into_iter()
        .filter(|got| got.answered == 200)
        .collect();
    let streams: Vec<String> = delivered
        .iter()
        .map(|got| {
            let body: Value = serde_json::from_slice(&got.body).unwrap();
            body["data"]["stream_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = [given_up, while_disabled[0], while_disabled[1], after]
        .iter()
        .map(|task| format!("task-{}", task.0))
        .collect();
    assert_eq!(streams, expected);
    assert_eq!(
        delivered[0].id, failed[0].id,
        "the given-up event's webhook-id"
    );
    assert!(delivered.iter().all(|got| verify(&secret, got)));
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

/// A certificate authority made for one test, and a certificate it issued
/// for `localhost`.
struct Authority {
    ca_pem: String,
    localhost_der: CertificateDer<'static>,
    localhost_key: Vec<u8>,
}

impl Authority {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "taskledger test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let localhost = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            localhost_der: localhost.der().clone(),
            localhost_key: key.serialize_der(),
        }
    }

    /// The CA's certificate in a PEM file: `[webhooks]`'s `ca_file` line.
    fn ca_file_line(&self) -> String {
        let path = std::env::temp_dir().join(format!("taskledger-ca-{}.pem", Uuid::new_v4()));
        std::fs::write(&path, &self.ca_pem).unwrap();
        format!("ca_file = \"{}\"\n", path.display())
    }
}

/// TLS in front of the receiver's axum app; a handshake the client gives
/// up (a certificate it does not trust) is dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The first recorded attempt of `webhook`, once there is one.
async fn first_attempt(app: &TestApp, key: &str, webhook: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            deliveries(app, key, webhook)
                .await
                .first()
                .cloned()
                .ok_or_else(|| "no attempt recorded yet".to_owned())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_gets_signed_deliveries_when_ca_file_trusts_its_certificate() {
    let authority = Authority::new();
    let app = app_with(&authority.ca_file_line()).await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, address) = Receiver::start_tls(&[], &authority).await;
    // `localhost` resolves to a loopback address the deliverer checks and
    // pins; TLS must still check the certificate against `localhost`.
    let (status, webhook) = create(
        &app,
        &key,
        &format!("https://localhost:{}/hook", address.port()),
        &["task.succeeded"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    // The same receiver by its address: its certificate is not for that
    // name, so nothing may be delivered there.
    let (status, by_address) = create(
        &app,
        &key,
        &format!("https://{address}/hook"),
        &["task.succeeded"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{by_address}");

    let task = succeeded_task(&app, &key).await;
    let about = delivered(&receiver, task).await;
    assert!(verify(&secret, &about[0]), "signature of {:?}", about[0]);
    let body: Value = serde_json::from_slice(&about[0].body).unwrap();
    assert_eq!(body["type"], "task.succeeded");
    assert_eq!(body["data"]["stream_id"], format!("task-{}", task.0));
    let log = first_attempt(&app, &key, webhook["id"].as_str().unwrap()).await;
    assert_eq!(log["outcome"], "delivered", "{log}");

    let mismatch = first_attempt(&app, &key, by_address["id"].as_str().unwrap()).await;
    assert_eq!(mismatch["outcome"], "retrying", "{mismatch}");
    let error = mismatch["error"].as_str().unwrap();
    assert!(
        error.contains("certificate") && error.contains("not valid for name"),
        "the recorded error names the name mismatch: {error}"
    );
    assert_eq!(
        receiver.got().len(),
        1,
        "only the localhost delivery arrived"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_whose_certificate_is_not_trusted_is_not_delivered_to_and_says_why() {
    let authority = Authority::new();
    let app = app_with("").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, address) = Receiver::start_tls(&[], &authority).await;
    let (status, webhook) = create(
        &app,
        &key,
        &format!("https://localhost:{}/hook", address.port()),
        &["task.succeeded"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    succeeded_task(&app, &key).await;
    let attempt = first_attempt(&app, &key, webhook["id"].as_str().unwrap()).await;
    assert_eq!(attempt["outcome"], "retrying", "{attempt}");
    assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "the recorded error names the untrusted certificate: {error}"
    );
    assert!(receiver.got().is_empty(), "{:?}", receiver.got());
    app.finish().await;
}

/// The log position each delivery `receiver` answered 200 was about, in
/// the order they arrived.
fn delivered_positions(receiver: &Receiver) -> Vec<u64> {
    receiver
        .got()
        .iter()
        .filter(|received| received.answered == 200)
        .map(|received| {
            serde_json::from_slice::<Value>(&received.body).unwrap()["data"]["position"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Waits until `receiver` has answered 200 `count` times (each is also an
/// attempt recorded in the log: slow on a busy machine).
async fn answered(receiver: &Receiver, count: usize) -> Vec<u64> {
    eventually(
        Duration::from_secs(300),
        Duration::from_millis(20),
        || async {
            let positions = delivered_positions(receiver);
            if positions.len() >= count {
                Ok(positions)
            } else {
                Err(format!("{} of {count} delivered", positions.len()))
            }
        },
    )
    .await
}

/// The value of the unlabelled counter `name` in `/metrics`.
async fn counter(app: &TestApp, name: &str) -> u64 {
    let metrics = app.metrics().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_healthy_webhook_gets_nothing_twice_while_a_dead_one_catches_up() {
    let app = app_with("").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (dead, dead_hook) = failing_hook(&app, &key, 500).await;
    let (healthy, address) = Receiver::start(&[]).await;
    let (status, healthy_hook) = create(
        &app,
        &key,
        &format!("http://{address}/hook"),
        &["task.succeeded"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let healthy_id = healthy_hook["id"].as_str().unwrap().to_owned();
    let first = succeeded_task(&app, &key).await;
    delivered(&healthy, first).await;
    let second = succeeded_task(&app, &key).await;
    delivered(&healthy, second).await;
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            if dead.got().is_empty() {
                Err("the dead receiver got no attempt yet".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    let dead_ids: Vec<String> = dead.got().iter().map(|got| got.id.clone()).collect();
    // Both healthy deliveries are recorded (a stop between an answer and
    // its record would rightly deliver it again).
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let log = deliveries(&app, &key, &healthy_id).await;
            if log.len() == 2 {
                Ok(())
            } else {
                Err(format!("{} healthy attempts recorded", log.len()))
            }
        },
    )
    .await;

    // The deliverer restarts while the dead receiver still fails its
    // first event: that holds back its own webhook, not the healthy one.
    let database = app.stop().await;
    dead.answer_ok_from_now();
    let path = std::env::temp_dir().join(format!("taskledger-kinds-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, config_with("")).unwrap();
    let app = TestApp::spawn_on(database, |settings| {
        settings.config = Some(path);
        settings.roles = vec![Role::Api, Role::Projector, Role::Webhooks];
    })
    .await;
    let third = succeeded_task(&app, &key).await;
    delivered(&healthy, third).await;
    // The dead one, now answering, gets every event it had not, in order,
    // the first under the id it was first sent with.
    delivered(&dead, third).await;
    let dead_delivered: Vec<String> = dead
        .got()
        .iter()
        .filter(|got| got.answered == 200)
        .map(|got| got.id.clone())
        .collect();
    assert_eq!(dead_delivered.len(), 3, "{dead_delivered:?}");
    assert_eq!(dead_delivered[0], dead_ids[0], "{dead_delivered:?}");
    let dead_positions = delivered_positions(&dead);
    assert!(
        dead_positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{dead_positions:?}"
    );
    assert!(dead_hook["id"].is_string());

    let ids: Vec<String> = healthy.got().iter().map(|got| got.id.clone()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), 3, "one delivery per task, none again: {ids:?}");
    assert_eq!(unique.len(), 3, "{ids:?}");
    let positions = delivered_positions(&healthy);
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_whose_queue_is_full_reads_the_log_and_gets_everything_in_order() {
    let app = app_with("queue_length = 2\n").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, gate, address) = Receiver::start_gated(0).await;
    let (status, _) = create(&app, &key, &format!("http://{address}/hook"), &["task.*"]).await;
    assert_eq!(status, StatusCode::CREATED);
    let fell_behind = counter(&app, "taskledger_webhook_fell_behind_total").await;
    // Three wanted events per task, far more than the queue holds, while
    // the receiver answers nothing.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(succeeded_task(&app, &key).await);
    }
    assert!(
        counter(&app, "taskledger_webhook_fell_behind_total").await > fell_behind,
        "the queue of 2 was full and the webhook fell behind"
    );
    gate.add_permits(1_000);
    let positions = answered(&receiver, 24).await;
    assert_eq!(positions.len(), 24, "each event once: {positions:?}");
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "in log order: {positions:?}"
    );
    for task in tasks {
        let about = delivered(&receiver, task).await;
        let kinds: Vec<Value> = about
            .iter()
            .map(|got| serde_json::from_slice::<Value>(&got.body).unwrap()["type"].clone())
            .collect();
        assert_eq!(
            kinds,
            vec![
                json!("task.submitted"),
                json!("task.started"),
                json!("task.succeeded")
            ]
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_replay_to_a_slow_receiver_does_not_delay_another_tenants_deliveries() {
    const TASKS: usize = 200;
    // A held request must outlast the test's waiting, not time out.
    let app = app_with("timeout_seconds = 120\n").await;
    let acme = app.tenant_key("acme", SCOPES).await;
    let globex = app.tenant_key("globex", SCOPES).await;
    // Acme's receiver answers the live deliveries, then holds the replay's.
    let (slow, gate, address) = Receiver::start_gated(TASKS).await;
    let (status, acme_hook) = create(
        &app,
        &acme,
        &format!("http://{address}/hook"),
        &["task.submitted"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{acme_hook}");
    let acme_id = acme_hook["id"].as_str().unwrap().to_owned();
    let (other, address) = Receiver::start(&[]).await;
    let (status, _) = create(
        &app,
        &globex,
        &format!("http://{address}/hook"),
        &["task.succeeded"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for _ in 0..TASKS {
        app.submitted(&acme, json!({"kind": "echo", "params": {"message": "hi"}}))
            .await;
    }
    let live = answered(&slow, TASKS).await;
    let live_ids: Vec<String> = slow.got().iter().map(|got| got.id.clone()).collect();

    let replay = send(
        app.post(&acme, &format!("/v1/webhooks/{acme_id}/replay"))
            .json(&json!({"from_position": 1})),
    )
    .await;
    assert_eq!(replay.status(), 202);
    let task = succeeded_task(&app, &globex).await;
    delivered(&other, task).await;
    let replayed = slow.got().len() - TASKS;
    assert!(
        replayed < TASKS / 2,
        "globex's delivery arrived while acme's replay is far from done ({replayed} of {TASKS})"
    );

    gate.add_permits(10 * TASKS);
    let all = answered(&slow, 2 * TASKS).await;
    assert_eq!(&all[TASKS..], &live[..], "the replay, in log order");
    let ids: Vec<String> = slow.got().iter().map(|got| got.id.clone()).collect();
    assert_eq!(&ids[TASKS..], &live_ids[..], "under the same webhook-ids");
    app.finish().await;
}
