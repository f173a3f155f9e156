//! Devices over real HTTP: the provider's MO webhook (signed with the test
//! key, verified, deduplicated) and queueing MT messages.

use std::time::Duration;

use serde_json::{json, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::{Direction, EventStore, RecordedEvent};

use crate::helpers::{TestApp, KINDS};
use crate::rockblock::{
    mo_form_body, mo_json_body, mo_webhook, sign_mo, sign_mo_with, MoFields, FORM, IMEI,
};
use crate::support::http::{send, send_text};
use crate::support::poll::eventually;

fn config(verify: bool) -> String {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rockblock/mo-test-key.pub.pem"
    );
    format!(
        "{KINDS}\n[rockblock]\nmt_url = \"http://127.0.0.1:9/rockblock/MT\"\nusername = \"u\"\npassword = \"p\"\nmo_public_key_file = \"{key}\"\nverify_mo_jwt = {verify}\n"
    )
}

/// The events of the device [`IMEI`]'s stream, oldest first.
async fn device_events(app: &TestApp) -> Vec<RecordedEvent> {
    let stream = taskledger_events::device::Imei::new(IMEI)
        .unwrap()
        .stream_id();
    app.store()
        .read_stream(&stream, 1, Direction::Forward, 1000)
        .await
        .unwrap()
}

