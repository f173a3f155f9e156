//! The webhook deliverer through a crash, for real: it runs as a
//! `taskledger serve` process with the `webhooks` role only (the API and
//! projectors run here), and a crash is SIGKILL while a delivery is in
//! flight and the lane's position (written at most once a second) is
//! behind what the receiver already answered. The receiver here records
//! every request as it arrives, so what the killed process sent is known
//! even when it never read the answer.
//!
//! Needs `scripts/services.sh` (PostgreSQL).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use taskledger::config::settings::Role;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::support::cli::free_port;
use crate::support::poll::eventually;
use crate::support::serve::ServeProcess;
use crate::webhooks::{config_with, create, SCOPES};

/// One request as it arrived, before it was answered.
#[derive(Debug, Clone)]
struct Arrival {
    id: String,
    body: Vec<u8>,
}

impl Arrival {
    fn data(&self) -> Value {
        serde_json::from_slice::<Value>(&self.body).unwrap()["data"].clone()
    }

    fn position(&self) -> u64 {
        self.data()["position"].as_u64().unwrap()
    }

    fn stream(&self) -> String {
        self.data()["stream_id"].as_str().unwrap().to_owned()
    }
}

/// A receiver that records each request on arrival, then answers 200 once
/// it takes a permit of `gate` (the request it waits with is the one in
/// flight when the deliverer dies).
#[derive(Clone)]
struct Recorder {
    arrived: Arc<Mutex<Vec<Arrival>>>,
    gate: Arc<Semaphore>,
}

