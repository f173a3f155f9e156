//! A Docker attempt's bind-mounted `/out` through the whole runner: the
//! per-attempt directory in the work directory, removed once the outcome
//! is recorded, swept at start-up when no runner holds its attempt; and
//! the archive path (`[docker] out = "archive"`) beside it.
//!
//! Needs `scripts/services.sh` (RabbitMQ, dockerd and the image
//! `taskledger-test-busybox:latest`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use taskledger::adapters::blobs::BlobStore;
use taskledger_events::task::{Task, TaskId, TaskStatus};
use uuid::Uuid;

use crate::running::Cluster;
use crate::support::poll::eventually;

/// Where a runner of `cluster` binds attempt `attempt` of `task_id`'s `/out`.
fn out_dir(cluster: &Cluster, task_id: TaskId, attempt: u32) -> PathBuf {
    cluster
        .blobs
        .join("work")
        .join("docker-out")
        .join(format!("taskledger-{task_id}-{attempt}"))
}

async fn wait_gone(dir: &std::path::Path) {
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            if dir.exists() {
                return Err(format!("{} is still there", dir.display()));
            }
            Ok(())
        },
    )
    .await;
}

async fn wait_there(dir: &std::path::Path) {
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            if dir.is_dir() {
                return Ok(());
            }
            Err(format!("{} did not appear", dir.display()))
        },
    )
    .await;
}

const WRITES: &str =
    "printf a > /out/a.txt; printf '{\"n\": 1}' > /out/result.json; mkdir /out/sub; : > /out/sub/x; echo out";

/// Asserts that `task` has what [`WRITES`] wrote: its result, and
/// `a.txt` (holding `a`), `result.json` and `stdout.log` as artifacts.
fn assert_written(cluster: &Cluster, task: &Task) {
    assert_eq!(task.result.as_ref().unwrap()["n"], 1);
    let names: BTreeSet<String> = task.artifacts.iter().map(|a| a.name.clone()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["a.txt", "result.json", "stdout.log"].map(str::to_owned))
    );
    let a = task
        .artifacts
        .iter()
        .find(|a| a.name == "a.txt")
        .expect("a.txt is an artifact");
    let bytes = std::fs::read(BlobStore::new(&cluster.blobs).path(&a.sha256).unwrap()).unwrap();
    assert_eq!(bytes, b"a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attempts_out_is_a_host_directory_until_its_outcome_is_recorded() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(1);
    let task_id = cluster.submit_script(&format!("{WRITES}; sleep 2")).await;
    let dir = out_dir(&cluster, task_id, 1);
    // While the container runs, what it writes is in the host directory.
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            if dir.join("result.json").is_file() {
                return Ok(());
            }
            Err(format!("{} holds no result.json", dir.display()))
        },
    )
    .await;
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(60))
        .await;
    assert_written(&cluster, &task);
    wait_gone(&dir).await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_out_archived_the_same_artifacts_come_back_and_no_directory_is_made() {
    let mut cluster = Cluster::start().await;
    cluster.bind_out = false;
    cluster.start_runner(1);
    let task_id = cluster.submit_script(WRITES).await;
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(60))
        .await;
    assert_written(&cluster, &task);
    assert!(!cluster.blobs.join("work").join("docker-out").exists());
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_start_up_sweep_removes_out_directories_no_runner_holds() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(1);
    // A finished attempt whose directory a crashed runner left (it died
    // after recording the outcome, before removing it).
    let finished = cluster.submit_script("true").await;
    cluster
        .wait_succeeded(finished, Duration::from_secs(60))
        .await;
    let finished_dir = out_dir(&cluster, finished, 1);
    wait_gone(&finished_dir).await;
    std::fs::create_dir_all(&finished_dir).unwrap();
    std::fs::write(finished_dir.join("left.txt"), b"left").unwrap();
    // A directory of a task this log does not hold: not ours to judge.
    let foreign_dir = out_dir(&cluster, TaskId(Uuid::new_v4()), 1);
    std::fs::create_dir_all(&foreign_dir).unwrap();
    // An attempt the first runner (one slot) is running now.
    let running = cluster.submit_script("sleep 60").await;
    cluster.wait_running(running).await;
    let running_dir = out_dir(&cluster, running, 1);
    wait_there(&running_dir).await;

    // A second runner on this host, sharing the work directory, sweeps
    // before it takes jobs; the task it then runs shows the sweep is over.
    cluster.start_runner(1);
    let after = cluster.submit_script("true").await;
    let task = cluster.wait_succeeded(after, Duration::from_secs(60)).await;
    assert_eq!(task.worker_id.as_deref(), Some("runner-2"));
    assert!(
        !finished_dir.exists(),
        "the finished attempt's directory was swept"
    );
    assert!(
        running_dir.is_dir(),
        "the running attempt's directory was left alone"
    );
    assert!(
        foreign_dir.is_dir(),
        "another log's directory was left alone"
    );
    assert_eq!(cluster.task(running).await.status, TaskStatus::Running);

    cluster.cancel(running, None).await;
    cluster.wait_final(running, Duration::from_secs(30)).await;
    wait_gone(&running_dir).await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_runners_out_directory_goes_with_its_retry() {
    let mut cluster = Cluster::start().await;
    let first = cluster.start_runner(1);
    let task_id = cluster
        .submit_script(
            "printf x > /out/x.txt; sleep 4; printf '{\"done\": true}' > /out/result.json",
        )
        .await;
    cluster.wait_running(task_id).await;
    let first_dir = out_dir(&cluster, task_id, 1);
    wait_there(&first_dir).await;
    cluster.kill_first_runner(&first).await;
    cluster.start_runner(1);
    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(90))
        .await;
    assert_eq!(task.attempts_started, 2);
    assert!(!first_dir.exists(), "the dead runner's /out was removed");
    wait_gone(&out_dir(&cluster, task_id, 2)).await;
    cluster.finish().await;
}
