//! Plans through crashes, for real: the API, projectors and relay run here
//! (and the graph follower, unless a test runs it as a process), the runner
//! and the graph follower run as `taskledger serve` processes with one role
//! each, and a crash is SIGKILL to the process group (its attempts' `sh`
//! processes die with it, as on a machine that went down). A diamond plan
//! (A → B, A → C, B + C → D) finishes after its runner or its follower is
//! killed while B and C run; a parent that fails once and succeeds on retry
//! releases its child only after the success. Order is read from the
//! log's positions, never timed.
//!
//! Needs `scripts/services.sh` (PostgreSQL and RabbitMQ).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskledger::config::settings::Role;
use taskledger::config::FileConfig;
use taskledger_events::apikey::Scope;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{TaskEvent, TaskId, TaskStatus};
use taskledger_events::{EventStore, RecordedEvent};

use crate::helpers::TestApp;
use crate::plans::id_of;
use crate::running::{amqp_url, BROKER};
use crate::support::http::send;
use crate::support::kinds::local_sh_kind;
use crate::support::log::{task_history, wait_for_tasks, FINAL_EVENT_TYPES};
use crate::support::poll::eventually;
use crate::support::serve::ServeProcesses;

/// The lease TTL of every runner process here (seconds): how long after a
/// runner's death its attempts are taken back.
const LEASE_TTL_SECONDS: i64 = 3;

/// `step` runs `sh -c` on the runner's host (`local`), with attempts left
/// for a dead runner's retry; `flaky` retries exit code 75 after 1 s.
fn kinds() -> String {
    let step = local_sh_kind("step", "timeout_seconds = 120\nmax_attempts = 3\n");
    let flaky = local_sh_kind(
        "flaky",
        "timeout_seconds = 60\nmax_attempts = 3\nretry = { initial_backoff_seconds = 1, \
         max_backoff_seconds = 1, jitter = 0.0, retry_exit_codes = [75] }\n",
    );
    format!("{step}{flaky}")
}

/// The service here, its processes, and a key of tenant `acme`.
struct Installation {
    app: TestApp,
    store: PgEventStore,
    key: String,
    processes: ServeProcesses,
    _broker: tokio::sync::RwLockReadGuard<'static, ()>,
}

impl Installation {
    /// API, projectors and relay here, and the graph follower too when
    /// `follower_here`.
    async fn start(follower_here: bool) -> Self {
        let broker = BROKER.read().await;
        let processes = ServeProcesses::prepare("tl-plan-crash", &kinds(), LEASE_TTL_SECONDS);
        // One blob store for all (a child's inputs are its parents' blobs).
        let (p, d) = (processes.prefix.clone(), processes.dir.join("data"));
        let app = TestApp::spawn_with_config(&kinds(), move |settings| {
            settings.roles = vec![Role::Api, Role::Projector, Role::Relay];
            if follower_here {
                settings.roles.push(Role::Graphs);
            }
            settings.amqp_url = Some(amqp_url());
            settings.amqp_prefix = Some(p);
            settings.data_dir = d;
        })
        .await;
        let store = app.store();
        let key = app
            .tenant_key("acme", &[Scope::TasksWrite, Scope::TasksRead])
            .await;
        Self {
            app,
            store,
            key,
            processes,
            _broker: broker,
        }
    }

    /// Starts process `name` with `roles` (the runner's worker id is
    /// `name`) and waits until it is ready; its index.
    async fn start_process(&mut self, name: &str, roles: &str) -> usize {
        let data_dir = self.processes.dir.join("data");
        self.processes
            .start(&self.app.database.url, name, name, roles, 2, data_dir)
            .await
    }

    /// SIGKILL to process `index`'s group: nothing of it cleans up.
    fn kill(&mut self, index: usize) {
        self.processes.kill(index);
    }

    /// Submits `tasks` as a plan of `acme`; its id and view.
    async fn submit_plan(&self, tasks: Vec<Value>) -> (String, Value) {
        let response = send(
            self.app
                .post(&self.key, "/v1/plans")
                .json(&json!({ "tasks": tasks })),
        )
        .await;
        let status = response.status();
        let plan: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{plan}");
        (plan["id"].as_str().unwrap().to_owned(), plan)
    }

