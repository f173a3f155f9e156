//! Being the one active instance of a role across processes (the relay, the
//! device gateway, the graph follower, the webhook deliverer): a session
//! advisory lock held on a dedicated connection. When the process dies, its
//! session ends and the lock is free for a standby; the work done under the
//! lock runs on that same connection, so an instance that lost the
//! connection has lost the lock too. [`run`] is the loop every such role
//! runs: one life after another, a standby's retry, a failure's backoff.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use taskledger_events::postgres::PgEventStore;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::workers::backoff::{stopped_during, Pauses};

/// How often a standby tries to become the active instance.
const STANDBY_RETRY: Duration = Duration::from_secs(2);

/// What becomes of a life in progress when the process stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnStop {
    /// Dropped where it stands: its work is safe to cut anywhere (what it
    /// did not record is done again by the next leader).
    Drop,
    /// Told to stop through its token and waited for this long, to finish
    /// what it has in hand (sends in flight, positions to write).
    Finish(Duration),
}

/// Runs `role`'s lives until `stop` resolves. `life` is given a token that
/// is cancelled when the process stops; it returns `Ok` when another
/// instance is active (retried after [`STANDBY_RETRY`]) or once told to
/// stop, and an error when its work broke off (logged, retried after a
/// doubling pause).
pub(crate) async fn run<L>(
    role: &str,
    on_stop: OnStop,
    stop: impl Future<Output = ()> + Send,
    mut life: impl FnMut(CancellationToken) -> L,
) where
    L: Future<Output = anyhow::Result<()>>,
{
    tokio::pin!(stop);
    let mut pauses = Pauses::reconnect();
    loop {
        let stopping = CancellationToken::new();
        let once = life(stopping.clone());
        tokio::pin!(once);
        let attempt = tokio::select! {
            () = &mut stop => {
                if let OnStop::Finish(grace) = on_stop {
                    stopping.cancel();
                    match tokio::time::timeout(grace, once).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::warn!(
                            error = format!("{error:#}"),
                            "the {role} stopped with an error"
                        ),
                        Err(_) => tracing::warn!(
                            "the {role} did not finish its work within {grace:?} of being told to stop"
                        ),
                    }
                }
                break;
            }
            outcome = &mut once => outcome,
        };
        let pause = match attempt {
            Ok(()) => {
                pauses.reset();
                STANDBY_RETRY
            }
            Err(error) => pauses.interrupted(role, &error),
        };
        if stopped_during(pause, &mut stop).await {
            break;
        }
    }
    tracing::info!("{role} stopped");
}

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

/// Moves `table`'s row named `name` (its key column `key`) from `from` to
/// `to`, on the lock's connection `client`: whether it was at `from`. When
/// it was not, another instance moved it, and this one must stop.
///
/// # Errors
/// When the database cannot be reached.
pub(crate) async fn move_checkpoint(
    client: &tokio_postgres::Client,
    (table, key, name): (&'static str, &'static str, &str),
    from: u64,
    to: u64,
) -> Result<bool, tokio_postgres::Error> {
    let moved = client
        .execute(
            &format!(
                "UPDATE {table} SET position = $2, updated_at = now()
                 WHERE {key} = $1 AND position = $3"
            ),
            &[
                &name,
                &i64::try_from(to).unwrap_or(i64::MAX),
                &i64::try_from(from).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    Ok(moved == 1)
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
