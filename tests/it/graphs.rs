//! Task graphs for real: tasks submitted with `depends_on` wait until their
//! parents succeeded, are canceled (naming the parent) when one does not,
//! read their parents' artifacts under `/in/{parent}/`, and a graph
//! completes however its order of events and its processes' deaths fall.
//! Start times are read from the log, never timed.
//!
//! Needs `scripts/services.sh` (PostgreSQL, RabbitMQ, dockerd and the image
//! `taskledger-test-busybox:latest`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use taskledger::config::settings::Role;
use taskledger::submission::Submission;
use taskledger::workers::graphs;
use taskledger_events::apikey::Scope;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{
    OnParentFailure, SubmitTask, TaskCommand, TaskEvent, TaskId, TaskStatus,
};
use taskledger_events::tenant::TenantName;
use taskledger_events::{Direction, EventStore, RecordedEvent};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::running::{submit_as_tests, Cluster};
use crate::support::http::{send, send_text};
use crate::support::log::execute_on_task;
use crate::support::poll::eventually;

/// The graph follower, in this process, until it is stopped.
struct Follower {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Follower {
    fn start(store: &PgEventStore) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(graphs::run(store.clone(), async move {
            let _ = stopped.await;
        }));
        Self { stop, handle }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap();
    }
}

/// Submits a `sh` task running `script` that depends on `parents`.
async fn submit_child(
    cluster: &Cluster,
    script: &str,
    parents: &[TaskId],
    on_parent_failure: OnParentFailure,
) -> TaskId {
    let Value::Object(params) = json!({ "script": script }) else {
        unreachable!()
    };
    let submission = Submission {
        depends_on: parents.to_vec(),
        on_parent_failure,
        ..Submission::new("sh", params, "tests")
    };
    submit_as_tests(&cluster.store, &cluster.config, submission).await
}

async fn history(store: &PgEventStore, task_id: TaskId) -> Vec<RecordedEvent> {
    store
        .read_stream(&task_id.stream_id(), 1, Direction::Forward, 1000)
        .await
        .unwrap()
}

async fn events(store: &PgEventStore, task_id: TaskId) -> Vec<TaskEvent> {
    history(store, task_id)
        .await
        .iter()
        .map(|recorded| TaskEvent::from_recorded(recorded).unwrap())
        .collect()
}

/// When the task's (only) attempt started and ended, by the log.
async fn span(store: &PgEventStore, task_id: TaskId) -> (DateTime<Utc>, DateTime<Utc>) {
    let events = events(store, task_id).await;
    let started: Vec<DateTime<Utc>> = events
        .iter()
        .filter_map(|event| match event {
            TaskEvent::Started(started) => Some(started.started_at),
            _ => None,
        })
        .collect();
    let ended = events.iter().find_map(|event| match event {
        TaskEvent::Succeeded(succeeded) => Some(succeeded.finished_at),
        _ => None,
    });
    assert_eq!(started.len(), 1, "task {task_id} ran once: {events:?}");
    (started[0], ended.expect("it succeeded"))
}

fn count(events: &[TaskEvent], what: fn(&TaskEvent) -> bool) -> usize {
    events.iter().filter(|event| what(event)).count()
}

#[tokio::test]
async fn a_diamond_runs_in_order_and_each_child_reads_its_parents_artifacts() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(3);
    let follower = Follower::start(&cluster.store);

    let a = cluster
        .submit_script("sleep 1; echo from-a > /out/a.txt")
        .await;
    // B and C read A's artifact (read-only) and pass on what they read.
    let reads_a = format!(
        "test \"$(cat /in/{a}/a.txt)\" = from-a && ! touch /in/{a}/a.txt 2>/dev/null \
         && ! touch /in/{a}/new 2>/dev/null && cat /in/{a}/a.txt > /out/"
    );
    let b = submit_child(
        &cluster,
        &format!("{reads_a}b.txt"),
        &[a],
        OnParentFailure::Cancel,
    )
    .await;
    let c = submit_child(
        &cluster,
        &format!("sleep 1; {reads_a}c.txt"),
        &[a],
        OnParentFailure::Cancel,
    )
    .await;
    let d = submit_child(
        &cluster,
        &format!("test \"$(cat /in/{b}/b.txt /in/{c}/c.txt)\" = \"$(printf 'from-a\\nfrom-a')\""),
        &[b, c],
        OnParentFailure::Cancel,
    )
    .await;
    assert_eq!(cluster.task(d).await.status, TaskStatus::Waiting);
    assert_eq!(cluster.task(d).await.depends_on, vec![b, c]);

    cluster.wait_succeeded(d, Duration::from_secs(90)).await;
    for task in [a, b, c] {
        assert_eq!(cluster.task(task).await.status, TaskStatus::Succeeded);
    }
    let (_, a_ended) = span(&cluster.store, a).await;
    let (b_started, b_ended) = span(&cluster.store, b).await;
    let (c_started, c_ended) = span(&cluster.store, c).await;
    let (d_started, _) = span(&cluster.store, d).await;
    assert!(b_started >= a_ended && c_started >= a_ended);
    assert!(d_started >= b_ended && d_started >= c_ended);
    // Released once each; the job kept the child's priority path (one
    // attempt each, never started before its release).
    for child in [b, c, d] {
        let events = events(&cluster.store, child).await;
        assert_eq!(
            count(&events, |event| matches!(event, TaskEvent::Released(_))),
            1
        );
        let released = events
            .iter()
            .position(|event| matches!(event, TaskEvent::Released(_)))
            .unwrap();
        let started = events
            .iter()
            .position(|event| matches!(event, TaskEvent::Started(_)))
            .unwrap();
        assert!(released < started, "{events:?}");
    }
    follower.stop().await;
    cluster.finish().await;
}

