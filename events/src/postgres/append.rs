//! The append protocol at the transaction level: take the log lock, read
//! the head and the streams' versions under it, decide every request
//! against that snapshot ([`plan`]: positions, versions, the hash chain, and
//! retried appends recognised by their event ids), then one guarded insert.
//! [`append_in_transaction`] runs it in a caller's transaction; the
//! group-committing appender (`super::appender`) runs it for the store.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{to_i64, to_u64, EVENTS_CHANNEL, LOG_LOCK_KEY};
use crate::chain::{canonical_json, canonical_metadata, event_hash, HashInput, GENESIS_HASH};
use crate::envelope::{AppendResult, ExpectedVersion, NewEvent};
use crate::error::{AppendError, InvalidInput, StoreError};
use crate::stream_id::StreamId;

/// One validated append: a stream, an expectation and at least one event.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub(super) stream_id: StreamId,
    pub(super) expected: ExpectedVersion,
    events: Vec<NewEvent>,
}

impl AppendRequest {
    /// Validates the events.
    ///
    /// # Errors
    /// [`InvalidInput`] for an empty batch, an event that is not well formed,
    /// or an event id that appears twice.
    pub fn new(
        stream_id: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Self, InvalidInput> {
        if events.is_empty() {
            return Err(InvalidInput::EmptyBatch);
        }
        let mut seen = HashSet::with_capacity(events.len());
        for event in &events {
            event.validate()?;
            if !seen.insert(event.event_id) {
                return Err(InvalidInput::RepeatedEventId {
                    event_id: event.event_id,
                });
            }
        }
        Ok(Self {
            stream_id,
            expected,
            events,
        })
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Always false: a request holds at least one event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Where an event id is stored (or was just placed in this batch).
#[derive(Debug, Clone)]
pub(super) struct Placement {
    stream_id: String,
    version: u64,
    global_position: u64,
}

/// Columns of the rows to insert, one vector per column (sent with `unnest`).
#[derive(Default)]
pub(super) struct Rows {
    pub(super) recorded_at: DateTime<Utc>,
    pub(super) positions: Vec<i64>,
    event_ids: Vec<Uuid>,
    stream_ids: Vec<String>,
    versions: Vec<i64>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    data: Vec<String>,
    metadata: Vec<String>,
    pub(super) hashes: Vec<Vec<u8>>,
}

/// Opens an append transaction and takes the log lock. READ COMMITTED is
/// required whatever the server's default: each later statement must take a
/// fresh snapshot *after* the lock is granted.
pub(super) static BEGIN_AND_LOCK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({LOG_LOCK_KEY})")
});

/// Everything the append decides on, read in one statement (one snapshot,
/// taken after the lock was granted). Rows of kind 0: the head (position,
/// hash, and the time to record: the database clock, but never earlier than
/// the head's, so `recorded_at` never decreases along the log); kind 1: a stream's current version; kind 2: an
/// event id that is already stored, and where.
pub(super) const READ_SQL: &str =
    "SELECT 0, NULL::text, NULL::bigint, head.global_position, head.hash,
            greatest(clock_timestamp(), head.recorded_at), NULL::uuid
     FROM (SELECT 1) AS one
     LEFT JOIN LATERAL (
         SELECT global_position, hash, recorded_at FROM events
         ORDER BY global_position DESC LIMIT 1
     ) AS head ON true
     UNION ALL
     SELECT 1, s.stream_id,
            (SELECT e.version FROM events e WHERE e.stream_id = s.stream_id
             ORDER BY e.version DESC LIMIT 1),
            NULL, NULL, NULL, NULL
     FROM unnest($1::text[]) AS s(stream_id)
     UNION ALL
     SELECT 2, stream_id, version, global_position, NULL, NULL, event_id
     FROM events WHERE event_id = ANY($2)";
/// Inserts the batch only if, under the lock, the log head is still at `$12`
/// with hash `$15` (the position alone could be refilled by other rows after
/// a failover lost commits) and every stream in `$13` is still at the version in `$14`; returns how
/// many rows it inserted (0 when the guard failed) and notifies subscribers
/// (delivered at commit) when it inserted any. The full path reads under the
/// lock just before, so there the guard always holds; the one-round-trip
/// path relies on it.
pub(super) const GUARDED_INSERT_SQL: &str = "WITH head AS MATERIALIZED (
         SELECT global_position, hash FROM events ORDER BY global_position DESC LIMIT 1
     ),
     guard AS MATERIALIZED (
         SELECT coalesce((SELECT global_position FROM head), 0) = $12
            AND coalesce((SELECT hash FROM head), $15) = $15
            AND NOT EXISTS (
                SELECT 1 FROM unnest($13::text[], $14::bigint[]) AS g(stream_id, version)
                WHERE coalesce((SELECT e.version FROM events e WHERE e.stream_id = g.stream_id
                                ORDER BY e.version DESC LIMIT 1), 0) <> g.version
            ) AS ok
     ),
     inserted AS (
         INSERT INTO events
             (global_position, event_id, stream_id, version, event_type, schema_version,
              data, metadata, recorded_at, hash)
         SELECT r.position, r.event_id, r.stream_id, r.version, r.event_type, r.schema_version,
                r.data::json, r.metadata::json, $9, r.hash
         FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[],
                     $6::integer[], $7::text[], $8::text[], $10::bytea[])
              AS r(position, event_id, stream_id, version, event_type, schema_version,
                   data, metadata, hash)
         WHERE (SELECT ok FROM guard)
         RETURNING global_position
     )
     SELECT (SELECT count(*) FROM inserted),
            (SELECT count(*) FROM (SELECT pg_notify($11, max(global_position)::text)
                                   FROM inserted HAVING count(*) > 0) AS notified)";

