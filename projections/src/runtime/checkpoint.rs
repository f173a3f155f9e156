//! The checkpoint row: how far a projector's tables are and in which
//! version, and the operator's controls that change it (pause, reset)
//! between two of the live projector's batches.

use super::batch::Applied;
use super::Projector;

/// Makes sure the projector has a checkpoint row (at 0 for a new one).
pub(crate) async fn ensure_checkpoint(
    client: &tokio_postgres::Client,
    name: &str,
    version: u32,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO projector_checkpoints (projector, version) VALUES ($1, $2)
             ON CONFLICT (projector) DO NOTHING",
            &[&name, &i32::try_from(version).unwrap_or(i32::MAX)],
        )
        .await?;
    Ok(())
}

/// Pauses (`true`) or resumes a projector. The update waits for the batch
/// in flight, so once it returns no further batch is applied until resumed.
/// `false` when the projector has no checkpoint (it never ran).
///
/// # Errors
/// When the database fails.
pub async fn set_paused(
    client: &tokio_postgres::Client,
    name: &str,
    paused: bool,
) -> Result<bool, tokio_postgres::Error> {
    let changed = client
        .execute(
            "UPDATE projector_checkpoints SET paused = $2, updated_at = now() WHERE projector = $1",
            &[&name, &paused],
        )
        .await?;
    Ok(changed == 1)
}

/// Empties a projector's tables and sets its checkpoint to 0, in one
/// transaction between two of the live projector's batches; the live
/// projector then applies the whole log again, in place (readers see the
/// tables fill up: a blue/green [`crate::rebuild::rebuild`] avoids that).
/// `false` when the projector has no checkpoint.
///
/// # Errors
/// When the database fails.
pub async fn reset(
    client: &mut tokio_postgres::Client,
    projector: &dyn Projector,
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Readers hold the tables only for a statement each; do not queue them
    // behind a TRUNCATE that cannot get its lock.
    tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
    let found = tx
        .query_opt(
            "SELECT 1 FROM projector_checkpoints WHERE projector = $1 FOR UPDATE",
            &[&projector.name()],
        )
        .await?
        .is_some();
    if !found {
        return Ok(false);
    }
    tx.batch_execute(&format!("TRUNCATE {}", projector.tables().join(", ")))
        .await?;
    tx.execute(
        "UPDATE projector_checkpoints
         SET position = 0, updated_at = now(), failed_position = NULL, failure = NULL
         WHERE projector = $1",
        &[&projector.name()],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A projector's checkpoint row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Every event up to here is in the projection's tables.
    pub(crate) position: u64,
    /// The version of the projection those tables hold.
    pub(crate) version: u32,
    /// Whether an operator paused it.
    pub(crate) paused: bool,
}

impl Checkpoint {
    /// Reads `$1`'s checkpoint and holds its row for the rest of the
    /// transaction (what [`Checkpoint::read`] with `lock` runs; a batch
    /// sends it with its `BEGIN`).
    pub(super) const READ_LOCKED: &'static str =
        "SELECT position, version, paused FROM public.projector_checkpoints
         WHERE projector = $1 FOR UPDATE";

    /// Reads `name`'s checkpoint; with `lock`, holds its row for the rest of
    /// the transaction (the live projector, a swap, a pause and a reset all
    /// take that lock, so each sees the others between batches).
    pub(crate) async fn read(
        client: &impl tokio_postgres::GenericClient,
        name: &str,
        lock: bool,
    ) -> Result<Self, tokio_postgres::Error> {
        let sql = if lock {
            Self::READ_LOCKED
        } else {
            "SELECT position, version, paused FROM public.projector_checkpoints
             WHERE projector = $1"
        };
        Ok(Self::from_row(&client.query_one(sql, &[&name]).await?))
    }

    pub(super) fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            position: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            version: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
            paused: row.get(2),
        }
    }

    /// What keeps a projector of `version`, which has applied up to
    /// `position`, from applying its next batch.
    pub(super) fn blocks(self, version: u32, position: u64) -> Option<Applied> {
        if self.version != version {
            Some(Applied::Outdated(self.version))
        } else if self.paused {
            Some(Applied::Paused)
        } else if self.position != position {
            Some(Applied::Moved(self.position))
        } else {
            None
        }
    }
}

/// A position or count as PostgreSQL's `bigint` (saturating: positions
/// never come near `i64::MAX`).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
