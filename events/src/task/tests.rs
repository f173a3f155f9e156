//! Given these events, when this command, expect these events or this error.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::*;
use crate::tenant::TenantName;
use crate::testing::{self, at, Given, FIXED_ID, FIXED_ID_SHORT};
use crate::{Metadata, RecordedEvent, RefusalKind};

fn task_id() -> TaskId {
    TaskId(FIXED_ID)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

// ---- the framework: crate::testing, for tasks -------------------------------

fn given(history: impl IntoIterator<Item = TaskEvent>) -> Given<Tasks> {
    testing::given(history)
}

/// Starts from a state that no history produces (to test guards).
fn given_state(state: TaskState) -> Given<Tasks> {
    testing::given_state(state)
}

/// The task after `command`, decided in the state `history` leaves, was
/// exactly `expected`.
#[track_caller]
fn task_after(
    history: impl IntoIterator<Item = TaskEvent>,
    command: TaskCommand,
    expected: TaskEvent,
) -> Task {
    given(history)
        .when(command)
        .then_expect(vec![expected])
        .expect("the task exists")
}

// ---- commands --------------------------------------------------------------

fn submit_task() -> SubmitTask {
    SubmitTask {
        inputs: Default::default(),
        task_id: task_id(),
        kind: "url-analysis".into(),
        params: object(json!({"url": "https://example.com", "depth": 2})),
        tenant: TenantName::default_tenant(),
        frontend_id: "web".into(),
        client_task_id: Some("client-7".into()),
        priority: 5,
        timeout_seconds: 300,
        max_attempts: 3,
        submitted_at: at(0),
        submitted_by: Some("key-1".into()),
        depends_on: Vec::new(),
        on_parent_failure: Default::default(),
    }
}

fn submit() -> TaskCommand {
    TaskCommand::Submit(submit_task())
}

fn cancel() -> TaskCommand {
    TaskCommand::Cancel(CancelTask {
        task_id: task_id(),
        reason: Some("no longer needed".into()),
        canceled_at: at(900),
    })
}

fn start(attempt: u32) -> TaskCommand {
    TaskCommand::Start(StartTask {
        task_id: task_id(),
        worker_id: format!("worker-{attempt}"),
        attempt,
        started_at: at(i64::from(attempt) * 100),
    })
}

fn progress(attempt: u32, percent: Option<f64>) -> TaskCommand {
    TaskCommand::RecordProgress(RecordTaskProgress {
        task_id: task_id(),
        attempt,
        percent,
        message: Some("downloading".into()),
        recorded_at: at(i64::from(attempt) * 100 + 10),
    })
}

fn artifact(name: &str) -> Artifact {
    Artifact {
        name: name.into(),
        size: 42,
        sha256: "ab".repeat(32),
        media_type: "application/json".into(),
    }
}

fn complete_with(attempt: u32, artifacts: Vec<Artifact>) -> TaskCommand {
    TaskCommand::Complete(CompleteTask {
        task_id: task_id(),
        attempt,
        result: object(json!({"links": 12})),
        exit_code: 0,
        artifacts,
        finished_at: at(i64::from(attempt) * 100 + 50),
    })
}

fn complete(attempt: u32) -> TaskCommand {
    complete_with(attempt, vec![artifact("report.json")])
}

fn fail(attempt: u32, retryable: bool) -> TaskCommand {
    TaskCommand::Fail(FailTask {
        artifacts: Default::default(),
        task_id: task_id(),
        attempt,
        error: "connection reset".into(),
        exit_code: Some(2),
        retryable,
        next_attempt_at: None,
        failed_at: at(i64::from(attempt) * 100 + 50),
    })
}

fn time_out(attempt: u32) -> TaskCommand {
    TaskCommand::TimeOut(TimeOutTask {
        task_id: task_id(),
        attempt,
        timed_out_at: at(i64::from(attempt) * 100 + 50),
    })
}

fn retry(second: i64) -> TaskCommand {
    TaskCommand::Retry(RetryTask {
        task_id: task_id(),
        reason: "the runner stopped responding".into(),
        retried_at: at(second),
        next_attempt_at: None,
    })
}

// ---- events ------------------------------------------------------------------

fn submitted_with(max_attempts: u32) -> TaskEvent {
    TaskEvent::Submitted(SubmitTask {
        max_attempts,
        ..submit_task()
    })
}

fn submitted() -> TaskEvent {
    submitted_with(3)
}

fn started(attempt: u32) -> TaskEvent {
    TaskEvent::Started(TaskStarted {
        worker_id: format!("worker-{attempt}"),
        attempt,
        started_at: at(i64::from(attempt) * 100),
    })
}

fn progressed(attempt: u32, percent: Option<f64>) -> TaskEvent {
    TaskEvent::ProgressRecorded(TaskProgressRecorded {
        attempt,
        percent,
        message: Some("downloading".into()),
        recorded_at: at(i64::from(attempt) * 100 + 10),
    })
}

fn succeeded(attempt: u32) -> TaskEvent {
    TaskEvent::Succeeded(TaskSucceeded {
        attempt,
        result: object(json!({"links": 12})),
        exit_code: 0,
        artifacts: vec![artifact("report.json")],
        finished_at: at(i64::from(attempt) * 100 + 50),
    })
}

fn failed(attempt: u32) -> TaskEvent {
    TaskEvent::Failed(TaskFailed {
        artifacts: Default::default(),
        attempt,
        error: "connection reset".into(),
        exit_code: Some(2),
        failed_at: at(i64::from(attempt) * 100 + 50),
    })
}

fn retried_after_failure(attempt: u32) -> TaskEvent {
    TaskEvent::Retried(TaskRetried {
        attempt,
        reason: "connection reset".into(),
        exit_code: Some(2),
        retried_at: at(i64::from(attempt) * 100 + 50),
        next_attempt_at: None,
    })
}

fn retried_after_redelivery(attempt: u32, second: i64) -> TaskEvent {
    TaskEvent::Retried(TaskRetried {
        attempt,
        reason: "the runner stopped responding".into(),
        exit_code: None,
        retried_at: at(second),
        next_attempt_at: None,
    })
}

fn timed_out(attempt: u32) -> TaskEvent {
    TaskEvent::TimedOut(TaskTimedOut {
        attempt,
        timed_out_at: at(i64::from(attempt) * 100 + 50),
    })
}

fn canceled(was_running: bool) -> TaskEvent {
    TaskEvent::Canceled(TaskCanceled {
        reason: Some("no longer needed".into()),
        canceled_at: at(900),
        was_running,
    })
}

// ---- histories -----------------------------------------------------------------

fn queued() -> Vec<TaskEvent> {
    vec![submitted()]
}

fn running() -> Vec<TaskEvent> {
    vec![submitted(), started(1)]
}

/// Attempt 1 failed retryably; attempt 2 is running.
fn running_second_attempt() -> Vec<TaskEvent> {
    vec![
        submitted(),
        started(1),
        retried_after_failure(1),
        started(2),
    ]
}

/// Every final status, with its word in messages.
fn final_histories() -> Vec<(Vec<TaskEvent>, &'static str)> {
    vec![
        (vec![submitted(), started(1), succeeded(1)], "succeeded"),
        (vec![submitted(), started(1), failed(1)], "failed"),
        (vec![submitted(), started(1), timed_out(1)], "timed out"),
        (vec![submitted(), canceled(false)], "canceled"),
    ]
}

/// Every command but SubmitTask, with the action named in its refusal.
/// Worker commands name attempt 1.
fn commands_to_an_existing_task() -> Vec<(TaskCommand, &'static str)> {
    vec![
        (cancel(), "be canceled"),
        (start(1), "be started"),
        (progress(1, Some(50.0)), "record progress"),
        (complete(1), "be completed"),
        (fail(1, false), "be failed"),
        (time_out(1), "be timed out"),
        (retry(150), "be retried"),
    ]
}

fn record_job_submitted(attempt: u32, job_id: &str) -> TaskCommand {
    TaskCommand::RecordJobSubmitted(RecordJobSubmitted {
        task_id: task_id(),
        attempt,
        executor: "slurm".into(),
        job_id: job_id.into(),
        submitted_at: at(i64::from(attempt) * 100 + 10),
    })
}

fn record_job_running(attempt: u32, job_id: &str) -> TaskCommand {
    TaskCommand::RecordJobRunning(RecordJobRunning {
        task_id: task_id(),
        attempt,
        job_id: job_id.into(),
        running_at: at(i64::from(attempt) * 100 + 20),
    })
}

fn job_submitted(attempt: u32) -> TaskEvent {
    TaskEvent::JobSubmitted(TaskJobSubmitted {
        attempt,
        executor: "slurm".into(),
        job_id: "4711".into(),
        submitted_at: at(i64::from(attempt) * 100 + 10),
    })
}

fn job_running(attempt: u32) -> TaskEvent {
    TaskEvent::JobRunning(TaskJobRunning {
        attempt,
        job_id: "4711".into(),
        running_at: at(i64::from(attempt) * 100 + 20),
    })
}

// ---- an outside executor's job ---------------------------------------------------

#[test]
fn a_job_waiting_in_slurm_shows_the_task_queued_with_its_id_then_running() {
    let task = task_after(running(), record_job_submitted(1, "4711"), job_submitted(1));
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.shown_status(), TaskStatus::Queued);
    assert_eq!(
        task.executor_job,
        Some(ExecutorJob {
            executor: "slurm".into(),
            job_id: "4711".into(),
            running_at: None
        })
    );
    // Still the claimed attempt's: no other attempt may start meanwhile.
    given([submitted(), started(1), job_submitted(1)])
        .when(start(2))
        .then_error(
            RefusalKind::InvalidTransition,
            &format!("task {FIXED_ID_SHORT} is running attempt 1; it cannot be started again"),
        );
    let task = task_after(
        [submitted(), started(1), job_submitted(1)],
        record_job_running(1, "4711"),
        job_running(1),
    );
    assert_eq!(task.shown_status(), TaskStatus::Running);
    assert_eq!(task.executor_job.unwrap().running_at, Some(at(120)));
    // It ends as any attempt does, keeping the job's id.
    let task = task_after(
        [submitted(), started(1), job_submitted(1), job_running(1)],
        complete(1),
        succeeded(1),
    );
    assert_eq!(task.shown_status(), TaskStatus::Succeeded);
    assert_eq!(task.executor_job.unwrap().job_id, "4711");
    // A job canceled while waiting shows canceled.
    let task = task_after(
        [submitted(), started(1), job_submitted(1)],
        cancel(),
        canceled(true),
    );
    assert_eq!(task.shown_status(), TaskStatus::Canceled);
}