    /// Waits until `GET /v1/plans/{id}` counts `counts`; the plan then.
    async fn plan_with_counts(&self, id: &str, counts: Value) -> Value {
        eventually(
            Duration::from_secs(120),
            Duration::from_millis(100),
            || async {
                let (status, plan) = self
                    .app
                    .read(Some(&self.key), &format!("/v1/plans/{id}"))
                    .await;
                if status == StatusCode::OK && plan["counts"] == counts {
                    return Ok(plan);
                }
                Err(format!(
                    "wanted counts {counts}, got {status}: {plan} (process logs in {})",
                    self.processes.dir.display()
                ))
            },
        )
        .await
    }

    /// Waits until each of `tasks` satisfies `ready` in the log.
    async fn wait_for(
        &self,
        tasks: &[TaskId],
        what: &str,
        ready: impl Fn(TaskStatus, u32) -> bool,
    ) {
        wait_for_tasks(
            &self.store,
            tasks,
            Duration::from_secs(60),
            Duration::from_millis(50),
            |task| ready(task.status, task.attempts_started),
            |task_id, task| {
                format!(
                    "task {task_id} is not {what}: {:?} after {} attempts (logs in {})",
                    task.status,
                    task.attempts_started,
                    self.processes.dir.display()
                )
            },
        )
        .await;
    }

    async fn history(&self, task_id: TaskId) -> Vec<RecordedEvent> {
        task_history(&self.store, task_id).await
    }

    async fn finish(mut self) {
        self.processes.stop_all();
        self.app.finish().await;
        self.processes
            .clean_up(&FileConfig::parse(&kinds()).unwrap())
            .await;
    }
}

fn task(name: &str, kind: &str, depends_on: &[&str], script: &str) -> Value {
    json!({"name": name, "kind": kind, "depends_on": depends_on, "params": {"script": script}})
}

fn types(history: &[RecordedEvent]) -> Vec<&str> {
    history
        .iter()
        .map(|recorded| recorded.event_type.as_str())
        .collect()
}

/// The global position of the task's only `event_type`.
fn position_of(task_id: TaskId, history: &[RecordedEvent], event_type: &str) -> u64 {
    let found: Vec<u64> = history
        .iter()
        .filter(|recorded| recorded.event_type == event_type)
        .map(|recorded| recorded.global_position)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{task_id}: {event_type} in {:?}",
        types(history)
    );
    found[0]
}

/// Checks that the task succeeded once and ran each attempt once: exactly
/// one final event, `TaskSucceeded`, last; its `TaskStarted`s number the
/// attempts 1, 2, … in order, and each after the first follows a
/// `TaskRetried` of the one before (a second start of an attempt, or one
/// with no retry recorded, is a duplicate run). Who ran each attempt.
fn assert_ran_once_per_attempt(task_id: TaskId, history: &[RecordedEvent]) -> Vec<String> {
    let finals: Vec<&str> = types(history)
        .into_iter()
        .filter(|event_type| FINAL_EVENT_TYPES.contains(event_type))
        .collect();
    assert_eq!(finals, ["TaskSucceeded"], "{task_id}: {:?}", types(history));
    assert_eq!(
        history.last().unwrap().event_type,
        "TaskSucceeded",
        "{task_id}: nothing follows the outcome"
    );
    let mut runners = Vec::new();
    let mut retried: Option<u32> = None;
    for recorded in history {
        match TaskEvent::from_recorded(recorded).unwrap() {
            TaskEvent::Started(started) => {
                let attempt = u32::try_from(runners.len()).unwrap() + 1;
                assert_eq!(started.attempt, attempt, "{task_id}: {:?}", types(history));
                assert!(
                    attempt == 1 || retried == Some(attempt - 1),
                    "{task_id}: attempt {attempt} started without a retry of attempt {}: {:?}",
                    attempt - 1,
                    types(history)
                );
                retried = None;
                runners.push(started.worker_id);
            }
            TaskEvent::Retried(retry) => {
                assert_eq!(
                    usize::try_from(retry.attempt).unwrap(),
                    runners.len(),
                    "{task_id}: a retry of an attempt that is not the last started"
                );
                retried = Some(retry.attempt);
            }
            _ => {}
        }
    }
    runners
}

/// A diamond plan; B and C run `middle` (`{name}` replaced), A and D a
/// second each.
fn diamond(middle: &str) -> Vec<Value> {
    let out = |name: &str| format!("echo {name} > \"$TASKLEDGER_OUT/{name}.txt\"");
    vec![
        task("a", "step", &[], &format!("sleep 1; {}", out("a"))),
        task("b", "step", &["a"], &middle.replace("{name}", "b")),
        task("c", "step", &["a"], &middle.replace("{name}", "c")),
        task("d", "step", &["b", "c"], &format!("sleep 1; {}", out("d"))),
    ]
}