/// Appends `requests`, in order, inside `tx`, and returns one outcome per
/// request. A request whose expectation fails or whose event ids are stored
/// elsewhere gets its error and writes nothing; the others are written.
///
/// This takes the log's transaction-scoped advisory lock, which is held until
/// `tx` commits or rolls back: the caller must finish the transaction promptly,
/// and nothing is visible to readers (or final) until it commits. Rolling back
/// leaves no trace in the global order.
///
/// `tx` must be READ COMMITTED (PostgreSQL's default). The planner hint the
/// store's own statements run with (`enable_seqscan = off`) is set with
/// `SET LOCAL`, so it holds until `tx` ends, for any statement after this
/// one too.
///
/// # Errors
/// [`StoreError::Misuse`] for another isolation level;
/// [`StoreError::Database`] when a query fails; the transaction is then
/// unusable and must be rolled back.
#[tracing::instrument(
    level = "debug",
    skip_all,
    fields(appends = requests.len()),
    err(level = "debug")
)]
pub async fn append_in_transaction(
    tx: &Transaction<'_>,
    requests: &[AppendRequest],
) -> Result<Vec<Result<AppendResult, AppendError>>, StoreError> {
    let isolation = tx
        .query_one("SELECT current_setting('transaction_isolation')", &[])
        .await
        .map_err(StoreError::db("checking the transaction's isolation level"))?;
    let isolation: String = isolation.get(0);
    if isolation != "read committed" {
        // Under a snapshot taken before the lock was granted, the head read
        // could be stale.
        return Err(StoreError::Misuse(format!(
            "appending needs a READ COMMITTED transaction; this one is {isolation}"
        )));
    }
    let snapshot = lock_and_read(tx, Begin::AlreadyInTransaction, requests).await?;
    let guard = Guard::of(&snapshot);
    let (rows, outcomes) = plan(snapshot, requests);
    let inserted = insert_rows(tx, None, &rows, &guard, Commit::LeaveOpen).await?;
    if inserted != rows.positions.len() {
        return Err(moved_under_lock(&guard));
    }
    Ok(outcomes)
}

/// Whether [`lock_and_read`] opens the transaction itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Begin {
    /// Send `BEGIN` in the same pipeline as the reads.
    Pipelined,
    /// The caller's transaction is already open.
    AlreadyInTransaction,
}

/// Whether [`insert_rows`] commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// Send `COMMIT` in the same pipeline as the insert. If the insert fails,
    /// the server turns that `COMMIT` into a rollback.
    Pipelined,
    /// The caller commits.
    LeaveOpen,
}

/// The log as seen under the lock: what [`plan`] decides on.
pub(super) struct Snapshot {
    pub(super) recorded_at: DateTime<Utc>,
    pub(super) head_position: u64,
    pub(super) head_hash: [u8; 32],
    pub(super) stream_versions: HashMap<String, u64>,
    pub(super) placements: HashMap<Uuid, Placement>,
}

