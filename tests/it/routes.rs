//! Every route, through the router (`oneshot`): the OpenAPI document lists
//! exactly the routes served, and each route admits exactly the scopes it
//! should (401 without a key, 403 with a key lacking the scope).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use taskledger::config::FileConfig;
use taskledger::http::{self, AppState};
use taskledger_events::apikey::Scope;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::TestDatabase;
use taskledger_projections::api_keys::ApiKeysProjector;
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::ProjectorRuntime;
use tower::ServiceExt;
use uuid::Uuid;

use crate::helpers::{create_key, KINDS};

/// Who may call a route: nobody needs a key, or a key with one of these
/// scopes (admin always may).
#[derive(Debug, Clone, Copy)]
enum Access {
    Public,
    /// No API key: the caller proves itself otherwise (the provider's
    /// signed webhook).
    Webhook,
    AnyOf(&'static [Scope]),
}

// The access levels routes share, named once.
const ADMIN: Access = Access::AnyOf(&[Scope::Admin]);
const AUDITOR: Access = Access::AnyOf(&[Scope::AuditRead]);
const AUDITOR_OR_LEDGER: Access = Access::AnyOf(&[Scope::AuditRead, Scope::LedgerWrite]);
const DEVICES_READ: Access = Access::AnyOf(&[Scope::DevicesRead]);
const DEVICES_WRITE: Access = Access::AnyOf(&[Scope::DevicesWrite]);
const LEDGER: Access = Access::AnyOf(&[Scope::LedgerWrite]);
const TASKS_ANY: Access = Access::AnyOf(&[Scope::TasksRead, Scope::TasksWrite]);
const TASKS_READ: Access = Access::AnyOf(&[Scope::TasksRead]);
const TASKS_READ_OR_AUDITOR: Access = Access::AnyOf(&[Scope::TasksRead, Scope::AuditRead]);
const TASKS_WRITE: Access = Access::AnyOf(&[Scope::TasksWrite]);
const WEBHOOKS_READ: Access = Access::AnyOf(&[Scope::WebhooksRead]);
const WEBHOOKS_WRITE: Access = Access::AnyOf(&[Scope::WebhooksWrite]);

/// Every route the service serves, with its access. Adding a route means
/// adding it here, which the tests below hold to the OpenAPI document.
const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Public),
    ("GET", "/readyz", Access::Public),
    ("GET", "/v1/openapi.json", Access::Public),
    ("GET", "/metrics", Access::Public),
    ("GET", "/v1/projections", ADMIN),
    ("GET", "/v1/projections/{name}", ADMIN),
    ("POST", "/v1/projections/{name}/rebuild", ADMIN),
    ("POST", "/v1/projections/{name}/pause", ADMIN),
    ("POST", "/v1/projections/{name}/resume", ADMIN),
    ("POST", "/v1/keys", ADMIN),
    ("GET", "/v1/keys", ADMIN),
    ("POST", "/v1/keys/{id}/revoke", ADMIN),
    ("POST", "/v1/keys/{id}/rotate", ADMIN),
    ("POST", "/v1/tasks", TASKS_WRITE),
    ("POST", "/v1/plans", TASKS_WRITE),
    ("GET", "/v1/plans", TASKS_READ),
    ("GET", "/v1/plans/{id}", TASKS_READ),
    ("POST", "/v1/plans/{id}/cancel", TASKS_WRITE),
    ("GET", "/v1/kinds", TASKS_ANY),
    ("POST", "/v1/blobs", TASKS_WRITE),
    ("GET", "/v1/tasks", TASKS_READ),
    ("GET", "/v1/tasks/stream", TASKS_READ),
    ("GET", "/v1/tasks/{id}", TASKS_READ_OR_AUDITOR),
    ("GET", "/v1/tasks/{id}/result", TASKS_READ),
    ("POST", "/v1/tasks/{id}/cancel", TASKS_WRITE),
    ("GET", "/v1/tasks/{id}/events", TASKS_READ_OR_AUDITOR),
    ("GET", "/v1/tasks/{id}/artifacts", TASKS_READ),
    ("GET", "/v1/tasks/{id}/artifacts/{name}", TASKS_READ),
    ("GET", "/v1/events", AUDITOR),
    ("GET", "/v1/events/stream", AUDITOR),
    ("GET", "/v1/streams/{stream}/events", AUDITOR),
    ("GET", "/v1/audit/verify", AUDITOR),
    ("GET", "/v1/ledgers", AUDITOR_OR_LEDGER),
    ("POST", "/v1/ledgers/{ledger}/confirmations", LEDGER),
    ("GET", "/v1/ledgers/{ledger}/status", AUDITOR_OR_LEDGER),
    ("GET", "/v1/ledgers/{ledger}/holes", AUDITOR_OR_LEDGER),
    ("GET", "/v1/tasks/{id}/ledger", TASKS_READ_OR_AUDITOR),
    ("POST", "/v1/devices/{imei}/messages", DEVICES_WRITE),
    ("POST", "/v1/rockblock/mo", Access::Webhook),
    ("GET", "/v1/devices", DEVICES_READ),
    ("GET", "/v1/devices/{imei}", DEVICES_READ),
    ("PUT", "/v1/devices/{imei}", ADMIN),
    ("GET", "/v1/devices/{imei}/messages", DEVICES_READ),
    ("POST", "/v1/webhooks", WEBHOOKS_WRITE),
    ("GET", "/v1/webhooks", WEBHOOKS_READ),
    ("GET", "/v1/webhooks/{id}", WEBHOOKS_READ),
    ("DELETE", "/v1/webhooks/{id}", WEBHOOKS_WRITE),
    ("POST", "/v1/webhooks/{id}/enable", WEBHOOKS_WRITE),
    ("POST", "/v1/webhooks/{id}/replay", WEBHOOKS_WRITE),
    ("GET", "/v1/webhooks/{id}/deliveries", WEBHOOKS_READ),
];

