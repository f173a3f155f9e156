//! Tasks run for real: the relay publishes jobs to RabbitMQ, runners take
//! them and run the busybox test image on the Docker engine. Each test has
//! its own database and its own exchange and queue names.
//!
//! Needs `scripts/services.sh` (RabbitMQ, dockerd and the image
//! `taskledger-test-busybox:latest`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use taskledger::adapters::blobs::BlobStore;
use taskledger::adapters::rabbitmq::{self, Topology};
use taskledger::config::FileConfig;
use taskledger::submission::{self, Submission, Submitter};
use taskledger::workers::relay::{self, RelayOptions, RelayStatus};
use taskledger::workers::runner::{self, RunnerOptions};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::task::{CancelTask, Task, TaskCommand, TaskId, TaskStatus};
use taskledger_events::testing::TestDatabase;
use taskledger_events::EventStore;
use tokio::sync::{oneshot, watch, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{local_sh, TestApp};
use crate::support::http::{item_with, send, send_json};
use crate::support::kinds::sh_kind;
use crate::support::log::{execute_on_task, task_history, task_state, terminal_events};
use crate::support::poll::eventually;

/// The broker is restarted by one test; the others hold this for reading
/// so the restart happens while none of them runs.
pub(crate) static BROKER: RwLock<()> = RwLock::const_new(());

/// A [`Cluster`]'s hold on the [`BROKER`], for as long as it lives: shared
/// with the other tests, or alone (to restart the broker).
enum BrokerHold {
    Shared {
        _guard: RwLockReadGuard<'static, ()>,
    },
    Alone {
        _guard: RwLockWriteGuard<'static, ()>,
    },
}

/// Deletes the exchanges and queues a test declared under `prefix` for the
/// kinds of `config`.
pub(crate) async fn delete_topology(prefix: &str, config: &FileConfig) {
    let connection = rabbitmq::connect(&amqp_url(), "taskledger-test-cleanup")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let kinds: Vec<String> = config.kinds.keys().cloned().collect();
    Topology::new(prefix)
        .delete(&channel, &kinds)
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
}

pub(crate) fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The image the Docker kinds run.
pub(crate) const IMAGE: &str = "taskledger-test-busybox:latest";

fn kinds() -> String {
    let sh = sh_kind(
        "sh",
        &format!(
            "image = \"{IMAGE}\"\ntimeout_seconds = 60\nmax_attempts = 2\nmemory_mb = 64\n\
             log_limit_bytes = 4096\nfiles_limit_bytes = 65536\n"
        ),
    );
    let flaky = sh_kind(
        "flaky",
        &format!(
            "image = \"{IMAGE}\"\ntimeout_seconds = 60\nmax_attempts = 3\nmemory_mb = 64\n\
             retry = {{ initial_backoff_seconds = 2, max_backoff_seconds = 3, jitter = 0.0, \
             retry_exit_codes = [75] }}\n"
        ),
    );
    format!(
        r#"{sh}{flaky}
[kinds.ghost]
image = "taskledger-no-such-image:latest"
command = ["true"]
max_attempts = 1
"#
    )
}

/// A database, a topology, and relays and runners started and stopped at
/// will.
pub(crate) struct Cluster {
    pub(crate) database: TestDatabase,
    pub(crate) store: PgEventStore,
    pub(crate) topology: Topology,
    pub(crate) config: Arc<FileConfig>,
    pub(crate) blobs: PathBuf,
    pub(crate) relay: Option<(
        oneshot::Sender<()>,
        JoinHandle<()>,
        watch::Receiver<RelayStatus>,
    )>,
    pub(crate) runners: Vec<(String, oneshot::Sender<()>, JoinHandle<()>)>,
    pub(crate) runners_started: usize,
    /// Whether runners started from now on bind-mount `/out` (the
    /// default) or copy it out through the engine.
    pub(crate) bind_out: bool,
    _broker: BrokerHold,
}

impl Cluster {
    /// A cluster sharing the broker with the other tests.
    pub(crate) async fn start() -> Self {
        let broker = BrokerHold::Shared {
            _guard: BROKER.read().await,
        };
        Self::start_holding(broker).await
    }

    /// A cluster that has the broker to itself (other tests wait), so that
    /// it may restart it.
    pub(crate) async fn start_alone() -> Self {
        let broker = BrokerHold::Alone {
            _guard: BROKER.write().await,
        };
        Self::start_holding(broker).await
    }

    /// A cluster sharing the broker, whose kinds are `kinds` (TOML).
    pub(crate) async fn start_with_kinds(kinds: &str) -> Self {
        let broker = BrokerHold::Shared {
            _guard: BROKER.read().await,
        };
        Self::start_configured(broker, FileConfig::parse(kinds).unwrap()).await
    }

    async fn start_holding(broker: BrokerHold) -> Self {
        Self::start_configured(broker, FileConfig::parse(&kinds()).unwrap()).await
    }

    async fn start_configured(broker: BrokerHold, config: FileConfig) -> Self {
        let mut cluster = Self::start_idle(broker, config).await;
        cluster.start_relay();
        cluster
    }

    /// A cluster sharing the broker, with no relay yet (its topology not
    /// declared).
    pub(crate) async fn start_without_relay() -> Self {
        let broker = BrokerHold::Shared {
            _guard: BROKER.read().await,
        };
        Self::start_idle(broker, FileConfig::parse(&kinds()).unwrap()).await
    }

    async fn start_idle(broker: BrokerHold, config: FileConfig) -> Self {
        let database = TestDatabase::create().await;
        let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
        let prefix = format!("tl-test-{}", Uuid::new_v4().simple());
        Self {
            database,
            store,
            topology: Topology::new(prefix),
            config: Arc::new(config),
            blobs: std::env::temp_dir().join(format!("tl-blobs-{}", Uuid::new_v4())),
            relay: None,
            runners: Vec::new(),
            runners_started: 0,
            bind_out: true,
            _broker: broker,
        }
    }

    pub(crate) fn start_relay(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let (status, watch) = watch::channel(RelayStatus::default());
        let options = RelayOptions {
            amqp_url: amqp_url(),
            topology: self.topology.clone(),
            kinds: self.config.kinds.keys().cloned().collect(),
        };
        let handle = tokio::spawn(relay::run(
            self.store.clone(),
            options,
            status,
            async move {
                let _ = stopped.await;
            },
        ));
        self.relay = Some((stop, handle, watch));
    }

    pub(crate) async fn stop_relay(&mut self) {
        if let Some((stop, handle, _)) = self.relay.take() {
            let _ = stop.send(());
            handle.await.unwrap();
        }
    }

    pub(crate) fn start_runner(&mut self, slots: usize) -> String {
        self.runners_started += 1;
        let worker_id = format!("runner-{}", self.runners_started);
        let options = RunnerOptions {
            amqp_url: Some(amqp_url()),
            topology: self.topology.clone(),
            config: self.config.clone(),
            slots,
            worker_id: worker_id.clone(),
            blobs: BlobStore::new(&self.blobs),
            work_dir: self.blobs.join("work"),
            bind_out: self.bind_out,
            lease_ttl: std::time::Duration::from_secs(3),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(runner::run(self.store.clone(), options, async move {
            let _ = stopped.await;
        }));
        self.runners.push((worker_id.clone(), stop, handle));
        worker_id
    }

    /// Stops the first runner still running at once, as a crash would:
    /// its work stops, but the broker has not noticed yet.
    pub(crate) async fn abort_first_runner(&mut self) {
        let (_, _, handle) = self.runners.remove(0);
        handle.abort();
        let _ = handle.await;
    }

    /// [`Cluster::abort_first_runner`], which is `worker_id`, and the
    /// broker drops its connection.
    pub(crate) async fn kill_first_runner(&mut self, worker_id: &str) {
        self.abort_first_runner().await;
        close_connection(&format!("taskledger-runner-{worker_id}")).await;
    }

    pub(crate) async fn submit(
        &self,
        kind: &str,
        params: Value,
        timeout_seconds: Option<u64>,
    ) -> TaskId {
        submit_directly(&self.store, &self.config, kind, params, timeout_seconds).await
    }

    /// Submits a `sh` task running `script` with the kind's timeout.
    pub(crate) async fn submit_script(&self, script: &str) -> TaskId {
        self.submit("sh", json!({ "script": script }), None).await
    }

    /// Cancels the task in the log, as `POST /v1/tasks/{id}/cancel` would.
    pub(crate) async fn cancel(&self, task_id: TaskId, reason: Option<&str>) {
        execute_on_task(
            &self.store,
            task_id,
            TaskCommand::Cancel(CancelTask {
                task_id,
                reason: reason.map(str::to_owned),
                canceled_at: Utc::now(),
            }),
        )
        .await;
    }

    pub(crate) async fn task(&self, task_id: TaskId) -> Task {
        task_state(&self.store, task_id).await
    }

    /// Polls the log until `check` holds for the task.
    pub(crate) async fn wait_for(
        &self,
        task_id: TaskId,
        what: &str,
        within: Duration,
        check: impl Fn(&Task) -> bool,
    ) -> Task {
        eventually(within, Duration::from_millis(50), || async {
            let task = self.task(task_id).await;
            if check(&task) {
                return Ok(task);
            }
            Err(format!(
                "task {task_id} did not reach {what} within {within:?}; it is {:?} after {} attempts (error: {:?})",
                task.status,
                task.attempts_started,
                task.error
            ))
        })
        .await
    }

    /// Waits up to 60 s for the task to be running.
    pub(crate) async fn wait_running(&self, task_id: TaskId) -> Task {
        self.wait_for(task_id, "running", Duration::from_secs(60), |task| {
            task.status == TaskStatus::Running
        })
        .await
    }

    pub(crate) async fn wait_final(&self, task_id: TaskId, within: Duration) -> Task {
        self.wait_for(task_id, "a final status", within, |task| {
            task.status.is_final()
        })
        .await
    }

    /// Waits up to `within` for the task to be final, which must be a
    /// success (else the test fails showing its error).
    pub(crate) async fn wait_succeeded(&self, task_id: TaskId, within: Duration) -> Task {
        let task = self.wait_final(task_id, within).await;
        assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
        task
    }

    /// The task's event types, in order.
    pub(crate) async fn history(&self, task_id: TaskId) -> Vec<String> {
        task_history(&self.store, task_id)
            .await
            .into_iter()
            .map(|event| event.event_type)
            .collect()
    }

    /// Asserts that the task's event types are `expected`, in order.
    pub(crate) async fn assert_history(&self, task_id: TaskId, expected: &[&str]) {
        assert_eq!(self.history(task_id).await, expected);
    }

    pub(crate) async fn finish(mut self) {
        for (_, stop, handle) in self.runners.drain(..) {
            let _ = stop.send(());
            let _ = handle.await;
        }
        self.stop_relay().await;
        delete_topology(self.topology.prefix(), &self.config).await;
        let _ = std::fs::remove_dir_all(&self.blobs);
        self.database.drop_database().await;
    }
}

/// Submits a task of `kind` straight to the log (as the API would), under
/// a nil key; its id.
async fn submit_directly(
    store: &PgEventStore,
    config: &FileConfig,
    kind: &str,
    params: Value,
    timeout_seconds: Option<u64>,
) -> TaskId {
    let Value::Object(params) = params else {
        panic!("params must be an object")
    };
    let submission = Submission {
        timeout_seconds,
        ..Submission::new(kind, params, "tests")
    };
    submit_as_tests(store, config, submission).await
}

/// Submits `submission` straight to the log (as the API would), under a
/// nil key, from frontend `tests`; its id.
pub(crate) async fn submit_as_tests(
    store: &PgEventStore,
    config: &FileConfig,
    submission: Submission,
) -> TaskId {
    submission::submit(
        store,
        config,
        submission,
        Submitter {
            key_id: Uuid::nil(),
            idempotency_key: None,
        },
        Utc::now(),
    )
    .await
    .unwrap()
    .task
    .id
}

/// Names of containers (running or not) labelled with `task_id`.
async fn containers_of(task_id: TaskId) -> Vec<String> {
    let output = tokio::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=taskledger.task={task_id}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .await
        .expect("the docker CLI runs (scripts/services.sh installs it)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_no_containers(task_id: TaskId) {
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let left = containers_of(task_id).await;
            if left.is_empty() {
                return Ok(());
            }
            Err(format!("containers of {task_id} left behind: {left:?}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_runs_sandboxed_and_its_files_become_artifacts() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(2);
    let script = r#"
        echo "to stdout"; echo "to stderr" >&2
        printf 'report body' > /out/report.txt
        caps=$(grep CapEff /proc/self/status | cut -f2)
        if touch /rootfs-probe 2>/dev/null; then root=writable; else root=readonly; fi
        nets=$(ls /sys/class/net | tr '\n' ' ')
        printf '{"answer": 42, "caps": "%s", "root": "%s", "nets": "%s"}' "$caps" "$root" "$nets" > /out/result.json
    "#;
    let task_id = cluster.submit_script(script).await;
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(60))
        .await;
    let result = task.result.clone().unwrap();
    assert_eq!(result["answer"], 42);
    assert_eq!(
        result["caps"], "0000000000000000",
        "every capability dropped"
    );
    assert_eq!(result["root"], "readonly");
    assert_eq!(
        result["nets"].as_str().unwrap().trim(),
        "lo",
        "network mode none"
    );
    let names: BTreeSet<&str> = task.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["report.txt", "result.json", "stderr.log", "stdout.log"])
    );
    let blobs = BlobStore::new(&cluster.blobs);
    for artifact in &task.artifacts {
        let bytes = std::fs::read(blobs.path(&artifact.sha256).unwrap()).unwrap();
        assert_eq!(bytes.len() as u64, artifact.size, "{}", artifact.name);
        let expected = match artifact.name.as_str() {
            "report.txt" => Some("report body"),
            "stdout.log" => Some("to stdout\n"),
            "stderr.log" => Some("to stderr\n"),
            _ => None,
        };
        if let Some(expected) = expected {
            assert_eq!(String::from_utf8(bytes).unwrap(), expected);
        }
    }
    cluster
        .assert_history(task_id, &["TaskSubmitted", "TaskStarted", "TaskSucceeded"])
        .await;
    wait_no_containers(task_id).await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_timeouts_missing_images_and_big_output() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(4);
    let failing = cluster.submit_script("echo boom >&2; exit 3").await;
    let slow = cluster
        .submit("sh", json!({"script": "sleep 30"}), Some(1))
        .await;
    let ghost = cluster.submit("ghost", json!({}), None).await;
    let loud = cluster
        .submit_script(
            "i=0; while [ $i -lt 400 ]; do echo 0123456789abcdefghijklmnopqrstu; i=$((i+1)); done",
        )
        .await;

    let task = cluster.wait_final(failing, Duration::from_secs(60)).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.exit_code, Some(3));
    let error = task.error.unwrap();
    assert!(
        error.contains("exited with code 3") && error.contains("boom"),
        "{error}"
    );
    assert_eq!(task.attempts_started, 1, "a non-zero exit is not retried");

    let task = cluster.wait_final(slow, Duration::from_secs(30)).await;
    assert_eq!(task.status, TaskStatus::TimedOut);
    wait_no_containers(slow).await;

    let task = cluster.wait_final(ghost, Duration::from_secs(30)).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let error = task.error.unwrap();
    assert!(
        error.contains("taskledger-no-such-image:latest") && error.contains("not present"),
        "{error}"
    );

    let task = cluster.wait_succeeded(loud, Duration::from_secs(60)).await;
    let stdout = task
        .artifacts
        .iter()
        .find(|a| a.name == "stdout.log")
        .unwrap();
    let bytes =
        std::fs::read(BlobStore::new(&cluster.blobs).path(&stdout.sha256).unwrap()).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.ends_with("[taskledger: output truncated: kept 4096 of 12800 bytes]\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    for task_id in [failing, slow, ghost, loud] {
        assert_eq!(terminal_events(&cluster.history(task_id).await), 1);
    }
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canceling_a_running_task_stops_its_container() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(1);
    let task_id = cluster.submit_script("sleep 60").await;
    cluster.wait_running(task_id).await;
    // Wait for its container, then cancel.
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            if containers_of(task_id).await.is_empty() {
                return Err("no container appeared".to_owned());
            }
            Ok(())
        },
    )
    .await;
    execute_on_task(
        &cluster.store,
        task_id,
        TaskCommand::Cancel(CancelTask {
            task_id,
            reason: Some("changed my mind".into()),
            canceled_at: Utc::now(),
        }),
    )
    .await;
    wait_no_containers(task_id).await;
    // The runner has nothing to add: canceled is final.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster
        .assert_history(task_id, &["TaskSubmitted", "TaskStarted", "TaskCanceled"])
        .await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_on_one_queue_claim_each_task_once() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(2);
    cluster.start_runner(2);
    let mut tasks = Vec::new();
    for index in 0..8 {
        let script =
            format!("echo task {index}; printf '{{\"index\": {index}}}' > /out/result.json");
        tasks.push(cluster.submit_script(&script).await);
    }
    let mut workers = BTreeSet::new();
    for (index, task_id) in tasks.iter().enumerate() {
        let task = cluster
            .wait_succeeded(*task_id, Duration::from_secs(120))
            .await;
        assert_eq!(task.result.unwrap()["index"], index);
        workers.insert(task.worker_id.unwrap());
        let history = cluster.history(*task_id).await;
        assert_eq!(history, ["TaskSubmitted", "TaskStarted", "TaskSucceeded"]);
    }
    assert!(!workers.is_empty());
    cluster.finish().await;
}