#[test]
fn a_retry_or_the_next_attempt_forgets_the_last_attempts_job() {
    let task = task_after(
        [submitted(), started(1), job_submitted(1)],
        fail(1, true),
        retried_after_failure(1),
    );
    assert_eq!(task.shown_status(), TaskStatus::Queued);
    assert_eq!(task.executor_job, None);
    let task = task_after(
        [
            submitted(),
            started(1),
            job_submitted(1),
            retried_after_failure(1),
        ],
        start(2),
        started(2),
    );
    assert_eq!(
        (task.shown_status(), task.executor_job),
        (TaskStatus::Running, None)
    );
}

#[test]
fn a_job_is_recorded_once_per_attempt_and_only_for_the_current_one() {
    given([submitted(), started(1), job_submitted(1)])
        .when(record_job_submitted(1, "4712"))
        .then_error(
            RefusalKind::InvalidTransition,
            "attempt 1 already has slurm job 4711",
        );
    given([submitted(), started(1), job_submitted(1), job_running(1)])
        .when(record_job_running(1, "4711"))
        .then_error(
            RefusalKind::InvalidTransition,
            "job 4711 of attempt 1 is already recorded as running",
        );
    given([submitted(), started(1), job_submitted(1)])
        .when(record_job_running(1, "9"))
        .then_error(
            RefusalKind::InvalidTransition,
            "attempt 1 runs job 4711, not 9",
        );
    given(running())
        .when(record_job_running(1, "4711"))
        .then_error(
            RefusalKind::InvalidTransition,
            "attempt 1 has no job recorded",
        );
    given(running_second_attempt())
        .when(record_job_submitted(1, "4711"))
        .then_error(
            RefusalKind::InvalidTransition,
            "attempt 1 is no longer current; the task is on attempt 2",
        );
    given(queued())
        .when(record_job_submitted(1, "4711"))
        .then_error(
            RefusalKind::InvalidTransition,
            &format!("task {FIXED_ID_SHORT} is queued; it cannot record a job"),
        );
    given(running())
        .when(record_job_submitted(1, ""))
        .then_error(RefusalKind::Invalid, "job_id must not be empty");
    for (history, _) in final_histories() {
        given(history)
            .when(record_job_submitted(1, "4711"))
            .then_error(RefusalKind::InvalidTransition, "it cannot record a job");
    }
}

