//! The `aggregate_snapshots` table (migration 23): one row per stream, the
//! newest snapshot of its state under one state schema. Reads and writes
//! are single-row key lookups; writes are upserts that never replace a
//! newer snapshot of the same schema, so two writers racing are harmless.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio_util::task::TaskTracker;

use super::{to_i64, to_u64};
use crate::error::StoreError;
use crate::stream_id::StreamId;

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Its stream.
    pub stream_id: String,
    /// The aggregate's [`crate::Aggregate::NAME`].
    pub aggregate: &'static str,
    /// The state schema it was written under.
    pub state_version: u32,
    /// The stream version it folds up to (inclusive).
    pub stream_version: u64,
    /// The global position of the event at that version.
    pub global_position: u64,
    /// The state's bytes ([`crate::snapshot::SnapshotPolicy::encode`]).
    pub state: Vec<u8>,
}

/// The snapshot table of one store. Cheap to clone; clones share the
/// pool and the set of writes in flight.
#[derive(Debug, Clone)]
pub struct Snapshots {
    pool: Pool,
    /// Streams with a spawned write in flight: a second is not spawned
    /// (the first carries a state as new, give or take a few events).
    writing: Arc<Mutex<HashSet<String>>>,
    tracker: TaskTracker,
}

impl Snapshots {
    pub(super) fn new(pool: Pool) -> Self {
        Self {
            pool,
            writing: Arc::default(),
            tracker: TaskTracker::new(),
        }
    }

    /// The snapshot of `stream_id` if it is `aggregate`'s under state
    /// schema `state_version`; a row of another aggregate or schema reads
    /// as none.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn read(
        &self,
        stream_id: &StreamId,
        aggregate: &'static str,
        state_version: u32,
    ) -> Result<Option<StoredSnapshot>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT stream_version, global_position, state FROM aggregate_snapshots \
                 WHERE stream_id = $1 AND aggregate = $2 AND state_version = $3",
            )
            .await
            .map_err(StoreError::db("preparing a snapshot read"))?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &stream_id.as_str(),
                    &aggregate,
                    &schema_param(state_version),
                ],
            )
            .await
            .map_err(StoreError::db("reading a snapshot"))?;
        Ok(row.map(|row| StoredSnapshot {
            stream_id: stream_id.to_string(),
            aggregate,
            state_version,
            stream_version: to_u64(row.get(0)),
            global_position: to_u64(row.get(1)),
            state: row.get(2),
        }))
    }

    /// Stores `snapshot` unless its stream already has a newer one of the
    /// same aggregate and schema; one of another schema (or aggregate) is
    /// replaced whatever its version. Returns whether it was stored. An
    /// equal version is replaced (the same events fold to the same state,
    /// and it mends a row that could not be read).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn write(&self, snapshot: &StoredSnapshot) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO aggregate_snapshots AS s \
                   (stream_id, aggregate, state_version, stream_version, global_position, state) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (stream_id) DO UPDATE SET \
                   aggregate = EXCLUDED.aggregate, state_version = EXCLUDED.state_version, \
                   stream_version = EXCLUDED.stream_version, \
                   global_position = EXCLUDED.global_position, \
                   state = EXCLUDED.state, taken_at = now() \
                 WHERE s.aggregate <> EXCLUDED.aggregate \
                    OR s.state_version <> EXCLUDED.state_version \
                    OR s.stream_version <= EXCLUDED.stream_version",
            )
            .await
            .map_err(StoreError::db("preparing a snapshot write"))?;
        let written = client
            .execute(
                &statement,
                &[
                    &snapshot.stream_id,
                    &snapshot.aggregate,
                    &schema_param(snapshot.state_version),
                    &to_i64(snapshot.stream_version),
                    &to_i64(snapshot.global_position),
                    &snapshot.state,
                ],
            )
            .await
            .map_err(StoreError::db("writing a snapshot"))?;
        Ok(written == 1)
    }

    /// [`Snapshots::write`] in a spawned task, off the caller's path: a
    /// failure is logged as a warning and changes nothing else. Skipped
    /// while a write for the same stream is in flight.
    /// [`Snapshots::settled`] waits for the writes.
    pub fn spawn_write(&self, snapshot: StoredSnapshot) {
        {
            let mut writing = self
                .writing
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if !writing.insert(snapshot.stream_id.clone()) {
                return;
            }
        }
        let this = self.clone();
        self.tracker.spawn(async move {
            if let Err(error) = this.write(&snapshot).await {
                tracing::warn!(
                    stream = %snapshot.stream_id,
                    version = snapshot.stream_version,
                    error = %error,
                    "could not write a snapshot; the next load folds a longer tail"
                );
            }
            this.writing
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .remove(&snapshot.stream_id);
        });
    }

    /// Waits until every write spawned so far has ended (tests, benchmarks,
    /// a clean shutdown).
    pub async fn settled(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    /// Deletes the snapshots of `aggregate` (a [`crate::Aggregate::NAME`]),
    /// or all of them; returns how many. Commands then fold their streams
    /// from the start until they write new ones.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn drop_all(&self, aggregate: Option<&str>) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let deleted = match aggregate {
            Some(aggregate) => {
                client
                    .execute(
                        "DELETE FROM aggregate_snapshots WHERE aggregate = $1",
                        &[&aggregate],
                    )
                    .await
            }
            None => client.execute("DELETE FROM aggregate_snapshots", &[]).await,
        };
        deleted.map_err(StoreError::db("dropping snapshots"))
    }

    /// The ids of the streams starting with `prefix` that hold at least
    /// `events` events (every stream's last version, one pass over the
    /// stream index: for operators, not commands).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn streams_with_at_least(
        &self,
        prefix: &str,
        events: u64,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let pattern = format!("{}%", like_escape(prefix));
        let rows = client
            .query(
                "SELECT stream_id FROM events WHERE stream_id LIKE $1 \
                 GROUP BY stream_id HAVING max(version) >= $2 ORDER BY stream_id",
                &[&pattern, &to_i64(events)],
            )
            .await
            .map_err(StoreError::db("listing streams to snapshot"))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

fn schema_param(state_version: u32) -> i32 {
    i32::try_from(state_version).unwrap_or(i32::MAX)
}

/// `prefix` with `LIKE`'s wildcards escaped.
fn like_escape(prefix: &str) -> String {
    prefix
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
