//! The console's devices and ledgers pages in a real browser
//! (`tests/console/devices.mjs`): devices of two tenants with a signed
//! message from each, carrying a position, and one message to one; a
//! ledger with a hole. Acme's key sees its device, its dot on the map and
//! its messages both ways, and not globex's device; a platform auditor sees
//! the ledger.

use std::time::Duration;

use serde_json::{json, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::EventStore;

use crate::console::run_browser_script;
use crate::helpers::{TestApp, KINDS};
use crate::rockblock::{mo_form_body, mo_webhook, sign_mo, MoFields, FORM, IMEI};
use crate::support::http::send;
use crate::support::poll::eventually;

/// Globex's device, somewhere else on Earth.
const GLOBEX_IMEI: &str = "300434065190002";

/// The service's kinds and RockBLOCK webhooks verified with the test key.
fn config() -> String {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rockblock/mo-test-key.pub.pem"
    );
    format!(
        "{KINDS}\n[rockblock]\nmt_url = \"http://127.0.0.1:9/rockblock/MT\"\nusername = \"u\"\npassword = \"p\"\nmo_public_key_file = \"{key}\"\nverify_mo_jwt = true\n"
    )
}

/// Assigns device `imei` to `tenant` and posts a signed message from it.
async fn device_of(app: &TestApp, admin: &str, tenant: &str, fields: &MoFields) {
    let assign = app
        .http
        .put(app.url(&format!("/v1/devices/{}", fields.imei)))
        .bearer_auth(admin)
        .json(&json!({ "tenant": tenant }));
    assert_eq!(send(assign).await.status(), 200);
    let body = mo_form_body(fields, Some(&sign_mo(fields)));
    assert_eq!(mo_webhook(app, FORM, body).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_their_map_and_the_ledgers_work_in_a_real_browser() {
    let app = TestApp::spawn_with_config(&config(), |_| {}).await;
    let admin = app.key(&[Scope::Admin]).await;
    let auditor = app.key(&[Scope::AuditRead]).await;
    let acme = app
        .tenant_key("acme", &[Scope::DevicesRead, Scope::DevicesWrite])
        .await;
    let globex = app.tenant_key("globex", &[Scope::DevicesRead]).await;

    // Acme's device near Cambridge (the sample's position), globex's in
    // Sydney; a message to acme's.
    device_of(&app, &admin, "acme", &MoFields::sample(b"hello from orbit")).await;
    let mut sydney = MoFields::sample(b"g'day");
    sydney.imei = GLOBEX_IMEI.to_owned();
    sydney.iridium_latitude = -33.8688;
    sydney.iridium_longitude = 151.2093;
    device_of(&app, &admin, "globex", &sydney).await;
    let queued = app
        .post(&acme, &format!("/v1/devices/{IMEI}/messages"))
        .json(&json!({ "text": "ping" }));
    assert_eq!(send(queued).await.status(), 202);
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let (status, device) = app.read(Some(&admin), &format!("/v1/devices/{IMEI}")).await;
            (status == 200 && device["received_count"] == 1 && device["queued_count"] == 1)
                .then_some(())
                .ok_or_else(|| format!("the devices projection did not catch up: {device}"))
        },
    )
    .await;
    let (_, globex_device) = app
        .read(Some(&globex), &format!("/v1/devices/{GLOBEX_IMEI}"))
        .await;
    assert_eq!(globex_device["imei"], GLOBEX_IMEI, "{globex_device}");

    // Ledger "bank" confirms 1 to 2 and the fourth event: 3 is a hole.
    let ledger = app.key(&[Scope::LedgerWrite]).await;
    let events = app.store().read_all(0, 100).await.unwrap();
    assert!(events.len() >= 4, "{} events", events.len());
    let mut position = 0;
    for body in [
        json!({ "from_sequence": 1, "to_sequence": 2, "reference": "batch-1" }),
        json!({ "event_ids": [events[3].event_id], "reference": "batch-2" }),
    ] {
        let confirm = app
            .post(&ledger, "/v1/ledgers/bank/confirmations")
            .json(&body);
        let answer = send(confirm).await;
        assert_eq!(answer.status(), 201);
        position = answer.json::<Value>().await.unwrap()["position"]
            .as_u64()
            .unwrap();
    }
    let (status, ledgers) = app
        .read(
            Some(&auditor),
            &format!("/v1/ledgers?min_position={position}"),
        )
        .await;
    assert_eq!(status, 200, "{ledgers}");
    assert_eq!(ledgers["items"][0]["ledger"], "bank", "{ledgers}");
    assert_eq!(ledgers["items"][0]["confirmed_through"], 2, "{ledgers}");
    assert_eq!(ledgers["items"][0]["holes"], 1, "{ledgers}");

    run_browser_script(
        "devices.mjs",
        &[
            ("CONSOLE_URL", app.url("")),
            ("CONSOLE_ACME_KEY", acme.clone()),
            ("CONSOLE_AUDIT_KEY", auditor.clone()),
            ("CONSOLE_ACME_IMEI", IMEI.to_owned()),
            ("CONSOLE_GLOBEX_IMEI", GLOBEX_IMEI.to_owned()),
        ],
    )
    .await;
    app.finish().await;
}