// ---- submit ----------------------------------------------------------------------

#[test]
fn submit_queues_a_new_task() {
    let task = task_after([], submit(), submitted());
    assert_eq!(task.id, task_id());
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.attempts_started, 0);
    assert_eq!(task.kind, "url-analysis");
    assert_eq!(task.params["depth"], json!(2));
    assert_eq!(task.tenant.as_str(), "default");
    assert_eq!(task.frontend_id, "web");
    assert_eq!(task.client_task_id.as_deref(), Some("client-7"));
    assert_eq!(task.priority, 5);
    assert_eq!(task.timeout_seconds, 300);
    assert_eq!(task.max_attempts, 3);
    assert_eq!(task.submitted_at, at(0));
    assert_eq!(task.submitted_by.as_deref(), Some("key-1"));
    assert_eq!(task.worker_id, None);
    assert_eq!(task.finished_at, None);
}

#[test]
fn a_submission_keeps_its_tenant_and_one_written_before_tenants_reads_as_default() {
    let acme = SubmitTask {
        tenant: "acme".parse().unwrap(),
        ..submit_task()
    };
    let task = task_after(
        [],
        TaskCommand::Submit(acme.clone()),
        TaskEvent::Submitted(acme),
    );
    assert_eq!(task.tenant.as_str(), "acme");
    // The stored form of a submission from before tenants: no `tenant`.
    let mut old = serde_json::to_value(submitted()).unwrap();
    old.as_object_mut().unwrap().remove("tenant");
    let read: TaskEvent = serde_json::from_value(old).unwrap();
    assert_eq!(read, submitted());
    let TaskEvent::Submitted(read) = read else {
        unreachable!("a submission")
    };
    assert_eq!(read.tenant.as_str(), "default");
}

#[test]
fn submit_of_an_existing_task_is_refused() {
    for (history, _) in final_histories().into_iter().chain([(queued(), "")]) {
        given(history).when(submit()).then_error(
            RefusalKind::AlreadyExists,
            &format!("task {FIXED_ID_SHORT} already exists"),
        );
    }
}

/// A change to a good SubmitTask.
type Change = fn(&mut SubmitTask);

#[test]
fn submit_refuses_each_bad_field_with_its_own_message() {
    let cases: Vec<(Change, &str)> = vec![
        (|c| c.kind = String::new(), "kind must not be empty"),
        (
            |c| c.kind = "k".repeat(101),
            "kind is 101 bytes long; the limit is 100",
        ),
        (
            |c| c.kind = "url\nanalysis".into(),
            "kind must not contain control characters",
        ),
        (
            |c| c.frontend_id = String::new(),
            "frontend_id must not be empty",
        ),
        (
            |c| c.frontend_id = "f".repeat(201),
            "frontend_id is 201 bytes long; the limit is 200",
        ),
        (
            |c| c.client_task_id = Some(String::new()),
            "client_task_id must not be empty",
        ),
        (
            |c| c.client_task_id = Some("c".repeat(201)),
            "client_task_id is 201 bytes long; the limit is 200",
        ),
        (
            |c| c.priority = 1001,
            "priority must be from -1000 to 1000; got 1001",
        ),
        (
            |c| c.priority = -1001,
            "priority must be from -1000 to 1000; got -1001",
        ),
        (
            |c| c.timeout_seconds = 0,
            "timeout_seconds must be from 1 to 604800 (7 days); got 0",
        ),
        (
            |c| c.timeout_seconds = 604_801,
            "timeout_seconds must be from 1 to 604800 (7 days); got 604801",
        ),
        (
            |c| c.max_attempts = 0,
            "max_attempts must be from 1 to 100; got 0",
        ),
        (
            |c| c.max_attempts = 101,
            "max_attempts must be from 1 to 100; got 101",
        ),
    ];
    for (spoil, message) in cases {
        let mut command = submit_task();
        spoil(&mut command);
        let error = given([])
            .when(TaskCommand::Submit(command))
            .then_error(RefusalKind::Invalid, message);
        assert_eq!(error.message(), message);
    }
}

