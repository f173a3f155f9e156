//! The delivery log looked up by message: `?message_id=` (the
//! `webhook-id` a receiver got) or `?position=` (the event's place in the
//! log) finds that message's attempts however far back, so a receiver's
//! complaint is answered from the log; a malformed one is refused and
//! another tenant's webhook is a 404 as for none.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::support::http::send;
use crate::support::poll::eventually;
use crate::webhooks::{app_with, create, deliveries, Receiver, SCOPES};

/// `GET /v1/webhooks/{webhook}/deliveries?{query}` as `key`: the status
/// and the body.
async fn lookup(app: &TestApp, key: &str, webhook: &str, query: &str) -> (u16, Value) {
    let (status, body) = app
        .read(
            Some(key),
            &format!("/v1/webhooks/{webhook}/deliveries?{query}"),
        )
        .await;
    (status.as_u16(), body)
}

/// The (message id, attempt, outcome) of each attempt in a page.
fn attempts(page: &Value) -> Vec<(String, u64, String)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| {
            (
                attempt["message_id"].as_str().unwrap().to_owned(),
                attempt["attempt"].as_u64().unwrap(),
                attempt["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_s_attempts_are_found_by_its_id_or_position_however_old() {
    let app = app_with("").await;
    let acme = app.tenant_key("acme", SCOPES).await;
    // The first delivery fails once, then every one is answered.
    let (receiver, address) = Receiver::start(&[500]).await;
    let (status, webhook) = create(
        &app,
        &acme,
        &format!("http://{address}/hook"),
        &["task.submitted"],
    )
    .await;
    assert_eq!(status, 201, "{webhook}");
    let id = webhook["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        app.submitted(
            &acme,
            serde_json::json!({"kind": "echo", "params": {"message": "hi"}}),
        )
        .await;
    }
    let log = eventually(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let log = deliveries(&app, &acme, &id).await;
            if log.len() == 5 {
                Ok(log)
            } else {
                Err(format!("{} of 5 attempts recorded", log.len()))
            }
        },
    )
    .await;
    let first = receiver.got()[0].id.clone();
    let first_position = log[0]["position"].as_u64().unwrap();
    assert_eq!(log[0]["message_id"], first.as_str());
    let second_position = log[2]["position"].as_u64().unwrap();

    // The latest two no longer hold the first message; the look-up does.
    let (status, latest) = lookup(&app, &acme, &id, "limit=2").await;
    assert_eq!(status, 200, "{latest}");
    assert!(attempts(&latest)
        .iter()
        .all(|(message, ..)| *message != first));
    let both = vec![
        (first.clone(), 1, "retrying".to_owned()),
        (first.clone(), 2, "delivered".to_owned()),
    ];
    for query in [
        format!("message_id={first}&limit=2"),
        format!("message_id={}", first.trim_start_matches("msg_")),
        format!("position={first_position}"),
        format!("message_id={first}&position={first_position}"),
    ] {
        let (status, page) = lookup(&app, &acme, &id, &query).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(attempts(&page), both, "{query}");
        assert_eq!(page["items"][0]["status_code"], 500, "{query}");
    }
    for query in [
        format!("message_id={first}&position={second_position}"),
        format!("message_id=msg_{}", Uuid::new_v4().simple()),
        "position=999999".to_owned(),
    ] {
        let (status, page) = lookup(&app, &acme, &id, &query).await;
        assert_eq!((status, attempts(&page)), (200, vec![]), "{query}");
    }

    // Malformed: refused, saying what was wrong.
    for (query, says) in [
        ("message_id=msg_nope", "message_id"),
        ("message_id=", "message_id"),
        ("position=0", "position"),
        ("position=first", "position"),
    ] {
        let (status, problem) = lookup(&app, &acme, &id, query).await;
        assert_eq!(status, 400, "{query}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{query}: {detail}");
    }

    // Another tenant's webhook answers as a missing one.
    let globex = app.tenant_key("globex", SCOPES).await;
    let missing = Uuid::new_v4().to_string();
    let query = format!("message_id={first}");
    let theirs = send(app.get(&globex, &format!("/v1/webhooks/{id}/deliveries?{query}"))).await;
    let none = send(app.get(
        &globex,
        &format!("/v1/webhooks/{missing}/deliveries?{query}"),
    ))
    .await;
    assert_eq!(
        (theirs.status().as_u16(), none.status().as_u16()),
        (404, 404)
    );
    assert_eq!(
        theirs.text().await.unwrap().replace(&id, &missing),
        none.text().await.unwrap()
    );
    app.finish().await;
}