/// `rabbitmqctl args…` (the broker's own CLI, on this host): how it ended
/// and what it printed. Panics if it cannot be run.
async fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl runs")
}

/// Closes the broker connection whose name is `name`, if it is still open
/// (as RabbitMQ does to a client whose host died).
pub(crate) async fn close_connection(name: &str) {
    let listed = rabbitmqctl(&["-q", "list_connections", "pid", "client_properties"]).await;
    let text = String::from_utf8_lossy(&listed.stdout);
    let Some(pid) = text
        .lines()
        .find(|line| line.contains(&format!("\"{name}\"")))
        .and_then(|line| line.split_whitespace().next())
        .map(str::to_owned)
    else {
        // Already gone: dropping the runner closed its connection.
        return;
    };
    // It may close by itself meanwhile (a dropped runner); either way it
    // must be gone afterwards.
    rabbitmqctl(&["close_connection", &pid, "test: runner died"]).await;
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let listed = rabbitmqctl(&["-q", "list_connections", "pid"]).await;
            if String::from_utf8_lossy(&listed.stdout).contains(&pid) {
                return Err(format!("connection {name} did not close"));
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_that_dies_mid_task_leaves_a_retry_and_one_ending() {
    let mut cluster = Cluster::start().await;
    let first = cluster.start_runner(1);
    let task_id = cluster
        .submit_script("sleep 4; printf '{\"done\": true}' > /out/result.json")
        .await;
    cluster.wait_running(task_id).await;
    // The first runner dies: its work stops and the broker drops it.
    cluster.kill_first_runner(&first).await;
    cluster.start_runner(1);
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(90))
        .await;
    assert_eq!(task.attempts_started, 2);
    assert_eq!(task.worker_id.as_deref(), Some("runner-2"));
    let history = cluster.history(task_id).await;
    assert_eq!(
        history,
        [
            "TaskSubmitted",
            "TaskStarted",
            "TaskRetried",
            "TaskStarted",
            "TaskSucceeded"
        ]
    );
    // The dead runner's container of attempt 1 was removed with the retry.
    wait_no_containers(task_id).await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_that_only_lost_its_broker_connection_is_not_run_over() {
    let mut cluster = Cluster::start().await;
    let first = cluster.start_runner(1);
    let task_id = cluster
        .submit_script("sleep 5; printf '{\"done\": true}' > /out/result.json")
        .await;
    cluster.wait_running(task_id).await;
    cluster.start_runner(1);
    // The broker drops the first runner (a network blip); its attempt goes
    // on, and its lease tells the other runner it is alive.
    close_connection(&format!("taskledger-runner-{first}")).await;
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(60))
        .await;
    assert_eq!(task.attempts_started, 1);
    assert_eq!(task.worker_id.as_deref(), Some(first.as_str()));
    // The redelivered job is acknowledged once the task has ended; nothing
    // else happens to the task.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster
        .assert_history(task_id, &["TaskSubmitted", "TaskStarted", "TaskSucceeded"])
        .await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_mid_run_loses_nothing_and_runs_nothing_twice() {
    let mut cluster = Cluster::start_alone().await;
    cluster.start_runner(2);
    let mut tasks = Vec::new();
    for index in 0..4 {
        let script = format!("sleep 2; printf '{{\"index\": {index}}}' > /out/result.json");
        tasks.push(cluster.submit_script(&script).await);
    }
    cluster.wait_running(tasks[0]).await;
    for step in ["stop_app", "start_app"] {
        let output = rabbitmqctl(&[step]).await;
        assert!(output.status.success(), "{output:?}");
        if step == "stop_app" {
            assert!(
                rabbitmq::connect(&amqp_url(), "taskledger-test-probe")
                    .await
                    .is_err(),
                "the broker still accepts connections after stop_app"
            );
        }
    }
    // Submitted while the relay reconnects.
    for index in 4..6 {
        let script = format!("printf '{{\"index\": {index}}}' > /out/result.json");
        tasks.push(cluster.submit_script(&script).await);
    }
    for (index, task_id) in tasks.iter().enumerate() {
        let task = cluster.wait_final(*task_id, Duration::from_secs(120)).await;
        assert_eq!(
            task.status,
            TaskStatus::Succeeded,
            "task {index}: {:?}",
            task.error
        );
        assert_eq!(task.result.unwrap()["index"], index);
        let history = cluster.history(*task_id).await;
        assert_eq!(terminal_events(&history), 1, "{history:?}");
    }
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_checkpoint_reaches_the_head_soon_after_the_log_goes_quiet() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(2);
    let mut tasks = Vec::new();
    for index in 0..3 {
        tasks.push(cluster.submit_script(&format!("echo {index}")).await);
    }
    for task_id in tasks {
        cluster
            .wait_succeeded(task_id, Duration::from_secs(60))
            .await;
    }
    // Nothing more is appended: the row moves to the head about a second
    // after the last confirmed batch, without another event to carry it.
    let head = cluster.store.head_position().await.unwrap();
    let client = cluster.store.pool().get().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let position: i64 = client
            .query_one(
                "SELECT position FROM relay_checkpoints WHERE relay = 'relay'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if u64::try_from(position).unwrap() >= head {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay checkpoint stayed at {position}, the head is {head}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_publishes_every_event_in_order_with_its_envelope() {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let mut cluster = Cluster::start().await;
    // A consumer of the events exchange, bound before anything is published.
    let connection = rabbitmq::connect(&amqp_url(), "taskledger-test-consumer")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    cluster
        .topology
        .declare(
            &channel,
            &cluster.config.kinds.keys().cloned().collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let queue = format!("{}.test-feed", cluster.topology.events_exchange());
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            cluster.topology.events_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "test-feed".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for index in 0..5 {
        cluster.submit_script(&format!("echo {index}")).await;
    }
    // The relay restarts half way: it may publish some events again, never
    // skip or reorder one (a consumer that dedupes by id sees each once).
    cluster.stop_relay().await;
    for index in 5..10 {
        cluster.submit_script(&format!("echo {index}")).await;
    }
    cluster.start_relay();
    let head = cluster.store.head_position().await.unwrap();
    let mut seen = Vec::new();
    let mut last = 0_i64;
    while seen.len() < usize::try_from(head).unwrap() {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("the events did not all arrive within 30 s")
            .unwrap()
            .unwrap();
        let headers = delivery.properties.headers().clone().unwrap();
        let Some(AMQPValue::LongLongInt(position)) = headers.inner().get("position").cloned()
        else {
            panic!("no position header")
        };
        assert!(headers.inner().contains_key("hash"));
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        let id = delivery
            .properties
            .message_id()
            .clone()
            .unwrap()
            .to_string();
        assert_eq!(body["event_id"].as_str().unwrap(), id);
        assert_eq!(body["position"], position);
        if position <= last {
            // A republished event after the relay's restart: same id, same
            // place, and it restarts from the checkpoint in order.
            assert!(seen.contains(&id));
            continue;
        }
        assert_eq!(position, last + 1, "an event was skipped");
        last = position;
        seen.push(id);
    }
    let stored: Vec<String> = cluster
        .store
        .read_all(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event_id.to_string())
        .collect();
    assert_eq!(seen, stored);
    let _ = connection.close(200, "done".into()).await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifacts_are_served_with_type_length_etag_and_ranges() {
    use reqwest::StatusCode;
    use taskledger::config::settings::Role;

    let _broker = BROKER.read().await;
    let prefix = format!("tl-test-{}", Uuid::new_v4().simple());
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let app = TestApp::spawn_with_config(&kinds(), |settings| {
        settings.roles = vec![Role::Api, Role::Projector, Role::Relay, Role::Runner];
        settings.amqp_url = Some(amqp_url());
        settings.amqp_prefix = Some(prefix.clone());
        settings.data_dir = data_dir.clone();
    })
    .await;
    let key = app
        .key(&[
            taskledger_events::apikey::Scope::TasksRead,
            taskledger_events::apikey::Scope::TasksWrite,
        ])
        .await;
    let (_, submitted) = app
        .submit(
            &key,
            json!({"kind": "sh", "tenant": "default", "frontend_id": "web",
                   "params": {"script": "printf 0123456789 > /out/digits.txt"}}),
        )
        .await;
    let id = submitted["id"].as_str().unwrap().to_owned();
    app.task_with_status(&key, &id, "succeeded", Duration::from_secs(60))
        .await;
    let list = send_json(app.get(&key, &format!("/v1/tasks/{id}/artifacts"))).await;
    let digits = item_with(&list["items"], "name", "digits.txt");
    assert_eq!(digits["size"], 10);
    assert_eq!(list["next_cursor"], Value::Null);
    let path = format!("/v1/tasks/{id}/artifacts/digits.txt");
    // The file asked for with one conditional or range header.
    let asked_with =
        |header: &'static str, value: &str| send(app.get(&key, &path).header(header, value));
    let whole = send(app.get(&key, &path)).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(whole.headers()["content-length"], "10");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", digits["sha256"].as_str().unwrap()));
    assert_eq!(whole.text().await.unwrap(), "0123456789");
    let part = asked_with("range", "bytes=2-5").await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 2-5/10");
    assert_eq!(part.text().await.unwrap(), "2345");
    let cached = asked_with("if-none-match", &etag).await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let outside = asked_with("range", "bytes=50-").await;
    assert_eq!(outside.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(outside.headers()["content-range"], "bytes */10");
    let missing = send(app.get(&key, &format!("/v1/tasks/{id}/artifacts/nope.txt"))).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    app.finish().await;
    delete_topology(&prefix, &FileConfig::parse(&kinds()).unwrap()).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_broker_jobs_pass_in_process_to_a_local_executor() {
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let app = TestApp::spawn_in_process(&local_sh(), &data_dir, |_| {}).await;
    let store = app.store();
    let config = FileConfig::parse(&local_sh()).unwrap();
    let submit = |script: &'static str| {
        submit_directly(
            &store,
            &config,
            "local-sh",
            json!({ "script": script }),
            None,
        )
    };
    let ok = submit(r#"echo hi; printf '{"local": true}' > "$TASKLEDGER_OUT/result.json""#).await;
    let bad = submit("exit 7").await;
    for (task_id, status) in [(ok, TaskStatus::Succeeded), (bad, TaskStatus::Failed)] {
        let task = eventually(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                let task = task_state(&store, task_id).await;
                if task.status.is_final() {
                    Ok(task)
                } else {
                    Err(format!("{task:?}"))
                }
            },
        )
        .await;
        assert_eq!(task.status, status, "{:?}", task.error);
        if status == TaskStatus::Succeeded {
            assert_eq!(task.result.unwrap()["local"], true);
            let names: BTreeSet<String> = task.artifacts.into_iter().map(|a| a.name).collect();
            assert_eq!(
                names,
                BTreeSet::from(["result.json".into(), "stdout.log".into()])
            );
        } else {
            assert_eq!(task.exit_code, Some(7));
        }
    }
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
