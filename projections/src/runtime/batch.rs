//! One batch: the handler's writes and the checkpoint's move in one
//! transaction that first locks the checkpoint row (exactly-once effect).

use taskledger_events::RecordedEvent;

use super::{to_i64, Batch, Checkpoint, Projector, ProjectorError, ProjectorRuntime, Statements};

/// Moves the checkpoint past the batch.
const MOVE_CHECKPOINT: &str = "UPDATE projector_checkpoints
     SET position = $2, updated_at = now(), failed_position = NULL, failure = NULL
     WHERE projector = $1";

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
    /// prepared through `statements`, those of `client`'s connection. The
    /// transaction is opened and ended on `client` itself (not a
    /// `Transaction`, whose drop would roll it back): after an outer error
    /// the caller drops the connection, as the worker and catch-up do.
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
        let client: &tokio_postgres::Client = client;
        let lock = statements.prepare(client, Checkpoint::READ_LOCKED).await?;
        let done = statements.prepare(client, MOVE_CHECKPOINT).await?;
        // `BEGIN` goes with the checkpoint's lock, and `COMMIT` with its
        // move: one round trip each instead of two. Should this future be
        // dropped halfway, its connection goes with it (the worker owns
        // both), and the server rolls the transaction back.
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
        let begun = futures::try_join!(
            client.batch_execute("BEGIN"),
            client.query_one(&lock, &lock_params)
        );
        let row = match begun {
            Ok((_, row)) => row,
            Err(error) => {
                // The caller drops this connection on an outer error; should
                // one ever keep it, it is not left inside this transaction.
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(error);
            }
        };
        let outcome = Checkpoint::from_row(&row).blocks(self.projector.version(), position);
        if let Some(outcome) = outcome {
            client.batch_execute("ROLLBACK").await?;
            return Ok(Ok(outcome));
        }
        let batch = Batch::in_open_transaction(client, statements);
        if let Err(error) = self.projector.apply(&batch, events).await {
            // In case a kept statement was the cause.
            statements.clear();
            client.batch_execute("ROLLBACK").await?;
            return Ok(Err(error));
        }
        // A failed move aborts the transaction, and the server answers the
        // `COMMIT` that follows it with a rollback; the move's error is
        // the one returned.
        let last = to_i64(last);
        let done_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&name, &last];
        futures::try_join!(
            client.execute(&done, &done_params),
            client.batch_execute("COMMIT")
        )?;
        Ok(Ok(Applied::Done))
    }
}