#[test]
fn submit_accepts_every_limit_exactly() {
    let edges: Vec<Change> = vec![
        |c| c.kind = "k".repeat(MAX_KIND_BYTES),
        |c| c.frontend_id = "f".repeat(MAX_FRONTEND_ID_BYTES),
        |c| c.client_task_id = Some("c".repeat(MAX_CLIENT_TASK_ID_BYTES)),
        |c| c.client_task_id = None,
        |c| c.priority = *PRIORITIES.start(),
        |c| c.priority = *PRIORITIES.end(),
        |c| c.timeout_seconds = 1,
        |c| c.timeout_seconds = MAX_TIMEOUT_SECONDS,
        |c| c.max_attempts = 1,
        |c| c.max_attempts = MAX_ATTEMPTS,
    ];
    for edge in edges {
        let mut command = submit_task();
        edge(&mut command);
        let result = decide(&None, TaskCommand::Submit(command.clone()));
        assert!(result.is_ok(), "{command:?}: {result:?}");
    }
}

// ---- existence -------------------------------------------------------------------

#[test]
fn commands_to_a_task_that_does_not_exist_are_refused() {
    for (command, _) in commands_to_an_existing_task() {
        given([]).when(command).then_error(
            RefusalKind::NotFound,
            &format!("task {FIXED_ID_SHORT} does not exist"),
        );
    }
}

#[test]
fn a_command_for_another_task_than_the_state_is_not_found() {
    let mut other = submit_task();
    other.task_id = TaskId(Uuid::from_u128(7));
    let state = decide(&None, TaskCommand::Submit(other))
        .unwrap()
        .iter()
        .fold(None, apply);
    given_state(state).when(cancel()).then_error(
        RefusalKind::NotFound,
        &format!("task {FIXED_ID_SHORT} does not exist"),
    );
}

// ---- cancel ------------------------------------------------------------------------

#[test]
fn cancel_of_a_queued_task() {
    let task = task_after(queued(), cancel(), canceled(false));
    assert_eq!(task.status, TaskStatus::Canceled);
    assert_eq!(task.finished_at, Some(at(900)));
    assert_eq!(task.cancel_reason.as_deref(), Some("no longer needed"));
}

#[test]
fn cancel_of_a_running_task_says_it_was_running() {
    let task = task_after(running(), cancel(), canceled(true));
    assert_eq!(task.status, TaskStatus::Canceled);
}

// ---- every command on a final task ---------------------------------------------------

#[test]
fn nothing_happens_to_a_final_task() {
    for (history, status) in final_histories() {
        for (command, action) in commands_to_an_existing_task() {
            let error = given(history.clone())
                .when(command)
                .then_error(RefusalKind::InvalidTransition, "");
            assert_eq!(
                error.message(),
                format!("task {FIXED_ID_SHORT} is already {status}; it cannot {action}")
            );
        }
    }
}

#[test]
fn worker_commands_to_a_queued_task_are_refused() {
    for (command, action) in commands_to_an_existing_task() {
        if matches!(command, TaskCommand::Cancel(_) | TaskCommand::Start(_)) {
            continue;
        }
        let error = given(queued())
            .when(command)
            .then_error(RefusalKind::InvalidTransition, "");
        assert_eq!(
            error.message(),
            format!("task {FIXED_ID_SHORT} is queued; it cannot {action}")
        );
    }
}

// ---- start -----------------------------------------------------------------------------

#[test]
fn start_runs_the_first_attempt() {
    let task = task_after(queued(), start(1), started(1));
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.attempts_started, 1);
    assert_eq!(task.worker_id.as_deref(), Some("worker-1"));
    assert_eq!(task.started_at, Some(at(100)));
}

#[test]
fn start_of_a_running_task_is_refused() {
    let error = given(running())
        .when(start(2))
        .then_error(RefusalKind::InvalidTransition, "");
    assert_eq!(
        error.message(),
        format!("task {FIXED_ID_SHORT} is running attempt 1; it cannot be started again")
    );
}

#[test]
fn start_must_name_the_next_attempt() {
    given(queued()).when(start(2)).then_error(
        RefusalKind::InvalidTransition,
        "attempt 2 is not next; the task has started 0 attempts",
    );
    given(queued()).when(start(0)).then_error(
        RefusalKind::InvalidTransition,
        "attempt 0 is not next; the task has started 0 attempts",
    );
    let after_one_retry = vec![submitted(), started(1), retried_after_failure(1)];
    given(after_one_retry.clone()).when(start(3)).then_error(
        RefusalKind::InvalidTransition,
        "attempt 3 is not next; the task has started 1 attempt",
    );
    given(after_one_retry.clone()).when(start(1)).then_error(
        RefusalKind::InvalidTransition,
        "attempt 1 is not next; the task has started 1 attempt",
    );
    let task = task_after(after_one_retry, start(2), started(2));
    assert_eq!(task.attempts_started, 2);
    assert_eq!(task.worker_id.as_deref(), Some("worker-2"));
}

