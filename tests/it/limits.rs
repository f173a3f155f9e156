//! Limits and overload over real HTTP against real PostgreSQL: per-key
//! request rates, a saturated pool answering 503, the caps on open event
//! streams, 1,000 streams on a handful of connections, streams ending when
//! their key is revoked or expires, and submissions that would raise a
//! kind's limits.

use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Response, StatusCode};
use serde_json::json;
use taskledger::config::settings::Settings;
use taskledger::service::shutdown;
use taskledger::service::startup::Application;
use taskledger_events::apikey::{ApiKeyCommand, ApiKeyId, ApiKeys, RevokeApiKey, Scope};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::testing::{listening_connections, TestDatabase};
use taskledger_events::Metadata;
use uuid::Uuid;

use crate::helpers::{create_key_with, random_bytes, TestApp, KINDS};
use crate::support::http::{problem, send};
use crate::support::poll::eventually;

/// A key with `scopes` and, if given, its own rate limit and expiry (it
/// works at once: keys are checked against the log); (id, secret).
async fn key_with(
    app: &TestApp,
    scopes: &[Scope],
    rate_limit: Option<u32>,
    expires_at: Option<DateTime<Utc>>,
) -> (ApiKeyId, String) {
    create_key_with(&app.store(), scopes, random_bytes(), |key| {
        key.expires_at = expires_at;
        key.rate_limit = rate_limit.and_then(NonZeroU32::new);
    })
    .await
}

/// Revokes `key_id`, now.
pub(crate) async fn revoke(app: &TestApp, key_id: ApiKeyId) {
    taskledger::commands::execute::<ApiKeys>(
        &app.store(),
        &key_id.stream_id(),
        ApiKeyCommand::Revoke(RevokeApiKey {
            key_id,
            reason: Some("test".into()),
            revoked_at: Utc::now(),
            revoked_by: None,
        }),
        Uuid::new_v4(),
        Metadata::default(),
    )
    .await
    .unwrap();
}

/// Sends `GET /v1/kinds` with `key` until it is refused (at most `tries`
/// times); the refusal, or `None` when every try was answered 200.
async fn first_refusal(app: &TestApp, key: &str, tries: usize) -> Option<Response> {
    for _ in 0..tries {
        let response = send(app.get(key, "/v1/kinds")).await;
        if response.status() != StatusCode::OK {
            return Some(response);
        }
    }
    None
}

fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_and_other_keys_are_unaffected() {
    let config = format!("{KINDS}\n[limits]\nrequests_per_second = 1\nburst = 3\n");
    let app = TestApp::spawn_with_config(&config, |_| {}).await;
    let (_, busy) = key_with(&app, &[Scope::TasksRead], None, None).await;
    let (_, calm) = key_with(&app, &[Scope::TasksRead], None, None).await;
    let (_, roomy) = key_with(&app, &[Scope::TasksRead], Some(50), None).await;
    let (_, strict) = key_with(&app, &[Scope::TasksRead], Some(1), None).await;

    // The burst of 3 is answered; then, at 1 per second, a refusal.
    for _ in 0..3 {
        assert_eq!(send(app.get(&busy, "/v1/kinds")).await.status(), 200);
    }
    let refused = first_refusal(&app, &busy, 20)
        .await
        .expect("20 quick requests over a rate of 1 per second were all answered");
    assert!(retry_after(&refused) >= 1);
    problem(
        refused,
        StatusCode::TOO_MANY_REQUESTS,
        &["over its rate", "1 per second in bursts of up to 3"],
    )
    .await;

    // Another key has its own budget.
    for _ in 0..3 {
        assert_eq!(send(app.get(&calm, "/v1/kinds")).await.status(), 200);
    }
    // A key's own limit wins over the default, above it and below it.
    assert!(
        first_refusal(&app, &roomy, 20).await.is_none(),
        "a key with its own 50 per second was refused within 20 requests"
    );
    let refused = first_refusal(&app, &strict, 20)
        .await
        .expect("a key with its own 1 per second was never refused");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused) >= 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_answers_503_with_retry_after_instead_of_waiting() {
    let database = TestDatabase::create().await;
    let mut settings = Settings::for_database(database.url.clone());
    settings.db_pool_size = 2;
    settings.db_pool_wait_ms = 200;
    let (stop, signal) = shutdown::channel();
    let application = Application::build(&settings, signal).await.unwrap();
    let served_store: PgEventStore = application.store().clone();
    let address = application.local_addr().unwrap();
    let server = tokio::spawn(application.run_until_stopped());
    let app = TestApp {
        address,
        database,
        stop,
        server,
        http: reqwest::Client::new(),
    };
    let key = app.key(&[Scope::TasksRead]).await;
    assert_eq!(send(app.get(&key, "/v1/tasks")).await.status(), 200);

    // Every connection of the pool API keys are checked from, held.
    let held = futures::future::join_all((0..2).map(|_| served_store.pool().get())).await;
    assert!(held.iter().all(Result::is_ok));
    let response = tokio::time::timeout(Duration::from_secs(30), send(app.get(&key, "/v1/tasks")))
        .await
        .expect("a request waited on a saturated pool for 30 s");
    assert!(retry_after(&response) >= 1);
    problem(response, StatusCode::SERVICE_UNAVAILABLE, &["right now"]).await;

    // Freed, the pool serves again.
    drop(held);
    assert_eq!(send(app.get(&key, "/v1/tasks")).await.status(), 200);
    drop(served_store);
    app.finish().await;
}