#[tokio::test]
async fn a_failing_parent_cancels_its_dependents_transitively_unless_they_run_anyway() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(2);
    let follower = Follower::start(&cluster.store);

    let a = cluster.submit_script("sleep 1; exit 3").await;
    let b = submit_child(&cluster, "true", &[a], OnParentFailure::Cancel).await;
    let c = submit_child(&cluster, "true", &[b], OnParentFailure::Cancel).await;
    let anyway = submit_child(
        &cluster,
        "echo ran > /out/ran.txt",
        &[a],
        OnParentFailure::Run,
    )
    .await;

    let failed = cluster.wait_final(a, Duration::from_secs(60)).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    let b_done = cluster.wait_final(b, Duration::from_secs(30)).await;
    assert_eq!(b_done.status, TaskStatus::Canceled);
    assert_eq!(b_done.shown_error().unwrap(), format!("parent {a} failed"));
    let c_done = cluster.wait_final(c, Duration::from_secs(30)).await;
    assert_eq!(c_done.status, TaskStatus::Canceled);
    assert_eq!(
        c_done.shown_error().unwrap(),
        format!("parent {b} canceled")
    );
    for never in [b, c] {
        let events = events(&cluster.store, never).await;
        assert!(
            !events
                .iter()
                .any(|event| matches!(event, TaskEvent::Started(_))),
            "{events:?}"
        );
    }
    let ran = cluster
        .wait_succeeded(anyway, Duration::from_secs(60))
        .await;
    assert!(ran
        .artifacts
        .iter()
        .any(|artifact| artifact.name == "ran.txt"));
    follower.stop().await;
    cluster.finish().await;
}

#[tokio::test]
async fn a_parent_that_ended_before_its_child_was_submitted_is_not_waited_for() {
    let mut cluster = Cluster::start().await;
    cluster.start_runner(2);
    let done = cluster.submit_script("echo done > /out/done.txt").await;
    let failed = cluster.submit_script("exit 4").await;
    assert_eq!(
        cluster
            .wait_final(done, Duration::from_secs(60))
            .await
            .status,
        TaskStatus::Succeeded
    );
    assert_eq!(
        cluster
            .wait_final(failed, Duration::from_secs(60))
            .await
            .status,
        TaskStatus::Failed
    );

    // Through the submission (no follower runs): resolved at once.
    let after_done = submit_child(
        &cluster,
        &format!("cat /in/{done}/done.txt"),
        &[done],
        OnParentFailure::Cancel,
    )
    .await;
    let submitted = events(&cluster.store, after_done).await;
    assert!(
        matches!(submitted.get(1), Some(TaskEvent::Released(_))),
        "{submitted:?}"
    );
    let after_failed = submit_child(&cluster, "true", &[failed], OnParentFailure::Cancel).await;
    let canceled = cluster.task(after_failed).await;
    assert_eq!(canceled.status, TaskStatus::Canceled);
    assert_eq!(
        canceled.shown_error().unwrap(),
        format!("parent {failed} failed")
    );
    assert_eq!(
        cluster
            .wait_final(after_done, Duration::from_secs(60))
            .await
            .status,
        TaskStatus::Succeeded
    );

    // A submission that committed but whose own resolution never ran (its
    // process died in between): the follower meets the child's
    // TaskSubmitted after the parent's end and releases it then.
    let orphan = TaskId(Uuid::now_v7());
    let Value::Object(params) = json!({ "script": "true" }) else {
        unreachable!()
    };
    execute_on_task(
        &cluster.store,
        orphan,
        TaskCommand::Submit(SubmitTask {
            task_id: orphan,
            kind: "sh".into(),
            params,
            inputs: Default::default(),
            tenant: TenantName::default_tenant(),
            frontend_id: "tests".into(),
            client_task_id: None,
            priority: 0,
            timeout_seconds: 60,
            max_attempts: 1,
            submitted_at: Utc::now(),
            submitted_by: None,
            depends_on: vec![done],
            on_parent_failure: OnParentFailure::Cancel,
        }),
    )
    .await;
    assert_eq!(cluster.task(orphan).await.status, TaskStatus::Waiting);
    let follower = Follower::start(&cluster.store);
    assert_eq!(
        cluster
            .wait_final(orphan, Duration::from_secs(60))
            .await
            .status,
        TaskStatus::Succeeded
    );
    follower.stop().await;
    // A second follower (a restart from the checkpoint 0 of a new name
    // would be the same): nothing is released twice.
    let again = Follower::start(&cluster.store);
    let orphan_events = events(&cluster.store, orphan).await;
    assert_eq!(
        count(&orphan_events, |event| matches!(
            event,
            TaskEvent::Released(_)
        )),
        1
    );
    again.stop().await;
    cluster.finish().await;
}

