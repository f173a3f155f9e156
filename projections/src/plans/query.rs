//! Reading the plans read model (`plans`, `plan_tasks`) for the API.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Error, Row};
use uuid::Uuid;

/// A plan as the read model holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPlan {
    /// Its id.
    pub plan_id: Uuid,
    /// Its tenant.
    pub tenant: String,
    /// How many tasks it has.
    pub task_count: u32,
    /// When it was accepted.
    pub submitted_at: DateTime<Utc>,
    /// The global position of its `PlanSubmitted`.
    pub position: u64,
}

/// A task of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPlanTask {
    /// Its name in the plan.
    pub name: String,
    /// Its id.
    pub task_id: Uuid,
    /// Its status (`waiting`, `queued`, … as the task's own).
    pub status: String,
}

const PLAN_COLUMNS: &str = "plan_id, tenant, task_count, submitted_at, position";

fn plan_from(row: &Row) -> StoredPlan {
    StoredPlan {
        plan_id: row.get(0),
        tenant: row.get(1),
        task_count: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
        submitted_at: row.get(3),
        position: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
    }
}

/// The plan `plan_id`, if the read model has it.
///
/// # Errors
/// The database failed.
pub async fn plan(client: &Client, plan_id: Uuid) -> Result<Option<StoredPlan>, Error> {
    let row = client
        .query_opt(
            &format!("SELECT {PLAN_COLUMNS} FROM plans WHERE plan_id = $1"),
            &[&plan_id],
        )
        .await?;
    Ok(row.as_ref().map(plan_from))
}

/// The tasks of plan `plan_id`, parents first.
///
/// # Errors
/// The database failed.
pub async fn plan_tasks(client: &Client, plan_id: Uuid) -> Result<Vec<StoredPlanTask>, Error> {
    let rows = client
        .query(
            "SELECT name, task_id, status FROM plan_tasks WHERE plan_id = $1 ORDER BY ordinal",
            &[&plan_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| StoredPlanTask {
            name: row.get(0),
            task_id: row.get(1),
            status: row.get(2),
        })
        .collect())
}

/// Up to `limit` plans, newest first, before global position `before` (all
/// when `None`), of the tenants in `tenants` (every one must match; none:
/// every tenant's).
///
/// # Errors
/// The database failed.
pub async fn plans(
    client: &Client,
    tenants: &[String],
    before: Option<u64>,
    limit: i64,
) -> Result<Vec<StoredPlan>, Error> {
    let before = before.map_or(i64::MAX, |position| {
        i64::try_from(position).unwrap_or(i64::MAX)
    });
    let rows = client
        .query(
            &format!(
                "SELECT {PLAN_COLUMNS} FROM plans
                 WHERE position < $1 AND tenant = ALL($2::text[])
                 ORDER BY position DESC LIMIT $3"
            ),
            &[&before, &tenants, &limit],
        )
        .await?;
    Ok(rows.iter().map(plan_from).collect())
}
