//! Snapshots: an aggregate's folded state saved at a stream version, so that
//! loading a long stream reads one snapshot and folds only the events after
//! it. A snapshot is a cache of the log, never a source of truth: any of
//! them may be dropped at any time, and one that cannot be read is ignored
//! (with a warning) and the stream folded from its start.
//!
//! An aggregate opts in with [`crate::Aggregate::SNAPSHOTS`], naming how
//! often ([`SnapshotPolicy::every`]) and its state's schema
//! ([`SnapshotPolicy::state_version`]): a snapshot written under another
//! schema version is never read, only replaced. [`crate::command::load`]
//! reads the stream's snapshot and, when it folded at least `every` events
//! past it, writes a new one from the state it just folded — events it read
//! from the log, so only committed ones — in a spawned task that never
//! fails the command ([`Snapshots::spawn_write`]). `docs/snapshots.md` says
//! why there and not in a worker.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregate::Aggregate;
use crate::command::{self, CommandError};
use crate::postgres::PgEventStore;
use crate::{EventStore, StreamId};

pub use crate::postgres::snapshots::{Snapshots, StoredSnapshot};

/// How an aggregate's state is snapshotted.
#[derive(Debug)]
pub struct SnapshotPolicy<S> {
    /// A load that folded at least this many events after its snapshot (or
    /// from the start of the stream, without one) writes a new snapshot, so
    /// a load folds about this many events at most.
    pub every: u64,
    /// The state type's schema: raise it whenever the state's fields or
    /// their meaning change, so no snapshot of the old shape is read.
    pub state_version: u32,
    encode: fn(&S) -> Result<Vec<u8>, String>,
    decode: fn(&[u8]) -> Result<S, String>,
}

impl<S: Serialize + DeserializeOwned> SnapshotPolicy<S> {
    /// Snapshots every `every` events as the state's serde JSON, under
    /// state schema `state_version`.
    pub const fn json(every: u64, state_version: u32) -> Self {
        Self {
            every,
            state_version,
            encode: encode_json::<S>,
            decode: decode_json::<S>,
        }
    }
}

impl<S> SnapshotPolicy<S> {
    /// The stored bytes of `state`.
    ///
    /// # Errors
    /// When the state does not serialize (a programming error: it is logged
    /// and no snapshot is written).
    pub fn encode(&self, state: &S) -> Result<Vec<u8>, String> {
        (self.encode)(state)
    }

    /// The state stored as `bytes`.
    ///
    /// # Errors
    /// When they are not a state of this schema (the snapshot is then
    /// ignored).
    pub fn decode(&self, bytes: &[u8]) -> Result<S, String> {
        (self.decode)(bytes)
    }
}

fn encode_json<S: Serialize>(state: &S) -> Result<Vec<u8>, String> {
    serde_json::to_vec(state).map_err(|error| error.to_string())
}

fn decode_json<S: DeserializeOwned>(bytes: &[u8]) -> Result<S, String> {
    serde_json::from_slice(bytes).map_err(|error| error.to_string())
}

/// The snapshot of `loaded` (the stream `stream_id` folded to its version)
/// under `policy`, or `None`, with a warning, when the state does not
/// encode (a programming error: no snapshot is written, loads fold the
/// stream instead).
pub(crate) fn of<A: Aggregate>(
    policy: &SnapshotPolicy<A::State>,
    stream_id: &StreamId,
    loaded: &command::Loaded<A>,
) -> Option<StoredSnapshot> {
    match policy.encode(&loaded.state) {
        Ok(state) => Some(StoredSnapshot {
            stream_id: stream_id.to_string(),
            aggregate: A::NAME,
            state_version: policy.state_version,
            stream_version: loaded.version,
            global_position: loaded.position,
            state,
        }),
        Err(reason) => {
            tracing::warn!(stream = %stream_id, %reason, "cannot snapshot the state");
            None
        }
    }
}

/// Writes a fresh snapshot of every stream of `A` long enough to have one
/// (at least [`SnapshotPolicy::every`] events), each folded from the log
/// from its start (whatever snapshot it has), and waits for the writes.
/// Returns how many were written. For operators after a drop
/// (`taskledger snapshots rebuild`); commands write snapshots by
/// themselves as they go.
///
/// # Errors
/// [`CommandError::Store`] when the database fails, [`CommandError::Corrupt`]
/// for an event that is not `A`'s. `Ok(0)` for an aggregate that does not
/// snapshot, or a store with snapshots off.
pub async fn rebuild<A: Aggregate>(store: &PgEventStore) -> Result<u64, CommandError> {
    let (Some(policy), Some(snapshots)) = (A::SNAPSHOTS, store.snapshots()) else {
        return Ok(0);
    };
    let streams = snapshots
        .streams_with_at_least(A::STREAM_PREFIX, policy.every)
        .await
        .map_err(CommandError::Store)?;
    let mut written = 0;
    for stream_id in streams {
        let Ok(stream_id) = StreamId::new(stream_id) else {
            continue;
        };
        let loaded = command::load_from_start::<A>(store, &stream_id).await?;
        let Some(snapshot) = of(&policy, &stream_id, &loaded) else {
            continue;
        };
        snapshots
            .write(&snapshot)
            .await
            .map_err(CommandError::Store)?;
        written += 1;
    }
    Ok(written)
}
