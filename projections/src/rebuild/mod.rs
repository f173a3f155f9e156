//! Blue/green rebuilds: a projection's next tables are built beside the live
//! ones and swapped in atomically, so readers never see a half-built table.
//!
//! 1. **Build.** Under a rebuild lock (one rebuild per projection across
//!    processes), the projector's [`Projector::schema`] is run in a shadow
//!    schema (`tl_next_{name}`, first on the connection's `search_path`) and
//!    the whole global order is applied to it from sequence 0, in large
//!    batches with the next batch read while the current one is written.
//!    The shadow's secondary indexes are dropped first and built again, one
//!    sort each, when the copy is done (its primary keys and unique indexes
//!    stay: upserts need them). The live tables and the live projector carry on untouched.
//! 2. **Catch up.** When the shadow is within one batch of the log's head,
//!    the swap transaction locks the checkpoint row (`FOR UPDATE`). The live
//!    projector takes that lock at the start of every batch, so it is now
//!    between batches and stays there. The shadow applies what is left up to
//!    the head inside the same transaction.
//! 3. **Swap.** Still in that transaction: the live tables move to
//!    `tl_retired_{name}`, the shadow tables move into `public`, and the
//!    checkpoint is set to the shadow's position and version. Readers wait
//!    on the table locks for the moment the transaction commits and then see
//!    the new tables (PostgreSQL re-resolves names in cached plans when a
//!    table is moved). The live projector's next batch finds the checkpoint
//!    moved and reads on from there into the new tables. A swap that waits
//!    more than [`RebuildOptions::lock_timeout`] for a long reader gives up,
//!    catches up a little more and tries again, so readers queue behind it
//!    for at most that long.
//! 4. The retired tables are dropped.
//!
//! Progress is reported to a callback and recorded in
//! `projection_rebuilds`, which every process can read ([`rebuilds`]).
//!
//! Here: the options, the errors, and the build (step 1) with its shadow
//! schema; the catch-up and swap (steps 2 and 3) are in `swap.rs`, progress
//! reporting and recording in `progress.rs`, the listing of recorded
//! rebuilds in `status.rs`.

use std::time::{Duration, Instant};

use taskledger_events::postgres::PgEventStore;
use taskledger_events::{EventStore, RecordedEvent};
use tracing::Instrument;

use crate::runtime::{
    connect, ensure_checkpoint, lock_key, try_lock, Batch, Checkpoint, Projector, ProjectorError,
    Statements,
};

mod progress;
mod status;
mod swap;

pub use progress::{RebuildProgress, RebuildReport};
pub use status::{rebuilds, RebuildStatus};

/// Tuning for [`rebuild`].
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Events per transaction while building.
    pub batch_size: usize,
    /// How long the swap may wait for readers' table locks before it backs
    /// off and tries again (readers queue behind it for at most this long).
    pub lock_timeout: Duration,
    /// Swap attempts before giving up.
    pub swap_attempts: u32,
    /// How often progress is reported and recorded.
    pub progress_every: Duration,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            batch_size: 5_000,
            lock_timeout: Duration::from_secs(2),
            swap_attempts: 10,
            progress_every: Duration::from_secs(1),
        }
    }
}

/// Why a rebuild did not finish. Whatever happened, the live tables were not
/// touched unless the swap committed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Another rebuild of this projection is running.
    #[error("a rebuild of this projection is already running")]
    Busy,
    /// The database holds a newer version than this code builds.
    #[error("the projection in the database is version {stored}, newer than this code's version {version}; rebuild it with the newer release")]
    Newer {
        /// The version recorded.
        stored: u32,
        /// This code's version.
        version: u32,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The event store failed.
    #[error("event store error: {0}")]
    Store(String),
    /// The handler failed on an event (the same event would stop the live
    /// projector).
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    /// Readers held the live tables through every swap attempt.
    #[error("readers held the live tables through {0} swap attempts; nothing was swapped")]
    SwapStarved(u32),
}

