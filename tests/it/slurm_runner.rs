//! Tasks of an `executor = "slurm"` kind run for real: the relay publishes
//! their jobs to RabbitMQ, runners take them and run them as batch jobs on
//! the one-node Slurm cluster of scripts/slurm.sh (partition `debug`).
//!
//! Needs `scripts/services.sh` (RabbitMQ, PostgreSQL, Slurm).

use std::time::Duration;

use serde_json::{json, Map, Value};
use taskledger_events::task::{Task, TaskId, TaskStatus};
use tokio::sync::{RwLock, RwLockReadGuard};
use uuid::Uuid;

use crate::running::{close_connection, Cluster};
use crate::support::kinds::sh_kind;
use crate::support::log::terminal_events;
use crate::support::poll::eventually;

/// One test restarts `slurmctld`; the others hold this for reading so the
/// restart happens while none of them runs.
static CONTROLLER: RwLock<()> = RwLock::const_new(());

fn partition() -> String {
    std::env::var("TASKLEDGER_SLURM_PARTITION").unwrap_or_else(|_| "debug".into())
}

fn kinds() -> String {
    let partition = partition();
    let hpc = sh_kind(
        "hpc",
        &format!(
            "executor = \"slurm\"\ntimeout_seconds = 120\nmax_attempts = 1\nlog_limit_bytes = 4096\n\
             slurm = {{ partition = \"{partition}\", memory_mb = 64, cpus = 1 }}\n"
        ),
    );
    format!(
        r#"{hpc}
[kinds.nowhere]
executor = "slurm"
command = ["true"]
max_attempts = 3
slurm = {{ partition = "tl-no-such-partition" }}
"#
    )
}

/// A script that writes a result and a file into the job's out directory.
const WRITES_RESULT: &str = r#"echo "hello from slurm"; echo '{"answer": 42}' > "$TASKLEDGER_OUT/result.json"; echo data > "$TASKLEDGER_OUT/report.txt""#;

async fn submit(cluster: &Cluster, script: &str, timeout_seconds: Option<u64>) -> TaskId {
    cluster
        .submit("hpc", json!({ "script": script }), timeout_seconds)
        .await
}

