//! Access changes hold on the next request, in every process: keys made,
//! revoked and rotated by the `taskledger` binary or over HTTP by one
//! server are accepted or refused by another on its very next request,
//! also while the `api_keys` projector is paused or reset; expiry and a
//! rotation's grace end a secret on time; bad key requests change nothing.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskledger::config::settings::{Role, Settings};
use taskledger::service::shutdown::ShutdownTrigger;
use taskledger_events::apikey::{hash_secret, Scope};
use tokio::task::JoinHandle;

use crate::helpers::{create_key_with, old_format_secret, random_bytes, start_server, TestApp};
use crate::support::cli::{stderr, stdout, taskledger, taskledger_ok};
use crate::support::http::{assert_contains, item_with, send};
use crate::support::poll::eventually;

/// How many times each change is tried; every try must hold.
const TRIES: usize = 20;

/// A second server on `TestApp`'s database: the API role only (no
/// projector of its own), with its own connection pool, as another process
/// would be.
struct OtherServer {
    address: SocketAddr,
    stop: ShutdownTrigger,
    server: JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
    /// The answers [`OtherServer::expect`] did not get.
    misses: Vec<String>,
}

impl OtherServer {
    async fn beside(app: &TestApp) -> Self {
        let mut settings = Settings::for_database(app.database.url.clone());
        settings.roles = vec![Role::Api];
        let (address, stop, server) = start_server(&settings, "the second server").await;
        Self {
            address,
            stop,
            server,
            http: reqwest::Client::new(),
            misses: Vec::new(),
        }
    }

    /// `GET /v1/tasks` with `secret` (a `tasks:read` or `admin` key): the
    /// status and the problem's detail, if any.
    async fn try_key(&self, secret: &str) -> (StatusCode, String) {
        try_key(&self.http, &format!("http://{}", self.address), secret).await
    }

    /// Tries `secret` and notes a miss, named `case`, unless it gets
    /// `status` with a detail holding `detail_holds`; [`OtherServer::finish`]
    /// fails the test with every miss.
    async fn expect(&mut self, case: String, secret: &str, status: StatusCode, detail_holds: &str) {
        let (got, detail) = self.try_key(secret).await;
        if got != status || !detail.contains(detail_holds) {
            self.misses.push(format!("{case}: {got} {detail}"));
        }
    }

    /// Stops the server; fails the test if [`OtherServer::expect`] missed
    /// anything.
    async fn finish(self) {
        self.stop.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the second server did not stop")
            .unwrap()
            .unwrap();
        assert!(self.misses.is_empty(), "{:#?}", self.misses);
    }
}

async fn try_key(http: &reqwest::Client, base: &str, secret: &str) -> (StatusCode, String) {
    let response = send(http.get(format!("{base}/v1/tasks")).bearer_auth(secret)).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["detail"].as_str().unwrap_or("").to_owned())
}

/// `taskledger keys args…` against the app's database, in a child process
/// (off the runtime's threads).
async fn keys_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let url = app.database.url.clone();
    let args: Vec<String> = ["keys"]
        .iter()
        .chain(args)
        .map(|arg| (*arg).to_owned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        taskledger(&url, &args)
    })
    .await
    .unwrap()
}

