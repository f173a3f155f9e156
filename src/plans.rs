//! Submitting a plan: a whole task graph in one request, its edges named by
//! client-side names ([`submit_plan`]).
//!
//! - **Checked before anything is stored.** The names (1 to 100 tasks, each
//!   name once), every `depends_on` reference (a name of the plan, or the
//!   id of an existing task of the same tenant), cycles (refused naming the
//!   cycle's members in order), and each task as `POST /v1/tasks` checks it
//!   (kind, parameters, limits, the aggregate's own rules).
//! - **All or nothing.** The plan's `PlanSubmitted` and every task's
//!   `TaskSubmitted` go in one transaction of the log
//!   ([`append_in_transaction`]), each stream expected not to exist yet.
//! - **Ids derived.** A task's id is derived from the plan's and its name;
//!   the plan's from `(tenant, API key, Idempotency-Key)` when the request
//!   carries one (else a fresh time-ordered UUID), so a retry finds the
//!   first plan, and a different request under the same key is refused.
//! - **Run by the task graph machinery.** Each task's `depends_on` holds
//!   its parents' ids; the graph follower releases or cancels them.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use taskledger_events::command::{event_id, load, CommandError};
use taskledger_events::plan::{self, PlanCommand, PlanId, PlanSubmitted, PlanTask, Plans};
use taskledger_events::postgres::{append_in_transaction, AppendRequest, PgEventStore};
use taskledger_events::task::{
    self as task_aggregate, SubmitTask, Task, TaskCommand, TaskId, Tasks,
};
use taskledger_events::tenant::{TenantName, DEFAULT_TENANT};
use taskledger_events::{AppendError, ExpectedVersion, Metadata, NewEvent, StoreError};
use uuid::Uuid;

use crate::submission::{Submission, SubmitError, Submitter};
use crate::workers::graphs;

/// The namespace of derived plan ids (fixed; changing it would make
/// retries of old plans create new ones).
const PLAN_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3b7f_91c2_5d04_4a8e_b6e1_72f0_c9a3_1d58);

/// One task of a plan as asked for.
#[derive(Debug, Clone)]
pub struct PlanEntry {
    /// Its name in the plan.
    pub name: String,
    /// The task, its `depends_on` left empty (see `depends_on` here).
    pub submission: Submission,
    /// Names of other entries, or ids of existing tasks of the tenant.
    pub depends_on: Vec<String>,
}

/// A plan as asked for.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The tenant of the plan and every task.
    pub tenant: TenantName,
    /// Its tasks, in the request's order.
    pub entries: Vec<PlanEntry>,
    /// SHA-256 (hex) of the request body as read, for retries.
    pub request_sha256: String,
}

/// A plan that is stored.
#[derive(Debug, Clone)]
pub struct SubmittedPlan {
    /// The plan's event.
    pub plan: PlanSubmitted,
    /// Its tasks, in the plan's (parents first) order, as stored.
    pub tasks: Vec<Task>,
    /// The global position of the plan's last event.
    pub position: u64,
    /// `false` when an earlier try made it.
    pub created: bool,
}

/// Why a plan was refused or failed; nothing is stored then.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Empty, too many tasks, a bad or repeated name.
    #[error("{0}")]
    Invalid(String),
    /// `depends_on` names that are neither a task of the plan nor a UUID.
    #[error("depends_on names no task of the plan: {}", quoted(.0))]
    UnknownNames(Vec<String>),
    /// A cycle, its members in order: each depends on the next, the last
    /// on the first.
    #[error("the plan has a cycle: {} (each depends on the next, the last on the first)", cycle_words(.0))]
    Cycle(Vec<String>),
    /// One task is refused as `POST /v1/tasks` would refuse it.
    #[error("task {name:?}: {error}")]
    Task {
        /// Its name.
        name: String,
        /// Why.
        error: SubmitError,
    },
    /// A task depends on an id that is no task of the tenant (or another
    /// tenant's: one answer).
    #[error("task {name:?}: depends_on[{index}] names no task of this plan or this tenant")]
    UnknownParent {
        /// The task's name.
        name: String,
        /// The entry's place in its `depends_on`.
        index: usize,
    },
    /// The same `Idempotency-Key` was used for a different plan.
    #[error("the Idempotency-Key was already used for plan {plan_id} with a different request; use a new key for a new plan")]
    IdempotencyKeyReused {
        /// The plan the key made.
        plan_id: Uuid,
    },
    /// The log could not be read or written.
    #[error(transparent)]
    Command(#[from] CommandError),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cycle_words(names: &[String]) -> String {
    let mut words: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
    if let Some(first) = words.first().cloned() {
        words.push(first);
    }
    words.join(" → ")
}

