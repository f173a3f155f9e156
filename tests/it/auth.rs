//! API key authentication through the router (`oneshot`), with keys made by
//! the real `keys` code path and read from the real `api_keys` projection.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use taskledger::commands::execute;

use crate::helpers::create_key;
use taskledger::http::auth::Caller;
use taskledger::http::problem::Problem;
use taskledger::http::AppState;
use taskledger_events::apikey::{
    generate_secret, ApiKeyCommand, ApiKeyId, ApiKeys, RevokeApiKey, Scope,
};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::TestDatabase;
use taskledger_events::Metadata;
use taskledger_projections::api_keys::ApiKeysProjector;
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::ProjectorRuntime;
use tower::ServiceExt;
use uuid::Uuid;

async fn read_tasks(caller: Caller) -> Result<String, Problem> {
    caller.require(Scope::TasksRead)?;
    Ok(caller.key_id.to_string())
}

async fn call(app: &Router, authorization: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get("/v1/tasks");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_by_hash_revocation_and_scope() {
    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    let (reader, reader_secret) = create_key(&store, &[Scope::TasksRead], [1; 32]).await;
    let (_, writer_secret) = create_key(&store, &[Scope::TasksWrite], [2; 32]).await;
    let (admin, admin_secret) = create_key(&store, &[Scope::Admin], [3; 32]).await;
    let (revoked, revoked_secret) = create_key(&store, &[Scope::TasksRead], [4; 32]).await;
    let revoke = ApiKeyCommand::Revoke(RevokeApiKey {
        key_id: revoked,
        reason: None,
        revoked_at: Utc::now(),
        revoked_by: None,
    });
    execute::<ApiKeys>(
        &store,
        &revoked.stream_id(),
        revoke,
        Uuid::new_v4(),
        Metadata::default(),
    )
    .await
    .unwrap();
    ProjectorRuntime::new(store.clone(), ApiKeysProjector, RuntimeOptions::default())
        .catch_up(Duration::from_secs(10))
        .await
        .unwrap();

    let app = Router::new()
        .route("/v1/tasks", get(read_tasks))
        .with_state(AppState::new(store.clone()));
    let bearer = |secret: &str| format!("Bearer {secret}");
    assert_eq!(
        call(&app, Some(&bearer(&reader_secret))).await,
        (StatusCode::OK, reader.to_string())
    );
    assert_eq!(
        call(&app, Some(&bearer(&admin_secret))).await,
        (StatusCode::OK, admin.to_string())
    );
    let cases = [
        (None, StatusCode::UNAUTHORIZED, "Authorization: Bearer"),
        (
            Some(format!("Basic {reader_secret}")),
            StatusCode::UNAUTHORIZED,
            "must be 'Bearer <key>'",
        ),
        (
            Some("Bearer ".to_owned()),
            StatusCode::UNAUTHORIZED,
            "must be 'Bearer <key>'",
        ),
        (
            Some(bearer(&generate_secret(ApiKeyId(Uuid::new_v4()), [9; 32]))),
            StatusCode::UNAUTHORIZED,
            "unknown or revoked",
        ),
        (
            Some(bearer(&revoked_secret)),
            StatusCode::UNAUTHORIZED,
            "unknown or revoked",
        ),
        (
            Some(bearer(&writer_secret)),
            StatusCode::FORBIDDEN,
            "lacks the scope tasks:read",
        ),
    ];
    for (header, status, detail) in cases {
        let (got, body) = call(&app, header.as_deref()).await;
        assert_eq!(got, status, "{header:?}: {body}");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], status.as_u16());
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{header:?}: {problem}"
        );
    }
    database.drop_database().await;
}
