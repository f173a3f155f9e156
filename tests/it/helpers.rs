//! Starting the service on a fresh database for a test, and the requests
//! and waits a test makes of it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use taskledger::commands::execute;
use taskledger::config::settings::{Role, Settings};
use taskledger::service::shutdown::{self, ShutdownTrigger};
use taskledger::service::startup::Application;
use taskledger_events::apikey::{
    generate_secret, hash_secret, ApiKeyCommand, ApiKeyId, ApiKeys, CreateApiKey, Scope,
    SECRET_PREFIX,
};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::task::{CompleteTask, StartTask, TaskCommand, TaskId, Tasks};
use taskledger_events::tenant::Access;
use taskledger_events::testing::TestDatabase;
use taskledger_events::{EventStore, Metadata};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::support::http::{ok_json, problem, send, send_json, send_text};
use crate::support::kinds::local_sh_kind;
use crate::support::poll::eventually;

/// Task kinds for tests: `echo` (a required and an optional parameter) and
/// a URL-analysis kind with defaults.
pub(crate) const KINDS: &str = r#"
[kinds.echo]
image = "taskledger-test-busybox:latest"
command = ["echo", "{message}", ["--color", "{color}"]]
required_params = ["message"]
optional_params = ["color"]
timeout_seconds = 60
max_attempts = 2

[kinds.url-analysis]
image = "thug:latest"
command = ["thug", "-u", "{useragent}", "{url}"]
required_params = ["url"]
defaults = { useragent = "winxpie60" }
timeout_seconds = 600
max_attempts = 3
"#;

/// A kind run by the local executor (no Docker): `sh -c {script}`.
pub(crate) fn local_sh() -> String {
    local_sh_kind("local-sh", "timeout_seconds = 30\n")
}

/// Creates a platform API key (all tenants) with `scopes` through the
/// aggregate (it works at once: keys are checked against the log; the
/// projection picks it up asynchronously); `random` makes the secret.
pub(crate) async fn create_key(
    store: &PgEventStore,
    scopes: &[Scope],
    random: [u8; 32],
) -> (ApiKeyId, String) {
    create_key_with(store, scopes, random, |_| {}).await
}

/// [`create_key`], for a key of one tenant only.
pub(crate) async fn create_tenant_key(
    store: &PgEventStore,
    tenant: &str,
    scopes: &[Scope],
    random: [u8; 32],
) -> (ApiKeyId, String) {
    let access = Access::Tenant(tenant.parse().expect("a tenant name"));
    create_key_with(store, scopes, random, |key| key.access = access).await
}

/// [`create_key`], with the creation's other fields (tenant, expiry, rate
/// limit) set by `adjust`.
pub(crate) async fn create_key_with(
    store: &PgEventStore,
    scopes: &[Scope],
    random: [u8; 32],
    adjust: impl FnOnce(&mut CreateApiKey),
) -> (ApiKeyId, String) {
    let key_id = ApiKeyId(Uuid::new_v4());
    let secret = generate_secret(key_id, random);
    let mut create = CreateApiKey {
        key_id,
        name: format!("key-{}", random[0]),
        scopes: scopes.iter().copied().collect(),
        key_hash: hash_secret(&secret),
        created_at: Utc::now(),
        created_by: None,
        access: Access::AllTenants,
        expires_at: None,
        rate_limit: None,
    };
    adjust(&mut create);
    let command = ApiKeyCommand::Create(create);
    execute::<ApiKeys>(
        store,
        &key_id.stream_id(),
        command,
        Uuid::new_v4(),
        Metadata::default(),
    )
    .await
    .unwrap();
    (key_id, secret)
}

/// A server built from `settings` (`what` names it if that fails) and run
/// in the background: where it listens, its shutdown trigger and its task.
pub(crate) async fn start_server(
    settings: &Settings,
    what: &str,
) -> (SocketAddr, ShutdownTrigger, JoinHandle<anyhow::Result<()>>) {
    let (stop, signal) = shutdown::channel();
    let application = Application::build(settings, signal)
        .await
        .unwrap_or_else(|error| panic!("building {what}: {error:#}"));
    let address = application.local_addr().unwrap();
    (address, stop, tokio::spawn(application.run_until_stopped()))
}

/// The command a runner `worker_id` sends as it starts attempt 1 of the
/// task, now.
pub(crate) fn start_first_attempt(task_id: TaskId, worker_id: &str) -> TaskCommand {
    TaskCommand::Start(StartTask {
        task_id,
        worker_id: worker_id.into(),
        attempt: 1,
        started_at: Utc::now(),
    })
}

/// The command a runner sends as attempt 1 of the task succeeds, now: exit
/// code 0, an empty result, no artifacts.
pub(crate) fn complete_first_attempt(task_id: TaskId) -> TaskCommand {
    TaskCommand::Complete(CompleteTask {
        task_id,
        attempt: 1,
        result: serde_json::Map::new(),
        exit_code: 0,
        artifacts: Vec::new(),
        finished_at: Utc::now(),
    })
}