fn documented_operations() -> BTreeSet<(String, String)> {
    let document = serde_json::to_value(http::openapi()).unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "post", "put", "patch", "delete", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[test]
fn the_document_lists_exactly_the_routes() {
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented_operations(), listed);

    let document = serde_json::to_value(http::openapi()).unwrap();
    assert_eq!(
        document["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    for (method, path, access) in ROUTES {
        let operation = &document["paths"][path][method.to_lowercase()];
        match access {
            Access::Public | Access::Webhook => {
                assert!(operation.get("security").is_none(), "{method} {path}");
            }
            Access::AnyOf(scopes) => {
                let documented: BTreeSet<String> = operation["security"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{method} {path} documents no security"))
                    .iter()
                    .flat_map(|requirement| requirement["api_key"].as_array().unwrap().clone())
                    .map(|scope| scope.as_str().unwrap().to_owned())
                    .collect();
                let expected: BTreeSet<String> = scopes.iter().map(ToString::to_string).collect();
                assert_eq!(documented, expected, "{method} {path}");
                for status in ["401", "403"] {
                    assert!(
                        operation["responses"].get(status).is_some(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", &Uuid::new_v4().to_string())
        .replace("{name}", "report.txt")
        .replace("{ledger}", "chain-a")
        .replace("{imei}", "300434065197640")
        .replace("{stream}", &format!("task-{}", Uuid::new_v4()))
}

async fn call(app: &Router, method: &str, path: &str, key: Option<&str>) -> StatusCode {
    // A platform key names the tenant it uploads for.
    let uri = if path == "/v1/blobs" {
        format!("{}?tenant=default", concrete(path))
    } else {
        concrete(path)
    };
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let body = if method == "POST" && path == "/v1/tasks" {
        request = request.header("content-type", "application/json");
        Body::from(
            r#"{"kind":"echo","params":{"message":"hi"},"tenant":"default","frontend_id":"matrix"}"#,
        )
    } else if method == "POST" && path == "/v1/plans" {
        request = request.header("content-type", "application/json");
        Body::from(
            r#"{"tenant":"default","tasks":[{"name":"a","kind":"echo","params":{"message":"hi"}}]}"#,
        )
    } else if method == "POST" && path == "/v1/keys" {
        request = request.header("content-type", "application/json");
        Body::from(r#"{"name":"matrix","scopes":["tasks:read"],"all_tenants":true}"#)
    } else if method == "POST" && path.ends_with("/messages") {
        request = request.header("content-type", "application/json");
        Body::from(r#"{"text":"hi"}"#)
    } else if method == "POST" && path == "/v1/webhooks" {
        // A loopback target: this test's configuration allows it.
        request = request.header("content-type", "application/json");
        Body::from(r#"{"url":"http://127.0.0.1:9/hook","events":["task.*"],"tenant":"default"}"#)
    } else if method == "POST" && path.ends_with("/replay") {
        request = request.header("content-type", "application/json");
        Body::from(r#"{"from_position":1}"#)
    } else if method == "PUT" && path == "/v1/devices/{imei}" {
        request = request.header("content-type", "application/json");
        Body::from(r#"{"tenant":"matrix"}"#)
    } else if method == "POST" && path.ends_with("/confirmations") {
        // Sequence 1 exists: the keys' creation events.
        request = request.header("content-type", "application/json");
        Body::from(r#"{"from_sequence":1,"to_sequence":1,"reference":"tx-matrix"}"#)
    } else {
        Body::empty()
    };
    app.clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_admits_exactly_its_scopes() {
    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    let mut keys = Vec::new();
    for (index, scope) in Scope::ALL.into_iter().enumerate() {
        let (_, secret) =
            create_key(&store, &[scope], [u8::try_from(index).unwrap() + 1; 32]).await;
        keys.push((scope, secret));
    }
    ProjectorRuntime::new(store.clone(), ApiKeysProjector, RuntimeOptions::default())
        .catch_up(Duration::from_secs(10))
        .await
        .unwrap();
    let config = format!("{KINDS}\n[webhooks]\nallow_private_targets = true\n");
    let app = http::router(AppState {
        config: Arc::new(FileConfig::parse(&config).unwrap()),
        ..AppState::new(store)
    });

    for (method, path, access) in ROUTES {
        let anonymous = call(&app, method, path, None).await;
        match access {
            Access::Public => {
                assert_eq!(anonymous, StatusCode::OK, "{method} {path}");
                continue;
            }
            Access::Webhook => {
                // Not an API-key route: an empty, unsigned call is refused
                // for what it lacks, never with a request for a key.
                assert!(
                    anonymous.is_client_error() || anonymous.is_server_error(),
                    "{method} {path}: {anonymous}"
                );
                assert_ne!(anonymous, StatusCode::FORBIDDEN, "{method} {path}");
                continue;
            }
            Access::AnyOf(scopes) => {
                assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
                let bad = call(&app, method, path, Some("tl_not-a-real-key")).await;
                assert_eq!(bad, StatusCode::UNAUTHORIZED, "{method} {path}");
                for (scope, secret) in &keys {
                    let status = call(&app, method, path, Some(secret)).await;
                    let admitted = scopes.contains(scope) || *scope == Scope::Admin;
                    if admitted {
                        // The route ran: a made-up task id, stream or
                        // projection is not found, anything else succeeds.
                        let expected_ok = if path.contains("{id}")
                            || path.contains("{stream}")
                            || path.starts_with("/v1/projections/")
                            || (*method == "GET" && *path == "/v1/devices/{imei}")
                        {
                            status == StatusCode::NOT_FOUND
                        } else {
                            status.is_success()
                        };
                        assert!(expected_ok, "{method} {path} with {scope}: {status}");
                    } else {
                        assert_eq!(
                            status,
                            StatusCode::FORBIDDEN,
                            "{method} {path} with {scope}"
                        );
                    }
                }
            }
        }
    }
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_problems() {
    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    let app = http::router(AppState::new(store));
    for (method, path, status) in [
        ("GET", "/v1/nothing-here", StatusCode::NOT_FOUND),
        ("DELETE", "/v1/tasks", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let response = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    database.drop_database().await;
}
