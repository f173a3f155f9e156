//! [`ProjectorRuntime::catch_up`]: a command-line tool's one-off catch-up to
//! the log's head, and why it can fail.

use std::time::Duration;

use taskledger_events::EventStore;

use super::batch::Applied;
use super::{
    connect, ensure_checkpoint, lock_key, try_lock, Checkpoint, Projector, ProjectorError,
    ProjectorRuntime, Statements,
};

/// Why [`ProjectorRuntime::catch_up`] could not bring a projection up to
/// date.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The event store failed.
    #[error("event store error: {0}")]
    Store(String),
    /// The handler failed on an event.
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    /// An operator paused the projection.
    #[error("the projection is paused; `taskledger projections resume` it first")]
    Paused,
    /// The database holds another version of the projection.
    #[error(
        "the projection in the database is version {stored}; this code projects version {version}"
    )]
    Outdated {
        /// The version recorded.
        stored: u32,
        /// This code's version.
        version: u32,
    },
    /// Another instance is active but did not reach the head in time.
    #[error("the projection is at {position} and the log at {head}; the active projector did not catch up in time")]
    Behind {
        /// Where the projection is.
        position: u64,
        /// Where the log is.
        head: u64,
    },
}

impl<P: Projector> ProjectorRuntime<P> {
    /// Brings the projection up to the log's current head and returns: a
    /// command-line tool's way to read a fresh projection. If no instance is
    /// active, this one takes the lock, applies what is pending and lets go;
    /// otherwise it waits for the active one, up to `timeout`.
    ///
    /// # Errors
    /// When the database fails, the handler fails (the message says where),
    /// or the active instance does not catch up in time.
    pub async fn catch_up(&self, timeout: Duration) -> Result<u64, CatchUpError> {
        let name = self.projector.name();
        let head = self
            .store
            .head_position()
            .await
            .map_err(|error| CatchUpError::Store(error.to_string()))?;
        let (mut client, _connection) = connect(&self.store).await?;
        // Prepared on this connection, so made and dropped with it.
        let statements = Statements::default();
        ensure_checkpoint(&client, name, self.projector.version()).await?;
        if !try_lock(&client, lock_key(name)).await? {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let position = Checkpoint::read(&client, name, false).await?.position;
                if position >= head {
                    return Ok(position);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(CatchUpError::Behind { position, head });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut position = Checkpoint::read(&client, name, false).await?.position;
        while position < head {
            let events = self
                .store
                .read_all(position, self.options.batch_size.max(1))
                .await
                .map_err(|error| CatchUpError::Store(error.to_string()))?;
            if events.is_empty() {
                break;
            }
            match self
                .apply_batch(&mut client, &statements, position, &events)
                .await??
            {
                Applied::Done => position = events.last().map_or(position, |e| e.global_position),
                Applied::Moved(to) => position = to,
                Applied::Paused => return Err(CatchUpError::Paused),
                Applied::Outdated(stored) => {
                    return Err(CatchUpError::Outdated {
                        stored,
                        version: self.projector.version(),
                    })
                }
            }
        }
        Ok(position)
    }
}
