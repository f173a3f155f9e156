//! Device events through webhooks, end to end: a signed MO message posted
//! to the RockBLOCK route (with the stand-in's test key) reaches, signed,
//! the webhook of the tenant its device is assigned to, and no other
//! tenant's; after a reassignment each tenant gets only what happened
//! while the device was its own, live and on a replay.

use std::time::Duration;

use serde_json::{json, Value};
use taskledger::config::settings::Role;
use taskledger_events::apikey::Scope;

use crate::helpers::TestApp;
use crate::rockblock::{mo_form_body, mo_webhook, sign_mo, MoFields, FORM, IMEI};
use crate::support::http::send;
use crate::support::poll::eventually;
use crate::webhooks::{config_with, create, verify, Received, Receiver, SCOPES};

/// The webhooks' configuration, and MO webhooks verified with the test key.
fn config() -> String {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rockblock/mo-test-key.pub.pem"
    );
    format!(
        "{}\n[rockblock]\nmt_url = \"http://127.0.0.1:9/rockblock/MT\"\nusername = \"u\"\n\
         password = \"p\"\nmo_public_key_file = \"{key}\"\nverify_mo_jwt = true\n",
        config_with("")
    )
}

/// Posts the signed MO message `momsn` carrying `text` from [`IMEI`].
async fn message_from_the_device(app: &TestApp, momsn: u64, text: &str) {
    let mut fields = MoFields::sample(text.as_bytes());
    fields.momsn = momsn;
    let body = mo_form_body(&fields, Some(&sign_mo(&fields)));
    let response = mo_webhook(app, FORM, body).await;
    assert_eq!(response.status(), 200, "MO {momsn}");
}

/// Assigns [`IMEI`] to `tenant` with the platform key.
async fn assign(app: &TestApp, platform: &str, tenant: &str) {
    let response = send(
        app.http
            .put(app.url(&format!("/v1/devices/{IMEI}")))
            .bearer_auth(platform)
            .json(&json!({ "tenant": tenant })),
    )
    .await;
    assert_eq!(response.status(), 200, "assigning to {tenant}");
}

/// The message texts of the deliveries `receiver` answered 200, in order.
fn texts(receiver: &Receiver) -> Vec<String> {
    receiver
        .got()
        .iter()
        .filter(|received| received.answered == 200)
        .map(|received| {
            let body: Value = serde_json::from_slice(&received.body).unwrap();
            let payload = body["data"]["event"]["payload_hex"].as_str().unwrap();
            String::from_utf8(hex::decode(payload).unwrap()).unwrap()
        })
        .collect()
}

/// Waits until `receiver` was delivered `count` messages; their texts.
async fn delivered_texts(receiver: &Receiver, count: usize) -> Vec<String> {
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let texts = texts(receiver);
            if texts.len() >= count {
                Ok(texts)
            } else {
                Err(format!("{} of {count} delivered: {texts:?}", texts.len()))
            }
        },
    )
    .await
}

/// A receiver and `key`'s webhook of `events` to it: the receiver, the
/// webhook's id and secret.
async fn hook(app: &TestApp, key: &str, events: &[&str]) -> (Receiver, String, String) {
    let (receiver, address) = Receiver::start(&[]).await;
    let (status, webhook) = create(app, key, &format!("http://{address}/hook"), events).await;
    assert_eq!(status, 201, "{webhook}");
    (
        receiver,
        webhook["id"].as_str().unwrap().to_owned(),
        webhook["secret"].as_str().unwrap().to_owned(),
    )
}

fn assert_signed_device_message(secret: &str, received: &Received, tenant: &str) {
    assert!(verify(secret, received), "signature of {received:?}");
    let body: Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(body["type"], "device.message.received", "{body}");
    assert_eq!(body["data"]["tenant"], tenant, "{body}");
    assert_eq!(body["data"]["event_type"], "DeviceMessageReceived");
    assert_eq!(body["data"]["stream_id"], format!("device-{IMEI}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_message_reaches_the_webhook_of_the_tenant_the_device_had_then_only() {
    let app = TestApp::spawn_with_config(&config(), |settings| {
        settings.roles = vec![Role::Api, Role::Projector, Role::Webhooks];
    })
    .await;
    let acme = app.tenant_key("acme", SCOPES).await;
    let globex = app.tenant_key("globex", SCOPES).await;
    let platform = app.key(&[Scope::Admin]).await;
    let (acme_receiver, acme_hook, acme_secret) =
        hook(&app, &acme, &["device.message.received"]).await;
    let (globex_receiver, globex_hook, globex_secret) = hook(&app, &globex, &["device.*"]).await;

    // Unassigned: the platform's, no tenant's webhook gets it.
    message_from_the_device(&app, 41, "before anyone").await;
    assign(&app, &platform, "acme").await;
    message_from_the_device(&app, 42, "for acme").await;
    assert_eq!(delivered_texts(&acme_receiver, 1).await, ["for acme"]);
    assert_signed_device_message(&acme_secret, &acme_receiver.got()[0], "acme");

    // Reassigned: the next message is globex's; acme's stays acme's.
    assign(&app, &platform, "globex").await;
    message_from_the_device(&app, 43, "for globex").await;
    assert_eq!(delivered_texts(&globex_receiver, 1).await, ["for globex"]);
    assert_signed_device_message(&globex_secret, &globex_receiver.got()[0], "globex");

    // A replay of the whole log gives each only what was its own then.
    for (key, id) in [(&acme, &acme_hook), (&globex, &globex_hook)] {
        let replay = send(
            app.post(key, &format!("/v1/webhooks/{id}/replay"))
                .json(&json!({"from_position": 1})),
        )
        .await;
        assert_eq!(replay.status(), 202);
    }
    assert_eq!(
        delivered_texts(&acme_receiver, 2).await,
        ["for acme", "for acme"]
    );
    assert_eq!(
        delivered_texts(&globex_receiver, 2).await,
        ["for globex", "for globex"]
    );
    // Messages after the replays are delivered after them: had a replay
    // sent anything more, it would be in front of them.
    message_from_the_device(&app, 44, "globex again").await;
    assert_eq!(
        delivered_texts(&globex_receiver, 3).await,
        ["for globex", "for globex", "globex again"]
    );
    assign(&app, &platform, "acme").await;
    message_from_the_device(&app, 45, "acme again").await;
    assert_eq!(
        delivered_texts(&acme_receiver, 3).await,
        ["for acme", "for acme", "acme again"]
    );
    let acme_got = acme_receiver.got();
    assert_eq!(
        acme_got[0].id, acme_got[1].id,
        "a replay keeps the webhook-id"
    );
    for received in &acme_got {
        assert_signed_device_message(&acme_secret, received, "acme");
    }
    for received in &globex_receiver.got() {
        assert_signed_device_message(&globex_secret, received, "globex");
    }
    assert_eq!(globex_receiver.got().len(), 3, "nothing of acme's");
    app.finish().await;
}
