//! The session advisory locks that make one instance of a projector (or
//! of a rebuild) the active one across processes: the dedicated connection
//! that holds them, their keys, taking one, and which are held.

use taskledger_events::postgres::PgEventStore;
use tokio_postgres::NoTls;
use tokio_util::task::AbortOnDropHandle;

/// The task that drives a dedicated connection; dropping it closes the
/// connection, which ends its session and so releases its locks.
pub(crate) type Connection = AbortOnDropHandle<Result<(), tokio_postgres::Error>>;

/// Opens a connection of its own (a session whose locks are this caller's
/// alone) to `store`'s database.
pub(crate) async fn connect(
    store: &PgEventStore,
) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
    let (client, connection) = store.config().connect(NoTls).await?;
    Ok((client, AbortOnDropHandle::new(tokio::spawn(connection))))
}

/// Takes the session advisory lock `key` if no other session holds it:
/// `true` when this session holds it now.
pub(crate) async fn try_lock(
    client: &tokio_postgres::Client,
    key: i64,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?
        .get(0))
}

/// The (bigint) advisory lock keys some session holds in this database
/// right now: which projectors and rebuilds are running, whatever process
/// runs them.
///
/// # Errors
/// When the database does not answer.
pub(crate) async fn held_locks(
    client: &tokio_postgres::Client,
) -> Result<std::collections::HashSet<i64>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 1
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// The advisory lock key of a projector: a stable 64-bit hash of its name
/// (FNV-1a; any process computes the same key).
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"taskledger-projector:".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("tasks"), lock_key("tasks"));
        assert_ne!(lock_key("tasks"), lock_key("results"));
    }
}
