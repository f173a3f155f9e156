//! Blue/green rebuilds: a projection's next tables are built beside the live
//! ones and swapped in atomically, so readers never see a half-built table.
//!
//! 1. **Build.** Under a rebuild lock (one rebuild per projection across
//!    processes), the projector's [`Projector::schema`] is run in a shadow
//!    schema (`tl_next_{name}`, first on the connection's `search_path`) and
//!    the whole global order is applied to it from sequence 0, in large
//!    batches with the next batch read while the current one is written.
//!    The live tables and the live projector carry on untouched.
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

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::{EventStore, RecordedEvent};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::runtime::{
    ensure_checkpoint, held_locks, lock_key, to_i64, AbortOnDrop, Checkpoint, Projector,
    ProjectorError,
};

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

/// Where a rebuild is, for progress output.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildProgress {
    /// The projection.
    pub name: &'static str,
    /// The version being built.
    pub version: u32,
    /// `building` or `swapping`.
    pub phase: &'static str,
    /// Events applied to the new tables (their global position).
    pub position: u64,
    /// The log's head as last read.
    pub head: u64,
    /// Since the rebuild began.
    pub elapsed: Duration,
}

impl RebuildProgress {
    /// Events applied per second so far.
    pub fn events_per_s(&self) -> f64 {
        rate(self.position, self.elapsed)
    }

    /// Time left at the rate so far, when there is a rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.events_per_s();
        (rate > 0.0)
            .then(|| Duration::from_secs_f64(self.head.saturating_sub(self.position) as f64 / rate))
    }
}

impl std::fmt::Display for RebuildProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let percent = if self.head == 0 {
            100.0
        } else {
            self.position as f64 * 100.0 / self.head as f64
        };
        if self.phase == "swapping" {
            // The last events are applied inside the swap itself: no rate
            // to report, and "0/147 (0%)" would only alarm.
            return write!(
                f,
                "{} v{} swapping: built up to {} of {} events; applying the rest and swapping the tables in",
                self.name, self.version, self.position, self.head
            );
        }
        write!(
            f,
            "{} v{} {}: {}/{} events ({percent:.0}%) {:.0} events/s",
            self.name,
            self.version,
            self.phase,
            self.position,
            self.head,
            self.events_per_s()
        )?;
        if let Some(eta) = self.eta() {
            write!(f, " ETA {:.0}s", eta.as_secs_f64().ceil())?;
        }
        Ok(())
    }
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// The projection.
    pub name: &'static str,
    /// The version now live.
    pub version: u32,
    /// The checkpoint the new tables went live at.
    pub position: u64,
    /// Start to swap.
    pub elapsed: Duration,
    /// Swap attempts it took (more than one when readers held it up).
    pub swap_attempts: u32,
}

impl RebuildReport {
    /// Events applied per second, start to swap.
    pub fn events_per_s(&self) -> f64 {
        rate(self.position, self.elapsed)
    }
}

impl std::fmt::Display for RebuildReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rebuilt {} v{}: {} events in {:.1}s ({:.0} events/s), swapped in at position {}",
            self.name,
            self.version,
            self.position,
            self.elapsed.as_secs_f64(),
            self.events_per_s(),
            self.position
        )?;
        if self.swap_attempts > 1 {
            write!(f, " after {} swap attempts", self.swap_attempts)?;
        }
        Ok(())
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
    let (mut client, connection) = store.config().connect(NoTls).await?;
    let _connection = AbortOnDrop::new(tokio::spawn(connection));
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1)",
            &[&rebuild_lock_key(name)],
        )
        .await?
        .get(0);
    if !locked {
        return Err(RebuildError::Busy);
    }
    let mut build = Build {
        name,
        version,
        began: Instant::now(),
        position: 0,
        head: 0,
    };
    build.record(&client, "building", None).await?;
    let result = build
        .run(store, &mut client, projector, options, progress)
        .await;
    match &result {
        Ok(_) => build.record(&client, "done", None).await?,
        Err(error) => {
            let _ = client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    shadow_schema(name)
                ))
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

/// One rebuild's state.
struct Build {
    name: &'static str,
    version: u32,
    began: Instant,
    position: u64,
    head: u64,
}