/// Takes the log lock and reads the head, the current version of every stream
/// the requests touch, and where any of their event ids are already stored.
///
/// The statements go out in one pipeline (one round trip). Each runs after
/// the one before it has finished, with a snapshot of its own, so the reads
/// see every commit made before the lock was granted.
pub(super) async fn lock_and_read<C: GenericClient + Sync>(
    client: &C,
    begin: Begin,
    requests: &[AppendRequest],
) -> Result<Snapshot, StoreError> {
    let mut streams: Vec<&str> = requests.iter().map(|r| r.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let event_ids: Vec<Uuid> = requests
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.event_id))
        .collect();

    let read = client
        .prepare_cached(READ_SQL)
        .await
        .map_err(StoreError::db("preparing the append read"))?;
    // The lock goes as a simple query (with `BEGIN` when we open the
    // transaction), the read right behind it in the same round trip; the
    // server runs the read, with its own snapshot, only once the lock is held.
    let lock = match begin {
        Begin::Pipelined => BEGIN_AND_LOCK.clone(),
        // A caller's connection is a plain one (`PgEventStore::pool`): the
        // planner hint of the store's own connections is set for this
        // transaction only, in the same round trip.
        Begin::AlreadyInTransaction => {
            format!("SET LOCAL enable_seqscan = off; SELECT pg_advisory_xact_lock({LOG_LOCK_KEY})")
        }
    };
    let read_params: [&(dyn ToSql + Sync); 2] = [&streams, &event_ids];
    let ((), rows) = futures::try_join!(
        client.batch_execute(&lock),
        client.query(&read, &read_params)
    )
    .map_err(StoreError::db("reading the log head under the log lock"))?;

    let mut snapshot = Snapshot {
        recorded_at: DateTime::<Utc>::UNIX_EPOCH,
        head_position: 0,
        head_hash: GENESIS_HASH,
        stream_versions: HashMap::with_capacity(streams.len()),
        placements: HashMap::new(),
    };
    for row in &rows {
        match row.get::<_, i32>(0) {
            0 => {
                snapshot.recorded_at = row.get(5);
                if let Some(position) = row.get::<_, Option<i64>>(3) {
                    snapshot.head_position = to_u64(position);
                    let hash: Vec<u8> = row.get(4);
                    snapshot.head_hash =
                        <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| StoreError::Corrupt {
                            global_position: snapshot.head_position,
                            reason: "the stored hash is not 32 bytes".into(),
                        })?;
                }
            }
            1 => {
                let version: Option<i64> = row.get(2);
                snapshot
                    .stream_versions
                    .insert(row.get(1), version.map_or(0, to_u64));
            }
            _ => {
                snapshot.placements.insert(
                    row.get(6),
                    Placement {
                        stream_id: row.get(1),
                        version: to_u64(row.get(2)),
                        global_position: to_u64(row.get(3)),
                    },
                );
            }
        }
    }
    Ok(snapshot)
}

/// Decides every request against the snapshot, in order, and builds the rows
/// to insert: consecutive positions after the head, consecutive versions per
/// stream, and the hash chain. Pure: no IO.
pub(super) fn plan(
    snapshot: Snapshot,
    requests: &[AppendRequest],
) -> (Rows, Vec<Result<AppendResult, AppendError>>) {
    let Snapshot {
        recorded_at,
        head_position,
        head_hash,
        mut stream_versions,
        mut placements,
    } = snapshot;
    let mut next_position = head_position + 1;
    let mut previous_hash = head_hash;
    let mut rows = Rows {
        recorded_at,
        ..Rows::default()
    };
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        if request
            .events
            .iter()
            .any(|event| placements.contains_key(&event.event_id))
        {
            outcomes.push(replayed(request, &placements));
            continue;
        }
        let stream = request.stream_id.as_str();
        let actual = stream_versions.get(stream).copied().unwrap_or(0);
        if !request.expected.accepts(actual) {
            outcomes.push(Err(AppendError::WrongExpectedVersion {
                stream_id: stream.to_owned(),
                expected: request.expected,
                actual,
            }));
            continue;
        }
        let first_position = next_position;
        for (offset, event) in request.events.iter().enumerate() {
            let version = actual + 1 + offset as u64;
            let data_json = canonical_json(&event.data);
            let metadata_json = canonical_metadata(&event.metadata);
            let hash = event_hash(
                &previous_hash,
                &HashInput {
                    global_position: next_position,
                    event_id: event.event_id,
                    stream_id: stream,
                    version,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    data_json: &data_json,
                    metadata_json: &metadata_json,
                    recorded_at_micros: recorded_at.timestamp_micros(),
                },
            );
            placements.insert(
                event.event_id,
                Placement {
                    stream_id: stream.to_owned(),
                    version,
                    global_position: next_position,
                },
            );
            rows.positions.push(to_i64(next_position));
            rows.event_ids.push(event.event_id);
            rows.stream_ids.push(stream.to_owned());
            rows.versions.push(to_i64(version));
            rows.event_types.push(event.event_type.clone());
            rows.schema_versions
                .push(i32::try_from(event.schema_version).unwrap_or(i32::MAX));
            rows.data.push(data_json);
            rows.metadata.push(metadata_json);
            rows.hashes.push(hash.to_vec());
            previous_hash = hash;
            next_position += 1;
        }
        let count = request.events.len() as u64;
        stream_versions.insert(stream.to_owned(), actual + count);
        outcomes.push(Ok(AppendResult {
            stream_id: stream.to_owned(),
            first_version: actual + 1,
            stream_version: actual + count,
            first_position,
            last_position: next_position - 1,
            already_stored: false,
        }));
    }
    (rows, outcomes)
}

