//! The web console (`/console/`): in a real browser (Debian's chromium,
//! driven by playwright-core from `tests/console/console.mjs`), and its
//! sessions over plain HTTP — a revoked key, an idle session, a forged
//! CSRF token.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{redirect, StatusCode};
use serde_json::json;
use taskledger::commands::execute;
use taskledger_events::apikey::{ApiKeyCommand, ApiKeys, RevokeApiKey, Scope};
use taskledger_events::Metadata;
use uuid::Uuid;

use crate::helpers::{create_tenant_key, local_sh, random_bytes, TestApp, KINDS};

/// A key's scopes for the console's tests: read and write tasks.
pub(crate) const TASKS: &[Scope] = &[Scope::TasksRead, Scope::TasksWrite];

/// The directory holding `node_modules/playwright-core`: `TASKLEDGER_PLAYWRIGHT`
/// (scripts/test.sh sets it), else what `scripts/browser.sh` installs (it
/// installs chromium, node and playwright-core where missing). Panics when
/// they cannot be had: the test fails, it is never skipped.
pub(crate) fn playwright_dir() -> String {
    if let Ok(dir) = std::env::var("TASKLEDGER_PLAYWRIGHT") {
        return dir;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new("bash")
        .arg(Path::new(root).join("scripts/browser.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/browser.sh (it needs bash)");
    assert!(
        output.status.success(),
        "scripts/browser.sh could not provide chromium and playwright-core (see above); \
         the console's browser test needs them"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("scripts/browser.sh printed its directory")
        .to_owned()
}

/// Runs `tests/console/{script}` with node and `env`, and fails with its
/// output unless it passed.
pub(crate) async fn run_browser_script(script: &str, env: &[(&str, String)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/console").join(script))
        .env(
            "CONSOLE_SCREENSHOTS",
            root.join("target/console-screenshots"),
        )
        .env("TASKLEDGER_PLAYWRIGHT", playwright_dir())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 240 s"))
        .expect("running node (scripts/browser.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "tests/console/{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let data_dir = std::env::temp_dir().join(format!("taskledger-console-{}", Uuid::new_v4()));
    let app = TestApp::spawn_in_process(&local_sh(), &data_dir, |_| {}).await;
    let store = app.store();
    let (_, acme) = create_tenant_key(&store, "acme", TASKS, random_bytes()).await;
    let (_, globex) = create_tenant_key(&store, "globex", TASKS, random_bytes()).await;
    let script = r#"printf '{"answer": 42}' > "$TASKLEDGER_OUT/result.json"; echo 'hello from the task' > "$TASKLEDGER_OUT/report.txt""#;
    let submit = |key: &str, script: &str| {
        let body = json!({ "kind": "local-sh", "params": { "script": script } });
        let key = key.to_owned();
        let app = &app;
        async move {
            let (status, task) = app.submit(&key, body).await;
            assert_eq!(status, StatusCode::CREATED, "{task}");
            task["id"].as_str().unwrap().to_owned()
        }
    };
    let acme_task = submit(&acme, script).await;
    let globex_task = submit(&globex, "echo globex").await;
    assert_eq!(app.finished(&acme, &acme_task).await["status"], "succeeded");
    assert_eq!(
        app.finished(&globex, &globex_task).await["status"],
        "succeeded"
    );

    run_browser_script(
        "console.mjs",
        &[
            ("CONSOLE_URL", app.url("")),
            ("CONSOLE_ACME_KEY", acme.clone()),
            ("CONSOLE_ACME_TASK", acme_task.clone()),
            ("CONSOLE_GLOBEX_TASK", globex_task.clone()),
        ],
    )
    .await;
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A browser without one: cookies by hand, redirects not followed.
struct Visitor<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    session: String,
}

/// The value of `name="{field}" value="…"` in a page.
fn hidden_field(html: &str, field: &str) -> String {
    let marker = format!("name=\"{field}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {field} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The value the response's `Set-Cookie` gives cookie `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap().to_owned())
}

impl<'a> Visitor<'a> {
    /// Signs in with `key` through the form; the answer to the form's POST.
    async fn sign_in(app: &'a TestApp, key: &str) -> (Self, reqwest::Response) {
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        let form = http.get(app.url("/console/sign-in")).send().await.unwrap();
        let form_cookie = set_cookie(&form, "tl_console_sign_in").expect("the form's cookie");
        let token = hidden_field(&form.text().await.unwrap(), "token");
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &token)
            .append_pair("key", key)
            .append_pair("next", "/console/tasks")
            .finish();
        let answer = http
            .post(app.url("/console/sign-in"))
            .header(COOKIE, format!("tl_console_sign_in={form_cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let session = set_cookie(&answer, "tl_console").unwrap_or_default();
        (Self { app, http, session }, answer)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.app.url(path))
            .header(COOKIE, format!("tl_console={}", self.session))
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.app.url(path))
            .header(COOKIE, format!("tl_console={}", self.session))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

fn location(response: &reqwest::Response) -> &str {
    response.headers()[LOCATION].to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_gets_no_session_and_a_revoked_key_ends_its_session() {
    let app = TestApp::spawn_with_kinds(|_| {}).await;
    let (wrong, answer) = Visitor::sign_in(&app, "tlk_00000000000000000000000000000000_x").await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.session.is_empty());
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("That key was not accepted"));

    let store = app.store();
    let (key_id, secret) = create_tenant_key(&store, "acme", TASKS, random_bytes()).await;
    let (visitor, answer) = Visitor::sign_in(&app, &secret).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/console/tasks");
    let cookie = answer.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let page = visitor.get("/console/tasks").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers()["content-security-policy"],
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    );
    assert!(!page.text().await.unwrap().contains(&secret));

    let revoke = ApiKeyCommand::Revoke(RevokeApiKey {
        key_id,
        reason: None,
        revoked_at: Utc::now(),
        revoked_by: None,
    });
    execute::<ApiKeys>(
        &store,
        &key_id.stream_id(),
        revoke,
        Uuid::new_v4(),
        Metadata::default(),
    )
    .await
    .unwrap();
    let page = visitor.get("/console/tasks?kind=echo").await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&page),
        "/console/sign-in?next=%2Fconsole%2Ftasks%3Fkind%3Decho&reason=key"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_returns_to_sign_in_and_a_forged_token_changes_nothing() {
    let app = TestApp::spawn_with_config(KINDS, |settings| {
        settings.console_idle_seconds = 2;
    })
    .await;
    let secret = app.tenant_key("acme", TASKS).await;
    let (status, task) = app
        .submit(
            &secret,
            json!({ "kind": "echo", "params": { "message": "hi" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let task_id = task["id"].as_str().unwrap();
    app.task_with_status(&secret, task_id, "queued", Duration::from_secs(10))
        .await;
    let (visitor, _) = Visitor::sign_in(&app, &secret).await;
    let page = visitor.get(&format!("/console/tasks/{task_id}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = hidden_field(&page.text().await.unwrap(), "csrf");
    let cancel = format!("/console/tasks/{task_id}/cancel");
    for body in [
        "csrf=forged".to_owned(),
        String::new(),
        format!("csrf={csrf}x"),
    ] {
        let answer = visitor.post(&cancel, &body).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{body}");
    }
    let (_, task) = app
        .read(Some(&secret), &format!("/v1/tasks/{task_id}"))
        .await;
    assert_eq!(task["status"], "queued");
    let unknown = visitor
        .get(&format!("/console/tasks/{}", Uuid::new_v4()))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.text().await.unwrap().contains("Not found"));

    let asked = format!("/console/tasks/{task_id}");
    // The idle time itself is what is tested: any request of the session
    // would restart it, so the test waits without one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = visitor.get(&asked).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    let expired = location(&page);
    let next = form_urlencoded::byte_serialize(asked.as_bytes()).collect::<String>();
    assert_eq!(
        expired,
        format!("/console/sign-in?next={next}&reason=expired")
    );
    app.finish().await;
}
