//! One batch: the handler's writes and the checkpoint's move in one
//! transaction that first locks the checkpoint row (exactly-once effect).

use taskledger_events::RecordedEvent;

use super::{to_i64, Batch, Checkpoint, Projector, ProjectorError, ProjectorRuntime, Statements};

/// What happened to a batch the runtime tried to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// Applied, checkpoint moved.
    Done,
    /// Nothing applied: the projection is paused.
    Paused,
    /// Nothing applied: the checkpoint is elsewhere (a rebuild swapped in
    /// new tables, or a reset); read on from there.
    Moved(u64),
    /// Nothing applied: the checkpoint records another version.
    Outdated(u32),
}

impl<P: Projector> ProjectorRuntime<P> {
    /// Applies one batch and moves the checkpoint, in one transaction that
    /// first locks the checkpoint row: a rebuild's swap, a pause or a reset
    /// takes the same lock, so each sees the projection between batches.
    /// The outer error is the connection's (give up this life); the inner
    /// one is the handler's (retry the batch later). Statements are
    /// prepared through `statements`, those of `client`'s connection.
    #[tracing::instrument(
        name = "projector_batch",
        level = "debug",
        skip_all,
        fields(
            projector = self.projector.name(),
            from = position,
            to = events.last().map_or(position, |e| e.global_position),
            events = events.len(),
        )
    )]
    pub(super) async fn apply_batch(
        &self,
        client: &mut tokio_postgres::Client,
        statements: &Statements,
        position: u64,
        events: &[RecordedEvent],
    ) -> Result<Result<Applied, ProjectorError>, tokio_postgres::Error> {
        let name = self.projector.name();
        let last = events.last().map_or(position, |e| e.global_position);
        let tx = client.transaction().await?;
        let batch = Batch::new(&tx, statements);
        let outcome = Checkpoint::read_locked(&batch, name)
            .await?
            .blocks(self.projector.version(), position);
        if let Some(outcome) = outcome {
            tx.rollback().await?;
            return Ok(Ok(outcome));
        }
        if let Err(error) = self.projector.apply(&batch, events).await {
            // In case a kept statement was the cause.
            statements.clear();
            tx.rollback().await?;
            return Ok(Err(error));
        }
        batch
            .execute(
                "UPDATE projector_checkpoints
             SET position = $2, updated_at = now(), failed_position = NULL, failure = NULL
             WHERE projector = $1",
                &[&name, &to_i64(last)],
            )
            .await?;
        tx.commit().await?;
        Ok(Ok(Applied::Done))
    }
}
