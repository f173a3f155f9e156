//! Verification of the stored log as it is in the database: positions without
//! holes, every stream's versions without holes, and the hash chain recomputed
//! from the stored text of `data` and `metadata` (not from a re-serialization,
//! so a change that a JSON parser would hide is still found).

use std::collections::HashMap;

use deadpool_postgres::Client;
use uuid::Uuid;

use super::{to_i64, to_u64};
use crate::chain::{event_hash, HashInput, GENESIS_HASH};
use crate::error::StoreError;

/// What a verification found wrong first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// Position `expected` is missing; the next stored one is `found` (or the
    /// log ends at the end of the range).
    MissingPosition {
        /// The missing position.
        expected: u64,
        /// The next stored position, if any.
        found: Option<u64>,
    },
    /// The hash stored at `global_position` is not the one recomputed from
    /// the event and its predecessor's hash: this event was altered, or one
    /// before it was removed or moved.
    HashMismatch {
        /// The first position that does not verify.
        global_position: u64,
    },
    /// A stream's versions skip or repeat.
    StreamVersionGap {
        /// Where the gap was seen.
        global_position: u64,
        /// The stream.
        stream_id: String,
        /// The version that should have come.
        expected: u64,
        /// The version stored.
        found: u64,
    },
    /// The hash stored at `global_position` is not the one an earlier
    /// verification recorded, or an outside ledger confirmed, for it: the
    /// log was rewritten at or before that position since (or the record is
    /// wrong). A resumed verification stops here rather than trust it.
    AnchorMismatch {
        /// The anchored position.
        global_position: u64,
        /// Who holds the other hash (`the verification recorded at …`, `ledger …`).
        anchored_by: String,
    },
}

impl Defect {
    /// The global position the defect is reported at.
    pub fn global_position(&self) -> u64 {
        match self {
            Self::MissingPosition { expected, .. } => *expected,
            Self::HashMismatch { global_position }
            | Self::AnchorMismatch {
                global_position, ..
            }
            | Self::StreamVersionGap {
                global_position, ..
            } => *global_position,
        }
    }
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingPosition { expected, found: Some(found) } => write!(
                f,
                "global position {expected} is missing (the next stored position is {found})"
            ),
            Self::MissingPosition { expected, found: None } => {
                write!(f, "global position {expected} is missing (the log ends before it)")
            }
            Self::HashMismatch { global_position } => write!(
                f,
                "the hash at global position {global_position} does not verify: this event was altered, \
                 or one before it was removed or reordered"
            ),
            Self::StreamVersionGap { global_position, stream_id, expected, found } => write!(
                f,
                "at global position {global_position}, stream {stream_id} has version {found} where {expected} was due"
            ),
            Self::AnchorMismatch { global_position, anchored_by } => write!(
                f,
                "the hash stored at global position {global_position} is not the one {anchored_by} holds for it: \
                 the log was altered at or before this position (run a full verify to find the first change)"
            ),
        }
    }
}

/// The result of verifying a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Events checked.
    pub checked: u64,
    /// The last position checked.
    pub last_position: u64,
    /// The first defect, if any (checking stops there).
    pub defect: Option<Defect>,
}