#[test]
fn start_never_goes_beyond_max_attempts() {
    // No history leaves a task queued with no attempts left; build one.
    let mut task = fold(&queued()).unwrap();
    task.attempts_started = 3;
    given_state(Some(task)).when(start(4)).then_error(
        RefusalKind::InvalidTransition,
        "attempt 4 is beyond the task's limit of 3 attempts",
    );
}

#[test]
fn start_needs_a_worker_id() {
    for (worker_id, message) in [
        (String::new(), "worker_id must not be empty"),
        (
            "w".repeat(201),
            "worker_id is 201 bytes long; the limit is 200",
        ),
        (
            "worker\t1".into(),
            "worker_id must not contain control characters",
        ),
    ] {
        given(queued())
            .when(TaskCommand::Start(StartTask {
                task_id: task_id(),
                worker_id,
                attempt: 1,
                started_at: at(100),
            }))
            .then_error(RefusalKind::Invalid, message);
    }
}

// ---- progress ---------------------------------------------------------------------------

#[test]
fn progress_is_recorded_for_the_running_attempt() {
    for percent in [None, Some(0.0), Some(37.5), Some(100.0)] {
        let task = task_after(running(), progress(1, percent), progressed(1, percent));
        let recorded = task.progress.expect("progress is kept");
        assert_eq!(recorded.percent, percent);
        assert_eq!(recorded.message.as_deref(), Some("downloading"));
        assert_eq!(task.status, TaskStatus::Running);
    }
}

#[test]
fn progress_out_of_range_is_refused() {
    for (percent, shown) in [(-0.5, "-0.5"), (100.1, "100.1"), (f64::NAN, "NaN")] {
        given(running())
            .when(progress(1, Some(percent)))
            .then_error(
                RefusalKind::Invalid,
                &format!("percent must be from 0 to 100; got {shown}"),
            );
    }
}

// ---- complete -------------------------------------------------------------------------------

#[test]
fn complete_succeeds_the_task_with_its_result() {
    let task = task_after(running(), complete(1), succeeded(1));
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.result, Some(object(json!({"links": 12}))));
    assert_eq!(task.exit_code, Some(0));
    assert_eq!(task.artifacts, vec![artifact("report.json")]);
    assert_eq!(task.finished_at, Some(at(150)));
}

#[test]
fn complete_without_artifacts_is_fine() {
    let task = given(running())
        .when(complete_with(1, Vec::new()))
        .then_expect(vec![TaskEvent::Succeeded(TaskSucceeded {
            attempt: 1,
            result: object(json!({"links": 12})),
            exit_code: 0,
            artifacts: Vec::new(),
            finished_at: at(150),
        })])
        .unwrap();
    assert!(task.artifacts.is_empty());
}

#[test]
fn complete_refuses_bad_artifacts() {
    let with = |change: fn(&mut Artifact)| {
        let mut bad = artifact("data.bin");
        change(&mut bad);
        vec![artifact("report.json"), bad]
    };
    let cases: Vec<(Vec<Artifact>, &str)> = vec![
        (
            with(|a| a.name = String::new()),
            "artifact 1 has an empty name",
        ),
        (
            with(|a| a.name = "n".repeat(256)),
            "artifact 1 has a name of 256 bytes; the limit is 255",
        ),
        (
            with(|a| a.name = "out/data.bin".into()),
            r#"artifact name "out/data.bin" must not contain '/'"#,
        ),
        (
            with(|a| a.name = "data\0.bin".into()),
            r#"artifact name "data\0.bin" must not contain a NUL character"#,
        ),
        (
            with(|a| a.name = "..".into()),
            r#"artifact name ".." is not a file name"#,
        ),
        (
            with(|a| a.name = "report.json".into()),
            r#"artifact name "report.json" appears more than once"#,
        ),
        (
            with(|a| a.sha256 = "AB".repeat(32)),
            r#"artifact "data.bin": sha256 must be 64 lowercase hexadecimal digits"#,
        ),
        (
            with(|a| a.sha256 = "ab".repeat(31)),
            r#"artifact "data.bin": sha256 must be 64 lowercase hexadecimal digits"#,
        ),
        (
            with(|a| a.sha256 = "g".repeat(64)),
            r#"artifact "data.bin": sha256 must be 64 lowercase hexadecimal digits"#,
        ),
        (
            with(|a| a.media_type = String::new()),
            r#"artifact "data.bin": media_type must not be empty"#,
        ),
    ];
    for (artifacts, message) in cases {
        let error = given(running())
            .when(complete_with(1, artifacts))
            .then_error(RefusalKind::Invalid, message);
        assert_eq!(error.message(), message);
    }
    let fine = with(|a| a.name = "n".repeat(MAX_ARTIFACT_NAME_BYTES));
    assert!(decide(&fold(&running()), complete_with(1, fine)).is_ok());
}

// ---- fail, retry, time out --------------------------------------------------------------------

