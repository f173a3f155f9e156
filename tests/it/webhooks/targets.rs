//! Targets and event kinds the service refuses, and webhooks of one tenant
//! answered to another as ones that do not exist.

use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::support::http::send;

use super::{app_with, create, SCOPES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_and_kinds_are_refused_and_tenants_see_only_their_own() {
    // The default: private targets are not allowed.
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let acme = app.tenant_key("acme", SCOPES).await;
    for (url, rule) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://10.0.0.7/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://[::1]:9/hook", "loopback"),
        ("ftp://127.0.0.1/hook", "http:// or https://"),
        ("https://user:pw@127.0.0.1/hook", "credentials"),
    ] {
        let (status, problem) = create(&app, &acme, url, &["task.*"]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(rule), "{url}: {detail}");
    }
    let (status, problem) = create(&app, &acme, "http://127.0.0.1:9/", &["task.exploded"]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("task.exploded") && detail.contains("task.succeeded"),
        "{detail}"
    );
    let (_, listed) = app.read(Some(&acme), "/v1/webhooks").await;
    assert_eq!(listed["items"], json!([]), "nothing was created");
    app.finish().await;

    let app = app_with("").await;
    let acme_key = app.tenant_key("acme", SCOPES).await;
    let (_, mine) = create(&app, &acme_key, "http://127.0.0.1:9/hook", &["task.*"]).await;
    let id = mine["id"].as_str().unwrap();
    let missing = Uuid::new_v4().to_string();
    let globex = app.tenant_key("globex", SCOPES).await;
    for (method, suffix) in [
        ("GET", ""),
        ("GET", "/deliveries"),
        ("POST", "/enable"),
        ("DELETE", ""),
    ] {
        let answer = |webhook: String| {
            let path = format!("/v1/webhooks/{webhook}{suffix}");
            let request = match method {
                "GET" => app.get(&globex, &path),
                "POST" => app.post(&globex, &path),
                _ => app.http.delete(app.url(&path)).bearer_auth(&globex),
            };
            async move {
                let response = send(request).await;
                (response.status(), response.text().await.unwrap())
            }
        };
        let (theirs, theirs_body) = answer(id.to_owned()).await;
        let (none, none_body) = answer(missing.clone()).await;
        assert_eq!(
            (theirs.as_u16(), none.as_u16()),
            (404, 404),
            "{method} {suffix}"
        );
        assert_eq!(
            theirs_body.replace(id, &missing),
            none_body,
            "{method} {suffix}"
        );
    }
    let (_, listed) = app.read(Some(&globex), "/v1/webhooks").await;
    assert_eq!(listed["items"], json!([]));
    let (_, listed) = app.read(Some(&acme_key), "/v1/webhooks").await;
    assert_eq!(listed["items"][0]["id"], id);
    // Still there for its owner, who can delete it.
    let deleted = send(
        app.http
            .delete(app.url(&format!("/v1/webhooks/{id}")))
            .bearer_auth(&acme_key),
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let (status, _) = app
        .read(Some(&acme_key), &format!("/v1/webhooks/{id}"))
        .await;
    assert_eq!(status, 404);
    app.finish().await;
}