/// Verifies positions `from..=to` (`to = None`: up to the head), reading
/// `batch` rows at a time, and calls `progress(last_position_checked)` after
/// each batch. Stream versions are checked from each stream's first event in
/// the range (for `from > 1`, the version before is looked up).
///
/// # Errors
/// [`StoreError`] when the database fails.
pub async fn verify_range(
    client: &Client,
    from: u64,
    to: Option<u64>,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<Verification, StoreError> {
    let from = from.max(1);
    let to = match to {
        Some(to) => to,
        None => super::read::head_position(client).await?,
    };
    let mut previous_hash = if from == 1 {
        GENESIS_HASH
    } else {
        let row = client
            .query_opt(
                "SELECT hash FROM events WHERE global_position = $1",
                &[&to_i64(from - 1)],
            )
            .await
            .map_err(StoreError::db("reading the hash before the range"))?;
        match row {
            Some(row) => {
                let hash: Vec<u8> = row.get(0);
                <[u8; 32]>::try_from(hash.as_slice()).unwrap_or([0xff; 32])
            }
            None => {
                return Ok(Verification {
                    checked: 0,
                    last_position: from - 1,
                    defect: Some(Defect::MissingPosition {
                        expected: from - 1,
                        found: None,
                    }),
                })
            }
        }
    };
    let statement = client
        .prepare_cached(
            "SELECT global_position, event_id, stream_id, version, event_type, schema_version,
                    data::text, metadata::text, recorded_at, hash
             FROM events WHERE global_position >= $1 AND global_position <= $2
             ORDER BY global_position LIMIT $3",
        )
        .await
        .map_err(StoreError::db("preparing verification"))?;
    let mut stream_versions: HashMap<String, u64> = HashMap::new();
    let mut expected = from;
    let mut checked = 0_u64;
    while expected <= to {
        let rows = client
            .query(
                &statement,
                &[
                    &to_i64(expected),
                    &to_i64(to),
                    &i64::try_from(batch.max(1)).unwrap_or(1000),
                ],
            )
            .await
            .map_err(StoreError::db("reading events to verify"))?;
        if rows.is_empty() {
            return Ok(Verification {
                checked,
                last_position: expected - 1,
                defect: Some(Defect::MissingPosition {
                    expected,
                    found: None,
                }),
            });
        }
        if from > 1 {
            // Streams met for the first time in this batch: their versions
            // before the range, in one query (all their earlier events are
            // before `from`, or they would have been met already).
            let unseen: Vec<String> = rows
                .iter()
                .map(|row| row.get::<_, String>(2))
                .filter(|stream_id| !stream_versions.contains_key(stream_id))
                .collect::<std::collections::HashSet<_>>()
                .into_iter()
                .collect();
            if !unseen.is_empty() {
                stream_versions.extend(versions_before(client, &unseen, from).await?);
            }
        }
        for row in &rows {
            let position = to_u64(row.get(0));
            let defect_at = |defect| Verification {
                checked,
                last_position: expected.saturating_sub(1),
                defect: Some(defect),
            };
            if position != expected {
                return Ok(defect_at(Defect::MissingPosition {
                    expected,
                    found: Some(position),
                }));
            }
            let stream_id: String = row.get(2);
            let version = to_u64(row.get(3));
            let due = stream_versions.get(&stream_id).map_or(1, |last| last + 1);
            if version != due {
                return Ok(defect_at(Defect::StreamVersionGap {
                    global_position: position,
                    stream_id,
                    expected: due,
                    found: version,
                }));
            }
            let event_id: Uuid = row.get(1);
            let event_type: String = row.get(4);
            let schema_version: i32 = row.get(5);
            let data: String = row.get(6);
            let metadata: String = row.get(7);
            let recorded_at: chrono::DateTime<chrono::Utc> = row.get(8);
            let stored_hash: Vec<u8> = row.get(9);
            let recomputed = event_hash(
                &previous_hash,
                &HashInput {
                    global_position: position,
                    event_id,
                    stream_id: &stream_id,
                    version,
                    event_type: &event_type,
                    schema_version: u32::try_from(schema_version).unwrap_or(0),
                    data_json: &data,
                    metadata_json: &metadata,
                    recorded_at_micros: recorded_at.timestamp_micros(),
                },
            );
            if stored_hash.as_slice() != recomputed.as_slice() {
                return Ok(defect_at(Defect::HashMismatch {
                    global_position: position,
                }));
            }
            previous_hash = recomputed;
            stream_versions.insert(stream_id, version);
            checked += 1;
            expected += 1;
        }
        progress(expected - 1);
    }
    Ok(Verification {
        checked,
        last_position: expected - 1,
        defect: None,
    })
}

/// The hash stored at `position`, or `None` when there is no such row.
///
/// # Errors
/// [`StoreError`] when the database fails.
pub async fn stored_hash(client: &Client, position: u64) -> Result<Option<[u8; 32]>, StoreError> {
    let row = client
        .query_opt(
            "SELECT hash FROM events WHERE global_position = $1",
            &[&to_i64(position)],
        )
        .await
        .map_err(StoreError::db("reading a stored hash"))?;
    Ok(row.map(|row| {
        let hash: Vec<u8> = row.get(0);
        <[u8; 32]>::try_from(hash.as_slice()).unwrap_or([0xff; 32])
    }))
}

/// Each of `stream_ids`' newest version before position `before` (0 for
/// a stream with no event there).
async fn versions_before(
    client: &Client,
    stream_ids: &[String],
    before: u64,
) -> Result<HashMap<String, u64>, StoreError> {
    let rows = client
        .query(
            "SELECT s.stream_id, coalesce((SELECT max(e.version) FROM events e
                 WHERE e.stream_id = s.stream_id AND e.global_position < $2), 0)
             FROM unnest($1::text[]) AS s(stream_id)",
            &[&stream_ids, &to_i64(before)],
        )
        .await
        .map_err(StoreError::db("reading streams' versions before the range"))?;
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, String>(0), to_u64(row.get(1))))
        .collect())
}