impl Build {
    fn progress(&self, phase: &'static str) -> RebuildProgress {
        RebuildProgress {
            name: self.name,
            version: self.version,
            phase,
            position: self.position,
            head: self.head,
            elapsed: self.began.elapsed(),
        }
    }

    async fn run(
        &mut self,
        store: &PgEventStore,
        client: &mut tokio_postgres::Client,
        projector: &dyn Projector,
        options: &RebuildOptions,
        progress: &(dyn Fn(&RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport, RebuildError> {
        let name = self.name;
        for table in projector.tables() {
            check_identifier(table);
        }
        check_identifier(name);
        let (shadow, retired) = (shadow_schema(name), retired_schema(name));
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
        let batch = options.batch_size.max(1);
        self.head = head(store).await?;
        progress(&self.progress("building"));
        let mut last_report = Instant::now();
        let mut next = read_ahead(store, 0, batch);
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
            projector.apply(&tx, &events).await?;
            tx.commit().await?;
            self.position = last;
            if last_report.elapsed() >= options.progress_every {
                last_report = Instant::now();
                progress(&self.progress("building"));
                self.record(client, "building", None).await?;
            }
        }
        next.abort();

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
        progress(&self.progress("swapping"));
        self.record(client, "swapping", None).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let built = self.position;
            match self
                .swap(store, client, projector, options, &shadow, &retired)
                .await
            {
                Ok(()) => break,
                Err(RebuildError::Database(error)) if swap_may_retry(&error) => {
                    if attempt >= options.swap_attempts {
                        return Err(RebuildError::SwapStarved(attempt));
                    }
                    // Rolled back: the shadow is where it was before. Catch
                    // up outside the swap (committed), so the next attempt
                    // has less to do under its locks.
                    self.position = built;
                    tracing::info!(
                        projector = name,
                        attempt,
                        %error,
                        "the swap could not take its locks in time; catching up and trying again"
                    );
                    tokio::time::sleep(options.lock_timeout / 2).await;
                    self.catch_up(store, client, projector, options.batch_size)
                        .await?;
                }
                Err(error) => return Err(error),
            }
        }
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

    /// Applies what the log has beyond the shadow's position, in committed
    /// batches.
    async fn catch_up(
        &mut self,
        store: &PgEventStore,
        client: &mut tokio_postgres::Client,
        projector: &dyn Projector,
        batch: usize,
    ) -> Result<(), RebuildError> {
        loop {
            let events = store
                .read_all(self.position, batch.max(1))
                .await
                .map_err(|error| RebuildError::Store(error.to_string()))?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                return Ok(());
            };
            let tx = client.transaction().await?;
            projector.apply(&tx, &events).await?;
            tx.commit().await?;
            self.position = last;
            self.head = self.head.max(last);
        }
    }

    /// The swap transaction: lock the checkpoint (the live projector is
    /// between batches from here on), apply what is left, move the tables,
    /// move the checkpoint.
    async fn swap(
        &mut self,
        store: &PgEventStore,
        client: &mut tokio_postgres::Client,
        projector: &dyn Projector,
        options: &RebuildOptions,
        shadow: &str,
        retired: &str,
    ) -> Result<(), RebuildError> {
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL synchronous_commit = on; SET LOCAL lock_timeout = {};",
            options.lock_timeout.as_millis().max(1)
        ))
        .await?;
        self.refuse_newer(&tx, true).await?;
        loop {
            let events = store
                .read_all(self.position, options.batch_size.max(1))
                .await
                .map_err(|error| RebuildError::Store(error.to_string()))?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                break;
            };
            projector.apply(&tx, &events).await?;
            self.position = last;
        }
        self.head = self.head.max(self.position);
        let mut moves = String::new();
        for table in projector.tables() {
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

    /// Records where the rebuild is, for every process to see.
    async fn record(
        &self,
        client: &tokio_postgres::Client,
        state: &'static str,
        error: Option<&str>,
    ) -> Result<(), tokio_postgres::Error> {
        let progress = self.progress(state);
        client
            .execute(
                "INSERT INTO public.projection_rebuilds
                     (projector, version, state, position, head, events_per_s,
                      started_at, updated_at, finished_at, error)
                 VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(secs => $7), now(),
                         CASE WHEN $3 IN ('done', 'failed') THEN now() END, $8)
                 ON CONFLICT (projector) DO UPDATE SET
                     version = EXCLUDED.version, state = EXCLUDED.state,
                     position = EXCLUDED.position, head = EXCLUDED.head,
                     events_per_s = EXCLUDED.events_per_s,
                     started_at = EXCLUDED.started_at, updated_at = now(),
                     finished_at = EXCLUDED.finished_at, error = EXCLUDED.error",
                &[
                    &self.name,
                    &i32::try_from(self.version).unwrap_or(i32::MAX),
                    &state,
                    &to_i64(self.position),
                    &to_i64(self.head.max(self.position)),
                    &progress.events_per_s(),
                    &progress.elapsed.as_secs_f64(),
                    &error,
                ],
            )
            .await?;
        Ok(())
    }
}

