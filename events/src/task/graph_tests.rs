//! Task graphs, given/when/then: a task submitted with parents waits, and
//! `ResolveDependencies` releases it, cancels it naming the parent, or
//! leaves it waiting.

use serde_json::Map;
use uuid::Uuid;

use super::*;
use crate::tenant::TenantName;
use crate::testing::{self, at, Given, FIXED_ID};
use crate::RefusalKind;

fn task_id() -> TaskId {
    TaskId(FIXED_ID)
}

fn parent(n: u128) -> TaskId {
    TaskId(Uuid::from_u128(0x1000 + n))
}

fn submit_with(depends_on: Vec<TaskId>, on_parent_failure: OnParentFailure) -> SubmitTask {
    SubmitTask {
        task_id: task_id(),
        kind: "sh".into(),
        params: Map::new(),
        inputs: Default::default(),
        tenant: TenantName::default_tenant(),
        frontend_id: "web".into(),
        client_task_id: None,
        priority: 7,
        timeout_seconds: 60,
        max_attempts: 2,
        submitted_at: at(0),
        submitted_by: None,
        depends_on,
        on_parent_failure,
    }
}

fn submitted(depends_on: Vec<TaskId>, on_parent_failure: OnParentFailure) -> TaskEvent {
    TaskEvent::Submitted(submit_with(depends_on, on_parent_failure))
}

fn given(history: impl IntoIterator<Item = TaskEvent>) -> Given<Tasks> {
    testing::given(history)
}

fn resolve(parents: &[(TaskId, TaskStatus)]) -> TaskCommand {
    TaskCommand::ResolveDependencies(ResolveDependencies {
        task_id: task_id(),
        parents: parents.to_vec(),
        resolved_at: at(50),
    })
}

fn released() -> TaskEvent {
    TaskEvent::Released(TaskReleased {
        released_at: at(50),
    })
}

fn canceled_for(parent: TaskId, outcome: &str) -> TaskEvent {
    TaskEvent::Canceled(TaskCanceled {
        reason: Some(format!("parent {parent} {outcome}")),
        canceled_at: at(50),
        was_running: false,
    })
}

#[test]
fn a_task_with_parents_is_submitted_waiting_and_one_without_queued() {
    let waiting = given([])
        .when(TaskCommand::Submit(submit_with(
            vec![parent(1), parent(2)],
            OnParentFailure::Cancel,
        )))
        .then_expect(vec![submitted(
            vec![parent(1), parent(2)],
            OnParentFailure::Cancel,
        )])
        .unwrap();
    assert_eq!(waiting.status, TaskStatus::Waiting);
    assert_eq!(waiting.depends_on, vec![parent(1), parent(2)]);
    assert_eq!(waiting.shown_worker_id(), None);
    let queued = given([])
        .when(TaskCommand::Submit(submit_with(
            Vec::new(),
            OnParentFailure::Cancel,
        )))
        .then_expect_any()
        .unwrap();
    assert_eq!(queued.status, TaskStatus::Queued);
}

#[test]
fn depends_on_refuses_duplicates_itself_and_more_than_the_limit() {
    given([])
        .when(TaskCommand::Submit(submit_with(
            vec![parent(1), parent(1)],
            OnParentFailure::Cancel,
        )))
        .then_error(RefusalKind::Invalid, "more than once");
    given([])
        .when(TaskCommand::Submit(submit_with(
            vec![task_id()],
            OnParentFailure::Cancel,
        )))
        .then_error(RefusalKind::Invalid, "the task itself");
    let many: Vec<TaskId> = (0..=MAX_DEPENDS_ON as u128).map(parent).collect();
    given([])
        .when(TaskCommand::Submit(submit_with(
            many,
            OnParentFailure::Cancel,
        )))
        .then_error(RefusalKind::Invalid, "at most 100");
    let most: Vec<TaskId> = (0..MAX_DEPENDS_ON as u128).map(parent).collect();
    given([])
        .when(TaskCommand::Submit(submit_with(
            most,
            OnParentFailure::Cancel,
        )))
        .then_expect_any();
}

#[test]
fn every_parent_succeeded_releases_the_task_queued() {
    let history = [submitted(
        vec![parent(1), parent(2)],
        OnParentFailure::Cancel,
    )];
    let task = given(history)
        .when(resolve(&[
            (parent(1), TaskStatus::Succeeded),
            (parent(2), TaskStatus::Succeeded),
        ]))
        .then_expect(vec![released()])
        .unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    // Released, it starts as any queued task.
    given([
        submitted(vec![parent(1)], OnParentFailure::Cancel),
        released(),
    ])
    .when(TaskCommand::Start(StartTask {
        task_id: task_id(),
        worker_id: "w".into(),
        attempt: 1,
        started_at: at(60),
    }))
    .then_expect_any();
}

