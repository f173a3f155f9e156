//! The lag report: where every projector stands against the log, read from
//! the database (the same answer whichever process runs the projector).

use super::{held_locks, lock_key};

/// Where a projector stands against the log, as recorded in the database
/// (so it is the same answer whichever process runs the projector).
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorLag {
    /// The projector's name.
    pub name: String,
    /// The version its checkpoint was written by.
    pub version: u32,
    /// Its checkpoint: every event up to here is in its tables.
    pub position: u64,
    /// The log's head when this was read.
    pub head: u64,
    /// Events in the log it has not applied yet.
    pub lag_events: u64,
    /// How long ago the oldest event it has not applied was recorded (0 when
    /// it is caught up).
    pub lag_seconds: f64,
    /// The event it fails on and why, while it fails.
    pub failure: Option<(u64, String)>,
    /// Whether an operator paused it.
    pub paused: bool,
    /// Whether some process runs it right now (holds its leader lock).
    pub active: bool,
}

/// Every projector's checkpoint, the log's head, and the distance between
/// them, by name.
///
/// # Errors
/// When the database does not answer.
pub async fn lags(
    client: &tokio_postgres::Client,
) -> Result<Vec<ProjectorLag>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.projector, c.version, c.position, c.failed_position, c.failure, h.head,
                    coalesce((SELECT extract(epoch FROM now() - e.recorded_at)::float8
                              FROM events e WHERE e.global_position = c.position + 1), 0),
                    c.paused
             FROM projector_checkpoints c,
                  (SELECT coalesce(max(global_position), 0) AS head FROM events) h
             ORDER BY c.projector",
            &[],
        )
        .await?;
    // Which projectors some process is running right now: their leader
    // locks are held.
    let held = held_locks(client).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let position = u64::try_from(row.get::<_, i64>(2)).unwrap_or(0);
            let head = u64::try_from(row.get::<_, i64>(5)).unwrap_or(0);
            let failed: Option<i64> = row.get(3);
            let failure: Option<String> = row.get(4);
            ProjectorLag {
                name: row.get(0),
                version: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
                position,
                head,
                lag_events: head.saturating_sub(position),
                lag_seconds: row.get::<_, f64>(6).max(0.0),
                failure: failed
                    .map(|at| (u64::try_from(at).unwrap_or(0), failure.unwrap_or_default())),
                paused: row.get(7),
                active: held.contains(&lock_key(row.get(0))),
            }
        })
        .collect())
}