#[test]
fn a_failure_that_is_not_retryable_is_final() {
    let task = task_after(running(), fail(1, false), failed(1));
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.error.as_deref(), Some("connection reset"));
    assert_eq!(task.exit_code, Some(2));
    assert_eq!(task.finished_at, Some(at(150)));
}

#[test]
fn a_retryable_failure_queues_the_task_again_while_attempts_remain() {
    let task = task_after(
        [submitted(), started(1), progressed(1, Some(40.0))],
        fail(1, true),
        retried_after_failure(1),
    );
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.attempts_started, 1);
    assert_eq!(task.error.as_deref(), Some("connection reset"));
    assert_eq!(task.progress, None);
    assert_eq!(task.finished_at, None);
}

#[test]
fn a_retry_with_a_backoff_records_when_the_next_attempt_is_due_until_it_starts() {
    let due = at(400);
    let TaskCommand::Fail(failure) = fail(1, true) else {
        unreachable!()
    };
    let TaskEvent::Retried(retried) = retried_after_failure(1) else {
        unreachable!()
    };
    let task = task_after(
        [submitted(), started(1)],
        TaskCommand::Fail(FailTask {
            next_attempt_at: Some(due),
            ..failure
        }),
        TaskEvent::Retried(TaskRetried {
            next_attempt_at: Some(due),
            ..retried
        }),
    );
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.next_attempt_at, Some(due));
    let started = super::apply(Some(task), &started(2)).expect("a task");
    assert_eq!(started.next_attempt_at, None);
}

#[test]
fn a_retry_stored_without_a_due_time_reads_as_due_at_once() {
    let stored = json!({
        "type": "TaskRetried",
        "attempt": 1,
        "reason": "connection reset",
        "exit_code": 2,
        "retried_at": at(150)
    });
    let event: TaskEvent = serde_json::from_value(stored).expect("an old TaskRetried decodes");
    assert_eq!(event, retried_after_failure(1));
    let written = serde_json::to_value(&event).expect("serializes");
    assert!(
        written.get("next_attempt_at").is_none(),
        "a retry without a due time is stored as before: {written}"
    );
}

#[test]
fn a_retryable_failure_of_the_last_attempt_is_final() {
    let history = vec![
        submitted(),
        started(1),
        retried_after_failure(1),
        started(2),
        retried_after_failure(2),
        started(3),
    ];
    let task = task_after(history, fail(3, true), failed(3));
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.error.as_deref(), Some("connection reset"));
}

#[test]
fn redelivery_retries_until_attempts_are_exhausted() {
    let mut history = vec![submitted()];
    for attempt in 1..=2 {
        given(history.clone())
            .when(start(attempt))
            .then_expect(vec![started(attempt)]);
        history.push(started(attempt));
        let second = i64::from(attempt) * 100 + 70;
        let task = task_after(
            history.clone(),
            retry(second),
            retried_after_redelivery(attempt, second),
        );
        assert_eq!(task.status, TaskStatus::Queued);
        history.push(retried_after_redelivery(attempt, second));
    }
    history.push(started(3));
    let task = given(history.clone())
        .when(retry(370))
        .then_expect(vec![TaskEvent::Failed(TaskFailed {
            artifacts: Default::default(),
            attempt: 3,
            error: "gave up after 3 attempts: the runner stopped responding".into(),
            exit_code: None,
            failed_at: at(370),
        })])
        .unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempts_started, 3);
    history.push(failed(3));
    given(history).when(start(4)).then_error(
        RefusalKind::InvalidTransition,
        &format!("task {FIXED_ID_SHORT} is already failed; it cannot be started"),
    );
}

#[test]
fn redelivery_of_a_single_attempt_task_gives_up_at_once() {
    given([submitted_with(1), started(1)])
        .when(retry(170))
        .then_expect(vec![TaskEvent::Failed(TaskFailed {
            artifacts: Default::default(),
            attempt: 1,
            error: "gave up after 1 attempt: the runner stopped responding".into(),
            exit_code: None,
            failed_at: at(170),
        })]);
}

#[test]
fn a_time_out_is_final_even_with_attempts_left() {
    let task = task_after(running(), time_out(1), timed_out(1));
    assert_eq!(task.status, TaskStatus::TimedOut);
    assert_eq!(task.finished_at, Some(at(150)));
}

// ---- stale attempts ---------------------------------------------------------------------------

#[test]
fn a_worker_of_an_earlier_attempt_is_told_it_is_stale() {
    for command in [progress(1, None), complete(1), fail(1, true), time_out(1)] {
        given(running_second_attempt()).when(command).then_error(
            RefusalKind::InvalidTransition,
            "attempt 1 is no longer current; the task is on attempt 2",
        );
    }
}

#[test]
fn a_worker_cannot_report_an_attempt_that_has_not_started() {
    for command in [progress(3, None), complete(3), fail(3, false), time_out(3)] {
        given(running_second_attempt()).when(command).then_error(
            RefusalKind::InvalidTransition,
            "attempt 3 has not started; the task is on attempt 2",
        );
    }
}

#[test]
fn a_stale_worker_of_a_requeued_task_is_told_the_status() {
    given([submitted(), started(1), retried_after_failure(1)])
        .when(complete(1))
        .then_error(
            RefusalKind::InvalidTransition,
            &format!("task {FIXED_ID_SHORT} is queued; it cannot be completed"),
        );
}

#[test]
fn the_current_attempt_after_a_retry_can_finish() {
    let task = task_after(running_second_attempt(), complete(2), succeeded(2));
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.attempts_started, 2);
    assert_eq!(task.exit_code, Some(0));
    // The first attempt's error is kept for the record.
    assert_eq!(task.error.as_deref(), Some("connection reset"));
}

