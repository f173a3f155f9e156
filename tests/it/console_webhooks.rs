//! The console's webhook pages in a real browser
//! (`tests/console/webhooks.mjs`), against the real deliverer and real
//! receivers on 127.0.0.1: acme's receiver answers 500 once then 200, its
//! other always 503 (so that webhook is disabled); globex has one too. Acme
//! sees its two webhooks and not globex's, the failed and the delivered
//! attempt under one id, the disabled one's reason, enables it and replays
//! the flaky one from the console.

use std::time::Duration;

use serde_json::Value;
use taskledger_events::apikey::Scope;

use crate::console::run_browser_script;
use crate::support::poll::eventually;
use crate::webhooks::{app_with, create, delivered, deliveries, succeeded_task, Receiver, SCOPES};

/// Waits until webhook `id`'s log, read with `key`, ends with `outcome`:
/// the log.
async fn logged(app: &crate::helpers::TestApp, key: &str, id: &str, outcome: &str) -> Vec<Value> {
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let log = deliveries(app, key, id).await;
            if log.last().is_some_and(|last| last["outcome"] == outcome) {
                Ok(log)
            } else {
                Err(format!("{id}'s log does not end {outcome} yet: {log:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_and_its_buttons_work_in_a_real_browser() {
    let app = app_with("retry_for_seconds = 1\n").await;
    let acme = app.tenant_key("acme", SCOPES).await;
    let globex = app
        .tenant_key("globex", &[Scope::WebhooksRead, Scope::WebhooksWrite])
        .await;
    let (flaky_receiver, flaky_address) = Receiver::start(&[500]).await;
    let (dead_receiver, dead_address) = Receiver::start(&[]).await;
    dead_receiver.answer_always(503);
    let hook = |address| format!("http://{address}/hook");
    let (status, flaky) = create(&app, &acme, &hook(flaky_address), &["task.succeeded"]).await;
    assert_eq!(status, 201, "{flaky}");
    let (_, dead) = create(&app, &acme, &hook(dead_address), &["task.succeeded"]).await;
    let (_, globex_hook) = create(&app, &globex, &hook(flaky_address), &["task.*"]).await;
    let id = |webhook: &Value| webhook["id"].as_str().unwrap().to_owned();
    let (flaky, dead, globex_hook) = (id(&flaky), id(&dead), id(&globex_hook));

    let task = succeeded_task(&app, &acme).await;
    let first = delivered(&flaky_receiver, task).await;
    assert_eq!(
        first.iter().map(|got| got.answered).collect::<Vec<_>>(),
        [500, 200]
    );
    let log = logged(&app, &acme, &flaky, "delivered").await;
    let position = log.last().unwrap()["position"].as_u64().unwrap();
    logged(&app, &acme, &dead, "gave_up").await;
    // The dead receiver recovers while its webhook is disabled: only the
    // console's enable can bring the event it gave up on.
    dead_receiver.answer_ok_from_now();

    run_browser_script(
        "webhooks.mjs",
        &[
            ("CONSOLE_URL", app.url("")),
            ("CONSOLE_ACME_KEY", acme.clone()),
            ("CONSOLE_FLAKY_HOOK", flaky.clone()),
            ("CONSOLE_DEAD_HOOK", dead.clone()),
            ("CONSOLE_GLOBEX_HOOK", globex_hook),
            ("CONSOLE_POSITION", position.to_string()),
        ],
    )
    .await;

    // What the buttons did: the replay delivered the event again under its
    // id, and the enabled webhook caught up with the event it gave up on.
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let again = flaky_receiver
                .got()
                .iter()
                .filter(|got| got.id == first[0].id && got.answered == 200)
                .count();
            (again >= 2)
                .then_some(())
                .ok_or_else(|| format!("not delivered again after the replay ({again})"))
        },
    )
    .await;
    let caught_up = delivered(&dead_receiver, task).await;
    assert!(
        caught_up.iter().all(|got| got.id == caught_up[0].id),
        "one webhook-id for every attempt: {caught_up:?}"
    );
    let (_, enabled) = app.read(Some(&acme), &format!("/v1/webhooks/{dead}")).await;
    assert_eq!(enabled["status"], "enabled", "{enabled}");
    app.finish().await;
}
