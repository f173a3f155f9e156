//! A kind's retry policy, for real: the `flaky` kind of [`Cluster`] retries
//! exit code 75 with a backoff of 2 s, then 3 s (no jitter). The gaps are
//! measured from the events' own instants, never by sleeping.
//!
//! Needs `scripts/services.sh` (RabbitMQ, dockerd and the image
//! `taskledger-test-busybox:latest`).

use std::time::Duration;

use serde_json::json;
use taskledger_events::task::{Task, TaskEvent, TaskId, TaskStatus};

use crate::running::Cluster;
use crate::support::log::task_events;

/// Exits 75 ("try again") on attempts before `succeeds_on`, then succeeds.
fn flaky_script(succeeds_on: u32) -> String {
    format!(
        "if [ \"$TASKLEDGER_ATTEMPT\" -lt {succeeds_on} ]; then \
           echo \"attempt $TASKLEDGER_ATTEMPT: try again\" >&2; exit 75; \
         fi; \
         printf '{{\"attempt\": %s}}' \"$TASKLEDGER_ATTEMPT\" > /out/result.json"
    )
}

/// For each retry: the backoff it chose (due time − failure) and the gap
/// until the next attempt started, as the log records them.
fn retry_gaps(events: &[TaskEvent]) -> Vec<(chrono::Duration, chrono::Duration)> {
    let mut gaps = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let TaskEvent::Retried(retried) = event else {
            continue;
        };
        let due = retried
            .next_attempt_at
            .expect("a retry under a policy records its due time");
        let next_start = events[index..]
            .iter()
            .find_map(|event| match event {
                TaskEvent::Started(started) => Some(started.started_at),
                _ => None,
            })
            .expect("an attempt follows the retry");
        assert!(
            next_start >= due,
            "attempt {} started at {next_start}, before its due time {due}",
            retried.attempt + 1
        );
        gaps.push((due - retried.retried_at, next_start - retried.retried_at));
    }
    gaps
}

/// Task `task_id` once its first attempt failed and its retry waits: queued
/// again, one attempt started.
async fn waiting_for_second_attempt(cluster: &Cluster, task_id: TaskId) -> Task {
    cluster
        .wait_for(
            task_id,
            "waiting for its second attempt",
            Duration::from_secs(60),
            |task| task.attempts_started == 1 && task.status == TaskStatus::Queued,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flaky_task_is_retried_after_its_backoff_and_succeeds() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(2);
    let task_id = cluster
        .submit("flaky", json!({ "script": flaky_script(3) }), None)
        .await;

    // While the first retry waits, the task says when it is due.
    let waiting = waiting_for_second_attempt(&cluster, task_id).await;
    let due = waiting
        .next_attempt_at
        .expect("a waiting task shows its due time");
    assert!(
        waiting.error.as_deref().unwrap_or("").contains("code 75"),
        "{:?}",
        waiting.error
    );

    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(90))
        .await;
    assert_eq!(task.attempts_started, 3);
    assert_eq!(
        task.result,
        Some(json!({"attempt": 3}).as_object().unwrap().clone())
    );
    assert_eq!(task.next_attempt_at, None);
    assert!(task.started_at.unwrap() >= due);
    cluster
        .assert_history(
            task_id,
            &[
                "TaskSubmitted",
                "TaskStarted",
                "TaskRetried",
                "TaskStarted",
                "TaskRetried",
                "TaskStarted",
                "TaskSucceeded",
            ],
        )
        .await;
    let gaps = retry_gaps(&task_events(&cluster.store, task_id).await);
    let seconds = |duration: chrono::Duration| duration.num_microseconds().unwrap() as f64 / 1e6;
    assert_eq!(gaps.len(), 2);
    // 2 s, then min(3 s, 2 s × 2) = 3 s; no jitter.
    for ((backoff, gap), expected) in gaps.into_iter().zip([2.0, 3.0]) {
        assert!(
            (seconds(backoff) - expected).abs() < 0.01,
            "backoff {backoff} (expected {expected} s)"
        );
        assert!(
            seconds(gap) >= expected,
            "the next attempt started {gap} after the failure, within the {expected} s backoff"
        );
    }
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exit_code_the_policy_does_not_list_fails_at_once() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(1);
    let task_id = cluster
        .submit(
            "flaky",
            json!({ "script": "echo broken >&2; exit 3" }),
            None,
        )
        .await;
    let task = cluster.wait_final(task_id, Duration::from_secs(60)).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.exit_code, Some(3));
    assert_eq!(task.attempts_started, 1, "exit code 3 is not retried");
    assert_eq!(task.next_attempt_at, None);
    cluster
        .assert_history(task_id, &["TaskSubmitted", "TaskStarted", "TaskFailed"])
        .await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_retry_survives_a_restart_of_the_relay_and_the_runner() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(1);
    let task_id = cluster
        .submit("flaky", json!({ "script": flaky_script(2) }), None)
        .await;
    let waiting = waiting_for_second_attempt(&cluster, task_id).await;
    let due = waiting.next_attempt_at.expect("a due time");

    // Every process stops while the retry waits; new ones start.
    for (_, stop, handle) in cluster.runners.drain(..) {
        let _ = stop.send(());
        handle.await.unwrap();
    }
    cluster.stop_relay().await;
    assert!(
        chrono::Utc::now() < due,
        "the processes stopped only after the retry was due ({due}); the test proves nothing"
    );
    cluster.start_relay();
    let second = cluster.start_runner(1);

    let task = cluster
        .wait_succeeded(task_id, Duration::from_secs(60))
        .await;
    assert_eq!(task.attempts_started, 2);
    assert_eq!(task.worker_id.as_deref(), Some(second.as_str()));
    assert!(task.started_at.unwrap() >= due);
    let gaps = retry_gaps(&task_events(&cluster.store, task_id).await);
    assert_eq!(gaps.len(), 1);
    cluster.finish().await;
}
