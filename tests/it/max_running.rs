//! A kind's `max_running` across runners, for real: two `taskledger`
//! runner processes (the binary, `TASKLEDGER_ROLES=runner`) with three
//! slots each share a kind limited to two; the relay runs here. How many
//! attempts overlapped is read from the log (each attempt from its
//! `TaskStarted` to the event that ended it), never timed. Also: a runner
//! killed holding both slots (its slots come back when its leases expire),
//! and the in-process intake (no broker) holding a limit too.
//!
//! Needs `scripts/services.sh` (PostgreSQL and RabbitMQ).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use taskledger::adapters::rabbitmq::Topology;
use taskledger::config::FileConfig;
use taskledger::submission::Submission;
use taskledger::workers::relay::{self, RelayOptions, RelayStatus};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::task::{TaskEvent, TaskId, TaskStatus};
use taskledger_events::testing::TestDatabase;
use taskledger_events::RecordedEvent;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::running::{amqp_url, BROKER};
use crate::support::kinds::local_sh_kind;
use crate::support::log::{task_history, wait_for_tasks, FINAL_EVENT_TYPES};
use crate::support::poll::eventually;
use crate::support::serve::ServeProcesses;

/// The lease TTL every runner here is given (seconds).
const LEASE_TTL_SECONDS: i64 = 3;

/// `licensed`: at most two at once across the runners; `free`: no limit.
/// Both run `sh -c` as child processes of the runner (`local`).
fn kinds() -> String {
    let licensed = local_sh_kind(
        "licensed",
        "timeout_seconds = 120\nmax_attempts = 3\nmax_running = 2\n",
    );
    let free = local_sh_kind("free", "timeout_seconds = 60\n");
    format!("{licensed}{free}")
}

/// A database, the relay (in this process) and runner processes.
struct Installation {
    database: TestDatabase,
    store: PgEventStore,
    config: Arc<FileConfig>,
    relay: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// Runner processes: the binary with only the runner role, each in its
    /// own process group (so a kill takes its attempts' child processes
    /// too, as a crash of its machine would).
    runners: ServeProcesses,
    _broker: tokio::sync::RwLockReadGuard<'static, ()>,
}

impl Installation {
    async fn start() -> Self {
        let broker = BROKER.read().await;
        let database = TestDatabase::create().await;
        let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
        let runners = ServeProcesses::prepare("tl-max-running", &kinds(), LEASE_TTL_SECONDS);
        let config = Arc::new(FileConfig::parse(&kinds()).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let (status, _) = watch::channel(RelayStatus::default());
        let relay = tokio::spawn(relay::run(
            store.clone(),
            RelayOptions {
                amqp_url: amqp_url(),
                topology: Topology::new(runners.prefix.clone()),
                kinds: config.kinds.keys().cloned().collect(),
            },
            status,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            database,
            store,
            config,
            relay: Some((stop, relay)),
            runners,
            _broker: broker,
        }
    }

    /// Starts runner process `name` with `slots` slots and waits until it
    /// is ready (connected to the database and the broker).
    async fn start_runner(&mut self, name: &str, slots: usize) -> usize {
        let data_dir = self.runners.dir.join(name);
        self.runners
            .start(
                &self.database.url,
                &format!("runner {name}"),
                name,
                "runner",
                slots,
                data_dir,
            )
            .await
    }

    /// Kills runner `index` and its attempts' processes at once (SIGKILL
    /// to its process group): nothing of it gets to clean up.
    fn kill_runner(&mut self, index: usize) {
        self.runners.kill(index);
    }

    async fn submit(&self, kind: &str, script: &str) -> TaskId {
        submit_script(&self.store, &self.config, kind, script).await
    }

    /// Waits until every task of `tasks` has a final status.
    async fn wait_all_final(&self, tasks: &[TaskId], within: Duration) {
        wait_for_tasks(
            &self.store,
            tasks,
            within,
            Duration::from_millis(100),
            |task| task.status.is_final(),
            |task_id, task| {
                format!(
                    "task {task_id} is still {:?} after {} attempts (runner logs in {})",
                    task.status,
                    task.attempts_started,
                    self.runners.dir.display()
                )
            },
        )
        .await;
    }

    async fn history(&self, task_id: TaskId) -> Vec<RecordedEvent> {
        task_history(&self.store, task_id).await
    }

    async fn finish(mut self) {
        self.runners.stop_all();
        if let Some((stop, handle)) = self.relay.take() {
            let _ = stop.send(());
            handle.await.unwrap();
        }
        self.runners.clean_up(&self.config).await;
        self.database.drop_database().await;
    }
}

/// Submits a task of `kind` running `script` straight to the log; its id.
async fn submit_script(
    store: &PgEventStore,
    config: &FileConfig,
    kind: &str,
    script: &str,
) -> TaskId {
    let Value::Object(params) = json!({ "script": script }) else {
        unreachable!()
    };
    let submission = Submission::new(kind, params, "tests");
    crate::running::submit_as_tests(store, config, submission).await
}

/// Task `task_id`'s events once one of them ends it (the log is read
/// every 100 ms for up to 60 s); `unended` is the message if none does.
async fn ended_history(store: &PgEventStore, task_id: TaskId, unended: &str) -> Vec<RecordedEvent> {
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let history = task_history(store, task_id).await;
            if history
                .iter()
                .any(|recorded| FINAL_EVENT_TYPES.contains(&recorded.event_type.as_str()))
            {
                Ok(history)
            } else {
                Err(unended.to_owned())
            }
        },
    )
    .await
}