/// Rebuilds `projector`'s tables from sequence 0 beside the live ones and
/// swaps them in (see the module documentation). `progress` is called once
/// the rebuild has its lock and its shadow tables, then about every
/// [`RebuildOptions::progress_every`], and once before the swap.
///
/// # Errors
/// [`RebuildError`]; the live tables stay as they were.
pub async fn rebuild(
    store: &PgEventStore,
    projector: &dyn Projector,
    options: &RebuildOptions,
    progress: &(dyn Fn(&RebuildProgress) + Send + Sync),
) -> Result<RebuildReport, RebuildError> {
    let name = projector.name();
    let version = projector.version();
    let (mut client, _connection) = connect(store).await?;
    if !try_lock(&client, rebuild_lock_key(name)).await? {
        return Err(RebuildError::Busy);
    }
    let mut build = Build {
        store,
        projector,
        options,
        on_progress: progress,
        name,
        version,
        shadow: shadow_schema(name),
        retired: retired_schema(name),
        began: Instant::now(),
        position: 0,
        head: 0,
    };
    build.record(&client, "building", None).await?;
    let result = build.run(&mut client).await;
    match &result {
        Ok(_) => build.record(&client, "done", None).await?,
        Err(error) => {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", build.shadow))
                .await;
            // Report the rebuild's own error even when recording it fails
            // too (the connection may be what broke).
            if let Err(record) = build
                .record(&client, "failed", Some(&error.to_string()))
                .await
            {
                tracing::warn!(projector = name, %record, "recording the failed rebuild failed");
            }
        }
    }
    // Released here, not only when the connection's backend exits after the
    // drop below: a rebuild started right after this one must not find the
    // lock still held and be refused as busy.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&rebuild_lock_key(name)])
        .await;
    result
}

/// One rebuild: what it rebuilds, how, and where it is.
struct Build<'a> {
    store: &'a PgEventStore,
    projector: &'a dyn Projector,
    options: &'a RebuildOptions,
    on_progress: &'a (dyn Fn(&RebuildProgress) + Send + Sync),
    name: &'static str,
    version: u32,
    /// Where the next version is built.
    shadow: String,
    /// Where the replaced tables go until they are dropped.
    retired: String,
    began: Instant,
    /// Events applied to the shadow tables (their global position).
    position: u64,
    /// The log's head as last read.
    head: u64,
}

impl Build<'_> {
    /// Steps 1 to 4 (see the module documentation), under the rebuild lock.
    async fn run(
        &mut self,
        client: &mut tokio_postgres::Client,
    ) -> Result<RebuildReport, RebuildError> {
        let (name, projector) = (self.name, self.projector);
        for table in projector.tables() {
            check_identifier(table);
        }
        check_identifier(name);
        let (shadow, retired) = (self.shadow.clone(), self.retired.clone());
        ensure_checkpoint(client, name, self.version).await?;
        self.refuse_newer(client, false).await?;

        // 1. Build beside the live tables. The build itself need not be
        // durable (a crash starts it over); the swap is.
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {shadow} CASCADE;
                 CREATE SCHEMA {shadow};
                 SET search_path TO {shadow}, public;
                 SET synchronous_commit = off;"
            ))
            .await?;
        client.batch_execute(projector.schema()).await?;
        let deferred = defer_indexes(client, &shadow).await?;
        let span = self.phase_span("copy");
        self.copy(client).instrument(span).await?;
        // One sort per index over the built tables is cheaper than keeping
        // every index up to date through the whole copy.
        if !deferred.is_empty() {
            client.batch_execute(&deferred).await?;
        }

        // 2 and 3. Catch up and swap in one transaction.
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {retired} CASCADE; CREATE SCHEMA {retired};"
            ))
            .await?;
        let mut analyze = String::new();
        for table in projector.tables() {
            analyze.push_str(&format!("ANALYZE {shadow}.{table};"));
        }
        // The new tables go live with statistics, so the planner does not
        // guess on the first queries.
        client.batch_execute(&analyze).await?;
        (self.on_progress)(&self.progress("swapping"));
        self.record(client, "swapping", None).await?;
        let attempt = self.swap_in(client).await?;
        let elapsed = self.began.elapsed();

        // 4. The old tables are no longer anybody's. The swap committed: a
        // failure here leaves leftovers for the next rebuild to drop, not a
        // failed rebuild.
        if let Err(error) = client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {retired} CASCADE;
                 DROP SCHEMA IF EXISTS {shadow} CASCADE;
                 RESET search_path;
                 RESET synchronous_commit;"
            ))
            .await
        {
            tracing::warn!(projector = name, %error, "the swap committed, but dropping the retired tables failed; the next rebuild drops them");
        }
        Ok(RebuildReport {
            name,
            version: self.version,
            position: self.position,
            elapsed,
            swap_attempts: attempt,
        })
    }

    /// Step 1: applies the log from sequence 0 to the shadow tables (on the
    /// connection's `search_path`), in committed batches with the next one
    /// read while the current one is written, until the shadow is within one
    /// batch of the log's head.
    async fn copy(&mut self, client: &mut tokio_postgres::Client) -> Result<(), RebuildError> {
        let (store, projector, options) = (self.store, self.projector, self.options);
        let batch = options.batch_size.max(1);
        self.head = head(store).await?;
        (self.on_progress)(&self.progress("building"));
        let mut last_report = Instant::now();
        let mut next = read_ahead(store, self.position, batch);
        loop {
            if self.position + batch as u64 >= self.head {
                self.head = head(store).await?;
                if self.position + batch as u64 >= self.head {
                    break;
                }
            }
            let events = (&mut next)
                .await
                .map_err(|error| RebuildError::Store(error.to_string()))??;
            let Some(last) = events.last().map(|e| e.global_position) else {
                break;
            };
            next = read_ahead(store, last, batch);
            let tx = client.transaction().await?;
            projector
                .apply(&Batch::new(&tx, &Statements::per_batch()), &events)
                .await?;
            tx.commit().await?;
            self.position = last;
            if last_report.elapsed() >= options.progress_every {
                last_report = Instant::now();
                (self.on_progress)(&self.progress("building"));
                self.record(client, "building", None).await?;
            }
        }
        next.abort();
        tracing::Span::current().record("to", self.position);
        Ok(())
    }

    /// The span of one phase of the rebuild (`copy`, `catch_up`, `swap`),
    /// from the position it starts at; the phase records where it ended
    /// (`to`).
    fn phase_span(&self, phase: &'static str) -> tracing::Span {
        tracing::info_span!(
            "rebuild_phase",
            phase,
            projector = self.name,
            version = self.version,
            from = self.position,
            to = tracing::field::Empty,
        )
    }

    /// Refuses to replace a newer version of the projection than this
    /// code's (`lock`: and holds the checkpoint row).
    async fn refuse_newer(
        &self,
        client: &impl tokio_postgres::GenericClient,
        lock: bool,
    ) -> Result<(), RebuildError> {
        let stored = Checkpoint::read(client, self.name, lock).await?.version;
        if stored > self.version {
            return Err(RebuildError::Newer {
                stored,
                version: self.version,
            });
        }
        Ok(())
    }
}

