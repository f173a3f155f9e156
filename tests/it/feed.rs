//! The global order over HTTP for ledger consumers: pages and the live
//! Server-Sent Events stream, over real HTTP against real PostgreSQL.

use std::time::Duration;

use serde_json::{json, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::EventStore;

use crate::helpers::TestApp;

async fn submit(app: &TestApp, key: &str, message: &str) {
    let response = app
        .http
        .post(app.url("/v1/tasks"))
        .bearer_auth(key)
        .json(&json!({"kind": "echo", "params": {"message": message}, "frontend_id": "feed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// Server-Sent Events read off a response, one at a time.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event: (id, event type, data).
    async fn next_event(&mut self) -> (u64, String, Value) {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().parse::<u64>().unwrap());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str::<Value>(value.trim()).unwrap());
                    }
                }
                if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                    return (id, event, data);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("no event within 10 s")
                .unwrap()
                .expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
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
        let page: Value = app
            .http
            .get(app.url(&format!("/v1/events?after={after}&limit=3")))
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
    let response = app
        .http
        .get(app.url("/v1/events/stream?after=2"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
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
    let response = app
        .http
        .get(app.url("/v1/events/stream"))
        .bearer_auth(&auditor)
        .header("last-event-id", head.to_string())
        .send()
        .await
        .unwrap();
    let (id, _, _) = SseReader::new(response).next_event().await;
    assert_eq!(id, head + 1);

    let bad = app
        .http
        .get(app.url("/v1/events?limit=0"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    app.finish().await;
}