/// Opens `GET /v1/events/stream` with `key`, from the log's head.
async fn open_stream(app: &TestApp, key: &str) -> Response {
    send(app.get(key, "/v1/events/stream?after=0")).await
}

/// Expects one more stream opened with `key` to be refused with `status`,
/// a `Retry-After` and a detail holding `detail`.
async fn expect_stream_refused(app: &TestApp, key: &str, status: StatusCode, detail: &str) {
    let refused = open_stream(app, key).await;
    assert!(retry_after(&refused) >= 1);
    problem(refused, status, &[detail]).await;
}

/// Waits (bounded) for `stream` to end; panics if it goes on delivering
/// for `within`.
pub(crate) async fn ends_within(mut stream: Response, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.chunk()).await {
            Err(_) => panic!("the stream was still open after {within:?}"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None) | Err(_)) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_capped_per_key_and_in_total_and_closing_one_frees_its_slot() {
    let config = format!("{KINDS}\n[limits]\nstreams_per_key = 2\nstreams_total = 3\n");
    let app = TestApp::spawn_with_config(&config, |_| {}).await;
    let first = app.key(&[Scope::AuditRead]).await;
    let second = app.key(&[Scope::AuditRead]).await;

    let a = open_stream(&app, &first).await;
    let b = open_stream(&app, &first).await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let per_key = StatusCode::TOO_MANY_REQUESTS;
    expect_stream_refused(&app, &first, per_key, "2 open event streams").await;

    let c = open_stream(&app, &second).await;
    assert_eq!(c.status(), StatusCode::OK);
    let in_total = StatusCode::SERVICE_UNAVAILABLE;
    expect_stream_refused(&app, &second, in_total, "3 open event streams").await;

    // A client hanging up frees its slot (the server notices the closed
    // connection when it next writes, at the latest its keep-alive).
    drop(a);
    let reopened = eventually(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let response = open_stream(&app, &first).await;
            if response.status() == StatusCode::OK {
                Ok(response)
            } else {
                Err(format!("still refused: {}", response.status()))
            }
        },
    )
    .await;
    drop((b, c, reopened));
    app.finish().await;
}

