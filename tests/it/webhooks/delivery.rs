//! What is delivered, signed and logged, in what order, and how one
//! webhook falling behind or replaying holds back no other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::helpers::TestApp;
use crate::support::http::send;
use crate::support::poll::eventually;

use super::{
    app_with, created, delivered, delivered_positions, deliveries, hook_url, succeeded_task,
    until_logged, verify, Receiver, SCOPES,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_is_delivered_signed_retried_under_one_id_and_logged() {
    let app = app_with("").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, address) = Receiver::start(&[500, 500]).await;
    let webhook = created(&app, &key, &hook_url(address), &["task.succeeded"]).await;
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
    let body = about[2].json();
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
    assert!(got
        .iter()
        .all(|received| { received.json()["type"] == "task.succeeded" }));

    // The delivery log: every attempt, with its outcome and status.
    let log = until_logged(&app, &key, &id, 4, Duration::from_secs(10)).await;
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
    let globex_hook = created(&app, &globex, &hook_url(dead_address), &["task.*"]).await;
    let (receiver, address) = Receiver::start(&[]).await;
    created(&app, &acme, &hook_url(address), &["task.*"]).await;

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
        let body = received.json();
        assert_eq!(body["data"]["tenant"], "acme", "{body}");
        assert_ne!(body["data"]["stream_id"], format!("task-{}", globex_task.0));
    }
    app.finish().await;
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
async fn a_webhook_whose_queue_is_full_reads_the_log_and_gets_everything_in_order() {
    let app = app_with("queue_length = 2\n").await;
    let key = app.tenant_key("acme", SCOPES).await;
    let (receiver, gate, address) = Receiver::start_gated(0).await;
    created(&app, &key, &hook_url(address), &["task.*"]).await;
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
        let kinds: Vec<Value> = about.iter().map(|got| got.json()["type"].clone()).collect();
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
    let acme_hook = created(&app, &acme, &hook_url(address), &["task.submitted"]).await;
    let acme_id = acme_hook["id"].as_str().unwrap().to_owned();
    let (other, address) = Receiver::start(&[]).await;
    created(&app, &globex, &hook_url(address), &["task.succeeded"]).await;
    for _ in 0..TASKS {
        app.submitted(&acme, json!({"kind": "echo", "params": {"message": "hi"}}))
            .await;
    }
    let live = answered(&slow, TASKS).await;
    let live_ids: Vec<String> = slow.ids();

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
    let ids: Vec<String> = slow.ids();
    assert_eq!(&ids[TASKS..], &live_ids[..], "under the same webhook-ids");
    app.finish().await;
}