/// The ids of the jobs Slurm has under the attempt's name.
fn jobs_named(task_id: TaskId, attempt: u32) -> Vec<String> {
    let name = format!("tl-{task_id}-{attempt}");
    let output = std::process::Command::new("squeue")
        .args(["--noheader", "--me", "--states=all", "--name", &name])
        .args(["--format=%i %T"])
        .output()
        .expect("squeue runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The one job of the attempt: its id and Slurm state.
fn the_job(task_id: TaskId, attempt: u32) -> (String, String) {
    let jobs = jobs_named(task_id, attempt);
    assert_eq!(jobs.len(), 1, "one job for attempt {attempt}: {jobs:?}");
    let (id, state) = jobs[0].split_once(' ').unwrap();
    (id.to_owned(), state.to_owned())
}

async fn wait_job_running(cluster: &Cluster, task_id: TaskId) -> Task {
    cluster
        .wait_for(
            task_id,
            "a running Slurm job",
            Duration::from_secs(90),
            |task| {
                task.executor_job
                    .as_ref()
                    .is_some_and(|job| job.running_at.is_some())
            },
        )
        .await
}

fn count(history: &[String], event_type: &str) -> usize {
    history.iter().filter(|event| *event == event_type).count()
}

/// Submits a job that takes the whole node for 300 s (sbatch must take
/// it); its id.
fn submit_blocker() -> String {
    let blocker = std::process::Command::new("sbatch")
        .args(["--parsable", "--exclusive", "--job-name=tl-test-blocker"])
        .arg(format!("--partition={}", partition()))
        .args(["--output=/dev/null", "--wrap=sleep 300"])
        .output()
        .unwrap();
    assert!(blocker.status.success(), "{blocker:?}");
    String::from_utf8_lossy(&blocker.stdout).trim().to_owned()
}

/// Waits until Slurm shows attempt 1's job of `task_id` CANCELLED.
async fn wait_job_cancelled(task_id: TaskId, within: Duration) {
    eventually(within, Duration::from_millis(200), || async {
        match the_job(task_id, 1) {
            (_, state) if state == "CANCELLED" => Ok(()),
            other => Err(format!("the job is {other:?}")),
        }
    })
    .await;
}

/// Asserts that Slurm completed attempt 1's job of `task_id`, the one job
/// submitted for it, and that the task ended once; its event types.
async fn assert_one_completed_job(cluster: &Cluster, task_id: TaskId) -> Vec<String> {
    assert_eq!(the_job(task_id, 1).1, "COMPLETED");
    let history = cluster.history(task_id).await;
    assert_eq!(count(&history, "TaskJobSubmitted"), 1);
    assert_eq!(terminal_events(&history), 1);
    history
}

/// The result [`WRITES_RESULT`] writes.
fn written_result() -> Option<Map<String, Value>> {
    Some(json!({"answer": 42}).as_object().unwrap().clone())
}

/// A cluster of this file's kinds, and a hold on [`CONTROLLER`] that lets
/// no test restart `slurmctld` while it lives.
async fn start_cluster() -> (RwLockReadGuard<'static, ()>, Cluster) {
    let controller = CONTROLLER.read().await;
    (controller, Cluster::start_with_kinds(&kinds()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slurm_job_succeeds_with_its_out_files_as_artifacts_and_its_result() {
    let (_controller, mut cluster) = start_cluster().await;
    cluster.start_runner(2);
    let task_id = submit(&cluster, WRITES_RESULT, None).await;
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(90))
        .await;
    assert_eq!(task.result, written_result());
    let names: Vec<&str> = task.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["report.txt", "result.json", "stdout.log"]);
    let log = task
        .artifacts
        .iter()
        .find(|a| a.name == "stdout.log")
        .unwrap();
    let blobs = taskledger::adapters::blobs::BlobStore::new(&cluster.blobs);
    let bytes = std::fs::read(blobs.path(&log.sha256).unwrap()).unwrap();
    assert_eq!(String::from_utf8_lossy(&bytes), "hello from slurm\n");
    // The job id is recorded, and it is the one job of that name.
    let (id, state) = the_job(task_id, 1);
    let job = task.executor_job.clone().unwrap();
    assert_eq!(
        (job.executor.as_str(), job.job_id.as_str()),
        ("slurm", id.as_str())
    );
    assert_eq!(state, "COMPLETED");
    let history = cluster.history(task_id).await;
    assert_eq!(
        history[..3],
        ["TaskSubmitted", "TaskStarted", "TaskJobSubmitted"]
    );
    assert_eq!(history.last().map(String::as_str), Some("TaskSucceeded"));
    assert_eq!(terminal_events(&history), 1);
    // The job's working directory is gone once the outcome is recorded.
    assert!(!cluster
        .blobs
        .join("work/slurm")
        .join(format!("tl-{task_id}-1"))
        .exists());
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_waiting_in_slurm_shows_queued_with_its_job_id_then_running() {
    let (_controller, mut cluster) = start_cluster().await;
    // A job that takes the whole node keeps the task's job PENDING.
    let blocker = submit_blocker();
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let state = std::process::Command::new("squeue")
                .args([
                    "--noheader",
                    "--states=all",
                    "--format=%T",
                    "--jobs",
                    &blocker,
                ])
                .output()
                .unwrap();
            match String::from_utf8_lossy(&state.stdout).trim() {
                "RUNNING" => Ok(()),
                other => Err(format!("the blocking job is {other:?}")),
            }
        },
    )
    .await;
    cluster.start_runner(1);
    // It runs for a few polls, so that the runner sees it running.
    let task_id = submit(&cluster, &format!("sleep 3; {WRITES_RESULT}"), None).await;
    let waiting = cluster
        .wait_for(
            task_id,
            "a recorded Slurm job",
            Duration::from_secs(60),
            |task| task.executor_job.is_some(),
        )
        .await;
    let (id, state) = the_job(task_id, 1);
    assert_eq!(state, "PENDING");
    assert_eq!(waiting.status, TaskStatus::Running, "claimed by its runner");
    assert_eq!(waiting.shown_status(), TaskStatus::Queued);
    let view = taskledger::http::tasks::TaskView::from_task(&waiting, 0, 0);
    let view = serde_json::to_value(&view).unwrap();
    assert_eq!(view["status"], "queued");
    assert_eq!(
        view["executor_job"],
        json!({"executor": "slurm", "job_id": id})
    );
    std::process::Command::new("scancel")
        .arg(&blocker)
        .status()
        .unwrap();
    cluster
        .wait_succeeded(task_id, Duration::from_secs(90))
        .await;
    let history = cluster.history(task_id).await;
    assert_eq!(
        history,
        [
            "TaskSubmitted",
            "TaskStarted",
            "TaskJobSubmitted",
            "TaskJobRunning",
            "TaskSucceeded"
        ]
    );
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slurm_job_that_exits_non_zero_fails_the_task_with_its_exit_code() {
    let (_controller, mut cluster) = start_cluster().await;
    cluster.start_runner(1);
    let task_id = submit(&cluster, "echo oops; exit 3", None).await;
    let task = cluster.wait_final(task_id, Duration::from_secs(90)).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.exit_code, Some(3));
    assert!(
        task.error
            .as_deref()
            .unwrap()
            .contains("exited with code 3"),
        "{:?}",
        task.error
    );
    assert_eq!(
        task.artifacts
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["stdout.log"]
    );
    assert_eq!(the_job(task_id, 1).1, "FAILED");
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slurm_job_past_the_tasks_timeout_is_cancelled_and_the_task_timed_out() {
    let (_controller, mut cluster) = start_cluster().await;
    cluster.start_runner(1);
    let task_id = submit(&cluster, "sleep 120", Some(2)).await;
    let task = cluster.wait_final(task_id, Duration::from_secs(90)).await;
    assert_eq!(task.status, TaskStatus::TimedOut, "{:?}", task.error);
    // The runner stopped the job: it does not run on.
    wait_job_cancelled(task_id, Duration::from_secs(30)).await;
    assert_eq!(terminal_events(&cluster.history(task_id).await), 1);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_canceled_in_taskledger_has_its_slurm_job_cancelled() {
    let (_controller, mut cluster) = start_cluster().await;
    cluster.start_runner(1);
    let task_id = submit(&cluster, "sleep 120", None).await;
    wait_job_running(&cluster, task_id).await;
    cluster.cancel(task_id, Some("not needed")).await;
    wait_job_cancelled(task_id, Duration::from_secs(30)).await;
    let task = cluster.task(task_id).await;
    assert_eq!(task.status, TaskStatus::Canceled);
    let history = cluster.history(task_id).await;
    assert_eq!(history.last().map(String::as_str), Some("TaskCanceled"));
    assert_eq!(terminal_events(&history), 1);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_mid_job_is_replaced_by_one_that_adopts_the_job() {
    let (_controller, mut cluster) = start_cluster().await;
    let first = cluster.start_runner(1);
    let task_id = submit(&cluster, &format!("sleep 6; {WRITES_RESULT}"), None).await;
    let running = wait_job_running(&cluster, task_id).await;
    // The first runner dies: its work stops and the broker drops it.
    cluster.kill_first_runner(&first).await;
    cluster.start_runner(1);
    // max_attempts = 1: a retry would have failed the task.
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(90))
        .await;
    assert_eq!(task.attempts_started, 1);
    assert_eq!(task.result, written_result());
    assert_eq!(
        task.executor_job.unwrap().job_id,
        running.executor_job.unwrap().job_id
    );
    let history = assert_one_completed_job(&cluster, task_id).await;
    assert_eq!(count(&history, "TaskStarted"), 1);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_submit_each_task_exactly_once() {
    let (_controller, mut cluster) = start_cluster().await;
    cluster.start_runner(2);
    cluster.start_runner(2);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        tasks.push(submit(&cluster, WRITES_RESULT, None).await);
    }
    for task_id in &tasks {
        cluster
            .wait_succeeded(*task_id, Duration::from_secs(120))
            .await;
        assert_one_completed_job(&cluster, *task_id).await;
    }
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submission_slurm_refuses_fails_the_task_with_slurms_message_and_no_retry() {
    let (_controller, mut cluster) = start_cluster().await;
    cluster.start_runner(1);
    let task_id = cluster.submit("nowhere", json!({}), None).await;
    let task = cluster.wait_final(task_id, Duration::from_secs(60)).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let error = task.error.unwrap();
    assert!(
        error.contains("Slurm refused the job") && error.contains("partition"),
        "{error}"
    );
    // max_attempts = 3, but a refusal is not retried.
    assert_eq!(task.attempts_started, 1);
    cluster.finish().await;
}

/// Stops `slurmctld` (its pid file's process) and starts it again as
/// scripts/slurm.sh does.
async fn restart_slurmctld() {
    let pid = std::fs::read_to_string("/var/run/slurmctld.pid").unwrap();
    let pid = pid.trim().to_owned();
    assert!(std::process::Command::new("kill")
        .arg(&pid)
        .status()
        .unwrap()
        .success());
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                Err(format!("slurmctld {pid} still runs"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let _ = std::fs::remove_file("/var/run/slurmctld.pid");
    assert!(std::process::Command::new("slurmctld")
        .status()
        .unwrap()
        .success());
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let ping = std::process::Command::new("scontrol")
                .arg("ping")
                .output()
                .unwrap();
            if String::from_utf8_lossy(&ping.stdout).contains("is UP") {
                Ok(())
            } else {
                Err("slurmctld does not answer yet".to_owned())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slurmctld_restart_mid_run_loses_nothing() {
    let _controller = CONTROLLER.write().await;
    let mut cluster = Cluster::start_with_kinds(&kinds()).await;
    cluster.start_runner(1);
    let task_id = submit(&cluster, &format!("sleep 8; {WRITES_RESULT}"), None).await;
    wait_job_running(&cluster, task_id).await;
    restart_slurmctld().await;
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(120))
        .await;
    assert_eq!(task.result, written_result());
    assert_one_completed_job(&cluster, task_id).await;
    cluster.finish().await;
}

/// What start-up says of the configuration file `text` for a process with
/// `roles`: `None` when it starts.
async fn start_up_refusal(
    text: &str,
    roles: Vec<taskledger::config::settings::Role>,
) -> Option<(String, std::path::PathBuf)> {
    let path = std::env::temp_dir().join(format!("tl-slurm-config-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    let database = taskledger_events::testing::TestDatabase::create().await;
    let mut settings = taskledger::config::settings::Settings::for_database(database.url.clone());
    settings.config = Some(path.clone());
    settings.roles = roles;
    let (_stop, signal) = taskledger::service::shutdown::channel();
    let refusal = match taskledger::service::startup::Application::build(&settings, signal).await {
        Ok(_) => None,
        Err(error) => Some((format!("{error:#}"), path.clone())),
    };
    let _ = std::fs::remove_file(&path);
    database.drop_database().await;
    refusal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_refuses_to_start_with_a_partition_slurm_does_not_have_or_an_unknown_executor() {
    use taskledger::config::settings::Role;
    let nowhere = "[kinds.hpc]\nexecutor = \"slurm\"\ncommand = [\"true\"]\n\
                   slurm = { partition = \"tl-no-such-partition\" }\n";
    let (error, path) = start_up_refusal(nowhere, vec![Role::Runner])
        .await
        .expect("refused");
    assert!(
        error.contains(&path.display().to_string())
            && error.contains("task kind \"hpc\"")
            && error.contains("slurm.partition \"tl-no-such-partition\""),
        "{error}"
    );
    // A process that runs no tasks does not need the cluster.
    assert!(start_up_refusal(nowhere, vec![Role::Projector])
        .await
        .is_none());
    // The cluster's own partition starts.
    let debug = format!(
        "[kinds.hpc]\nexecutor = \"slurm\"\ncommand = [\"true\"]\nslurm = {{ partition = \"{}\" }}\n",
        partition()
    );
    assert!(start_up_refusal(&debug, vec![Role::Runner]).await.is_none());
    let unknown = "[kinds.k8s]\nexecutor = \"kubernetes\"\ncommand = [\"true\"]\n";
    let (error, path) = start_up_refusal(unknown, vec![Role::Runner])
        .await
        .expect("refused");
    assert!(
        error.contains(&path.display().to_string())
            && error.contains("task kind \"k8s\"")
            && error.contains("executor must be")
            && error.contains("kubernetes"),
        "{error}"
    );
}

/// Submits an `hpc-node` task (a job that takes the whole node) of
/// `priority` that appends `label` to `order`.
async fn submit_ranked(
    cluster: &Cluster,
    order: &std::path::Path,
    label: &str,
    priority: i32,
) -> TaskId {
    use taskledger::submission::Submission;
    let script = format!("echo {label} >> {}", order.display());
    let serde_json::Value::Object(params) = json!({ "script": script }) else {
        unreachable!()
    };
    let submission = Submission {
        priority: Some(priority),
        ..Submission::new("hpc-node", params, "tests")
    };
    crate::running::submit_as_tests(&cluster.store, &cluster.config, submission).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_node_busy_a_higher_priority_task_submitted_later_starts_first() {
    let _controller = CONTROLLER.read().await;
    let cpus = std::process::Command::new("sinfo")
        .args(["--noheader", "--format=%c"])
        .arg(format!("--partition={}", partition()))
        .output()
        .unwrap();
    let cpus = String::from_utf8_lossy(&cpus.stdout).trim().to_owned();
    let hpc_node = sh_kind(
        "hpc-node",
        &format!(
            "executor = \"slurm\"\nmax_attempts = 1\n\
             slurm = {{ partition = \"{}\", memory_mb = 64, cpus = {cpus} }}\n",
            partition()
        ),
    );
    let kinds = format!("{}\n{hpc_node}", kinds());
    let mut cluster = Cluster::start_with_kinds(&kinds).await;
    let order = cluster.blobs.join("order.txt");
    std::fs::create_dir_all(&cluster.blobs).unwrap();
    // The whole node is taken, so both jobs wait, and each needs the whole
    // node, so they run one after the other.
    let blocker = submit_blocker();
    cluster.start_runner(2);
    let low = submit_ranked(&cluster, &order, "low", -1000).await;
    let recorded = |task: &Task| task.executor_job.is_some();
    cluster
        .wait_for(low, "a recorded job", Duration::from_secs(60), recorded)
        .await;
    let high = submit_ranked(&cluster, &order, "high", 1000).await;
    cluster
        .wait_for(high, "a recorded job", Duration::from_secs(60), recorded)
        .await;
    assert_eq!(the_job(low, 1).1, "PENDING");
    assert_eq!(the_job(high, 1).1, "PENDING");
    std::process::Command::new("scancel")
        .arg(&blocker)
        .status()
        .unwrap();
    for task_id in [low, high] {
        cluster
            .wait_succeeded(task_id, Duration::from_secs(90))
            .await;
    }
    assert_eq!(std::fs::read_to_string(&order).unwrap(), "high\nlow\n");
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_canceled_while_no_runner_watched_its_job_has_the_job_cancelled() {
    let (_controller, mut cluster) = start_cluster().await;
    let first = cluster.start_runner(1);
    let task_id = submit(&cluster, "sleep 120", None).await;
    wait_job_running(&cluster, task_id).await;
    cluster.abort_first_runner().await;
    cluster.cancel(task_id, None).await;
    close_connection(&format!("taskledger-runner-{first}")).await;
    assert_eq!(the_job(task_id, 1).1, "RUNNING");
    // The next runner gets the job back, sees the task canceled and stops
    // the job it left.
    cluster.start_runner(1);
    wait_job_cancelled(task_id, Duration::from_secs(60)).await;
    let history = cluster.history(task_id).await;
    assert_eq!(history.last().map(String::as_str), Some("TaskCanceled"));
    assert_eq!(terminal_events(&history), 1);
    cluster.finish().await;
}