/// D was released and started only after B and C succeeded, by the log's
/// order; each of B and C after A succeeded.
async fn assert_diamond_order(installation: &Installation, plan: &Value) {
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| id_of(plan, name));
    let a_history = installation.history(a).await;
    let a_done = position_of(a, &a_history, "TaskSucceeded");
    let mut middle_done = Vec::new();
    for task_id in [b, c] {
        let history = installation.history(task_id).await;
        let released = position_of(task_id, &history, "TaskReleased");
        assert!(released > a_done, "{task_id} released before A succeeded");
        middle_done.push(position_of(task_id, &history, "TaskSucceeded"));
    }
    let d_history = installation.history(d).await;
    let last_middle = middle_done.into_iter().max().unwrap();
    for event_type in ["TaskReleased", "TaskStarted"] {
        let at = position_of(d, &d_history, event_type);
        assert!(
            at > last_middle,
            "D's {event_type} (position {at}) before B and C both succeeded ({last_middle})"
        );
    }
}

/// Every task of the plan view shows `succeeded`, and it counts `n` so.
fn assert_all_succeeded(plan: &Value, n: usize) {
    let tasks = plan["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), n, "{plan}");
    assert!(
        tasks.iter().all(|task| task["status"] == "succeeded"),
        "{plan}"
    );
    assert_eq!(plan["counts"], json!({ "succeeded": n }), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_mid_plan_is_replaced_and_the_plan_finishes() {
    let mut installation = Installation::start(true).await;
    let first = installation.start_process("runner-1", "runner").await;
    // B's and C's first attempts would run for a minute; their retries
    // finish in a second.
    let middle = "if [ \"$TASKLEDGER_ATTEMPT\" = 1 ]; then sleep 60; fi; sleep 1; \
                  echo {name} > \"$TASKLEDGER_OUT/{name}.txt\"";
    let (id, plan) = installation.submit_plan(diamond(middle)).await;
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| id_of(&plan, name));
    installation
        .wait_for(&[b, c], "running its first attempt", |status, attempts| {
            status == TaskStatus::Running && attempts == 1
        })
        .await;
    installation
        .wait_for(&[d], "waiting", |status, _| status == TaskStatus::Waiting)
        .await;

    // The runner dies holding B and C; another takes over once their
    // leases expire.
    installation.kill(first);
    installation.start_process("runner-2", "runner").await;

    let done = installation
        .plan_with_counts(&id, json!({ "succeeded": 4 }))
        .await;
    assert_all_succeeded(&done, 4);
    let a_history = installation.history(a).await;
    assert_eq!(
        types(&a_history),
        ["TaskSubmitted", "TaskStarted", "TaskSucceeded"]
    );
    assert_eq!(assert_ran_once_per_attempt(a, &a_history), ["runner-1"]);
    for task_id in [b, c] {
        let history = installation.history(task_id).await;
        assert_eq!(
            types(&history),
            [
                "TaskSubmitted",
                "TaskReleased",
                "TaskStarted",
                "TaskRetried",
                "TaskStarted",
                "TaskSucceeded"
            ],
            "{task_id}"
        );
        assert_eq!(
            assert_ran_once_per_attempt(task_id, &history),
            ["runner-1", "runner-2"],
            "{task_id}"
        );
        let reason = history
            .iter()
            .find_map(
                |recorded| match TaskEvent::from_recorded(recorded).unwrap() {
                    TaskEvent::Retried(retried) => Some(retried.reason),
                    _ => None,
                },
            )
            .unwrap();
        assert!(reason.contains("stopped responding"), "{task_id}: {reason}");
    }
    let d_history = installation.history(d).await;
    assert_eq!(
        types(&d_history),
        [
            "TaskSubmitted",
            "TaskReleased",
            "TaskStarted",
            "TaskSucceeded"
        ]
    );
    assert_eq!(assert_ran_once_per_attempt(d, &d_history), ["runner-2"]);
    assert_diamond_order(&installation, &plan).await;
    installation.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graph_follower_killed_mid_plan_resumes_from_its_checkpoint() {
    let mut installation = Installation::start(false).await;
    installation.start_process("runner-1", "runner").await;
    let follower = installation.start_process("graphs-1", "graphs").await;
    // B and C run until the test opens the gate.
    let gate = installation.processes.dir.join("gate");
    let middle = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; echo {{name}} > \"$TASKLEDGER_OUT/{{name}}.txt\"",
        gate.display()
    );
    let (id, plan) = installation.submit_plan(diamond(&middle)).await;
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| id_of(&plan, name));
    // Only the follower releases B and C (A had not succeeded when they
    // were submitted).
    installation
        .wait_for(&[b, c], "running", |status, _| {
            status == TaskStatus::Running
        })
        .await;

    // The follower dies; B and C succeed while no follower runs, so D
    // waits, with nothing but its submission in its stream.
    installation.kill(follower);
    std::fs::write(&gate, "").unwrap();
    installation
        .wait_for(&[b, c], "succeeded", |status, _| {
            status == TaskStatus::Succeeded
        })
        .await;
    let seen = installation
        .plan_with_counts(&id, json!({ "succeeded": 3, "waiting": 1 }))
        .await;
    assert_eq!(
        types(&installation.history(d).await),
        ["TaskSubmitted"],
        "D moved with no follower running: {seen}"
    );
    let before_restart = installation.store.head_position().await.unwrap();

    installation.start_process("graphs-2", "graphs").await;
    let done = installation
        .plan_with_counts(&id, json!({ "succeeded": 4 }))
        .await;
    assert_all_succeeded(&done, 4);
    for (task_id, expected) in [
        (a, &["TaskSubmitted", "TaskStarted", "TaskSucceeded"][..]),
        (
            b,
            &[
                "TaskSubmitted",
                "TaskReleased",
                "TaskStarted",
                "TaskSucceeded",
            ][..],
        ),
        (
            c,
            &[
                "TaskSubmitted",
                "TaskReleased",
                "TaskStarted",
                "TaskSucceeded",
            ][..],
        ),
        (
            d,
            &[
                "TaskSubmitted",
                "TaskReleased",
                "TaskStarted",
                "TaskSucceeded",
            ][..],
        ),
    ] {
        let history = installation.history(task_id).await;
        assert_eq!(types(&history), expected, "{task_id}");
        assert_eq!(
            assert_ran_once_per_attempt(task_id, &history),
            ["runner-1"],
            "{task_id}"
        );
    }
    // The restarted follower released D: after it started, once.
    let d_history = installation.history(d).await;
    let released = position_of(d, &d_history, "TaskReleased");
    assert!(
        released > before_restart,
        "D released at {released}, before the follower restarted ({before_restart})"
    );
    assert_diamond_order(&installation, &plan).await;
    installation.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parent_that_fails_once_releases_its_child_only_after_its_retry_succeeds() {
    let mut installation = Installation::start(true).await;
    installation.start_process("runner-1", "runner").await;
    let flaky = "if [ \"$TASKLEDGER_ATTEMPT\" = 1 ]; then exit 75; fi; \
                 echo p > \"$TASKLEDGER_OUT/p.txt\"";
    let (id, plan) = installation
        .submit_plan(vec![
            task("parent", "flaky", &[], flaky),
            task("child", "step", &["parent"], "echo child"),
        ])
        .await;
    let [parent, child] = ["parent", "child"].map(|name| id_of(&plan, name));
    let done = installation
        .plan_with_counts(&id, json!({ "succeeded": 2 }))
        .await;
    assert_all_succeeded(&done, 2);

    let parent_history = installation.history(parent).await;
    assert_eq!(
        types(&parent_history),
        [
            "TaskSubmitted",
            "TaskStarted",
            "TaskRetried",
            "TaskStarted",
            "TaskSucceeded"
        ]
    );
    assert_ran_once_per_attempt(parent, &parent_history);
    let exit_code = parent_history
        .iter()
        .find_map(
            |recorded| match TaskEvent::from_recorded(recorded).unwrap() {
                TaskEvent::Retried(retried) => Some(retried.exit_code),
                _ => None,
            },
        )
        .unwrap();
    assert_eq!(exit_code, Some(75));

    // Not canceled by the failed attempt, not released by it either.
    let child_history = installation.history(child).await;
    assert_eq!(
        types(&child_history),
        [
            "TaskSubmitted",
            "TaskReleased",
            "TaskStarted",
            "TaskSucceeded"
        ]
    );
    assert_ran_once_per_attempt(child, &child_history);
    let succeeded = position_of(parent, &parent_history, "TaskSucceeded");
    let released = position_of(child, &child_history, "TaskReleased");
    assert!(
        released > succeeded,
        "the child was released at {released}, before its parent succeeded at {succeeded}"
    );
    installation.finish().await;
}
