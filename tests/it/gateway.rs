//! The device gateway with several messages in flight, against the
//! RockBLOCK stand-in answering after a delay as the real endpoint does:
//! different devices overlap, one device's messages go one at a time and in
//! order, a device with a long backlog does not starve one with a single
//! message, and a gateway process killed mid-flight loses nothing and sends
//! nothing twice per attempt record. Concurrency is counted at the
//! stand-in, never timed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use taskledger::commands::execute_device;
use taskledger::workers::gateway::{self, GatewayOptions};
use taskledger_events::device::{DeviceCommand, Imei, QueueDeviceMessage};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::{Direction, EventStore, Metadata, RecordedEvent};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{TestApp, KINDS};
use crate::rockblock::{MtRequest, RockblockStandIn, PASSWORD, USERNAME};
use crate::support::cli::{free_port, BINARY};
use crate::support::poll::eventually;

/// The `index`th test device's IMEI (15 digits, ascending with `index`).
fn imei(index: usize) -> String {
    format!("30043406520{index:04}")
}

/// Queues `text` for device `imei`, as the API does; the message's id.
async fn queue(store: &PgEventStore, imei: &str, text: &str) -> Uuid {
    let message_id = Uuid::new_v4();
    execute_device(
        store,
        &Imei::new(imei).unwrap(),
        DeviceCommand::Queue(QueueDeviceMessage {
            message_id,
            payload: text.as_bytes().to_vec(),
            flush: false,
            queued_at: Utc::now(),
            queued_by: None,
        }),
        Metadata::of_actor("tests"),
    )
    .await
    .unwrap();
    message_id
}

/// Waits until `device_messages` shows `count` outbound messages, all with
/// status `status`; panics with the statuses seen after `within`.
async fn wait_for_status(app: &TestApp, count: i64, status: &str, within: Duration) {
    let client = app.database.client().await;
    eventually(within, Duration::from_millis(100), || async {
        let rows = client
            .query(
                "SELECT status, count(*) FROM device_messages WHERE direction = 'mt' GROUP BY status",
                &[],
            )
            .await
            .unwrap();
        let seen: HashMap<String, i64> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        if seen.get(status) == Some(&count) && seen.len() == 1 {
            return Ok(());
        }
        Err(format!("expected {count} messages {status}, saw {seen:?}"))
    })
    .await;
}

