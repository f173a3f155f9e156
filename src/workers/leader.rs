//! Being the one active instance of a role across processes (the relay, the
//! device gateway): a session advisory lock held on a dedicated connection.
//! When the process dies, its session ends and the lock is free for a
//! standby; the work done under the lock runs on that same connection, so
//! an instance that lost the connection has lost the lock too.

use anyhow::Context as _;
use taskledger_events::postgres::PgEventStore;
use tokio_postgres::NoTls;

/// The lock of one role, held while this lives.
#[derive(Debug)]
pub(crate) struct Leadership {
    /// The connection that holds the lock (use it for the work guarded by
    /// the lock).
    pub(crate) client: tokio_postgres::Client,
    _connection: AbortOnDrop<Result<(), tokio_postgres::Error>>,
}

impl Leadership {
    /// The position in `table`'s row named `name` (its key column `key`),
    /// made at 0 when there is none: where a leader's work resumes (the
    /// relay's, the webhook deliverer's). Read on the lock's connection.
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub(crate) async fn checkpoint(
        &self,
        table: &'static str,
        key: &'static str,
        name: &str,
    ) -> Result<u64, tokio_postgres::Error> {
        self.client
            .execute(
                &format!("INSERT INTO {table} ({key}) VALUES ($1) ON CONFLICT ({key}) DO NOTHING"),
                &[&name],
            )
            .await?;
        let position: i64 = self
            .client
            .query_one(
                &format!("SELECT position FROM {table} WHERE {key} = $1"),
                &[&name],
            )
            .await?
            .get(0);
        Ok(u64::try_from(position).unwrap_or(0))
    }
}

/// Takes the lock of `role` on a new connection, or `None` when another
/// instance holds it.
///
/// # Errors
/// When the database cannot be reached.
pub(crate) async fn try_lead(
    store: &PgEventStore,
    role: &str,
) -> anyhow::Result<Option<Leadership>> {
    let (client, connection) = store
        .config()
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to the database for the {role} lock"))?;
    let connection = AbortOnDrop::new(tokio::spawn(connection));
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1)",
            &[&taskledger_projections::runtime::lock_key(role)],
        )
        .await?
        .get(0);
    Ok(locked.then_some(Leadership {
        client,
        _connection: connection,
    }))
}

/// Aborts a task when dropped (closing a connection, stopping a helper
/// loop): tokio-util's handle.
pub(crate) use tokio_util::task::AbortOnDropHandle as AbortOnDrop;
