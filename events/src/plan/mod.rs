//! The plan aggregate: a graph of tasks submitted in one request, stream
//! `plan-{uuid}`. Its one event, [`PlanSubmitted`], names each task of the
//! plan by the client-side name it was given; the tasks themselves are
//! ordinary task streams (their `depends_on` holds the edges), appended in
//! the same transaction as the plan's event, so a plan and its tasks exist
//! together or not at all.
//!
//! ```text
//! (none) ── SubmitPlan ──▶ submitted
//! ```
//!
//! A plan's progress is its tasks' own: nothing further is recorded on the
//! plan's stream (canceling a plan cancels its tasks, each on its stream).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::task::TaskId;
use crate::tenant::TenantName;
use crate::Refusal;

/// The most tasks one plan holds.
pub const MAX_PLAN_TASKS: usize = 100;
/// The longest name of a task in a plan, in bytes.
pub const MAX_NAME_BYTES: usize = 100;

crate::stream_id::uuid_identity!(
    /// The identity of a plan: derived from the submitter's
    /// `Idempotency-Key`, or a fresh UUID.
    PlanId,
    "plan-",
    "plan"
);

impl PlanId {
    /// The id of the task called `name` in this plan: name-based (a v5
    /// UUID in the plan's namespace), so a retried submission names the
    /// same tasks, and a fresh (v7) task id is never a plan's. A plan's
    /// tasks have no other ids ([`decide`] refuses them), which is what
    /// lets the plans projector pass over the events of any other task.
    pub fn task_id(self, name: &str) -> TaskId {
        TaskId(uuid::Uuid::new_v5(
            &self.0,
            format!("task:{name}").as_bytes(),
        ))
    }
}

/// Whether the task `task_id` may be a task of some plan: only name-based
/// (v5) ids can be ([`PlanId::task_id`]).
pub fn may_be_in_a_plan(task_id: TaskId) -> bool {
    task_id.0.get_version_num() == 5
}

/// One task of a plan: its name in the plan and its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTask {
    /// The client-side name, unique in the plan.
    pub name: String,
    /// The task's id.
    pub task_id: TaskId,
}

/// Everything that can happen to a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PlanEvent {
    /// See [`PlanSubmitted`].
    #[serde(rename = "PlanSubmitted")]
    Submitted(PlanSubmitted),
}

/// A plan was accepted, its tasks appended with it; also the command that
/// asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSubmitted {
    /// The plan's id.
    pub plan_id: PlanId,
    /// The tenant of the plan and of every one of its tasks.
    pub tenant: TenantName,
    /// Its tasks, parents before children.
    pub tasks: Vec<PlanTask>,
    /// SHA-256 (hex) of the request as the service read it, so a retry
    /// with the same `Idempotency-Key` is recognised as the same request.
    pub request_sha256: String,
    /// When it was accepted.
    pub submitted_at: DateTime<Utc>,
    /// The API key id that submitted it, if known.
    pub submitted_by: Option<String>,
}

codec::stored_events!(PlanEvent: "a plan", schema version 1, {
    Submitted => "PlanSubmitted",
});

/// What callers ask of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanCommand {
    /// Records a plan (its tasks are the caller's to append with it).
    Submit(PlanSubmitted),
}

/// A plan as its events leave it: `None` before it is submitted.
pub type PlanState = Option<PlanSubmitted>;

/// Decides a command (see the module documentation).
///
/// # Errors
/// A plan that exists already; a plan that is empty, too large, or whose
/// names are empty, too long, hold control characters or repeat.
pub fn decide(state: &PlanState, command: PlanCommand) -> Result<Vec<PlanEvent>, Refusal> {
    let PlanCommand::Submit(submitted) = command;
    if state.is_some() {
        return Err(Refusal::already_exists(format!(
            "plan {} already exists",
            submitted.plan_id.0
        )));
    }
    check_tasks(&submitted.tasks)?;
    if let Some(task) = submitted
        .tasks
        .iter()
        .find(|task| task.task_id != submitted.plan_id.task_id(&task.name))
    {
        return Err(Refusal::invalid(format!(
            "task {:?} of plan {} has id {}, not the one derived from the plan and its name",
            task.name, submitted.plan_id.0, task.task_id.0
        )));
    }
    Ok(vec![PlanEvent::Submitted(submitted)])
}