/// The gateway in this process, as `serve` runs it, with `in_flight`.
fn start_gateway(
    app: &TestApp,
    provider: &RockblockStandIn,
    in_flight: usize,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let options = GatewayOptions {
        client: provider.client(),
        max_attempts: 3,
        retry_backoff: Duration::ZERO,
        in_flight,
    };
    let handle = tokio::spawn(gateway::run(app.store(), options, async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}

/// The texts the provider received for `imei`, in the order it received
/// them.
fn texts_of(requests: &[MtRequest], imei: &str) -> Vec<String> {
    requests
        .iter()
        .filter(|request| request.imei == imei)
        .map(|request| String::from_utf8(request.data.clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_different_devices_overlap_and_one_devices_go_one_by_one_in_order() {
    let devices: Vec<String> = (0..6).map(imei).collect();
    let provider = RockblockStandIn::start(
        USERNAME,
        PASSWORD,
        &devices.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    provider.answer_after(Duration::from_millis(300));
    let app = TestApp::spawn().await;
    let store = app.store();
    // Device 0 has a backlog of eight; the others two each.
    for index in 0..8 {
        queue(&store, &devices[0], &format!("busy {index}")).await;
    }
    for device in &devices[1..] {
        for index in 0..2 {
            queue(&store, device, &format!("{device} {index}")).await;
        }
    }
    wait_for_status(&app, 18, "queued", Duration::from_secs(20)).await;

    let (stop, gateway) = start_gateway(&app, &provider, 4);
    wait_for_status(&app, 18, "sent", Duration::from_secs(60)).await;
    stop.send(()).unwrap();
    gateway.await.unwrap();

    let (most_open, most_open_per_device) = provider.most_open();
    assert!(
        (2..=4).contains(&most_open),
        "the provider saw {most_open} requests at once (in flight: 4)"
    );
    assert_eq!(most_open_per_device, 1, "one device's messages overlapped");
    let requests = provider.requests();
    assert_eq!(requests.len(), 18, "one request per message: {requests:?}");
    let expected: Vec<String> = (0..8).map(|index| format!("busy {index}")).collect();
    assert_eq!(texts_of(&requests, &devices[0]), expected);
    for device in &devices[1..] {
        assert_eq!(
            texts_of(&requests, device),
            [format!("{device} 0"), format!("{device} 1")]
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_one_message_is_not_starved_by_one_with_a_backlog() {
    let (backlogged, single) = (imei(10), imei(11));
    let provider = RockblockStandIn::start(USERNAME, PASSWORD, &[&backlogged, &single]).await;
    let app = TestApp::spawn().await;
    let store = app.store();
    // The backlog is queued first, so it is older than the single message.
    for index in 0..60 {
        queue(&store, &backlogged, &format!("backlog {index}")).await;
    }
    queue(&store, &single, "alone").await;
    wait_for_status(&app, 61, "queued", Duration::from_secs(20)).await;

    // One at a time: the order of the sends is the gateway's choice alone.
    let (stop, gateway) = start_gateway(&app, &provider, 1);
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let requests = provider.requests();
            if requests.len() >= 4 {
                return Ok(requests);
            }
            Err(format!("only {} sends so far", requests.len()))
        },
    )
    .await;
    stop.send(()).unwrap();
    gateway.await.unwrap();

    let requests = provider.requests();
    let position = requests
        .iter()
        .position(|request| request.imei == single)
        .unwrap_or_else(|| {
            panic!(
                "the single message was not among the first {} sends",
                requests.len()
            )
        });
    assert!(
        position < 2,
        "the single message was send number {} after the backlog's {:?}",
        position + 1,
        texts_of(&requests[..position], &backlogged)
    );
    assert_eq!(
        texts_of(&requests, &backlogged)[..3],
        ["backlog 0", "backlog 1", "backlog 2"]
    );
    app.finish().await;
}

/// A gateway process: the binary with only the gateway role.
struct GatewayProcess {
    child: Child,
    log: PathBuf,
}

impl GatewayProcess {
    async fn start(app: &TestApp, dir: &std::path::Path, name: &str) -> Self {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(BINARY)
            .arg("serve")
            .env("DATABASE_URL", &app.database.url)
            .env("TASKLEDGER_ROLES", "gateway")
            .env("TASKLEDGER_GATEWAY_IN_FLIGHT", "4")
            .env("TASKLEDGER_CONFIG", dir.join("taskledger.toml"))
            .env("TASKLEDGER_DATA_DIR", dir.join(name))
            .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("TASKLEDGER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        crate::helpers::wait_until_ready(&mut child, port, 30).await;
        Self { child, log }
    }

    /// SIGKILL: nothing of it gets to finish or clean up.
    fn kill(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Every event of every device in `devices`.
async fn device_histories(store: &PgEventStore, devices: &[String]) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    for device in devices {
        let stream = Imei::new(device).unwrap().stream_id();
        events.extend(
            store
                .read_stream(&stream, 1, Direction::Forward, 10_000)
                .await
                .unwrap(),
        );
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_flight_loses_nothing_and_sends_nothing_twice_per_attempt() {
    let devices: Vec<String> = (20..28).map(imei).collect();
    let provider = RockblockStandIn::start(
        USERNAME,
        PASSWORD,
        &devices.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    provider.answer_after(Duration::from_secs(2));
    let app = TestApp::spawn().await;
    let store = app.store();
    let mut texts: HashMap<Uuid, String> = HashMap::new();
    for device in &devices {
        for index in 0..4 {
            let text = format!("{device} {index}");
            texts.insert(queue(&store, device, &text).await, text);
        }
    }
    wait_for_status(&app, 32, "queued", Duration::from_secs(20)).await;
    let dir = std::env::temp_dir().join(format!("tl-gateway-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("taskledger.toml"),
        format!(
            "{KINDS}\n[rockblock]\nmt_url = \"{}\"\nusername = \"{USERNAME}\"\npassword = \"{PASSWORD}\"\nverify_mo_jwt = false\nmax_attempts = 5\nretry_backoff_seconds = 0\n",
            provider.url
        ),
    )
    .unwrap();

    let mut first = GatewayProcess::start(&app, &dir, "first").await;
    // A standby, then the active one killed with its sends in flight.
    let second = GatewayProcess::start(&app, &dir, "second").await;
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(10),
        || async {
            let open = provider.open();
            if open >= 3 {
                return Ok(());
            }
            Err(format!("the provider has {open} requests in hand, not 3"))
        },
    )
    .await;
    first.kill();
    let sent_by_first = provider.requests().len();

    // The unanswered attempts are resolved (as "outcome unknown") two
    // minutes after they began, and sent again.
    wait_for_status(&app, 32, "sent", Duration::from_secs(240)).await;
    second.stop();

    let events = device_histories(&store, &devices).await;
    let mut attempts: HashMap<Uuid, usize> = HashMap::new();
    let mut unknown = 0;
    for event in &events {
        let message_id = || Uuid::parse_str(event.data["message_id"].as_str().unwrap()).unwrap();
        match event.event_type.as_str() {
            "DeviceMessageSendAttempted" => *attempts.entry(message_id()).or_default() += 1,
            "DeviceMessageFailed" => {
                let text = event.data["text"].as_str().unwrap();
                assert!(text.contains("outcome is unknown"), "{text}");
                unknown += 1;
            }
            _ => {}
        }
    }
    assert!(
        unknown >= 2,
        "the kill left {unknown} attempts unresolved, not the 2 in flight"
    );
    let requests = provider.requests();
    assert!(requests.len() > sent_by_first, "the standby sent nothing");
    for (message_id, text) in &texts {
        let calls = requests
            .iter()
            .filter(|request| request.data == text.as_bytes())
            .count();
        let recorded = attempts.get(message_id).copied().unwrap_or(0);
        assert!(calls >= 1, "{text:?} never reached the provider");
        assert!(
            calls <= recorded,
            "{text:?}: {calls} provider calls for {recorded} attempt records"
        );
    }
    let (_, most_open_per_device) = provider.most_open();
    assert_eq!(most_open_per_device, 1, "one device's messages overlapped");
    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}