/// A reference of a `depends_on`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    /// Another entry of the plan, by its place.
    Entry(usize),
    /// An existing task.
    Existing(TaskId),
}

/// The edges of the plan (per entry, its parents in the order given), or
/// the names that resolve to nothing.
fn resolve_references(entries: &[PlanEntry]) -> Result<Vec<Vec<Parent>>, PlanError> {
    let by_name: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| (entry.name.as_str(), index))
        .collect();
    let mut unknown: Vec<String> = Vec::new();
    let parents = entries
        .iter()
        .map(|entry| {
            entry
                .depends_on
                .iter()
                .filter_map(|reference| {
                    if let Some(&index) = by_name.get(reference.as_str()) {
                        return Some(Parent::Entry(index));
                    }
                    if let Ok(id) = Uuid::parse_str(reference) {
                        return Some(Parent::Existing(TaskId(id)));
                    }
                    if !unknown.contains(reference) {
                        unknown.push(reference.clone());
                    }
                    None
                })
                .collect()
        })
        .collect();
    if unknown.is_empty() {
        Ok(parents)
    } else {
        Err(PlanError::UnknownNames(unknown))
    }
}

/// The entries in an order where every parent comes before its children,
/// or the first cycle met (its members in order, each depending on the
/// next). Depth first from each entry in the request's order, so the
/// answer is the same for the same request.
fn topological_order(parents: &[Vec<Parent>]) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; parents.len()];
    let mut order = Vec::with_capacity(parents.len());
    for root in 0..parents.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // (entry, next parent to look at); the path is the stack.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::OnPath;
        while let Some(&mut (entry, ref mut next)) = stack.last_mut() {
            let internal = parents[entry].iter().skip(*next).find_map(|parent| {
                *next += 1;
                match parent {
                    Parent::Entry(index) => Some(*index),
                    Parent::Existing(_) => None,
                }
            });
            match internal {
                Some(parent) if marks[parent] == Mark::OnPath => {
                    let from = stack
                        .iter()
                        .position(|(member, _)| *member == parent)
                        .expect("a member on the path is on the stack");
                    return Err(stack[from..].iter().map(|(member, _)| *member).collect());
                }
                Some(parent) if marks[parent] == Mark::New => {
                    marks[parent] = Mark::OnPath;
                    stack.push((parent, 0));
                }
                Some(_) => {}
                None => {
                    marks[entry] = Mark::Done;
                    order.push(entry);
                    stack.pop();
                }
            }
        }
    }
    Ok(order)
}

/// The id a plan gets: derived from the key and its `Idempotency-Key`
/// (within the tenant), else fresh.
pub fn plan_id_for(tenant: &TenantName, submitter: Submitter<'_>) -> PlanId {
    PlanId(submitter.idempotency_key.map_or_else(Uuid::now_v7, |key| {
        let name = format!("idempotency:{}:{key}", submitter.key_id);
        let name = match tenant.as_str() {
            DEFAULT_TENANT => name,
            tenant => format!("tenant:{}:{tenant}:{name}", tenant.len()),
        };
        Uuid::new_v5(&PLAN_ID_NAMESPACE, name.as_bytes())
    }))
}

/// The id of the task called `name` in plan `plan_id`.
pub fn task_id_in(plan_id: PlanId, name: &str) -> TaskId {
    plan_id.task_id(name)
}

