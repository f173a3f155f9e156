//! The global order over HTTP for ledger consumers: pages and the live
//! Server-Sent Events stream, over real HTTP against real PostgreSQL.

use serde_json::{json, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::EventStore;

use crate::helpers::TestApp;
use crate::support::http::{item_with, send, send_json};
use crate::support::sse::SseReader;

async fn submit(app: &TestApp, key: &str, message: &str) {
    let response = send(
        app.post(key, "/v1/tasks")
            .json(&json!({"kind": "echo", "params": {"message": message}, "tenant": "default", "frontend_id": "feed"})),
    )
    .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_order_pages_and_streams_with_sequence_and_hash() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let writer = app.key(&[Scope::TasksWrite]).await;
    let auditor = app.key(&[Scope::AuditRead]).await;
    for index in 0..5 {
        submit(&app, &writer, &format!("m{index}")).await;
    }
    let store = app.store();
    let head = store.head_position().await.unwrap();
    let stored = store.read_all(0, 1000).await.unwrap();

    // Pages of 3 from the start give exactly the stored order.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page: Value =
            send_json(app.get(&auditor, &format!("/v1/events?after={after}&limit=3"))).await;
        let items = page["items"].as_array().unwrap();
        seen.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => after = next.parse().unwrap(),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, head);
    for (item, event) in seen.iter().zip(&stored) {
        assert_eq!(item["position"], event.global_position);
        assert_eq!(item["event_id"], event.event_id.to_string());
        assert_eq!(item["stream_id"], event.stream_id);
        assert_eq!(item["hash"], hex::encode(event.hash));
    }

    // The live stream: from sequence 2, then a new event as it happens.
    let response = send(app.get(&auditor, "/v1/events/stream?after=2")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut reader = SseReader::new(response);
    let mut events = Vec::new();
    for _ in 3..=head {
        events.push(reader.next_event().await);
    }
    let ids: Vec<u64> = events.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, (3..=head).collect::<Vec<_>>());
    for (id, event_type, data) in &events {
        assert_eq!(data["position"], *id);
        assert_eq!(data["event_type"], *event_type);
    }
    submit(&app, &writer, "live").await;
    let (id, event_type, _) = reader.next_event().await;
    assert_eq!((id, event_type.as_str()), (head + 1, "TaskSubmitted"));

    // Resuming with Last-Event-ID starts right after it.
    let response = send(
        app.get(&auditor, "/v1/events/stream")
            .header("last-event-id", head.to_string()),
    )
    .await;
    let (id, _, _) = SseReader::new(response).next_event().await;
    assert_eq!(id, head + 1);

    let bad = send(app.get(&auditor, "/v1/events?limit=0")).await;
    assert_eq!(bad.status(), 400);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_move_ledger_status_and_bad_ones_change_nothing() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let writer = app.key(&[Scope::TasksWrite, Scope::TasksRead]).await;
    let ledger = app.key(&[Scope::LedgerWrite]).await;
    for index in 0..4 {
        submit(&app, &writer, &format!("m{index}")).await;
    }
    let store = app.store();
    let stored = store.read_all(0, 1000).await.unwrap();
    let head = stored.len() as u64;
    let post = |body: Value| app.confirm(&ledger, &body);
    let status = || app.read_at_head(&ledger, "/v1/ledgers/chain-a/status");
    let before = status().await;
    assert_eq!(before["confirmed"], 0);
    assert_eq!(before["pending"], head);
    assert_eq!(before["in_sync"], false);

    // 1..=3 by range: recorded.
    let first = post(json!({"from_sequence": 1, "to_sequence": 3, "reference": "0xaaa"})).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["newly_confirmed"], json!([{"from": 1, "to": 3}]));
    assert_eq!(first["status"]["confirmed_through"], 3);

    // A range that skips 4, a sequence past the head, unknown event ids, an
    // empty reference, both forms at once: refused, nothing recorded.
    let last_id = stored.last().unwrap().event_id;
    for (body, needle) in [
        (
            json!({"from_sequence": 5, "to_sequence": 6, "reference": "0xb"}),
            "skip the hole 4..=4",
        ),
        (
            json!({"from_sequence": 4, "to_sequence": head + 10, "reference": "0xb"}),
            "does not exist",
        ),
        (
            json!({"event_ids": [uuid::Uuid::new_v4()], "reference": "0xb"}),
            "do not exist",
        ),
        (
            json!({"from_sequence": 4, "to_sequence": 4, "reference": ""}),
            "reference",
        ),
        (
            json!({"from_sequence": 4, "to_sequence": 4, "event_ids": [last_id], "reference": "0xb"}),
            "either",
        ),
    ] {
        let response = post(body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{body}: {problem}"
        );
    }
    assert_eq!(status().await["confirmed"], 3);

    // The last event by id leaves holes 4..=head-1; reconciliation lists them.
    let by_id = post(json!({"event_ids": [last_id], "reference": "0xccc"})).await;
    assert_eq!(by_id.status(), 201);
    let holes: Value = app
        .http
        .get(app.url(&format!(
            "/v1/ledgers/chain-a/holes?min_position={}",
            app.store().head_position().await.unwrap()
        )))
        .bearer_auth(&ledger)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(holes["items"], json!([{"from": 4, "to": head - 1}]));

    // A task's view: its events, and which the ledger has.
    let task_stream = &stored
        .iter()
        .find(|event| event.stream_id.starts_with("task-"))
        .unwrap()
        .stream_id;
    let task_id = task_stream.trim_start_matches("task-");
    let view: Value = send_json(app.get(&writer, &format!("/v1/tasks/{task_id}/ledger"))).await;
    let mine = item_with(&view["items"], "ledger", "chain-a");
    assert!(mine["confirmed"].as_u64().unwrap() >= 1, "{view}");
    assert!(
        mine["references"]
            .as_array()
            .unwrap()
            .contains(&json!("0xaaa")),
        "{view}"
    );

    // Filling the hole: in sync (up to the head at that moment), and a
    // repeat changes nothing (200).
    let rest = post(json!({"from_sequence": 4, "to_sequence": head, "reference": "0xddd"})).await;
    assert_eq!(rest.status(), 201);
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(
        rest["newly_confirmed"],
        json!([{"from": 4, "to": head - 1}])
    );
    let repeat = post(json!({"from_sequence": 1, "to_sequence": head, "reference": "0xddd"})).await;
    assert_eq!(repeat.status(), 200);
    let after = status().await;
    assert_eq!(after["confirmed_through"], head);
    // The confirmations are events too, but a ledger does not owe them:
    // having confirmed every other event, it is in sync.
    assert!(app.store().head_position().await.unwrap() > head);
    assert_eq!(after["head"], head, "{after}");
    assert_eq!(after["pending"], 0, "{after}");
    assert_eq!(after["in_sync"], true, "{after}");
    let bad_name = send(app.get(&ledger, "/v1/ledgers/Chain%20A/status")).await;
    assert_eq!(bad_name.status(), 400);
    app.finish().await;
}