/// The lock one rebuild of `name` holds, across processes.
fn rebuild_lock_key(name: &str) -> i64 {
    lock_key(&format!("rebuild:{name}"))
}

/// Where the next version of `name` is built.
fn shadow_schema(name: &str) -> String {
    format!("tl_next_{name}")
}

/// Where the replaced tables of `name` go until they are dropped.
fn retired_schema(name: &str) -> String {
    format!("tl_retired_{name}")
}

/// Projector and table names are compiled in; they go into DDL unquoted, so
/// they must be plain identifiers.
fn check_identifier(name: &str) {
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "projection names and tables must be lowercase identifiers, not {name:?}"
    );
}

/// The log's head.
async fn head(store: &PgEventStore) -> Result<u64, RebuildError> {
    store
        .head_position()
        .await
        .map_err(|error| RebuildError::Store(error.to_string()))
}

/// Up to `limit` events of the global order after `after`.
async fn read(
    store: &PgEventStore,
    after: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, RebuildError> {
    store
        .read_all(after, limit.max(1))
        .await
        .map_err(|error| RebuildError::Store(error.to_string()))
}

type ReadAhead = tokio::task::JoinHandle<Result<Vec<RecordedEvent>, RebuildError>>;

/// Reads the next batch while the current one is written.
fn read_ahead(store: &PgEventStore, after: u64, limit: usize) -> ReadAhead {
    let store = store.clone();
    tokio::spawn(async move { read(&store, after, limit).await })
}

/// Drops the shadow schema's secondary indexes (those that back no
/// constraint: the primary keys and unique indexes an upsert's `ON CONFLICT`
/// needs stay) and returns the statements that create them again, to run
/// once the copy is done: a bulk load builds an index faster in one go than
/// row by row.
async fn defer_indexes(
    client: &tokio_postgres::Client,
    shadow: &str,
) -> Result<String, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), pg_get_indexdef(i.indexrelid)
               FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND NOT i.indisunique AND NOT i.indisprimary
                AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
            &[&shadow],
        )
        .await?;
    let mut drop = String::new();
    let mut create = String::new();
    for row in &rows {
        let (index, definition): (String, String) = (row.get(0), row.get(1));
        drop.push_str(&format!("DROP INDEX {index};"));
        create.push_str(&definition);
        create.push(';');
    }
    if !drop.is_empty() {
        client.batch_execute(&drop).await?;
    }
    Ok(create)
}