/// Submits a plan (see the module documentation), or finds the one an
/// earlier try with the same `Idempotency-Key` stored.
///
/// # Errors
/// See [`PlanError`]; nothing is stored when it fails.
pub async fn submit_plan(
    store: &PgEventStore,
    config: &crate::config::FileConfig,
    request: PlanRequest,
    submitter: Submitter<'_>,
    now: DateTime<Utc>,
) -> Result<SubmittedPlan, PlanError> {
    plan::check_names(request.entries.iter().map(|entry| entry.name.as_str()))
        .map_err(|refusal| PlanError::Invalid(refusal.message().to_owned()))?;
    let parents = resolve_references(&request.entries)?;
    let order = topological_order(&parents).map_err(|cycle| {
        PlanError::Cycle(
            cycle
                .into_iter()
                .map(|index| request.entries[index].name.clone())
                .collect(),
        )
    })?;
    let plan_id = plan_id_for(&request.tenant, submitter);
    if submitter.idempotency_key.is_some() {
        if let Some(found) = existing(store, plan_id, &request).await? {
            return Ok(found);
        }
    }
    let ids: Vec<TaskId> = request
        .entries
        .iter()
        .map(|entry| task_id_in(plan_id, &entry.name))
        .collect();
    let metadata = Metadata::of_actor(submitter.key_id.to_string());
    let mut appends = Vec::with_capacity(order.len() + 1);
    let mut tasks = Vec::with_capacity(order.len());
    for &index in &order {
        let entry = &request.entries[index];
        let task_error = |error: SubmitError| PlanError::Task {
            name: entry.name.clone(),
            error,
        };
        let submission = &entry.submission;
        let kind = config
            .kind(&submission.kind)
            .map_err(|error| task_error(error.into()))?;
        kind.check_params(&submission.kind, &submission.params)
            .and_then(|()| kind.check_inputs(&submission.kind, &submission.inputs))
            .and_then(|()| {
                kind.check_limits(
                    &submission.kind,
                    submission.timeout_seconds,
                    submission.max_attempts,
                )
            })
            .map_err(|error| task_error(error.into()))?;
        let mut depends_on = Vec::with_capacity(parents[index].len());
        for (place, parent) in parents[index].iter().enumerate() {
            depends_on.push(match *parent {
                Parent::Entry(parent) => ids[parent],
                Parent::Existing(task_id) => {
                    let loaded = load::<Tasks>(store, &task_id.stream_id()).await?;
                    match loaded.state {
                        Some(task) if task.tenant == request.tenant => task_id,
                        _ => {
                            return Err(PlanError::UnknownParent {
                                name: entry.name.clone(),
                                index: place,
                            })
                        }
                    }
                }
            });
        }
        let task_id = ids[index];
        let command = SubmitTask {
            task_id,
            kind: submission.kind.clone(),
            params: submission.params.clone(),
            inputs: submission.inputs.clone(),
            tenant: request.tenant.clone(),
            frontend_id: submission.frontend_id.clone(),
            client_task_id: None,
            priority: submission.priority.unwrap_or(0),
            timeout_seconds: submission.timeout_seconds.unwrap_or(kind.timeout_seconds),
            max_attempts: submission.max_attempts.unwrap_or(kind.max_attempts),
            submitted_at: now,
            submitted_by: Some(submitter.key_id.to_string()),
            depends_on,
            on_parent_failure: submission.on_parent_failure,
        };
        let events = task_aggregate::decide(&None, TaskCommand::Submit(command))
            .map_err(|refusal| task_error(CommandError::Rejected(refusal).into()))?;
        // The command id a lone submission of this task would use.
        let command_id = Uuid::new_v5(&task_id.0, b"submit");
        let task = task_aggregate::fold(&events).expect("a submitted task exists");
        appends.push(append_request(
            task_id.stream_id(),
            events
                .iter()
                .enumerate()
                .map(|(n, event)| event.to_new_event(event_id(command_id, n), metadata.clone()))
                .collect(),
        )?);
        tasks.push(task);
    }
    let submitted = PlanSubmitted {
        plan_id,
        tenant: request.tenant.clone(),
        tasks: order
            .iter()
            .map(|&index| PlanTask {
                name: request.entries[index].name.clone(),
                task_id: ids[index],
            })
            .collect(),
        request_sha256: request.request_sha256.clone(),
        submitted_at: now,
        submitted_by: Some(submitter.key_id.to_string()),
    };
    let plan_events = plan::decide(&None, PlanCommand::Submit(submitted.clone()))
        .map_err(|refusal| PlanError::Invalid(refusal.message().to_owned()))?;
    let plan_command = Uuid::new_v5(&plan_id.0, b"submit-plan");
    // The plan first, so a reader of the log meets the plan before its tasks.
    appends.insert(
        0,
        append_request(
            plan_id.stream_id(),
            plan_events
                .iter()
                .enumerate()
                .map(|(n, event)| event.to_new_event(event_id(plan_command, n), metadata.clone()))
                .collect(),
        )?,
    );
    let position = match append_all(store, &appends).await? {
        Some(position) => position,
        // A concurrent try of the same plan stored it first.
        None => {
            return match existing(store, plan_id, &request).await? {
                Some(found) => Ok(found),
                None => Err(CommandError::Conflict {
                    stream_id: plan_id.stream_id().to_string(),
                    attempts: 1,
                }
                .into()),
            }
        }
    };
    // A task whose parents are all existing tasks that had already ended is
    // released (or canceled) now; otherwise the graph follower does it.
    let mut stored = Vec::with_capacity(tasks.len());
    for task in tasks {
        let external = !task.depends_on.is_empty()
            && task.depends_on.iter().all(|parent| !ids.contains(parent));
        if external {
            if let Some(resolved) = graphs::resolve(store, task.id, now).await? {
                stored.push(resolved);
                continue;
            }
        }
        stored.push(task);
    }
    Ok(SubmittedPlan {
        plan: submitted,
        tasks: stored,
        position,
        created: true,
    })
}

