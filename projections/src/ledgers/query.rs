//! Reading the ledger status read model (`ledger_ranges`, `ledger_anchors`),
//! for the API: the ledgers, a ledger's confirmed ranges and anchor, and
//! which of a task's events each ledger confirmed.

use taskledger_events::ledger::{LedgerName, PositionRange};
use tokio_postgres::{Client, Error};

/// The names of the ledgers that confirmed anything, in order.
///
/// # Errors
/// The database failed.
pub async fn ledger_names(client: &Client) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT DISTINCT ledger FROM ledger_ranges ORDER BY ledger",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// A ledger's confirmed ranges, in the order they were confirmed, and the
/// reference of the latest confirmation.
///
/// # Errors
/// The database failed.
pub async fn confirmed_ranges(
    client: &Client,
    ledger: &LedgerName,
) -> Result<(Vec<PositionRange>, Option<String>), Error> {
    let rows = client
        .query(
            "SELECT from_position, to_position, reference FROM ledger_ranges
             WHERE ledger = $1 ORDER BY event_position, from_position",
            &[&ledger.as_str()],
        )
        .await?;
    let last_reference = rows.last().map(|row| row.get::<_, String>(2));
    let ranges = rows
        .iter()
        .map(|row| PositionRange {
            from: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            to: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        })
        .collect();
    Ok((ranges, last_reference))
}

/// The last position whose chain hash `ledger` holds (0: it sent none).
///
/// # Errors
/// The database failed.
pub async fn anchored_through(client: &Client, ledger: &LedgerName) -> Result<u64, Error> {
    let row = client
        .query_opt(
            "SELECT position FROM ledger_anchors WHERE ledger = $1",
            &[&ledger.as_str()],
        )
        .await?;
    Ok(row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
}

/// One event of a task as one ledger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEventConfirmation {
    /// The ledger (every ledger that confirmed anything).
    pub ledger: String,
    /// The event's global position.
    pub sequence: u64,
    /// The ledger's reference for it, when it confirmed it.
    pub reference: Option<String>,
}

/// Every event of the stream `stream_id` against every ledger that
/// confirmed anything, by ledger and then position.
///
/// # Errors
/// The database failed.
pub async fn stream_confirmations(
    client: &Client,
    stream_id: &str,
) -> Result<Vec<TaskEventConfirmation>, Error> {
    let rows = client
        .query(
            "SELECT l.ledger, e.global_position, r.reference
             FROM (SELECT DISTINCT ledger FROM ledger_ranges) l
             CROSS JOIN (SELECT global_position FROM events WHERE stream_id = $1) e
             LEFT JOIN ledger_ranges r
               ON r.ledger = l.ledger
              AND e.global_position BETWEEN r.from_position AND r.to_position
             ORDER BY l.ledger, e.global_position",
            &[&stream_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| TaskEventConfirmation {
            ledger: row.get(0),
            sequence: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            reference: row.get(2),
        })
        .collect())
}