// ---- apply --------------------------------------------------------------------------------------

#[test]
fn apply_leaves_the_state_alone_for_events_that_do_not_fit() {
    assert_eq!(fold(&[started(1)]), None);
    let queued_task = fold(&queued());
    for misfit in [
        submitted_with(9),
        progressed(1, None),
        succeeded(1),
        failed(1),
        timed_out(1),
        retried_after_failure(1),
    ] {
        assert_eq!(
            apply(queued_task.clone(), &misfit),
            queued_task,
            "{misfit:?}"
        );
    }
    let running_task = fold(&running());
    assert_eq!(apply(running_task.clone(), &started(2)), running_task);
    for (history, _) in final_histories() {
        let final_task = fold(&history);
        for event in [
            started(2),
            canceled(true),
            succeeded(1),
            retried_after_failure(1),
        ] {
            assert_eq!(apply(final_task.clone(), &event), final_task, "{event:?}");
        }
    }
}

#[test]
fn readers_are_shown_the_error_and_worker_the_status_implies() {
    let shown = |history: Vec<TaskEvent>| {
        let task = fold(&history).unwrap();
        (
            task.shown_error(),
            task.shown_worker_id().map(str::to_owned),
        )
    };
    let worker = || Some("worker-1".to_owned());
    assert_eq!(shown(queued()), (None, None));
    assert_eq!(shown(running()), (None, worker()));
    // A retry keeps its reason and the worker it had, but shows no worker.
    let retried = vec![submitted(), started(1), retried_after_failure(1)];
    assert_eq!(
        shown(retried.clone()),
        (Some("connection reset".into()), None)
    );
    assert_eq!(
        shown([retried.clone(), vec![started(2)]].concat()),
        (Some("connection reset".into()), Some("worker-2".into()))
    );
    assert_eq!(
        shown([retried, vec![started(2), succeeded(2)]].concat()),
        (None, Some("worker-2".into()))
    );
    assert_eq!(
        shown(vec![submitted(), started(1), failed(1)]),
        (Some("connection reset".into()), worker())
    );
    assert_eq!(
        shown(vec![submitted(), started(1), timed_out(1)]),
        (
            Some("attempt 1 ran past the task's timeout".into()),
            worker()
        )
    );
    assert_eq!(
        shown(vec![submitted(), started(1), canceled(true)]),
        (Some("no longer needed".into()), None)
    );
    let mut unexplained = canceled(false);
    if let TaskEvent::Canceled(canceled) = &mut unexplained {
        canceled.reason = None;
    }
    assert_eq!(
        shown(vec![submitted(), unexplained]),
        (Some("canceled".into()), None)
    );
}

#[test]
fn an_event_fits_exactly_when_apply_takes_it() {
    let mut states = vec![None, fold(&queued()), fold(&running())];
    states.extend(
        final_histories()
            .into_iter()
            .map(|(history, _)| fold(&history)),
    );
    for state in states {
        for event in [
            submitted(),
            started(1),
            progressed(1, None),
            succeeded(1),
            failed(1),
            timed_out(1),
            retried_after_failure(1),
            canceled(true),
        ] {
            assert_eq!(
                fits(&state, &event),
                apply(state.clone(), &event) != state,
                "{event:?} on {:?}",
                state.as_ref().map(|task| task.status)
            );
        }
    }
}

// ---- the stored form ----------------------------------------------------------------------------

fn every_event() -> Vec<TaskEvent> {
    vec![
        submitted(),
        canceled(true),
        started(1),
        progressed(1, Some(12.25)),
        progressed(1, None),
        succeeded(1),
        failed(1),
        timed_out(1),
        retried_after_failure(1),
        retried_after_redelivery(1, 170),
        job_submitted(1),
        job_running(1),
        TaskEvent::Released(TaskReleased {
            released_at: at(50),
        }),
    ]
}

fn recorded(new_event: crate::NewEvent) -> RecordedEvent {
    testing::recorded(new_event, &task_id().stream_id(), at(1000))
}

#[test]
fn every_event_round_trips_through_serde_and_the_envelope() {
    testing::assert_round_trips(every_event(), &task_id().stream_id(), at(1000));
}

#[test]
fn the_stored_shape_is_stable() {
    testing::assert_stored_as(
        &started(2),
        "TaskStarted",
        json!({"worker_id": "worker-2", "attempt": 2, "started_at": "2023-11-14T22:16:40Z"}),
    );
    testing::assert_stored_as(
        &canceled(false),
        "TaskCanceled",
        json!({"reason": "no longer needed", "canceled_at": "2023-11-14T22:28:20Z", "was_running": false}),
    );
    assert_eq!(
        TaskEvent::EVENT_TYPES,
        [
            "TaskSubmitted",
            "TaskCanceled",
            "TaskStarted",
            "TaskProgressRecorded",
            "TaskSucceeded",
            "TaskFailed",
            "TaskTimedOut",
            "TaskRetried",
            "TaskJobSubmitted",
            "TaskJobRunning",
            "TaskReleased",
        ]
    );
    testing::assert_stored_as(
        &job_submitted(1),
        "TaskJobSubmitted",
        json!({"attempt": 1, "executor": "slurm", "job_id": "4711", "submitted_at": "2023-11-14T22:15:10Z"}),
    );
    testing::assert_stored_as(
        &job_running(1),
        "TaskJobRunning",
        json!({"attempt": 1, "job_id": "4711", "running_at": "2023-11-14T22:15:20Z"}),
    );
}

