//! The `plans` projector (the plans read model): one row per plan in
//! `plans`, one per task of a plan in `plan_tasks`, each with the status
//! its task's events leave it in. The API reads them through [`query`].
//!
//! Reads the plans' streams and the tasks' streams: a `PlanSubmitted` adds
//! its rows (before its tasks' events, which follow it in the same
//! transaction of the log); a task event that changes a status updates the
//! row of that task, if it is in a plan (only a task with a name-based id
//! can be: the events of any other are passed over without a transaction).
//! Every value comes from the events, so a rebuild gives the same rows.

use async_trait::async_trait;
use taskledger_events::plan::{may_be_in_a_plan, PlanEvent, PlanId};
use taskledger_events::task::{TaskEvent, TaskId, TaskStatus};
use taskledger_events::RecordedEvent;

use crate::declare::{describe, events_of};
use crate::runtime::{Batch, Projector, ProjectorError};

pub mod query;

/// Projects plans and their tasks' statuses into `plans` and `plan_tasks`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlansProjector;

/// A plan's or a task's stream.
enum Stream {
    Plan,
    Task(TaskId),
}

#[async_trait]
impl Projector for PlansProjector {
    describe! {
        name: "plans",
        version: 1,
        tables: ["plans", "plan_tasks"],
        schema: include_str!("../../../migrations/0025_plans.sql"),
    }

    /// A plan's event, or an event of a task that may be a plan's: a
    /// plan's tasks have name-based ids derived from it
    /// ([`taskledger_events::plan::PlanId::task_id`]), so the events of a
    /// task with a fresh (v7) id change nothing here and are passed over.
    fn projects(&self, event: &RecordedEvent) -> bool {
        PlanId::from_stream_id(&event.stream_id).is_some()
            || TaskId::from_stream_id(&event.stream_id).is_some_and(may_be_in_a_plan)
    }

    async fn apply(&self, tx: &Batch<'_>, events: &[RecordedEvent]) -> Result<(), ProjectorError> {
        for recorded in events {
            let stream = if PlanId::from_stream_id(&recorded.stream_id).is_some() {
                Stream::Plan
            } else if let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) {
                Stream::Task(task_id)
            } else {
                continue;
            };
            let one = std::slice::from_ref(recorded);
            match stream {
                Stream::Plan => {
                    for decoded in events_of(one, |_| Some(())) {
                        let ((), recorded, PlanEvent::Submitted(plan)) = decoded?;
                        submitted(tx, recorded, &plan).await?;
                    }
                }
                Stream::Task(task_id) => {
                    for decoded in events_of(one, |_| Some(())) {
                        let ((), _, event): ((), _, TaskEvent) = decoded?;
                        if let Some(status) = status_after(&event) {
                            tx.execute(
                                "UPDATE plan_tasks SET status = $2 WHERE task_id = $1",
                                &[&task_id.0, &status.as_str()],
                            )
                            .await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

async fn submitted(
    tx: &Batch<'_>,
    recorded: &RecordedEvent,
    plan: &taskledger_events::plan::PlanSubmitted,
) -> Result<(), ProjectorError> {
    let position = i64::try_from(recorded.global_position).unwrap_or(i64::MAX);
    let count = i32::try_from(plan.tasks.len()).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO plans (plan_id, tenant, task_count, submitted_at, position)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &plan.plan_id.0,
            &plan.tenant.as_str(),
            &count,
            &plan.submitted_at,
            &position,
        ],
    )
    .await?;
    let ordinals: Vec<i32> = (0..count).collect();
    let names: Vec<&str> = plan.tasks.iter().map(|task| task.name.as_str()).collect();
    let ids: Vec<uuid::Uuid> = plan.tasks.iter().map(|task| task.task_id.0).collect();
    // 'waiting' until the task's own TaskSubmitted (next in the log) says.
    tx.execute(
        "INSERT INTO plan_tasks (plan_id, ordinal, name, task_id, status)
         SELECT $1, o, n, t, 'waiting'
         FROM unnest($2::integer[], $3::text[], $4::uuid[]) AS r(o, n, t)",
        &[&plan.plan_id.0, &ordinals, &names, &ids],
    )
    .await?;
    Ok(())
}

/// The status a task is in after `event`, when the event changes it (as
/// the task's fold, [`taskledger_events::task::apply`], does).
fn status_after(event: &TaskEvent) -> Option<TaskStatus> {
    Some(match event {
        TaskEvent::Submitted(submitted) if submitted.depends_on.is_empty() => TaskStatus::Queued,
        TaskEvent::Submitted(_) => TaskStatus::Waiting,
        TaskEvent::Released(_) | TaskEvent::Retried(_) => TaskStatus::Queued,
        TaskEvent::Started(_) => TaskStatus::Running,
        TaskEvent::Succeeded(_) => TaskStatus::Succeeded,
        TaskEvent::Failed(_) => TaskStatus::Failed,
        TaskEvent::TimedOut(_) => TaskStatus::TimedOut,
        TaskEvent::Canceled(_) => TaskStatus::Canceled,
        TaskEvent::ProgressRecorded(_) | TaskEvent::JobSubmitted(_) | TaskEvent::JobRunning(_) => {
            return None
        }
    })
}
