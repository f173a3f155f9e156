//! Webhooks end to end: the service delivers to real HTTP receivers on
//! 127.0.0.1 (an axum server in the test, and a listener that never
//! answers), and every signature is checked by a verifier written here from
//! the Standard Webhooks specification, not by the service's code.

mod delivery;
mod disabling;
mod restarts;
mod targets;
mod tls;

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
use tokio::sync::Semaphore;

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

impl Received {
    /// The body, as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
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

    /// The webhook-id of every request, in the order they came.
    fn ids(&self) -> Vec<String> {
        self.got().iter().map(|got| got.id.clone()).collect()
    }

    /// Waits up to 30 s until a request came; `nothing_yet` is the message
    /// if none does.
    async fn until_got_any(&self, nothing_yet: &str) {
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async {
                if self.got().is_empty() {
                    Err(nothing_yet.to_owned())
                } else {
                    Ok(())
                }
            },
        )
        .await;
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

/// The URL of a receiver's endpoint on `address`, over http.
pub(crate) fn hook_url(address: SocketAddr) -> String {
    format!("http://{address}/hook")
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

/// [`create`], which must answer 201 (else the test fails showing the
/// answer); the webhook as created (with its secret).
pub(crate) async fn created(app: &TestApp, key: &str, url: &str, events: &[&str]) -> Value {
    let (status, webhook) = create(app, key, url, events).await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    webhook
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
                .filter(|received| received.json()["data"]["stream_id"] == stream.as_str())
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

/// Waits up to `within` until `count` attempts of webhook `id` are
/// recorded; they then.
async fn until_logged(
    app: &TestApp,
    key: &str,
    id: &str,
    count: usize,
    within: Duration,
) -> Vec<Value> {
    eventually(within, Duration::from_millis(20), || async {
        let log = deliveries(app, key, id).await;
        if log.len() == count {
            Ok(log)
        } else {
            Err(format!("{} of {count} attempts recorded", log.len()))
        }
    })
    .await
}

/// A receiver that answers every delivery with `status`, and acme's
/// webhook of `task.succeeded` on it (as created: with its secret).
async fn failing_hook(app: &TestApp, key: &str, status: u16) -> (Receiver, Value) {
    let (receiver, address) = Receiver::start(&[]).await;
    receiver.answer_always(status);
    let (_, webhook) = create(app, key, &hook_url(address), &["task.succeeded"]).await;
    (receiver, webhook)
}

/// The log position each delivery `receiver` answered 200 was about, in
/// the order they arrived.
fn delivered_positions(receiver: &Receiver) -> Vec<u64> {
    receiver
        .got()
        .iter()
        .filter(|received| received.answered == 200)
        .map(|received| received.json()["data"]["position"].as_u64().unwrap())
        .collect()
}