#[test]
fn from_recorded_reads_missing_optional_fields_as_none() {
    let mut stored = recorded(failed(1).to_new_event(Uuid::nil(), Metadata::default()));
    stored.data = json!({"attempt": 1, "error": "x", "failed_at": "2023-11-14T22:16:40Z", "added_later": true});
    let TaskEvent::Failed(event) = TaskEvent::from_recorded(&stored).unwrap() else {
        panic!("not a TaskFailed");
    };
    assert_eq!(event.exit_code, None);
}

#[test]
fn from_recorded_refuses_what_is_not_a_task_event() {
    let good = recorded(started(1).to_new_event(Uuid::nil(), Metadata::default()));

    let error = testing::assert_refuses_other_shapes::<TaskEvent>(&good, "DeviceMessageSent");
    assert_eq!(
        error.to_string(),
        r#"event at global position 41 has type "DeviceMessageSent", which is not a task event"#
    );

    let mut missing = good;
    missing.data = json!({"worker_id": "worker-1"});
    let error = TaskEvent::from_recorded(&missing).unwrap_err();
    assert!(matches!(error, DecodeError::Malformed { .. }), "{error:?}");
    assert!(
        error.to_string().contains("missing field `attempt`"),
        "{error}"
    );
}

// ---- ids, statuses, errors ------------------------------------------------------------------------

#[test]
fn task_ids_name_their_streams() {
    let id = task_id();
    assert_eq!(id.to_string(), "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8");
    assert_eq!(
        id.stream_id().as_str(),
        "task-3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8"
    );
    assert_eq!(id.short(), FIXED_ID_SHORT);
    assert_eq!(TaskId::from_stream_id(id.stream_id().as_str()), Some(id));
    assert_eq!(TaskId::from_stream_id("device-300234010753370"), None);
    assert_eq!(TaskId::from_stream_id("task-not-a-uuid"), None);
    assert_eq!(serde_json::to_value(id).unwrap(), json!(id.to_string()));
}

#[test]
fn statuses_have_a_stored_name_and_words() {
    assert_eq!(TaskStatus::TimedOut.as_str(), "timed_out");
    assert_eq!(TaskStatus::TimedOut.to_string(), "timed out");
    assert_eq!(
        serde_json::to_value(TaskStatus::TimedOut).unwrap(),
        json!("timed_out")
    );
    for status in [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::TimedOut,
        TaskStatus::Canceled,
    ] {
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            json!(status.as_str())
        );
        assert_eq!(
            status.is_final(),
            !matches!(status, TaskStatus::Queued | TaskStatus::Running)
        );
    }
}

#[test]
fn errors_name_the_task_and_have_a_kind_name() {
    let error = given([])
        .when(cancel())
        .then_error(RefusalKind::NotFound, "");
    testing::assert_not_found_names(&error, &task_id().short());
}

#[test]
fn text_the_read_models_cannot_hold_is_refused() {
    let mut nul_params = submit_task();
    nul_params
        .params
        .insert("nested".into(), json!({"list": ["ok", "bad\u{0}"]}));
    let mut nul_key = submit_task();
    nul_key.params.insert("k\u{0}".into(), json!(1));
    let cancel_because = |reason: String| {
        TaskCommand::Cancel(CancelTask {
            task_id: task_id(),
            reason: Some(reason),
            canceled_at: at(1),
        })
    };
    let cases: Vec<(Vec<TaskEvent>, TaskCommand, &str)> = vec![
        (
            vec![],
            TaskCommand::Submit(nul_params),
            "params must not contain a NUL",
        ),
        (
            vec![],
            TaskCommand::Submit(nul_key),
            "params must not contain a NUL",
        ),
        (
            queued(),
            cancel_because("a\u{0}".into()),
            "reason must not contain a NUL",
        ),
        (
            queued(),
            cancel_because("x".repeat(MAX_MESSAGE_BYTES + 1)),
            "the limit is 10000",
        ),
        (
            running(),
            TaskCommand::Fail(FailTask {
                artifacts: Default::default(),
                task_id: task_id(),
                attempt: 1,
                error: "oops\u{0}".into(),
                exit_code: None,
                retryable: false,
                next_attempt_at: None,
                failed_at: at(2),
            }),
            "error must not contain a NUL",
        ),
        (
            running(),
            TaskCommand::Complete(CompleteTask {
                task_id: task_id(),
                attempt: 1,
                result: object(json!({"verdict": "\u{0}"})),
                exit_code: 0,
                artifacts: Vec::new(),
                finished_at: at(2),
            }),
            "result must not contain a NUL",
        ),
        (
            running(),
            TaskCommand::RecordProgress(RecordTaskProgress {
                task_id: task_id(),
                attempt: 1,
                percent: None,
                message: Some("\u{0}".into()),
                recorded_at: at(2),
            }),
            "message must not contain a NUL",
        ),
        (
            running(),
            TaskCommand::Retry(RetryTask {
                task_id: task_id(),
                reason: "\u{0}".into(),
                retried_at: at(2),
                next_attempt_at: None,
            }),
            "reason must not contain a NUL",
        ),
    ];
    for (history, command, message) in cases {
        given(history)
            .when(command)
            .then_error(RefusalKind::Invalid, message);
    }
}