fn append_request(
    stream_id: taskledger_events::StreamId,
    events: Vec<NewEvent>,
) -> Result<AppendRequest, PlanError> {
    AppendRequest::new(stream_id, ExpectedVersion::NoStream, events)
        .map_err(|error| CommandError::Invalid(error).into())
}

/// Appends every request in one transaction: the last position, or `None`
/// when a stream already existed (and nothing was stored).
async fn append_all(
    store: &PgEventStore,
    appends: &[AppendRequest],
) -> Result<Option<u64>, PlanError> {
    let store_error = |error: StoreError| PlanError::Command(CommandError::Store(error));
    let db =
        |context: &'static str| move |source| store_error(StoreError::Database { context, source });
    let mut client = store
        .pool()
        .get()
        .await
        .map_err(|error| store_error(StoreError::Pool(error.to_string())))?;
    let tx = client
        .transaction()
        .await
        .map_err(db("opening a plan's transaction"))?;
    let outcomes = append_in_transaction(&tx, appends)
        .await
        .map_err(store_error)?;
    let mut last = 0;
    for outcome in outcomes {
        match outcome {
            Ok(appended) if !appended.already_stored => last = last.max(appended.last_position),
            Ok(_) | Err(AppendError::WrongExpectedVersion { .. }) => {
                tx.rollback().await.map_err(db("rolling back a plan"))?;
                return Ok(None);
            }
            Err(AppendError::DuplicateEventId { .. }) => {
                // Event ids are derived from the plan's and tasks' ids: the
                // same plan stored by a concurrent try.
                tx.rollback().await.map_err(db("rolling back a plan"))?;
                return Ok(None);
            }
            Err(AppendError::Invalid(error)) => {
                let _ = tx.rollback().await;
                return Err(CommandError::Invalid(error).into());
            }
            Err(AppendError::Store(error)) => {
                let _ = tx.rollback().await;
                return Err(store_error(error));
            }
        }
    }
    tx.commit().await.map_err(db("committing a plan"))?;
    Ok(Some(last))
}