/// The last rebuild of a projection, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildStatus {
    /// The projection.
    pub name: String,
    /// The version built.
    pub version: u32,
    /// `building`, `swapping`, `done`, `failed`, or `interrupted` (its
    /// process went away before it finished).
    pub state: String,
    /// Events applied to the new tables.
    pub position: u64,
    /// The log's head as last read.
    pub head: u64,
    /// Events applied per second so far.
    pub events_per_s: f64,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When it last reported.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

impl RebuildStatus {
    /// Seconds left at the rate so far, while it builds.
    pub fn eta_seconds(&self) -> Option<f64> {
        (self.finished_at.is_none() && self.events_per_s > 0.0)
            .then(|| self.head.saturating_sub(self.position) as f64 / self.events_per_s)
    }
}

/// The last rebuild of every projection that was ever rebuilt, by name. A
/// rebuild that says it is still going while no process holds its lock (its
/// process died) shows as `interrupted`.
///
/// # Errors
/// When the database does not answer.
pub async fn rebuilds(
    client: &tokio_postgres::Client,
) -> Result<Vec<RebuildStatus>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT projector, version, state, position, head, events_per_s,
                    started_at, updated_at, finished_at, error
             FROM projection_rebuilds ORDER BY projector",
            &[],
        )
        .await?;
    let held = held_locks(client).await?;
    Ok(rows
        .iter()
        .map(|row| RebuildStatus {
            name: row.get(0),
            version: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
            state: {
                let finished: Option<DateTime<Utc>> = row.get(8);
                let name: &str = row.get(0);
                if finished.is_none() && !held.contains(&rebuild_lock_key(name)) {
                    "interrupted".to_owned()
                } else {
                    row.get(2)
                }
            },
            position: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
            head: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
            events_per_s: row.get(5),
            started_at: row.get(6),
            updated_at: row.get(7),
            finished_at: row.get(8),
            error: row.get(9),
        })
        .collect())
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

/// The lock one rebuild of `name` holds, across processes.
fn rebuild_lock_key(name: &str) -> i64 {
    lock_key(&format!("rebuild:{name}"))
}

/// Where the next version is built.
fn shadow_schema(name: &str) -> String {
    format!("tl_next_{name}")
}

/// Where the replaced tables go until they are dropped.
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

async fn head(store: &PgEventStore) -> Result<u64, RebuildError> {
    store
        .head_position()
        .await
        .map_err(|error| RebuildError::Store(error.to_string()))
}

type ReadAhead = tokio::task::JoinHandle<Result<Vec<RecordedEvent>, RebuildError>>;

/// Reads the next batch while the current one is written.
fn read_ahead(store: &PgEventStore, after: u64, limit: usize) -> ReadAhead {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .read_all(after, limit)
            .await
            .map_err(|error| RebuildError::Store(error.to_string()))
    })
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_what_happens_without_alarming_zeroes() {
        let mut at = RebuildProgress {
            name: "tasks",
            version: 3,
            phase: "building",
            position: 5_000,
            head: 10_000,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            at.to_string(),
            "tasks v3 building: 5000/10000 events (50%) 2500 events/s ETA 2s"
        );
        // A log shorter than one batch goes straight to the swap: no
        // "0/147 events (0%) 0 events/s".
        at.phase = "swapping";
        at.position = 0;
        at.head = 147;
        assert_eq!(
            at.to_string(),
            "tasks v3 swapping: built up to 0 of 147 events; applying the rest and swapping the tables in"
        );
    }
}