/// Backends connected to `database`, other than the asking one.
async fn connections(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_streams_use_a_handful_of_database_connections() {
    const STREAMS: usize = 1_000;
    let config = format!("{KINDS}\n[limits]\nstreams_per_key = 1000\nstreams_total = 1000\n");
    let app = TestApp::spawn_with_config(&config, |settings| settings.db_pool_size = 4).await;
    let auditor = app.key(&[Scope::AuditRead]).await;
    let writer = app.key(&[Scope::TasksWrite]).await;
    let head = taskledger_events::EventStore::head_position(&app.store())
        .await
        .unwrap();

    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS / 100 {
        let opened = futures::future::join_all(
            (0..100).map(|_| send(app.get(&auditor, &format!("/v1/events/stream?after={head}")))),
        )
        .await;
        for response in opened {
            assert_eq!(response.status(), StatusCode::OK);
            streams.push(response);
        }
    }
    let refused = open_stream(&app, &auditor).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);

    // Every stream is live: one submission reaches all of them.
    let (status, _) = app
        .submit(
            &writer,
            json!({"kind": "echo", "params": {"message": "to all"}, "tenant": "default", "frontend_id": "limits"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for stream in &mut streams {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .expect("a stream delivered nothing within 30 s")
            .unwrap()
            .expect("a stream ended");
        assert!(
            String::from_utf8_lossy(&chunk).contains("TaskSubmitted"),
            "{chunk:?}"
        );
    }

    // The service holds its two pools of 4, its projectors' connections and
    // one listener; the test's own stores add a few more. Not a thousand.
    let admin = app.database.client().await;
    let open = connections(&admin).await;
    assert!(
        open <= 20,
        "{open} connections to the database while {STREAMS} streams are open"
    );
    assert_eq!(
        listening_connections(&admin).await,
        1,
        "one LISTEN connection for the whole process"
    );
    drop(admin);
    drop(streams);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_ends_when_its_key_is_revoked_or_expires() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let (revoked_id, revoked) = key_with(&app, &[Scope::AuditRead], None, None).await;
    let (_, kept) = key_with(&app, &[Scope::AuditRead], None, None).await;
    let expires_at = Utc::now() + chrono::Duration::seconds(5);
    let (_, expiring) = key_with(&app, &[Scope::AuditRead], None, Some(expires_at)).await;

    let doomed = open_stream(&app, &revoked).await;
    let lasting = open_stream(&app, &kept).await;
    let expiring_stream = open_stream(&app, &expiring).await;
    assert_eq!(doomed.status(), StatusCode::OK);
    assert_eq!(lasting.status(), StatusCode::OK);
    assert_eq!(expiring_stream.status(), StatusCode::OK);

    revoke(&app, revoked_id).await;
    ends_within(doomed, Duration::from_secs(20)).await;
    ends_within(expiring_stream, Duration::from_secs(20)).await;
    assert!(
        Utc::now() >= expires_at,
        "the expiring key's stream ended early"
    );
    // And only those: the other key's stream still delivers.
    let writer = app.key(&[Scope::TasksWrite]).await;
    let still_here = json!({"kind": "echo", "params": {"message": "still here"}, "tenant": "default", "frontend_id": "limits"});
    app.submitted(&writer, still_here).await;
    let mut lasting = lasting;
    let mut seen = String::new();
    while !seen.contains("still here") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), lasting.chunk())
            .await
            .expect("the unrevoked key's stream delivered nothing within 10 s")
            .unwrap()
            .expect("the unrevoked key's stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(lasting);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_may_not_raise_a_kinds_timeout_or_attempts() {
    let config = "[kinds.quick]\nimage = \"taskledger-test-busybox:latest\"\n\
                  command = [\"true\"]\ntimeout_seconds = 3\nmax_attempts = 2\n";
    let app = TestApp::spawn_with_config(config, |_| {}).await;
    let writer = app.key(&[Scope::TasksWrite, Scope::TasksRead]).await;
    let body = |extra: serde_json::Value| {
        let mut body =
            json!({"kind": "quick", "params": {}, "tenant": "default", "frontend_id": "limits"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let refused = async |extra: serde_json::Value, needles: &[&str]| {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        app.submit_refused(&writer, body(extra), status, needles)
            .await
    };
    let longer = json!({"timeout_seconds": 60});
    refused(longer, &["at most 3 seconds", "timeout_seconds 60"]).await;
    let more = json!({"max_attempts": 5});
    refused(more, &["at most 2 attempts", "max_attempts 5"]).await;
    // Nothing was stored by either refusal.
    let logged = taskledger_events::EventStore::read_all(&app.store(), 0, 1000)
        .await
        .unwrap();
    assert!(
        logged
            .iter()
            .all(|event| event.event_type != "TaskSubmitted"),
        "a refused submission was stored"
    );
    // Lowering both is fine.
    let (status, task) = app
        .submit(
            &writer,
            body(json!({"timeout_seconds": 1, "max_attempts": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(
        (
            task["timeout_seconds"].as_u64(),
            task["max_attempts"].as_u64()
        ),
        (Some(1), Some(1))
    );
    app.finish().await;
}