/// The stored plan `plan_id`, if it is the same request; `None` when there
/// is no such plan.
async fn existing(
    store: &PgEventStore,
    plan_id: PlanId,
    request: &PlanRequest,
) -> Result<Option<SubmittedPlan>, PlanError> {
    let loaded = load::<Plans>(store, &plan_id.stream_id()).await?;
    let Some(plan) = loaded.state else {
        return Ok(None);
    };
    if plan.tenant != request.tenant || plan.request_sha256 != request.request_sha256 {
        return Err(PlanError::IdempotencyKeyReused { plan_id: plan_id.0 });
    }
    let mut tasks = Vec::with_capacity(plan.tasks.len());
    let mut position = loaded.position;
    for member in &plan.tasks {
        let loaded = load::<Tasks>(store, &member.task_id.stream_id()).await?;
        position = position.max(loaded.position);
        tasks.extend(loaded.state);
    }
    Ok(Some(SubmittedPlan {
        plan,
        tasks,
        position,
        created: false,
    }))
}

/// The counts of `statuses`, by status name.
pub fn counts<'a>(statuses: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for status in statuses {
        *counts.entry(status.to_owned()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(edges: &[(&str, &[&str])]) -> Vec<PlanEntry> {
        edges
            .iter()
            .map(|(name, depends_on)| PlanEntry {
                name: (*name).to_owned(),
                submission: Submission::new("echo", serde_json::Map::new(), "web"),
                depends_on: depends_on.iter().map(|&name| name.to_owned()).collect(),
            })
            .collect()
    }

    fn names(entries: &[PlanEntry], indexes: Vec<usize>) -> Vec<&str> {
        indexes
            .into_iter()
            .map(|index| entries[index].name.as_str())
            .collect()
    }

    #[test]
    fn a_diamond_is_ordered_parents_first() {
        let plan = entries(&[("d", &["b", "c"]), ("b", &["a"]), ("c", &["a"]), ("a", &[])]);
        let parents = resolve_references(&plan).unwrap();
        let order = names(&plan, topological_order(&parents).unwrap());
        assert_eq!(order, vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn cycles_are_named_in_order_and_unknown_names_listed() {
        let plan = entries(&[("a", &[]), ("b", &["a", "d"]), ("c", &["b"]), ("d", &["c"])]);
        let parents = resolve_references(&plan).unwrap();
        let cycle = names(&plan, topological_order(&parents).unwrap_err());
        assert_eq!(cycle, vec!["b", "d", "c"]);
        let selfish = entries(&[("a", &["a"])]);
        let parents = resolve_references(&selfish).unwrap();
        assert_eq!(topological_order(&parents).unwrap_err(), vec![0]);
        let words = PlanError::Cycle(vec!["b".into(), "d".into(), "c".into()]).to_string();
        assert!(words.contains(r#""b" → "d" → "c" → "b""#), "{words}");
        let unknown = entries(&[("a", &["x", "y", "x"]), ("b", &["a"])]);
        match resolve_references(&unknown) {
            Err(PlanError::UnknownNames(names)) => assert_eq!(names, vec!["x", "y"]),
            other => panic!("{other:?}"),
        }
        let existing = Uuid::new_v4().to_string();
        let outside = entries(&[("a", &[existing.as_str()])]);
        assert!(matches!(
            resolve_references(&outside).unwrap()[0][0],
            Parent::Existing(_)
        ));
    }

    #[test]
    fn ids_are_derived_per_tenant_key_and_name() {
        let submitter = Submitter {
            key_id: Uuid::from_u128(7),
            idempotency_key: Some("k1"),
        };
        let acme: TenantName = "acme".parse().unwrap();
        let default = TenantName::default_tenant();
        assert_eq!(plan_id_for(&acme, submitter), plan_id_for(&acme, submitter));
        assert_ne!(
            plan_id_for(&acme, submitter),
            plan_id_for(&default, submitter)
        );
        let fresh = Submitter {
            idempotency_key: None,
            ..submitter
        };
        assert_ne!(plan_id_for(&acme, fresh), plan_id_for(&acme, fresh));
        let plan = plan_id_for(&acme, submitter);
        assert_eq!(task_id_in(plan, "a"), task_id_in(plan, "a"));
        assert_ne!(task_id_in(plan, "a"), task_id_in(plan, "b"));
    }
}
