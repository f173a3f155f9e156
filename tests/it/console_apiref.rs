//! The console's API reference (`/console/api`) in a real browser
//! (`tests/console/apiref.mjs`): Swagger UI lists `/v1`'s operations under
//! the strict CSP, and "Try it out" sends the key pasted into the page —
//! not the session's — and keeps it out of cookies and web storage.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use taskledger_events::apikey::Scope;
use uuid::Uuid;

use crate::console::{run_browser_script, TASKS};
use crate::helpers::{create_tenant_key, local_sh, random_bytes, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_tries_requests_with_the_pasted_key() {
    let data_dir = std::env::temp_dir().join(format!("taskledger-apiref-{}", Uuid::new_v4()));
    let app = TestApp::spawn_in_process(&local_sh(), &data_dir, |_| {}).await;
    let store = app.store();
    // The session's key may read no task: the page needs no scope, and
    // "Try it out" must not use it.
    let (_, session_key) =
        create_tenant_key(&store, "acme", &[Scope::DevicesRead], random_bytes()).await;
    // The key pasted into the page: another tenant's, with its own task.
    let (_, pasted_key) = create_tenant_key(&store, "globex", TASKS, random_bytes()).await;
    let body = json!({ "kind": "local-sh", "params": { "script": "echo tried" } });
    let (status, task) = app.submit(&pasted_key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let task_id = task["id"].as_str().unwrap().to_owned();
    let task = app
        .task_with_status(&pasted_key, &task_id, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(task["status"], "succeeded");

    run_browser_script(
        "apiref.mjs",
        &[
            ("CONSOLE_URL", app.url("")),
            ("CONSOLE_SESSION_KEY", session_key.clone()),
            ("CONSOLE_PASTED_KEY", pasted_key.clone()),
            ("CONSOLE_PASTED_TASK", task_id.clone()),
        ],
    )
    .await;
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_is_built_in_and_asks_for_a_session() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| http.get(app.url(path)).send();
    let page = get("/console/api").await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers()["location"],
        "/console/sign-in?next=%2Fconsole%2Fapi"
    );
    for (file, content_type) in [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("apiref.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("LICENSE", "text/plain; charset=utf-8"),
    ] {
        let asset = get(&format!("/console/assets/api/{file}")).await.unwrap();
        assert_eq!(asset.status(), StatusCode::OK, "{file}");
        assert_eq!(asset.headers()["content-type"], content_type, "{file}");
        assert_eq!(
            asset.headers()["content-security-policy"],
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        );
        let body = asset.text().await.unwrap();
        assert!(!body.is_empty(), "{file}");
        if file == "swagger-ui.css" {
            assert!(!body.contains("data:"), "the stylesheet keeps a data: URL");
            let image = body
                .split("url(\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("an image of the stylesheet");
            let image = get(&format!("/console/assets/api/{image}")).await.unwrap();
            assert_eq!(image.status(), StatusCode::OK);
            assert!(image.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("image/"));
        }
    }
    let missing = get("/console/assets/api/image-0000000000000000.svg")
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.text().await.unwrap().contains("Not found"));
    app.finish().await;
}