/// The statuses a task never leaves.
const FINAL_STATUSES: &[&str] = &["succeeded", "failed", "timed_out", "canceled"];

/// A running service and its database.
pub(crate) struct TestApp {
    pub(crate) address: SocketAddr,
    pub(crate) database: TestDatabase,
    pub(crate) stop: ShutdownTrigger,
    pub(crate) server: JoinHandle<anyhow::Result<()>>,
    pub(crate) http: reqwest::Client,
}

impl TestApp {
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub(crate) async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_on(TestDatabase::create().await, adjust).await
    }

    /// A service on `database` as it is (it migrates it at start, as
    /// `serve` does).
    pub(crate) async fn spawn_on(
        database: TestDatabase,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = Settings::for_database(database.url.clone());
        adjust(&mut settings);
        let (address, stop, server) = start_server(&settings, "the app").await;
        Self {
            address,
            database,
            stop,
            server,
            http: reqwest::Client::new(),
        }
    }

    /// A service whose configuration holds [`KINDS`].
    pub(crate) async fn spawn_with_kinds(adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_with_config(KINDS, adjust).await
    }

    /// A service with every role and no broker (jobs pass in process to its
    /// runner), configured with `config`, keeping its files in `data_dir`.
    pub(crate) async fn spawn_in_process(
        config: &str,
        data_dir: &Path,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let data_dir = data_dir.to_owned();
        Self::spawn_with_config(config, move |settings| {
            settings.roles = vec![Role::Api, Role::Projector, Role::Relay, Role::Runner];
            settings.amqp_url = None;
            settings.data_dir = data_dir;
            adjust(settings);
        })
        .await
    }

    /// A service whose configuration file holds `config`.
    pub(crate) async fn spawn_with_config(
        config: &str,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let path = std::env::temp_dir().join(format!("taskledger-kinds-{}.toml", Uuid::new_v4()));
        std::fs::write(&path, config).unwrap();
        Self::spawn_with(|settings| {
            settings.config = Some(path);
            adjust(settings);
        })
        .await
    }

    /// The one row `sql` (a query without parameters) answers on the
    /// service's database; panics, naming the query, if it does not.
    pub(crate) async fn row(&self, sql: &str) -> tokio_postgres::Row {
        let client = self.database.client().await;
        client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// Waits up to `within` until the service's `/readyz` answers 200.
    pub(crate) async fn wait_until_ready(&self, within: Duration) {
        eventually(within, Duration::from_millis(50), || async {
            let ready = send(self.http.get(self.url("/readyz"))).await;
            if ready.status() == StatusCode::OK {
                return Ok(());
            }
            Err(format!("readyz did not answer 200 within {within:?}"))
        })
        .await;
    }

    /// The service's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        send_text(self.http.get(self.url("/metrics"))).await
    }

    /// A store on the service's database (a second appender, as another
    /// process would have).
    pub(crate) fn store(&self) -> PgEventStore {
        PgEventStore::connect(&self.database.url, StoreOptions::default()).unwrap()
    }

    /// A new platform API key (all tenants) with `scopes`; the service
    /// accepts it at once (keys are checked against the log, not the
    /// `api_keys` projection).
    pub(crate) async fn key(&self, scopes: &[Scope]) -> String {
        create_key(&self.store(), scopes, random_bytes()).await.1
    }

    /// A new API key of `tenant` with `scopes`, accepted at once.
    pub(crate) async fn tenant_key(&self, tenant: &str, scopes: &[Scope]) -> String {
        create_tenant_key(&self.store(), tenant, scopes, random_bytes())
            .await
            .1
    }

    /// Executes a worker's `command` on the task (as the runner `worker-1`
    /// does, in-process); the task's stream version after it. Panics if it
    /// is refused.
    pub(crate) async fn as_worker(&self, task_id: TaskId, command: TaskCommand) -> u64 {
        execute::<Tasks>(
            &self.store(),
            &task_id.stream_id(),
            command,
            Uuid::new_v4(),
            Metadata {
                actor: Some("worker-1".into()),
                ..Metadata::default()
            },
        )
        .await
        .unwrap()
        .stream_version
    }

    /// A GET of `path` with `key`, to be sent.
    pub(crate) fn get(&self, key: &str, path: &str) -> RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(key)
    }

    /// A POST to `path` with `key`, to be sent.
    pub(crate) fn post(&self, key: &str, path: &str) -> RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(key)
    }

    /// `POST /v1/ledgers/chain-a/confirmations` with `key` and `body`, sent
    /// when awaited.
    pub(crate) fn confirm(&self, key: &str, body: &Value) -> impl Future<Output = Response> {
        send(
            self.post(key, "/v1/ledgers/chain-a/confirmations")
                .json(body),
        )
    }

    /// A GET of `path` with `key` (its JSON answer) once the service has
    /// read the log up to its head now (`?min_position=`).
    pub(crate) async fn read_at_head(&self, key: &str, path: &str) -> Value {
        let head = self.store().head_position().await.unwrap();
        send_json(self.get(key, &format!("{path}?min_position={head}"))).await
    }

    /// A GET of `path` (with `key`, if given): the status and the JSON body
    /// (`null` when the body is not JSON).
    pub(crate) async fn read(&self, key: Option<&str>, path: &str) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = send(request).await;
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST {path}` (a task's or a plan's `/cancel`) with `key` and
    /// `reason`, which must answer 200; the JSON answer.
    pub(crate) async fn cancel(&self, key: &str, path: &str, reason: &str) -> Value {
        let request = self.post(key, path).json(&json!({ "reason": reason }));
        ok_json(send(request).await, path).await
    }

    /// `POST /v1/tasks` with `body`: the status and the JSON answer.
    pub(crate) async fn submit(&self, key: &str, body: Value) -> (StatusCode, Value) {
        let response = send(self.post(key, "/v1/tasks").json(&body)).await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// `POST /v1/tasks` with `body`, which must create a task (201, else
    /// the test fails showing the answer); the task.
    pub(crate) async fn submitted(&self, key: &str, body: Value) -> Value {
        let (status, task) = self.submit(key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task
    }

    /// `POST /v1/tasks` with `body`, which must be refused with a problem of
    /// `status` whose detail holds every one of `needles`; the problem.
    pub(crate) async fn submit_refused(
        &self,
        key: &str,
        body: Value,
        status: StatusCode,
        needles: &[&str],
    ) -> Value {
        problem(
            send(self.post(key, "/v1/tasks").json(&body)).await,
            status,
            needles,
        )
        .await
    }

    /// The task `id` once it is final (within 60 s).
    pub(crate) async fn finished(&self, key: &str, id: &str) -> Value {
        self.wait_for_task(key, id, Duration::from_secs(60), |task| {
            FINAL_STATUSES.contains(&task["status"].as_str().unwrap_or(""))
        })
        .await
    }

    /// The task `id` once it has `status` (within `within`); panics at once
    /// if it ends with another.
    pub(crate) async fn task_with_status(
        &self,
        key: &str,
        id: &str,
        status: &str,
        within: Duration,
    ) -> Value {
        self.wait_for_task(key, id, within, |task| {
            assert!(
                task["status"] == status
                    || !FINAL_STATUSES.contains(&task["status"].as_str().unwrap_or("")),
                "{task}"
            );
            task["status"] == status
        })
        .await
    }

    /// The task `id` once `done` holds for its JSON (polled every 50 ms for
    /// `within`).
    async fn wait_for_task(
        &self,
        key: &str,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/v1/tasks/{id}");
        eventually(within, Duration::from_millis(50), || async {
            let (_, task) = self.read(Some(key), &path).await;
            if done(&task) {
                Ok(task)
            } else {
                Err(task.to_string())
            }
        })
        .await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops the server (it must stop cleanly) and keeps the database.
    pub(crate) async fn stop(self) -> TestDatabase {
        self.stop.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the server did not stop within 10 s of the shutdown signal")
            .expect("the server task panicked")
            .expect("the server failed");
        self.database
    }

    /// Stops the server (it must stop cleanly) and drops the database.
    pub(crate) async fn finish(self) {
        self.stop().await.drop_database().await;
    }
}

/// Waits up to `seconds` for a `taskledger serve` child process to answer
/// `/readyz` on `port` with 200; panics with its standard error if it exits
/// first.
pub(crate) async fn wait_until_ready(child: &mut std::process::Child, port: u16, seconds: u64) {
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    // Shared by every attempt; no attempt holds it across an await.
    let child = std::cell::RefCell::new(child);
    eventually(
        Duration::from_secs(seconds),
        Duration::from_millis(100),
        || async {
            let ready = http.get(&url).send().await;
            if matches!(&ready, Ok(response) if response.status() == 200) {
                return Ok(());
            }
            let mut child = child.borrow_mut();
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(pipe) = child.stderr.as_mut() {
                    std::io::Read::read_to_string(pipe, &mut stderr).unwrap();
                }
                panic!("serve exited with {status} before it was ready: {stderr}");
            }
            Err(format!("serve was not ready within {seconds} s"))
        },
    )
    .await;
}

/// A secret of the format before secrets named their key (no key id in
/// it): the prefix and `bytes`, base64url.
pub(crate) fn old_format_secret(bytes: [u8; 32]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("{SECRET_PREFIX}{encoded}")
}

/// 32 random bytes (for a key's secret).
pub(crate) fn random_bytes() -> [u8; 32] {
    let mut bytes = [0; 32];
    bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes
}