/// One attempt as the log tells it: who ran it, from its `TaskStarted` to
/// the event that ended it (an outcome, or the retry recorded after its
/// runner died), by the log's own clock and order.
#[derive(Debug, Clone)]
struct Attempt {
    task_id: TaskId,
    worker_id: String,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
}

/// Every attempt of the task whose events are `history`.
fn attempts(task_id: TaskId, history: &[RecordedEvent]) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut open: Option<(String, DateTime<Utc>)> = None;
    for recorded in history {
        match TaskEvent::from_recorded(recorded).unwrap() {
            TaskEvent::Started(started) => {
                assert!(
                    open.is_none(),
                    "{task_id}: an attempt started inside another"
                );
                open = Some((started.worker_id, recorded.recorded_at));
            }
            TaskEvent::ProgressRecorded(_) => {}
            _ => {
                if let Some((worker_id, started_at)) = open.take() {
                    attempts.push(Attempt {
                        task_id,
                        worker_id,
                        started_at,
                        ended_at: recorded.recorded_at,
                    });
                }
            }
        }
    }
    assert!(open.is_none(), "{task_id}: an attempt never ended");
    attempts
}

/// The most of `attempts` that were running at one instant (an attempt
/// that ended at the instant another started does not overlap it).
fn most_at_once(attempts: &[Attempt]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = attempts
        .iter()
        .flat_map(|attempt| [(attempt.started_at, 1), (attempt.ended_at, -1)])
        .collect();
    // At one instant, ends before starts.
    edges.sort();
    let (mut now, mut most) = (0_i32, 0_i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap()
}

/// Asserts the task succeeded with exactly one terminal event.
fn assert_one_success(task_id: TaskId, history: &[RecordedEvent]) {
    let finals: Vec<&str> = history
        .iter()
        .map(|recorded| recorded.event_type.as_str())
        .filter(|event_type| FINAL_EVENT_TYPES.contains(event_type))
        .collect();
    assert_eq!(finals, ["TaskSucceeded"], "{task_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runner_processes_never_run_more_of_a_kind_than_its_max_running() {
    let mut installation = Installation::start().await;
    installation.start_runner("runner-a", 3).await;
    installation.start_runner("runner-b", 3).await;
    let mut licensed = Vec::new();
    for index in 0..8 {
        let script =
            format!("sleep 1; printf '{{\"index\": {index}}}' > \"$TASKLEDGER_OUT/result.json\"");
        licensed.push(installation.submit("licensed", &script).await);
    }
    // Submitted after them: other kinds must not wait behind a kind at its
    // limit.
    let mut free = Vec::new();
    for _ in 0..4 {
        free.push(installation.submit("free", "echo free").await);
    }
    let every: Vec<TaskId> = licensed.iter().chain(&free).copied().collect();
    installation
        .wait_all_final(&every, Duration::from_secs(120))
        .await;

    let mut licensed_attempts = Vec::new();
    let mut last_licensed_start = 0;
    for task_id in &licensed {
        let history = installation.history(*task_id).await;
        assert_one_success(*task_id, &history);
        let task_attempts = attempts(*task_id, &history);
        assert_eq!(task_attempts.len(), 1, "{task_id}: {task_attempts:?}");
        licensed_attempts.extend(task_attempts);
        let started = history
            .iter()
            .find(|recorded| recorded.event_type == "TaskStarted")
            .unwrap();
        last_licensed_start = last_licensed_start.max(started.global_position);
    }
    let by_runner =
        licensed_attempts
            .iter()
            .fold(BTreeMap::<&str, usize>::new(), |mut by_runner, attempt| {
                *by_runner.entry(attempt.worker_id.as_str()).or_default() += 1;
                by_runner
            });
    println!("licensed attempts by runner: {by_runner:?}");
    let most = most_at_once(&licensed_attempts);
    assert!(
        most <= 2,
        "{most} attempts of a kind with max_running = 2 ran at once: {licensed_attempts:#?}"
    );
    assert_eq!(most, 2, "the limit is two, not one: {licensed_attempts:#?}");
    for task_id in &free {
        let history = installation.history(*task_id).await;
        assert_one_success(*task_id, &history);
        let ended = history.last().unwrap().global_position;
        assert!(
            ended < last_licensed_start,
            "task {task_id} of an unlimited kind ended (position {ended}) only after the last \
             limited one started ({last_licensed_start}): it waited behind the limit"
        );
    }
    installation.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_runners_slots_come_back_when_its_leases_expire() {
    let mut installation = Installation::start().await;
    let first = installation.start_runner("runner-a", 3).await;
    // Runner A takes both slots of the kind with attempts that would run
    // for a minute (their retries finish at once).
    let long = "if [ \"$TASKLEDGER_ATTEMPT\" = 1 ]; then sleep 60; fi; \
                printf '{\"attempt\": %s}' \"$TASKLEDGER_ATTEMPT\" > \"$TASKLEDGER_OUT/result.json\"";
    let held = [
        installation.submit("licensed", long).await,
        installation.submit("licensed", long).await,
    ];
    wait_for_tasks(
        &installation.store,
        &held,
        Duration::from_secs(60),
        Duration::from_millis(50),
        |task| task.status == TaskStatus::Running,
        |task_id, task| format!("task {task_id} is {:?}", task.status),
    )
    .await;
    installation.start_runner("runner-b", 3).await;
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let script = "sleep 1; printf '{}' > \"$TASKLEDGER_OUT/result.json\"";
        waiting.push(installation.submit("licensed", script).await);
    }
    // A dies holding both slots: no attempt of the kind may start until
    // its leases expire; then B runs everything, two at a time.
    installation.kill_runner(first);

    let every: Vec<TaskId> = held.iter().chain(&waiting).copied().collect();
    installation
        .wait_all_final(&every, Duration::from_secs(120))
        .await;
    let mut by_a = Vec::new();
    let mut by_b = Vec::new();
    for task_id in &every {
        let history = installation.history(*task_id).await;
        assert_one_success(*task_id, &history);
        for attempt in attempts(*task_id, &history) {
            if attempt.worker_id == "runner-a" {
                by_a.push(attempt);
            } else {
                by_b.push(attempt);
            }
        }
    }
    for task_id in &held {
        let events: Vec<String> = installation
            .history(*task_id)
            .await
            .into_iter()
            .map(|recorded| recorded.event_type)
            .collect();
        assert_eq!(
            events,
            [
                "TaskSubmitted",
                "TaskStarted",
                "TaskRetried",
                "TaskStarted",
                "TaskSucceeded"
            ],
            "{task_id}"
        );
    }
    assert_eq!(
        by_a.iter()
            .map(|attempt| attempt.task_id)
            .collect::<Vec<_>>(),
        held,
        "runner A ran exactly the two attempts it held when it died"
    );
    assert_eq!(by_b.len(), 6, "{by_b:#?}");
    // A's slots stayed taken for a whole TTL after its last claim (its
    // leases were renewed after it), so no attempt started before that.
    let last_claim_by_a = by_a.iter().map(|attempt| attempt.started_at).max().unwrap();
    let first_by_b = by_b.iter().map(|attempt| attempt.started_at).min().unwrap();
    assert!(
        first_by_b > last_claim_by_a + chrono::Duration::seconds(LEASE_TTL_SECONDS),
        "runner B started an attempt at {first_by_b}, before runner A's leases (last claimed \
         {last_claim_by_a}) could have expired"
    );
    let most = most_at_once(&by_b);
    assert!(most <= 2, "{most} at once on runner B: {by_b:#?}");
    installation.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_broker_the_in_process_intake_holds_the_limit_too() {
    let kinds = local_sh_kind(
        "licensed-in-process",
        "timeout_seconds = 60\nmax_running = 1\n",
    );
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let app = TestApp::spawn_in_process(&kinds, &data_dir, |settings| {
        settings.runner_slots = 3;
    })
    .await;
    let store = app.store();
    let config = FileConfig::parse(&kinds).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(submit_script(&store, &config, "licensed-in-process", "sleep 0.5").await);
    }
    let mut every = Vec::new();
    for task_id in &tasks {
        let history =
            ended_history(&store, *task_id, &format!("task {task_id} has not ended")).await;
        assert_one_success(*task_id, &history);
        every.extend(attempts(*task_id, &history));
    }
    assert_eq!(most_at_once(&every), 1, "{every:#?}");
    // The waits are counted where an operator looks.
    let metrics = app.metrics().await;
    let at_limit = metrics
        .lines()
        .find(|line| {
            line.starts_with("taskledger_runner_kind_at_limit_total{kind=\"licensed-in-process\"}")
        })
        .unwrap_or_else(|| panic!("no at-limit count for the kind in:\n{metrics}"));
    assert!(!at_limit.ends_with(" 0"), "{at_limit}");
    // The last attempt's slot frees just after its outcome is in the log
    // (its lease is released first), so the gauge is read until it is 0.
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let metrics = app.metrics().await;
            if metrics.contains("taskledger_runner_kind_running{kind=\"licensed-in-process\"} 0") {
                Ok(())
            } else {
                Err(format!("a slot of the kind is still busy:\n{metrics}"))
            }
        },
    )
    .await;
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_a_dead_runner_left_hold_their_slots_until_they_expire() {
    let kinds = local_sh_kind(
        "licensed-leftover",
        "timeout_seconds = 60\nmax_running = 2\n",
    );
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let app = TestApp::spawn_in_process(&kinds, &data_dir, |settings| {
        settings.runner_slots = 3;
        settings.lease_ttl_seconds = 2;
    })
    .await;
    // A runner died holding both slots between taking its leases and
    // claiming their tasks: no job of theirs comes back to clean up, so
    // only the leases' age frees the slots.
    let left_at: DateTime<Utc> = app
        .row(
            "WITH left_behind AS (
                 INSERT INTO attempt_leases (task_id, attempt, worker_id, kind)
                 VALUES (gen_random_uuid(), 1, 'runner-dead', 'licensed-leftover'),
                        (gen_random_uuid(), 1, 'runner-dead', 'licensed-leftover')
                 RETURNING renewed_at)
             SELECT max(renewed_at) FROM left_behind",
        )
        .await
        .get(0);
    let store = app.store();
    let config = FileConfig::parse(&kinds).unwrap();
    let task_id = submit_script(&store, &config, "licensed-leftover", "true").await;
    let unended = format!("task {task_id} has not ended: the leases left behind were never freed");
    let history = ended_history(&store, task_id, &unended).await;
    assert_one_success(task_id, &history);
    let started = &attempts(task_id, &history)[0];
    assert!(
        started.started_at > left_at + chrono::Duration::seconds(2),
        "the task started at {}, while the leases left at {left_at} were fresh",
        started.started_at
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