/// `POST /v1/devices/{imei}/messages` with `body`, as `key`.
async fn queue_message(app: &TestApp, key: &str, imei: &str, body: Value) -> reqwest::Response {
    send(
        app.post(key, &format!("/v1/devices/{imei}/messages"))
            .json(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_are_recorded_once_and_forged_ones_refused() {
    let app = TestApp::spawn_with_config(&config(true), |_| {}).await;
    let fields = MoFields::sample(b"hello from orbit");
    let jwt = sign_mo(&fields);
    // The form webhook, delivered twice: one event.
    for _ in 0..2 {
        let response = mo_webhook(&app, FORM, mo_form_body(&fields, Some(&jwt))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "OK");
    }
    // The JSON variant of another message.
    let mut second = MoFields::sample(b"second");
    second.momsn = 43;
    let response = mo_webhook(
        &app,
        "application/json",
        mo_json_body(&second, Some(&sign_mo(&second))),
    )
    .await;
    assert_eq!(response.status(), 200);

    let events = device_events(&app).await;
    assert_eq!(events.len(), 2, "one event per (momsn, transmit_time)");
    assert_eq!(events[0].event_type, "DeviceMessageReceived");
    assert_eq!(
        events[0].data["payload_hex"],
        hex::encode(b"hello from orbit")
    );
    assert_eq!(events[0].data["momsn"], 42);
    // Counted as commands, like those through `commands::execute` (the
    // registry is per process and tests share it: at least these three).
    let metrics = app.metrics().await;
    let received: u64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                "taskledger_commands_total{aggregate=\"devices\",command=\"Receive\",outcome=\"ok\"} ",
            )
        })
        .expect("the Receive counter")
        .parse()
        .unwrap();
    assert!(received >= 3, "{received}");

    // Forged, tampered, unsigned, malformed: refused, nothing recorded.
    let forger = crate::rockblock::FORGER_KEY;
    let mut tampered = fields.clone();
    tampered.momsn = 44;
    let mut bad_imei = MoFields::sample(b"x");
    bad_imei.momsn = 45;
    bad_imei.imei = "30023401075337".into();
    let cases = vec![
        (
            mo_form_body(&tampered, Some(&sign_mo_with(&tampered, forger))),
            401,
            "forged",
        ),
        (mo_form_body(&tampered, Some(&jwt)), 401, "tampered"),
        (mo_form_body(&tampered, None), 401, "unsigned"),
        (
            mo_form_body(&tampered, Some(&jwt)).replace("data=", "data=zz"),
            400,
            "bad hex",
        ),
        (
            mo_form_body(&bad_imei, Some(&sign_mo(&bad_imei))),
            400,
            "bad imei",
        ),
    ];
    for (body, status, what) in cases {
        let response = mo_webhook(&app, FORM, body).await;
        assert_eq!(response.status().as_u16(), status, "{what}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status, "{what}: {problem}");
    }
    let wrong_type = mo_webhook(&app, "text/plain", "imei=1".into()).await;
    assert_eq!(wrong_type.status(), 415);
    let after = device_events(&app).await;
    assert_eq!(after.len(), 2, "a refused webhook stored something");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_verification_unsigned_webhooks_are_accepted() {
    let app = TestApp::spawn_with_config(&config(false), |_| {}).await;
    let fields = MoFields::sample(b"unsigned");
    let response = mo_webhook(&app, FORM, mo_form_body(&fields, None)).await;
    assert_eq!(response.status(), 200);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_devices_are_queued_and_checked() {
    let app = TestApp::spawn_with_config(&config(true), |_| {}).await;
    let key = app.key(&[Scope::DevicesWrite]).await;
    let send = |imei: &'static str, body: Value| queue_message(&app, &key, imei, body);
    let queued = send(IMEI, json!({"text": "hi there"})).await;
    assert_eq!(queued.status(), 202);
    let queued: Value = queued.json().await.unwrap();
    assert_eq!(queued["status"], "queued");
    let encoded = send(IMEI, json!({"base64": "AAEC/w==", "flush": true})).await;
    assert_eq!(encoded.status(), 202);
    for (imei, body, status) in [
        ("12345", json!({"text": "x"}), 400),
        (IMEI, json!({"text": "x".repeat(271)}), 422),
        (IMEI, json!({"text": ""}), 422),
        (IMEI, json!({"base64": "not base64!"}), 422),
        (IMEI, json!({"text": "a", "base64": "YQ=="}), 422),
        (IMEI, json!({}), 422),
        (IMEI, json!({"txt": "typo"}), 422),
    ] {
        let response = send(imei, body.clone()).await;
        assert_eq!(response.status().as_u16(), status, "{imei} {body}");
    }
    let events = device_events(&app).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data["payload_hex"], "000102ff");
    assert_eq!(events[1].data["flush"], true);
    app.finish().await;
}

fn gateway_config(mt_url: &str) -> String {
    format!(
        "{KINDS}\n[rockblock]\nmt_url = \"{mt_url}\"\nusername = \"{}\"\npassword = \"{}\"\nverify_mo_jwt = false\nmax_attempts = 3\nretry_backoff_seconds = 0\n",
        crate::rockblock::USERNAME,
        crate::rockblock::PASSWORD
    )
}

/// The message's row in `device_messages`, once `check` holds.
async fn message_row(
    app: &TestApp,
    message_id: &str,
    check: impl Fn(&str) -> bool,
) -> (String, i32, Option<i64>, Option<i32>, Option<String>) {
    let client = app.database.client().await;
    let id = uuid::Uuid::parse_str(message_id).unwrap();
    eventually(Duration::from_secs(20), Duration::from_millis(50), || async {
        if let Some(row) = client
            .query_opt(
                "SELECT status, attempts, mt_id, error_code, error_text FROM device_messages WHERE message_id = $1",
                &[&id],
            )
            .await
            .unwrap()
        {
            let status: String = row.get(0);
            if check(&status) {
                return Ok((status, row.get(1), row.get(2), row.get(3), row.get(4)));
            }
        }
        Err(format!("message {message_id} did not settle"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sends_retries_and_gives_up_like_the_provider_says() {
    use crate::rockblock::{RockblockStandIn, Script, FIRST_MT_ID};
    use taskledger::config::settings::Role;

    let provider = RockblockStandIn::start_default().await;
    let app = TestApp::spawn_with_config(&gateway_config(&provider.url), |settings| {
        settings.roles = vec![Role::Api, Role::Projector, Role::Gateway];
    })
    .await;
    let key = app.key(&[Scope::DevicesWrite]).await;
    let send = |imei: &'static str, text: &'static str| {
        let response = queue_message(&app, &key, imei, json!({ "text": text }));
        async move {
            let response = response.await;
            assert_eq!(response.status(), 202);
            let body: Value = response.json().await.unwrap();
            body["message_id"].as_str().unwrap().to_owned()
        }
    };

    // Sent at the first attempt.
    let first = send(IMEI, "first").await;
    let (status, attempts, mt_id, _, _) =
        message_row(&app, &first, |status| status == "sent").await;
    assert_eq!(
        (status.as_str(), attempts, mt_id),
        ("sent", 1, Some(FIRST_MT_ID as i64))
    );
    let requests = provider.requests();
    assert_eq!(requests.last().unwrap().data, b"first");

    // A system error (99) is retried, then sent.
    provider.script(1, Script::Respond("FAILED,99,System Error".into()));
    let second = send(IMEI, "second").await;
    let (_, attempts, mt_id, _, _) = message_row(&app, &second, |status| status == "sent").await;
    assert_eq!(attempts, 2);
    assert!(mt_id.is_some());

    // An IMEI not on the account (11) is final at once.
    let stranger = send("300434065199999", "who").await;
    let (status, attempts, _, code, text) =
        message_row(&app, &stranger, |status| status == "failed").await;
    assert_eq!((status.as_str(), attempts, code), ("failed", 1, Some(11)));
    assert!(text.unwrap().contains("IMEI"));

    // A dead endpoint: every attempt fails, the third is final.
    provider.script(3, Script::Hangup);
    let doomed = send(IMEI, "doomed").await;
    let (status, attempts, _, code, _) =
        message_row(&app, &doomed, |status| status == "failed").await;
    assert_eq!((status.as_str(), attempts, code), ("failed", 3, None));

    // The log holds one attempt record per provider call.
    let events = device_events(&app).await;
    let attempts = events
        .iter()
        .filter(|event| event.event_type == "DeviceMessageSendAttempted")
        .count();
    let calls = provider
        .requests()
        .iter()
        .filter(|request| request.imei == IMEI)
        .count();
    assert_eq!(attempts, 1 + 2 + 3);
    assert!(
        calls <= attempts,
        "{calls} calls for {attempts} attempt records"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_their_messages_are_listed_paged_and_exported() {
    let app = TestApp::spawn_with_config(&config(false), |_| {}).await;
    let writer = app.key(&[Scope::DevicesWrite]).await;
    let reader = app.key(&[Scope::DevicesRead]).await;
    for momsn in 1..=3 {
        let mut fields = MoFields::sample(format!("mo {momsn}").as_bytes());
        fields.momsn = momsn;
        assert_eq!(
            mo_webhook(&app, FORM, mo_form_body(&fields, None))
                .await
                .status(),
            200
        );
    }
    let queued = queue_message(&app, &writer, IMEI, json!({"text": "=cmd"})).await;
    assert_eq!(queued.status(), 202);
    let get = |path: String| send(app.get(&reader, &path));
    // The projection catches up.
    let device = eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let response = get(format!("/v1/devices/{IMEI}")).await;
            if response.status() == 200 {
                let device: Value = response.json().await.unwrap();
                if device["received_count"] == 3 && device["queued_count"] == 1 {
                    return Ok(device);
                }
            }
            Err("the devices projection did not catch up".to_owned())
        },
    )
    .await;
    assert_eq!(device["last_latitude"], 52.3867);
    let list: Value = get("/v1/devices".into()).await.json().await.unwrap();
    assert_eq!(list["items"][0]["imei"], IMEI);

    // Pages of one, newest first, filtered to what the device sent.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/devices/{IMEI}/messages?direction=mo&limit=1");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = get(path).await.json().await.unwrap();
        seen.push(page["items"][0]["momsn"].as_i64().unwrap());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [3, 2, 1]);
    let outbound: Value = get(format!("/v1/devices/{IMEI}/messages?direction=mt"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outbound["items"][0]["status"], "queued");
    assert_eq!(outbound["items"][0]["payload_base64"], "PWNtZA==");

    let csv = send_text(
        app.get(&reader, &format!("/v1/devices/{IMEI}/messages"))
            .header("accept", "text/csv"),
    )
    .await;
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("message_id,imei,direction"));
    for (path, status) in [
        (
            format!("/v1/devices/{IMEI}/messages?direction=sideways"),
            400,
        ),
        (format!("/v1/devices/{IMEI}/messages?cursor=nope"), 400),
        ("/v1/devices/123".to_owned(), 400),
        ("/v1/devices/300434065199999".to_owned(), 404),
    ] {
        assert_eq!(get(path.clone()).await.status().as_u16(), status, "{path}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_webhooks_of_one_device_all_land_once() {
    let app = TestApp::spawn_with_config(&config(true), |_| {}).await;
    let mut deliveries = Vec::new();
    for momsn in 100..120 {
        let mut fields = MoFields::sample(format!("burst {momsn}").as_bytes());
        fields.momsn = momsn;
        let body = mo_form_body(&fields, Some(&sign_mo(&fields)));
        // Each delivered twice, all at once.
        deliveries.push(mo_webhook(&app, FORM, body.clone()));
        deliveries.push(mo_webhook(&app, FORM, body));
    }
    for response in futures::future::join_all(deliveries).await {
        assert_eq!(response.status(), 200);
    }
    let events = device_events(&app).await;
    assert_eq!(events.len(), 20, "one event per message");
    let momsns: std::collections::BTreeSet<u64> = events
        .iter()
        .map(|event| event.data["momsn"].as_u64().unwrap())
        .collect();
    assert_eq!(momsns, (100..120).collect());
    app.finish().await;
}