/// The API: `depends_on` and `on_parent_failure` accepted and shown, the
/// `waiting` status in the read model, its list filter and CSV, a waiting
/// task canceled, and the refusals (another tenant's task answered exactly
/// as a missing one, duplicates, too many).
#[tokio::test]
async fn the_api_shows_waiting_tasks_and_refuses_other_tenants_parents_as_missing_ones() {
    let app = TestApp::spawn_with_kinds(|settings| {
        settings.roles = vec![Role::Api, Role::Projector, Role::Graphs];
    })
    .await;
    let acme = app
        .tenant_key("acme", &[Scope::TasksWrite, Scope::TasksRead])
        .await;
    let globex = app
        .tenant_key("globex", &[Scope::TasksWrite, Scope::TasksRead])
        .await;
    let echo = |extra: Value| {
        let mut body = json!({"kind": "echo", "params": {"message": "hi"}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let parent = app.submitted(&acme, echo(json!({}))).await;
    let parent_id = parent["id"].as_str().unwrap().to_owned();
    let child = app
        .submitted(
            &acme,
            echo(json!({"depends_on": [parent_id], "on_parent_failure": "run"})),
        )
        .await;
    assert_eq!(child["status"], "waiting", "{child}");
    assert_eq!(child["depends_on"], json!([parent_id]));
    assert_eq!(child["on_parent_failure"], "run");
    assert!(parent.get("depends_on").is_none(), "{parent}");
    let child_id = child["id"].as_str().unwrap().to_owned();
    let read = app
        .read(
            Some(&acme),
            &format!(
                "/v1/tasks/{child_id}?min_version={}",
                child["stream_version"]
            ),
        )
        .await;
    assert_eq!(read.0, StatusCode::OK);
    assert_eq!(read.1["status"], "waiting");
    assert_eq!(read.1["depends_on"], json!([parent_id]));
    let listed = app
        .read(
            Some(&acme),
            &format!(
                "/v1/tasks?status=waiting&min_position={}",
                child["position"]
            ),
        )
        .await;
    assert_eq!(listed.0, StatusCode::OK, "{}", listed.1);
    let ids: Vec<&str> = listed.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![child_id.as_str()]);
    let csv = send_text(
        app.get(&acme, "/v1/tasks?status=waiting")
            .header("accept", "text/csv"),
    )
    .await;
    assert!(csv.contains(&child_id) && csv.contains("waiting"), "{csv}");

    // Another tenant's task and no task at all: one answer.
    let other_tenants = send(
        app.post(&globex, "/v1/tasks")
            .json(&echo(json!({"depends_on": [parent_id]}))),
    )
    .await;
    let missing = send(
        app.post(&globex, "/v1/tasks")
            .json(&echo(json!({"depends_on": [Uuid::new_v4()]}))),
    )
    .await;
    assert_eq!(other_tenants.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let other_tenants = other_tenants.text().await.unwrap();
    assert_eq!(other_tenants, missing.text().await.unwrap());
    assert!(
        other_tenants.contains("depends_on[0] names no task of this tenant"),
        "{other_tenants}"
    );
    assert!(!other_tenants.contains(&parent_id));

    let (status, duplicate) = app
        .submit(&acme, echo(json!({"depends_on": [parent_id, parent_id]})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{duplicate}");
    assert!(duplicate["detail"]
        .as_str()
        .unwrap()
        .contains("more than once"));
    let many: Vec<String> = (0..101).map(|_| Uuid::new_v4().to_string()).collect();
    let (status, too_many) = app.submit(&acme, echo(json!({"depends_on": many}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{too_many}");
    assert!(too_many["detail"].as_str().unwrap().contains("at most 100"));
    let (status, unknown) = app
        .submit(&acme, echo(json!({"on_parent_failure": "ignore"})))
        .await;
    assert!(status.is_client_error(), "{unknown}");

    // A waiting task can be canceled; its parent is unaffected.
    let canceled = app
        .cancel(&acme, &format!("/v1/tasks/{child_id}/cancel"), "not needed")
        .await;
    assert_eq!(canceled["status"], "canceled");
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let (_, task) = app
                .read(Some(&acme), &format!("/v1/tasks/{child_id}"))
                .await;
            if task["status"] == "canceled" {
                return Ok(());
            }
            Err(format!("the projection still shows {task}"))
        },
    )
    .await;
    let (_, parent_now) = app
        .read(Some(&acme), &format!("/v1/tasks/{parent_id}"))
        .await;
    assert_eq!(parent_now["status"], "queued");
    app.stop.trigger();
    app.server.await.unwrap().unwrap();
    app.database.drop_database().await;
}
