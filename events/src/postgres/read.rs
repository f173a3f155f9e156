//! Reading stored events: one stream, or the global order.

use deadpool_postgres::Client;
use tokio_postgres::Row;

use super::{to_i64, to_u64};
use crate::envelope::{Direction, Metadata, RecordedEvent};
use crate::error::StoreError;
use crate::stream_id::StreamId;

const COLUMNS: &str = "global_position, event_id, stream_id, version, event_type, \
                       schema_version, data, metadata, recorded_at, hash";

pub(super) async fn read_all(
    client: &Client,
    after_position: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    read_all_to_unreadable(client, after_position, limit)
        .await
        .map(|(events, _)| events)
}

/// [`read_all`], and whether it stopped before an unreadable event (so a
/// short batch is not the end of the log: the next read reports it).
pub(super) async fn read_all_to_unreadable(
    client: &Client,
    after_position: u64,
    limit: usize,
) -> Result<(Vec<RecordedEvent>, bool), StoreError> {
    let statement = client
        .prepare_cached(&format!(
            // Positions have no holes, so the upper bound is exact; it keeps
            // the plan an index range scan even before the table has
            // statistics (a cached plan from an empty table would otherwise
            // scan the whole table on every read).
            "SELECT {COLUMNS} FROM events \
             WHERE global_position > $1 AND global_position <= $2 \
             ORDER BY global_position"
        ))
        .await
        .map_err(StoreError::db("preparing a read of the global order"))?;
    let up_to = after_position.saturating_add(limit as u64);
    let rows = client
        .query(&statement, &[&to_i64(after_position), &to_i64(up_to)])
        .await
        .map_err(StoreError::db("reading the global order"))?;
    // Stop before an unreadable event: the readable ones before it are
    // returned, and the next read (which starts at it) reports it.
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        match from_row(row) {
            Ok(event) => events.push(event),
            Err(error) if events.is_empty() => return Err(error),
            Err(_) => return Ok((events, true)),
        }
    }
    Ok((events, false))
}

pub(super) async fn read_stream(
    client: &Client,
    stream_id: &StreamId,
    from_version: u64,
    direction: Direction,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = match direction {
        Direction::Forward => format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2 \
             ORDER BY version LIMIT $3"
        ),
        Direction::Backward => format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version <= $2 \
             ORDER BY version DESC LIMIT $3"
        ),
    };
    let statement = client
        .prepare_cached(&sql)
        .await
        .map_err(StoreError::db("preparing a stream read"))?;
    let rows = client
        .query(
            &statement,
            &[
                &stream_id.as_str(),
                &to_i64(from_version),
                &limit_param(limit),
            ],
        )
        .await
        .map_err(StoreError::db("reading a stream"))?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn latest_of_type(
    client: &Client,
    stream_id: &StreamId,
    event_type: &str,
) -> Result<Option<RecordedEvent>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND event_type = $2 \
             ORDER BY version DESC LIMIT 1"
        ))
        .await
        .map_err(StoreError::db(
            "preparing a read of a stream's latest event of a type",
        ))?;
    let row = client
        .query_opt(&statement, &[&stream_id.as_str(), &event_type])
        .await
        .map_err(StoreError::db("reading a stream's latest event of a type"))?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn newest_of_type_matching(
    client: &Client,
    stream_id: &StreamId,
    event_type: &str,
    matching: &[(&str, &str)],
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    // One condition per field, its name and value both parameters.
    let conditions: String = (0..matching.len())
        .map(|index| format!(" AND data->>${} = ${}", 4 + 2 * index, 5 + 2 * index))
        .collect();
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND event_type = $2{conditions} \
             ORDER BY version DESC LIMIT $3"
        ))
        .await
        .map_err(StoreError::db("preparing a filtered read of a stream"))?;
    let (stream, limit) = (stream_id.as_str(), limit_param(limit));
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&stream, &event_type, &limit];
    for (field, value) in matching {
        params.push(field);
        params.push(value);
    }
    let rows = client
        .query(&statement, &params)
        .await
        .map_err(StoreError::db("reading a stream, filtered"))?;
    rows.iter().rev().map(from_row).collect()
}

pub(super) async fn head_position(client: &Client) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT coalesce(max(global_position), 0) FROM events", &[])
        .await
        .map_err(StoreError::db("reading the log head"))?;
    Ok(to_u64(row.get(0)))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Turns a row selected with [`COLUMNS`] into an event.
pub(crate) fn from_row(row: &Row) -> Result<RecordedEvent, StoreError> {
    let global_position = to_u64(row.get(0));
    let corrupt = |reason: String| StoreError::Corrupt {
        global_position,
        reason,
    };
    let metadata: serde_json::Value = row.get(7);
    let metadata: Metadata =
        serde_json::from_value(metadata).map_err(|error| corrupt(format!("metadata: {error}")))?;
    let hash: Vec<u8> = row.get(9);
    let hash = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| corrupt(format!("hash is {} bytes, not 32", hash.len())))?;
    let schema_version: i32 = row.get(5);
    Ok(RecordedEvent {
        global_position,
        event_id: row.get(1),
        stream_id: row.get(2),
        version: to_u64(row.get(3)),
        event_type: row.get(4),
        schema_version: u32::try_from(schema_version)
            .map_err(|_| corrupt(format!("schema version {schema_version}")))?,
        data: row.get(6),
        metadata,
        recorded_at: row.get(8),
        hash,
    })
}
