//! The rebuilds recorded in `projection_rebuilds`, as any process reads them
//! (a rebuild whose process died shows as `interrupted`).

use chrono::{DateTime, Utc};

use super::rebuild_lock_key;
use crate::runtime::held_locks;

/// The last rebuild of a projection, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildStatus {
    /// The projection.
    pub name: String,
    /// The version built.
    pub version: u32,
    /// `building`, `swapping`, `done`, `failed`, or `interrupted` (its
    /// process went away before it finished).
    pub state: String,
    /// Events applied to the new tables.
    pub position: u64,
    /// The log's head as last read.
    pub head: u64,
    /// Events applied per second so far.
    pub events_per_s: f64,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When it last reported.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

impl RebuildStatus {
    /// Seconds left at the rate so far, while it builds.
    pub fn eta_seconds(&self) -> Option<f64> {
        (self.finished_at.is_none() && self.events_per_s > 0.0)
            .then(|| self.head.saturating_sub(self.position) as f64 / self.events_per_s)
    }
}

/// The last rebuild of every projection that was ever rebuilt, by name. A
/// rebuild that says it is still going while no process holds its lock (its
/// process died) shows as `interrupted`.
///
/// # Errors
/// When the database does not answer.
pub async fn rebuilds(
    client: &tokio_postgres::Client,
) -> Result<Vec<RebuildStatus>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT projector, version, state, position, head, events_per_s,
                    started_at, updated_at, finished_at, error
             FROM projection_rebuilds ORDER BY projector",
            &[],
        )
        .await?;
    let held = held_locks(client).await?;
    Ok(rows
        .iter()
        .map(|row| RebuildStatus {
            name: row.get(0),
            version: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
            state: {
                let finished: Option<DateTime<Utc>> = row.get(8);
                let name: &str = row.get(0);
                if finished.is_none() && !held.contains(&rebuild_lock_key(name)) {
                    "interrupted".to_owned()
                } else {
                    row.get(2)
                }
            },
            position: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
            head: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
            events_per_s: row.get(5),
            started_at: row.get(6),
            updated_at: row.get(7),
            finished_at: row.get(8),
            error: row.get(9),
        })
        .collect())
}