#[test]
fn a_parent_not_final_leaves_the_task_waiting_and_a_retried_one_too() {
    let history = [submitted(
        vec![parent(1), parent(2)],
        OnParentFailure::Cancel,
    )];
    for pending in [TaskStatus::Queued, TaskStatus::Running, TaskStatus::Waiting] {
        let task = given(history.clone())
            .when(resolve(&[
                (parent(1), TaskStatus::Succeeded),
                (parent(2), pending),
            ]))
            .then_expect(vec![])
            .unwrap();
        assert_eq!(task.status, TaskStatus::Waiting);
    }
}

#[test]
fn a_waiting_task_cannot_start() {
    given([submitted(vec![parent(1)], OnParentFailure::Cancel)])
        .when(TaskCommand::Start(StartTask {
            task_id: task_id(),
            worker_id: "w".into(),
            attempt: 1,
            started_at: at(60),
        }))
        .then_error(RefusalKind::InvalidTransition, "waiting for its parents");
}

#[test]
fn a_parent_that_failed_timed_out_or_was_canceled_cancels_the_task_naming_it() {
    let history = [submitted(
        vec![parent(1), parent(2)],
        OnParentFailure::Cancel,
    )];
    for (status, words) in [
        (TaskStatus::Failed, "failed"),
        (TaskStatus::TimedOut, "timed out"),
        (TaskStatus::Canceled, "canceled"),
    ] {
        // Even while the other parent still runs.
        let task = given(history.clone())
            .when(resolve(&[
                (parent(1), TaskStatus::Running),
                (parent(2), status),
            ]))
            .then_expect(vec![canceled_for(parent(2), words)])
            .unwrap();
        assert_eq!(task.status, TaskStatus::Canceled);
        assert_eq!(
            task.shown_error().unwrap(),
            format!("parent {} {words}", parent(2))
        );
    }
    // The first failed parent in depends_on order is named.
    given(history)
        .when(resolve(&[
            (parent(2), TaskStatus::Failed),
            (parent(1), TaskStatus::TimedOut),
        ]))
        .then_expect(vec![canceled_for(parent(1), "timed out")]);
}

#[test]
fn on_parent_failure_run_releases_once_every_parent_ended() {
    let history = [submitted(vec![parent(1), parent(2)], OnParentFailure::Run)];
    given(history.clone())
        .when(resolve(&[
            (parent(1), TaskStatus::Failed),
            (parent(2), TaskStatus::Running),
        ]))
        .then_expect(vec![]);
    given(history)
        .when(resolve(&[
            (parent(1), TaskStatus::Failed),
            (parent(2), TaskStatus::Succeeded),
        ]))
        .then_expect(vec![released()]);
}

#[test]
fn resolving_twice_is_refused_so_a_repeated_resolution_appends_nothing() {
    let released_history = [
        submitted(vec![parent(1)], OnParentFailure::Cancel),
        released(),
    ];
    given(released_history)
        .when(resolve(&[(parent(1), TaskStatus::Succeeded)]))
        .then_error(RefusalKind::InvalidTransition, "cannot be released");
    let canceled_history = [
        submitted(vec![parent(1)], OnParentFailure::Cancel),
        canceled_for(parent(1), "failed"),
    ];
    given(canceled_history)
        .when(resolve(&[(parent(1), TaskStatus::Failed)]))
        .then_error(RefusalKind::InvalidTransition, "cannot be released");
}

#[test]
fn a_resolution_must_give_every_parent() {
    given([submitted(
        vec![parent(1), parent(2)],
        OnParentFailure::Cancel,
    )])
    .when(resolve(&[(parent(1), TaskStatus::Succeeded)]))
    .then_error(RefusalKind::Invalid, "was not given");
}

#[test]
fn a_waiting_task_can_be_canceled_and_a_release_then_does_not_fit() {
    let task = given([submitted(vec![parent(1)], OnParentFailure::Cancel)])
        .when(TaskCommand::Cancel(CancelTask {
            task_id: task_id(),
            reason: None,
            canceled_at: at(10),
        }))
        .then_expect(vec![TaskEvent::Canceled(TaskCanceled {
            reason: None,
            canceled_at: at(10),
            was_running: false,
        })])
        .unwrap();
    assert_eq!(task.status, TaskStatus::Canceled);
    assert!(!fits(&Some(task), &released()));
}

#[test]
fn old_submissions_read_without_parents_and_new_ones_store_them_only_when_given() {
    // The stored form of a task without parents is what it was before.
    let plain = serde_json::to_value(submit_with(Vec::new(), OnParentFailure::Cancel)).unwrap();
    assert!(plain.get("depends_on").is_none(), "{plain}");
    assert!(plain.get("on_parent_failure").is_none(), "{plain}");
    let old: TaskSubmitted = serde_json::from_value(plain).unwrap();
    assert!(old.depends_on.is_empty());
    assert_eq!(old.on_parent_failure, OnParentFailure::Cancel);
    let graph = serde_json::to_value(submit_with(vec![parent(1)], OnParentFailure::Run)).unwrap();
    assert_eq!(
        graph["depends_on"],
        serde_json::json!([parent(1).to_string()])
    );
    assert_eq!(graph["on_parent_failure"], "run");
}