/// Checks a plan's list of tasks: 1 to [`MAX_PLAN_TASKS`], each name 1 to
/// [`MAX_NAME_BYTES`] bytes without control characters, no name twice.
///
/// # Errors
/// The first rule broken, naming the task.
pub fn check_tasks(tasks: &[PlanTask]) -> Result<(), Refusal> {
    check_names(tasks.iter().map(|task| task.name.as_str()))
}

/// [`check_tasks`] on the names alone.
///
/// # Errors
/// The first rule broken, naming the task.
pub fn check_names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Result<(), Refusal> {
    let count = names.len();
    if count == 0 {
        return Err(Refusal::invalid("a plan needs at least one task"));
    }
    if count > MAX_PLAN_TASKS {
        return Err(Refusal::invalid(format!(
            "a plan holds at most {MAX_PLAN_TASKS} tasks; this one has {count}"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(count);
    for (index, name) in names.enumerate() {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(Refusal::invalid(format!(
                "tasks[{index}].name must be 1 to {MAX_NAME_BYTES} bytes"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Refusal::invalid(format!(
                "tasks[{index}].name must not hold control characters"
            )));
        }
        if !seen.insert(name) {
            return Err(Refusal::invalid(format!(
                "tasks[{index}].name {name:?} names another task of the plan too; names must be unique"
            )));
        }
    }
    Ok(())
}

/// Folds one event into the state.
pub fn apply(_state: PlanState, event: &PlanEvent) -> PlanState {
    let PlanEvent::Submitted(submitted) = event;
    Some(submitted.clone())
}

crate::aggregate::aggregate_of_module_functions! {
    /// The plan aggregate, for [`crate::command::execute`] and
    /// [`crate::command::load`].
    pub struct Plans;
    NAME = "plans", STREAM_PREFIX = PlanId::STREAM_PREFIX;
    State = PlanState, Event = PlanEvent;
    Command = PlanCommand { Submit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(names: &[&str]) -> PlanSubmitted {
        let plan_id = PlanId(uuid::Uuid::from_u128(1));
        PlanSubmitted {
            plan_id,
            tenant: TenantName::default_tenant(),
            tasks: names
                .iter()
                .map(|name| PlanTask {
                    name: (*name).to_owned(),
                    task_id: plan_id.task_id(name),
                })
                .collect(),
            request_sha256: "00".into(),
            submitted_at: DateTime::from_timestamp(0, 0).unwrap(),
            submitted_by: None,
        }
    }

    #[test]
    fn a_plan_is_submitted_once_with_unique_names() {
        let submitted = plan(&["a", "b"]);
        let events = decide(&None, PlanCommand::Submit(submitted.clone())).unwrap();
        assert_eq!(events, vec![PlanEvent::Submitted(submitted.clone())]);
        let state = apply(None, &events[0]);
        let again = decide(&state, PlanCommand::Submit(submitted)).unwrap_err();
        assert_eq!(again.kind(), crate::RefusalKind::AlreadyExists);
        for names in [&[][..], &["a", "a"], &[""], &["a\nb"]] {
            assert!(
                decide(&None, PlanCommand::Submit(plan(names))).is_err(),
                "{names:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_PLAN_TASKS).map(|n| n.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let refused = decide(&None, PlanCommand::Submit(plan(&many))).unwrap_err();
        assert!(refused.message().contains("at most 100"), "{refused}");
    }

    #[test]
    fn a_plans_task_ids_are_derived_from_it_and_never_fresh_ones() {
        let mut submitted = plan(&["a", "b"]);
        assert!(submitted
            .tasks
            .iter()
            .all(|task| may_be_in_a_plan(task.task_id)));
        assert!(!may_be_in_a_plan(TaskId(uuid::Uuid::now_v7())));
        assert_ne!(submitted.tasks[0].task_id, submitted.tasks[1].task_id);
        submitted.tasks[1].task_id = TaskId(uuid::Uuid::now_v7());
        let refused = decide(&None, PlanCommand::Submit(submitted)).unwrap_err();
        assert_eq!(refused.kind(), crate::RefusalKind::Invalid);
        assert!(refused.message().contains("\"b\""), "{refused}");
    }

    #[test]
    fn the_stored_form_round_trips() {
        let event = PlanEvent::Submitted(plan(&["a"]));
        let stored = event.to_new_event(uuid::Uuid::from_u128(5), crate::Metadata::default());
        assert_eq!(stored.event_type, "PlanSubmitted");
        assert!(stored.data.get("type").is_none());
        assert_eq!(stored.data["tasks"][0]["name"], "a");
    }
}