/// What the guarded insert checks under the lock: the head and each stream's
/// version that the rows were planned against.
pub(super) struct Guard {
    head_position: i64,
    head_hash: Vec<u8>,
    streams: Vec<String>,
    versions: Vec<i64>,
}

impl Guard {
    pub(super) fn of(snapshot: &Snapshot) -> Self {
        let (streams, versions) = snapshot
            .stream_versions
            .iter()
            .map(|(stream, version)| (stream.clone(), to_i64(*version)))
            .unzip();
        Self {
            head_position: to_i64(snapshot.head_position),
            head_hash: snapshot.head_hash.to_vec(),
            streams,
            versions,
        }
    }
}

/// The error for a guard that failed although the head was read under the
/// lock: impossible while every writer takes the log lock.
pub(super) fn moved_under_lock(guard: &Guard) -> StoreError {
    StoreError::Corrupt {
        global_position: u64::try_from(guard.head_position).unwrap_or(0),
        reason: "the log changed under the log lock; is something appending without it?".into(),
    }
}

/// Sends `before` (if any), the guarded insert of `rows`, and `COMMIT` (if
/// asked) in one pipeline, and returns how many rows were inserted: all of
/// them, or none when the guard failed. Rows that are empty insert nothing
/// and only end the transaction when asked.
pub(super) async fn insert_rows<C: GenericClient + Sync>(
    client: &C,
    before: Option<&str>,
    rows: &Rows,
    guard: &Guard,
    commit: Commit,
) -> Result<usize, StoreError> {
    let before = async {
        match before {
            Some(statements) => client.batch_execute(statements).await,
            None => Ok(()),
        }
    };
    let commit = async {
        match commit {
            Commit::Pipelined => client.batch_execute("COMMIT").await,
            Commit::LeaveOpen => Ok(()),
        }
    };
    if rows.positions.is_empty() {
        // Every request was refused or already stored: nothing to write.
        futures::try_join!(before, commit)
            .map_err(StoreError::db("ending an append that wrote nothing"))?;
        return Ok(0);
    }
    let insert = client
        .prepare_cached(GUARDED_INSERT_SQL)
        .await
        .map_err(StoreError::db("preparing the insert"))?;
    let params: [&(dyn ToSql + Sync); 15] = [
        &rows.positions,
        &rows.event_ids,
        &rows.stream_ids,
        &rows.versions,
        &rows.event_types,
        &rows.schema_versions,
        &rows.data,
        &rows.metadata,
        &rows.recorded_at,
        &rows.hashes,
        &EVENTS_CHANNEL,
        &guard.head_position,
        &guard.streams,
        &guard.versions,
        &guard.head_hash,
    ];
    // If the insert fails, the server turns a pipelined COMMIT into a
    // rollback.
    let ((), inserted, ()) = futures::try_join!(before, client.query_one(&insert, &params), commit)
        .map_err(StoreError::db("inserting events"))?;
    let inserted: i64 = inserted.get(0);
    Ok(usize::try_from(inserted).unwrap_or(0))
}

/// The outcome for a request some of whose event ids are already placed: the
/// original result if all of them sit, in order, where this request would
/// have put them; otherwise a duplicate-id error.
fn replayed(
    request: &AppendRequest,
    placements: &HashMap<Uuid, Placement>,
) -> Result<AppendResult, AppendError> {
    let stream = request.stream_id.as_str();
    let first = placements.get(&request.events[0].event_id);
    let mut mismatch = None;
    for (offset, event) in request.events.iter().enumerate() {
        let placed = placements.get(&event.event_id);
        let in_place = match (placed, first) {
            (Some(placed), Some(first)) => {
                placed.stream_id == stream
                    && placed.version == first.version + offset as u64
                    && placed.global_position == first.global_position + offset as u64
            }
            _ => false,
        };
        if !in_place {
            mismatch = Some(event.event_id);
            break;
        }
    }
    let in_place_first =
        first.filter(|first| mismatch.is_none() && request.expected.accepts(first.version - 1));
    match in_place_first {
        Some(first) => {
            let count = request.events.len() as u64;
            Ok(AppendResult {
                stream_id: stream.to_owned(),
                first_version: first.version,
                stream_version: first.version + count - 1,
                first_position: first.global_position,
                last_position: first.global_position + count - 1,
                already_stored: true,
            })
        }
        None => {
            // Name an id that really is stored, and where. The caller only
            // asks about requests with at least one placed id.
            let (event_id, placed) = request
                .events
                .iter()
                .find_map(|event| placements.get(&event.event_id).map(|p| (event.event_id, p)))
                .expect("replayed() is called for requests with a stored event id");
            Err(AppendError::DuplicateEventId {
                event_id,
                stored_stream_id: placed.stream_id.clone(),
                stored_version: placed.version,
            })
        }
    }
}
