//! A webhook that keeps failing is disabled; enabled again, it catches up
//! or is replayed under the same webhook-ids.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::support::http::send;
use crate::support::poll::eventually;

use super::{
    app_with, delivered, deliveries, failing_hook, succeeded_task, verify, Received, SCOPES,
};

/// `POST /v1/webhooks/{id}/enable` with `key`: the answer.
async fn enable(app: &TestApp, key: &str, id: &str) -> reqwest::Response {
    send(app.post(key, &format!("/v1/webhooks/{id}/enable"))).await
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
    let failed_ids: Vec<String> = receiver.ids();
    assert!(!failed_ids.is_empty());

    // A replay needs an enabled webhook.
    let replay = |from: u64| {
        app.post(&key, &format!("/v1/webhooks/{id}/replay"))
            .json(&json!({"from_position": from}))
    };
    assert_eq!(send(replay(1)).await.status(), 409);
    receiver.answer_ok_from_now();
    let enabled = enable(&app, &key, &id).await;
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
    let enabled = enable(&app, &key, &id).await;
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
            let body = got.json();
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