impl Recorder {
    async fn start(permits: usize) -> (Self, SocketAddr) {
        let recorder = Self {
            arrived: Arc::default(),
            gate: Arc::new(Semaphore::new(permits)),
        };
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(recorder.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (recorder, address)
    }

    fn arrived(&self) -> Vec<Arrival> {
        self.arrived.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests arrived; them.
    async fn arrivals(&self, count: usize) -> Vec<Arrival> {
        eventually(
            Duration::from_secs(60),
            Duration::from_millis(10),
            || async {
                let arrived = self.arrived();
                if arrived.len() >= count {
                    Ok(arrived)
                } else {
                    Err(format!("{} of {count} requests arrived", arrived.len()))
                }
            },
        )
        .await
    }
}

async fn record(State(recorder): State<Recorder>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    recorder.arrived.lock().unwrap().push(Arrival {
        id,
        body: body.to_vec(),
    });
    recorder.gate.acquire().await.unwrap().forget();
    StatusCode::OK
}

/// `taskledger serve` with the `webhooks` role only, configured by the
/// file in `dir`, on the test's database.
async fn deliverer(app: &TestApp, dir: &Path, name: &str) -> ServeProcess {
    let port = free_port();
    ServeProcess::start(name, port, dir.join(format!("{name}.log")), |command| {
        command
            .env("DATABASE_URL", &app.database.url)
            .env_remove("AMQP_URL")
            .env("TASKLEDGER_ROLES", "webhooks")
            .env("TASKLEDGER_CONFIG", dir.join("taskledger.toml"))
            .env("TASKLEDGER_DATA_DIR", dir.join("data"))
            .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("TASKLEDGER_LOG", "info");
    })
    .await
}

/// The webhook's lane position as last written (`webhook_checkpoints`).
async fn lane_position(app: &TestApp, webhook: &str) -> u64 {
    let client = app.database.client().await;
    let row = client
        .query_one(
            "SELECT position FROM webhook_checkpoints WHERE deliverer = $1",
            &[&format!("webhook-{webhook}")],
        )
        .await
        .unwrap();
    u64::try_from(row.get::<_, i64>(0)).unwrap()
}

/// Submits `count` tasks of acme: their streams, in order.
async fn submit(app: &TestApp, key: &str, count: usize) -> Vec<String> {
    let mut streams = Vec::new();
    for _ in 0..count {
        let task = app
            .submitted(key, json!({"kind": "echo", "params": {"message": "hi"}}))
            .await;
        streams.push(format!("task-{}", task["id"].as_str().unwrap()));
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliverer_killed_before_its_position_is_saved_delivers_again_under_the_same_ids() {
    // A request held by the receiver must outlast the test, not time out.
    let config = config_with("timeout_seconds = 120\n");
    let app = TestApp::spawn_with_config(&config, |settings| {
        settings.roles = vec![Role::Api, Role::Projector];
    })
    .await;
    let dir: PathBuf = std::env::temp_dir().join(format!("tl-webhook-crash-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("taskledger.toml"), &config).unwrap();
    let key = app.tenant_key("acme", SCOPES).await;
    let mut first = deliverer(&app, &dir, "webhooks-1").await;
    // Three answered, the fourth held.
    let (recorder, address) = Recorder::start(3).await;
    let (status, webhook) = create(
        &app,
        &key,
        &format!("http://{address}/hook"),
        &["task.submitted"],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let webhook = webhook["id"].as_str().unwrap().to_owned();
    let mut streams = submit(&app, &key, 8).await;

    // Held: the lane waits for an answer and writes nothing. Its position
    // must be behind an answered delivery (else one more is let through:
    // the position is written at most once a second, so it soon is).
    let mut held = 4;
    let saved = loop {
        let arrived = recorder.arrivals(held).await;
        let saved = lane_position(&app, &webhook).await;
        let answered = &arrived[..held - 1];
        if answered.iter().any(|arrival| arrival.position() > saved) {
            break saved;
        }
        assert!(held < streams.len(), "every answer was saved at once");
        recorder.gate.add_permits(1);
        held += 1;
    };
    first.kill();
    assert_eq!(
        lane_position(&app, &webhook).await,
        saved,
        "a killed lane wrote nothing"
    );
    let before = recorder.arrived();
    assert_eq!(before.len(), held, "one request at a time");
    // The held request may now be answered: its sender is gone.
    recorder.gate.add_permits(10_000);

    let mut second = deliverer(&app, &dir, "webhooks-2").await;
    streams.extend(submit(&app, &key, 4).await);
    let last = streams.last().unwrap().clone();
    let all = eventually(
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async {
            let arrived = recorder.arrived();
            if arrived[before.len()..]
                .iter()
                .any(|arrival| arrival.stream() == last)
            {
                Ok(arrived)
            } else {
                Err(format!(
                    "{} requests after the restart, none yet of the last task (logs in {})",
                    arrived.len() - before.len(),
                    dir.display()
                ))
            }
        },
    )
    .await;
    let after = &all[before.len()..];

    // Every request about one event carries the same webhook-id and body.
    let mut by_event: BTreeMap<String, &Arrival> = BTreeMap::new();
    for arrival in &all {
        let event = arrival.data()["event_id"].as_str().unwrap().to_owned();
        let first_seen = by_event.entry(event).or_insert(arrival);
        assert_eq!(arrival.id, first_seen.id, "one webhook-id per event");
        assert_eq!(arrival.body, first_seen.body, "one body per event");
    }
    // Exactly what the lane had not saved came again: the held request
    // and the answered ones after the saved position, in order; nothing
    // the position had passed.
    let before_ids: BTreeSet<&str> = before.iter().map(|arrival| arrival.id.as_str()).collect();
    let again: Vec<&str> = after
        .iter()
        .filter(|arrival| before_ids.contains(arrival.id.as_str()))
        .map(|arrival| arrival.id.as_str())
        .collect();
    let unsaved: Vec<&str> = before
        .iter()
        .filter(|arrival| arrival.position() > saved)
        .map(|arrival| arrival.id.as_str())
        .collect();
    assert_eq!(again, unsaved, "delivered again after the crash");
    assert!(
        unsaved.len() >= 2,
        "an answered delivery and the held one: {unsaved:?}"
    );
    // After the restart, in log order and each once; with the duplicates
    // dropped, every task's event once, in the order they were submitted.
    let positions: Vec<u64> = after.iter().map(Arrival::position).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    let mut seen = BTreeSet::new();
    let deduplicated: Vec<String> = all
        .iter()
        .filter(|arrival| seen.insert(arrival.id.clone()))
        .map(Arrival::stream)
        .collect();
    assert_eq!(
        deduplicated, streams,
        "every event, none lost, in log order"
    );
    // And the service's own log: every event ends delivered.
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let (status, log) = app
                .read(Some(&key), &format!("/v1/webhooks/{webhook}/deliveries"))
                .await;
            assert_eq!(status, 200, "{log}");
            let delivered: BTreeSet<String> = log["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|attempt| attempt["outcome"] == "delivered")
                .map(|attempt| attempt["message_id"].as_str().unwrap().to_owned())
                .collect();
            if delivered == seen {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} recorded delivered: {log}",
                    delivered.len(),
                    seen.len()
                ))
            }
        },
    )
    .await;
    second.stop();
    app.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
}