/// `keys create --name name --scopes scopes extra…` by the binary, which
/// must succeed: what it printed.
async fn cli_create(app: &TestApp, name: &str, scopes: &str, extra: &[&str]) -> String {
    let output = keys_cli(
        app,
        &[&["create", "--name", name, "--scopes", scopes][..], extra].concat(),
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

/// [`cli_create`]: the key's id and secret.
async fn cli_key(app: &TestApp, name: &str, scopes: &str, extra: &[&str]) -> (String, String) {
    let out = cli_create(app, name, scopes, extra).await;
    let key_id = out.split_whitespace().nth(3).unwrap().to_owned();
    let secret = out.lines().last().unwrap().to_owned();
    (key_id, secret)
}

/// `POST path` on `app` with `admin` and `body`: the status and the JSON.
async fn post(app: &TestApp, admin: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = app.post(admin, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = send(request).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn key_events(app: &TestApp) -> i64 {
    app.row("SELECT count(*) FROM events WHERE stream_id LIKE 'apikey-%'")
        .await
        .get(0)
}

/// Makes a key with `make` (given the try's index: the key's id and secret)
/// and revokes it with `revoke`, [`TRIES`] times: a second server must
/// accept each key on its very next request, and refuse it (with a detail
/// holding `refusal_says`) on the next one after its revocation.
async fn each_change_holds_on_the_next_request(
    app: &TestApp,
    make: impl AsyncFn(usize) -> (String, String),
    revoke: impl AsyncFn(&str),
    refusal_says: &str,
) {
    let mut other = OtherServer::beside(app).await;
    for index in 0..TRIES {
        let (key_id, secret) = make(index).await;
        let created = format!("created {index}");
        other.expect(created, &secret, StatusCode::OK, "").await;
        revoke(&key_id).await;
        let (revoked, refused) = (format!("revoked {index}"), StatusCode::UNAUTHORIZED);
        other.expect(revoked, &secret, refused, refusal_says).await;
    }
    other.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_and_revoked_by_the_cli_hold_on_the_next_request() {
    let app = TestApp::spawn().await;
    let make = async |index: usize| {
        let name = format!("cli-{index}");
        cli_key(&app, &name, "tasks:read", &["--all-tenants"]).await
    };
    let revoke = async |key_id: &str| {
        let revoked = keys_cli(&app, &["revoke", key_id]).await;
        assert!(revoked.status.success(), "{}", stderr(&revoked));
    };
    each_change_holds_on_the_next_request(&app, make, revoke, "unknown or revoked").await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_and_revoked_over_http_hold_on_the_next_request_of_another_server() {
    let app = TestApp::spawn().await;
    let admin = app.key(&[Scope::Admin]).await;
    let make = async |index: usize| {
        let key =
            json!({"name": format!("http-{index}"), "scopes": ["tasks:read"], "all_tenants": true});
        let (status, created) = post(&app, &admin, "/v1/keys", Some(key)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let field = |name: &str| created[name].as_str().unwrap().to_owned();
        (field("id"), field("secret"))
    };
    let revoke = async |key_id: &str| {
        let path = format!("/v1/keys/{key_id}/revoke");
        let (status, revoked) = post(&app, &admin, &path, Some(json!({"reason": "done"}))).await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        assert_eq!(revoked["status"], "revoked", "{revoked}");
    };
    each_change_holds_on_the_next_request(&app, make, revoke, "").await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_holds_while_the_projector_is_paused_and_a_reset_refuses_no_valid_key() {
    let app = TestApp::spawn().await;
    let admin = app.key(&[Scope::Admin]).await;
    let client = app.database.client().await;
    // Pausing needs the projector's checkpoint: wait until it has run.
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            client
                .query_opt(
                    "SELECT 1 FROM projector_checkpoints WHERE projector = 'api_keys'",
                    &[],
                )
                .await
                .unwrap()
                .map(drop)
                .ok_or_else(|| "the api_keys projector has not run".to_owned())
        },
    )
    .await;
    let url = app.database.url.clone();
    let paused = tokio::task::spawn_blocking(move || {
        taskledger_ok(&url, &["projections", "pause", "api_keys"])
    })
    .await
    .unwrap();
    assert!(paused.contains("paused api_keys"), "{paused}");

    let (key_id, secret) = cli_key(&app, "while-paused", "tasks:read", &["--all-tenants"]).await;
    assert_eq!(
        try_key(&app.http, &app.url(""), &secret).await.0,
        StatusCode::OK
    );
    let revoked = keys_cli(&app, &["revoke", &key_id]).await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let (status, detail) = try_key(&app.http, &app.url(""), &secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{detail}");
    let shown: i64 = client
        .query_one(
            "SELECT count(*) FROM api_keys WHERE key_id = $1::text::uuid",
            &[&key_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, 0, "the paused projection does not have the key yet");

    // Emptied (and still paused, so it stays empty): every valid key works.
    let url = app.database.url.clone();
    let reset = tokio::task::spawn_blocking(move || {
        taskledger_ok(&url, &["projections", "reset", "api_keys", "--yes"])
    })
    .await
    .unwrap();
    assert!(reset.contains("reset api_keys"), "{reset}");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    let (status, detail) = try_key(&app.http, &app.url(""), &admin).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the admin key after a reset: {detail}"
    );
    let (_, fresh) = cli_key(&app, "after-reset", "tasks:read", &["--all-tenants"]).await;
    assert_eq!(
        try_key(&app.http, &app.url(""), &fresh).await.0,
        StatusCode::OK
    );
    assert_eq!(
        try_key(&app.http, &app.url(""), &secret).await.0,
        StatusCode::UNAUTHORIZED
    );
    drop(client);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_with_when_it_expired() {
    let app = TestApp::spawn().await;
    let expiry = ["--all-tenants", "--expires-in", "2s"];
    let out = cli_create(&app, "brief", "tasks:read", &expiry).await;
    let secret = out.lines().last().unwrap().to_owned();
    let expiring = out
        .split("expiring ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(
        try_key(&app.http, &app.url(""), &secret).await.0,
        StatusCode::OK
    );
    let detail = eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            match try_key(&app.http, &app.url(""), &secret).await {
                (StatusCode::UNAUTHORIZED, detail) => Ok(detail),
                (status, _) => Err(format!("still {status} 10 s after it expired")),
            }
        },
    )
    .await;
    assert_contains(&detail, &format!("this API key expired at {expiring}"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_takes_its_new_secret_at_once_and_drops_the_old_after_the_grace() {
    let app = TestApp::spawn().await;
    let admin = app.key(&[Scope::Admin]).await;
    let other = OtherServer::beside(&app).await;
    let (status, created) = post(
        &app,
        &admin,
        "/v1/keys",
        Some(json!({"name": "rolled", "scopes": ["tasks:read"], "tenant": "acme"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let old = created["secret"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{}/rotate", created["id"].as_str().unwrap());
    let (status, rotated) = post(&app, &admin, &path, Some(json!({"grace": "2s"}))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["tenant"], "acme", "{rotated}");
    assert!(
        rotated["previous_secret_valid_until"].is_string(),
        "{rotated}"
    );
    assert_eq!(
        other.try_key(&new).await.0,
        StatusCode::OK,
        "the new secret at once"
    );
    assert_eq!(
        other.try_key(&old).await.0,
        StatusCode::OK,
        "the old one in its grace"
    );
    let detail = eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            match other.try_key(&old).await {
                (StatusCode::UNAUTHORIZED, detail) => Ok(detail),
                (status, _) => Err(format!("the old secret still answers {status}")),
            }
        },
    )
    .await;
    assert_contains(&detail, "replaced when the API key was rotated");
    assert_eq!(other.try_key(&new).await.0, StatusCode::OK);

    // By the binary: no grace by default, so the old secret stops at once.
    let key_id = created["id"].as_str().unwrap();
    let output = keys_cli(&app, &["rotate", key_id]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let newest = stdout(&output).lines().last().unwrap().to_owned();
    assert_eq!(other.try_key(&newest).await.0, StatusCode::OK);
    assert_eq!(other.try_key(&new).await.0, StatusCode::UNAUTHORIZED);
    let output = keys_cli(&app, &["rotate", key_id, "--grace", "10m"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        other.try_key(&newest).await.0,
        StatusCode::OK,
        "in its 10 minutes of grace"
    );
    assert_eq!(
        other
            .try_key(stdout(&output).lines().last().unwrap())
            .await
            .0,
        StatusCode::OK
    );
    other.finish().await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.key(&[Scope::Admin]).await;
    let (_, tenant_admin) = cli_key(&app, "acme-admin", "admin", &["--tenant", "acme"]).await;
    let (status, created) = post(
        &app,
        &admin,
        "/v1/keys",
        Some(json!({"name": "victim", "scopes": ["tasks:read"], "all_tenants": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let victim = created["id"].as_str().unwrap().to_owned();
    let before = key_events(&app).await;

    let create = |body: Value| ("/v1/keys".to_owned(), Some(body));
    let revoke = format!("/v1/keys/{victim}/revoke");
    let rotate = format!("/v1/keys/{victim}/rotate");
    let cases = [
        (
            create(json!({"name": "a\u{0}b", "scopes": ["tasks:read"], "all_tenants": true})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "control characters",
        ),
        (
            create(json!({"name": "a\nb", "scopes": ["tasks:read"], "all_tenants": true})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "control characters",
        ),
        (
            create(
                json!({"name": "x", "scopes": ["tasks:read"], "all_tenants": true, "expires_in": "soon"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "such as 30d",
        ),
        (
            create(
                json!({"name": "x", "scopes": ["tasks:read"], "all_tenants": true, "expires_in": "0s"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "longer than zero",
        ),
        (
            create(
                json!({"name": "x", "scopes": ["tasks:read"], "all_tenants": true, "expires_at": "2001-01-01T00:00:00Z"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at must be after",
        ),
        (
            create(json!({"name": "x", "scopes": ["tasks:read"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "exactly one of tenant",
        ),
        (
            create(
                json!({"name": "x", "scopes": ["tasks:read"], "tenant": "acme", "all_tenants": true}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "exactly one of tenant",
        ),
        (
            create(json!({"name": "x", "scopes": ["everything"], "all_tenants": true})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown scope",
        ),
        (
            create(json!({"name": "x", "scopes": ["tasks:read"], "tenant": "Acme Corp"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lowercase letters",
        ),
        (
            (revoke.clone(), Some(json!({"reason": "bad\u{7}reason"}))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "control characters",
        ),
        (
            (rotate.clone(), Some(json!({"grace": "8d"}))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the limit is 604800 s",
        ),
        (
            (rotate.clone(), Some(json!({"grace": "a while"}))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "such as 30d",
        ),
        (
            (format!("/v1/keys/{}/revoke", uuid::Uuid::new_v4()), None),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            ("/v1/keys/not-a-key/rotate".to_owned(), None),
            StatusCode::BAD_REQUEST,
            "not an API key id",
        ),
    ];
    for ((path, body), status, says) in cases {
        let (got, problem) = post(&app, &admin, &path, body.clone()).await;
        assert_eq!(got, status, "{path} {body:?}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(says),
            "{path} {body:?}: {problem}"
        );
    }
    // A tenant's admin key manages no keys.
    let forbidden = [
        (
            "/v1/keys".to_owned(),
            Some(json!({"name": "x", "scopes": ["admin"], "all_tenants": true})),
        ),
        (revoke.clone(), None),
        (rotate.clone(), None),
    ];
    let refusal = |route: &str| {
        format!("{route} needs a platform key (all tenants); this key is tenant acme's")
    };
    for ((path, body), route) in forbidden.into_iter().zip([
        "POST /v1/keys",
        "POST /v1/keys/{id}/revoke",
        "POST /v1/keys/{id}/rotate",
    ]) {
        let (got, problem) = post(&app, &tenant_admin, &path, body).await;
        assert_eq!(got, StatusCode::FORBIDDEN, "{path}: {problem}");
        assert_eq!(problem["detail"], refusal(route), "{problem}");
    }
    // Refused before the body is read: a malformed one changes nothing.
    let (got, problem) = post(&app, &tenant_admin, "/v1/keys", Some(json!({"name": 7}))).await;
    assert_eq!(got, StatusCode::FORBIDDEN, "{problem}");
    let (got, problem) = app.read(Some(&tenant_admin), "/v1/keys").await;
    assert_eq!(got, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["detail"], refusal("GET /v1/keys"), "{problem}");
    assert_eq!(key_events(&app).await, before, "nothing was written");

    // The CLI refuses a bad grace before it writes anything.
    let output = keys_cli(&app, &["rotate", &victim, "--grace", "soon"]).await;
    assert!(!output.status.success());
    assert_contains(&stderr(&output), "such as 0s");
    let output = keys_cli(&app, &["revoke", &victim, "--reason", "a\tb"]).await;
    assert!(!output.status.success());
    assert_contains(&stderr(&output), "control characters");
    assert_eq!(key_events(&app).await, before, "nothing was written");

    // The list: every key, no secret, no hash (a read model: wait for it).
    let listed = eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let (status, page) = app.read(Some(&admin), "/v1/keys").await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if items.len() == 3 {
                Ok(page)
            } else {
                Err(format!("the list has {} keys, not 3: {page}", items.len()))
            }
        },
    )
    .await;
    let text = listed.to_string();
    assert!(!text.contains("tlk_") && !text.contains("hash"), "{text}");
    let acme = item_with(&listed["items"], "name", "acme-admin");
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(acme["all_tenants"], false);
    assert_eq!(acme["status"], "active");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_without_a_key_id_still_works_and_its_revocation_holds_at_once() {
    let app = TestApp::spawn().await;
    let legacy = old_format_secret(random_bytes());
    let (key_id, _) = create_key_with(&app.store(), &[Scope::TasksRead], random_bytes(), |key| {
        key.name = "old-format".into();
        key.key_hash = hash_secret(&legacy);
    })
    .await;
    // Found by its hash in the read model, once the projector has it.
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            match try_key(&app.http, &app.url(""), &legacy).await {
                (StatusCode::OK, _) => Ok(()),
                (status, detail) => Err(format!("the old-format key answers {status}: {detail}")),
            }
        },
    )
    .await;
    let url = app.database.url.clone();
    tokio::task::spawn_blocking(move || taskledger_ok(&url, &["projections", "pause", "api_keys"]))
        .await
        .unwrap();
    let revoked = keys_cli(&app, &["revoke", &key_id.to_string()]).await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let (status, detail) = try_key(&app.http, &app.url(""), &legacy).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{detail}");
    app.finish().await;
}
