//! Steps 2 and 3 of a rebuild: the swap transaction (checkpoint row lock,
//! the last events, the tables moved both ways, the checkpoint moved), and
//! its retries while readers hold the live tables.

use tokio_postgres::error::SqlState;
use tracing::Instrument;

use super::{read, Build, RebuildError};
use crate::runtime::{to_i64, Batch, Statements};

impl Build<'_> {
    /// Steps 2 and 3: swaps the shadow tables in, trying again while
    /// readers hold the live tables (catching up in between), up to
    /// [`super::RebuildOptions::swap_attempts`] times. Answers the attempts
    /// it took.
    pub(super) async fn swap_in(
        &mut self,
        client: &mut tokio_postgres::Client,
    ) -> Result<u32, RebuildError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let built = self.position;
            let span = self.phase_span("swap");
            match self.swap(client).instrument(span).await {
                Ok(()) => return Ok(attempt),
                Err(RebuildError::Database(error)) if swap_may_retry(&error) => {
                    if attempt >= self.options.swap_attempts {
                        return Err(RebuildError::SwapStarved(attempt));
                    }
                    // Rolled back: the shadow is where it was before. Catch
                    // up outside the swap (committed), so the next attempt
                    // has less to do under its locks.
                    self.position = built;
                    tracing::info!(
                        projector = self.name,
                        attempt,
                        %error,
                        "the swap could not take its locks in time; catching up and trying again"
                    );
                    tokio::time::sleep(self.options.lock_timeout / 2).await;
                    let span = self.phase_span("catch_up");
                    self.catch_up(client).instrument(span).await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Applies what the log has beyond the shadow's position, in committed
    /// batches.
    async fn catch_up(&mut self, client: &mut tokio_postgres::Client) -> Result<(), RebuildError> {
        loop {
            let events = read(self.store, self.position, self.options.batch_size).await?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                tracing::Span::current().record("to", self.position);
                return Ok(());
            };
            let tx = client.transaction().await?;
            self.projector
                .apply(&Batch::new(&tx, &Statements::per_batch()), &events)
                .await?;
            tx.commit().await?;
            self.position = last;
            self.head = self.head.max(last);
        }
    }

    /// The swap transaction: lock the checkpoint (the live projector is
    /// between batches from here on), apply what is left, move the tables,
    /// move the checkpoint.
    async fn swap(&mut self, client: &mut tokio_postgres::Client) -> Result<(), RebuildError> {
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL synchronous_commit = on; SET LOCAL lock_timeout = {};",
            self.options.lock_timeout.as_millis().max(1)
        ))
        .await?;
        self.refuse_newer(&tx, true).await?;
        loop {
            let events = read(self.store, self.position, self.options.batch_size).await?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                break;
            };
            self.projector
                .apply(&Batch::new(&tx, &Statements::per_batch()), &events)
                .await?;
            self.position = last;
        }
        tracing::Span::current().record("to", self.position);
        self.head = self.head.max(self.position);
        let (shadow, retired) = (&self.shadow, &self.retired);
        let mut moves = String::new();
        for table in self.projector.tables() {
            moves.push_str(&format!(
                "ALTER TABLE IF EXISTS public.{table} SET SCHEMA {retired};
                 ALTER TABLE {shadow}.{table} SET SCHEMA public;"
            ));
        }
        tx.batch_execute(&moves).await?;
        tx.execute(
            "UPDATE public.projector_checkpoints
             SET position = $2, version = $3, updated_at = now(),
                 failed_position = NULL, failure = NULL
             WHERE projector = $1",
            &[
                &self.name,
                &to_i64(self.position),
                &i32::try_from(self.version).unwrap_or(i32::MAX),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Whether a swap that failed may be tried again: it waited too long for a
/// lock, or PostgreSQL broke a deadlock with it (a projector of an older
/// release locks its tables before its checkpoint row).
fn swap_may_retry(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::T_R_DEADLOCK_DETECTED
    )
}
