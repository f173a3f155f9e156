//! The projector runtime.
//!
//! A [`Projector`] is a name, a version, the tables it owns and a
//! deterministic handler. [`ProjectorRuntime::run`] keeps it up to date:
//!
//! - **One active instance** per projector across all processes: the runtime
//!   opens a dedicated connection and takes a session advisory lock keyed by
//!   the projector's name. Instances that do not get it wait and try again
//!   every [`RuntimeOptions::standby_retry`]; when the holder dies its session
//!   ends, the lock is released and a standby takes over within that time.
//! - **Exactly-once effect**: the handler's writes and the checkpoint move
//!   happen in one transaction *on the connection that holds the lock*. An
//!   instance that lost its connection has lost its lock and cannot write;
//!   the checkpoint update is also guarded by the position it started from.
//! - **Batches and wake-ups**: it reads the global order from its checkpoint
//!   through a store subscription (catch-up in batches, then `NOTIFY`), and
//!   applies whatever is ready, up to [`RuntimeOptions::batch_size`] events, in
//!   one transaction.
//! - **Never skips**: when the handler fails on an event, the transaction
//!   rolls back, the failure is recorded (in `projector_checkpoints` and the
//!   status), and the runtime tries the same event again after
//!   [`RuntimeOptions::failure_retry`] — so it resumes once the cause is fixed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::{EventStore, RecordedEvent};
use tokio::sync::watch;
use tokio_postgres::{NoTls, Transaction};

/// A read model kept up to date from the global order.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    /// A stable name, unique among projectors (also the lock key).
    fn name(&self) -> &'static str;
    /// The version of the projection's shape; bump it when the handler or
    /// tables change meaning (a rebuild then starts from zero).
    fn version(&self) -> u32;
    /// The tables the projector owns (and nothing else writes).
    fn tables(&self) -> &'static [&'static str];
    /// The DDL that creates [`Projector::tables`] (with their indexes) for
    /// this version, naming them unqualified: a blue/green rebuild runs it
    /// with a shadow schema first on the `search_path`.
    fn schema(&self) -> &'static str;
    /// Applies `events` (consecutive, in global order) inside `tx`. Must be
    /// deterministic: no clock, no randomness, no network.
    ///
    /// # Errors
    /// Anything that should stop the projector at this batch; it is retried.
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectorError>;
}

/// Why a projector could not apply a batch.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The database refused a write or failed.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// An event could not be interpreted.
    #[error("cannot project event at global position {global_position}: {reason}")]
    Event {
        /// The event.
        global_position: u64,
        /// What is wrong.
        reason: String,
    },
}

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

/// Tuning for [`ProjectorRuntime`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// At most this many events per transaction.
    pub batch_size: usize,
    /// How often a standby instance tries to become the active one.
    pub standby_retry: Duration,
    /// How long to wait before trying a failed batch again.
    pub failure_retry: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            standby_retry: Duration::from_secs(2),
            failure_retry: Duration::from_secs(5),
        }
    }
}

/// How often a paused projector looks whether it was resumed.
const PAUSE_POLL: Duration = Duration::from_millis(250);

/// The longest wait between automatic rebuild attempts that failed.
const MAX_REBUILD_BACKOFF: Duration = Duration::from_secs(300);

/// How often an idle projector looks at its checkpoint.
const CONTROL_POLL: Duration = Duration::from_secs(1);

/// What a projector instance is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectorState {
    /// Not started yet, or connecting.
    Starting,
    /// Another instance is active; this one waits to take over.
    Standby,
    /// Active and applying events.
    Running,
    /// Active, but the handler fails on the event after `position`.
    Failed {
        /// The event it fails on.
        global_position: u64,
        /// The handler's error.
        error: String,
    },
    /// Active, but an operator paused it (`taskledger projections pause`).
    Paused,
    /// The projection in the database is a newer version than this
    /// process's code: it leaves the projection to processes that run it.
    Outdated {
        /// The version the checkpoint records.
        stored: u32,
    },
    /// The projection in the database is an older version: this instance is
    /// building the new one beside it (blue/green) and will swap it in.
    Rebuilding,
    /// Stopped by shutdown.
    Stopped,
}

/// What happened to a batch the runtime tried to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
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

/// A projector instance's status, for lag and readiness reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorStatus {
    /// The projector's name.
    pub name: &'static str,
    /// Its version.
    pub version: u32,
    /// The last global position applied (as this instance knows it).
    pub position: u64,
    /// When the last applied event was recorded.
    pub position_recorded_at: Option<DateTime<Utc>>,
    /// What the instance is doing.
    pub state: ProjectorState,
}

/// Runs one projector. Cheap to clone the status receiver from.
#[derive(Debug)]
pub struct ProjectorRuntime<P: Projector> {
    store: PgEventStore,
    projector: Arc<P>,
    options: RuntimeOptions,
    status: watch::Sender<ProjectorStatus>,
}

impl<P: Projector> ProjectorRuntime<P> {
    /// A runtime for `projector` reading from `store`.
    pub fn new(store: PgEventStore, projector: P, options: RuntimeOptions) -> Self {
        let status = watch::Sender::new(ProjectorStatus {
            name: projector.name(),
            version: projector.version(),
            position: 0,
            position_recorded_at: None,
            state: ProjectorState::Starting,
        });
        Self {
            store,
            projector: Arc::new(projector),
            options,
            status,
        }
    }

    /// Follows this instance's status.
    pub fn status(&self) -> watch::Receiver<ProjectorStatus> {
        self.status.subscribe()
    }

    /// Runs until `stop` completes: waits to become the active instance,
    /// then applies the global order. Connection failures are logged and
    /// retried; nothing here ends the loop but `stop`.
    pub async fn run(self, stop: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                result = self.run_once() => {
                    if let Err(error) = result {
                        tracing::warn!(projector = self.projector.name(), %error, "projector lost its connection; retrying");
                    }
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(self.options.standby_retry) => {}
                    }
                }
            }
        }
        self.status
            .send_modify(|status| status.state = ProjectorState::Stopped);
    }

    /// One life of a connection: make sure the projection is this code's
    /// version (rebuilding it blue/green when it is older), become active,
    /// then project until the connection fails (an error) or the projection
    /// moves to another version (`Ok`).
    async fn run_once(&self) -> Result<(), tokio_postgres::Error> {
        let name = self.projector.name();
        let own = self.projector.version();
        let (mut client, connection) = self.store.config().connect(NoTls).await?;
        let connection = tokio::spawn(connection);
        let _abort = AbortOnDrop::new(connection);

        ensure_checkpoint(&client, name, own).await?;
        let mut backoff = self.options.failure_retry;
        loop {
            let stored = Checkpoint::read(&client, name, false).await?.version;
            if stored == own {
                break;
            }
            if stored > own {
                self.outdated(stored);
                tokio::time::sleep(self.options.standby_retry).await;
                continue;
            }
            self.status
                .send_modify(|status| status.state = ProjectorState::Rebuilding);
            tracing::info!(
                projector = name,
                stored,
                version = own,
                "the projection is an older version; rebuilding it beside the live one"
            );
            match crate::rebuild::rebuild(
                &self.store,
                self.projector.as_ref(),
                &crate::rebuild::RebuildOptions::default(),
                &|_| {},
            )
            .await
            {
                Ok(report) => tracing::info!(projector = name, %report, "rebuilt"),
                Err(crate::rebuild::RebuildError::Busy) => {
                    // Another process is building it; wait for it.
                    tokio::time::sleep(self.options.standby_retry).await;
                }
                Err(error) => {
                    tracing::error!(projector = name, %error, retry_in_s = backoff.as_secs_f64(), "rebuilding the projection failed; will retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_REBUILD_BACKOFF);
                }
            }
        }

        // Wait to be the one active instance.
        loop {
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(name)])
                .await?;
            if row.get::<_, bool>(0) {
                break;
            }
            self.status
                .send_modify(|status| status.state = ProjectorState::Standby);
            tokio::time::sleep(self.options.standby_retry).await;
        }
        tracing::info!(projector = name, "projector active");

        let mut position = Checkpoint::read(&client, name, false).await?.position;
        self.status.send_modify(|status| {
            status.position = position;
            status.state = ProjectorState::Running;
        });

        let mut feed = self.store.subscribe_all(position);
        loop {
            // While idle, look at the checkpoint now and then: a rebuild,
            // reset, pause or newer version must be noticed without waiting
            // for the next event. (`next` is cancel-safe.)
            let Ok(next) = tokio::time::timeout(CONTROL_POLL, feed.next()).await else {
                if let Some(blocked) = self.idle_check(&client, position).await? {
                    let Some(to) = self.settle(&client, blocked, position).await? else {
                        return Ok(());
                    };
                    if to != position {
                        position = to;
                        feed = self.store.subscribe_all(position);
                    }
                }
                continue;
            };
            let Some(first) = next else {
                // The feed only ends on an unreadable event; wait and start over.
                tracing::error!(projector = name, position, "the event feed ended");
                tokio::time::sleep(self.options.failure_retry).await;
                feed = self.store.subscribe_all(position);
                continue;
            };
            let mut batch = vec![first];
            while batch.len() < self.options.batch_size.max(1) {
                match feed.try_next() {
                    Some(item) => batch.push(item),
                    None => break,
                }
            }
            let events: Vec<RecordedEvent> = match batch.into_iter().collect() {
                Ok(events) => events,
                Err(error) => {
                    self.record_failure(&client, position + 1, &error.to_string())
                        .await?;
                    tokio::time::sleep(self.options.failure_retry).await;
                    feed = self.store.subscribe_all(position);
                    continue;
                }
            };
            let outcome = match self.apply_batch(&mut client, position, &events).await? {
                Ok(Applied::Done) => {
                    self.advance(&mut position, &events);
                    continue;
                }
                Ok(outcome) => outcome,
                Err(_) if events.len() > 1 => {
                    // Find the event that fails: apply one per transaction,
                    // so everything before it lands.
                    let mut outcome = Applied::Done;
                    for event in events.chunks(1) {
                        match self.apply_batch(&mut client, position, event).await? {
                            Ok(Applied::Done) => self.advance(&mut position, event),
                            Ok(other) => {
                                outcome = other;
                                break;
                            }
                            Err(error) => {
                                self.stop_at(&client, event[0].global_position, &error)
                                    .await?;
                                break;
                            }
                        }
                    }
                    outcome
                }
                Err(error) => {
                    let failed_at = events.first().map_or(position + 1, |e| e.global_position);
                    self.stop_at(&client, failed_at, &error).await?;
                    Applied::Done
                }
            };
            let Some(to) = self.settle(&client, outcome, position).await? else {
                return Ok(());
            };
            position = to;
            // Read on from what the checkpoint holds.
            feed = self.store.subscribe_all(position);
        }
    }

    fn moved(&self, from: u64, to: u64) {
        tracing::info!(
            projector = self.projector.name(),
            from,
            to,
            "the checkpoint moved (a rebuild swapped tables in, or a reset); reading on from there"
        );
        self.status.send_modify(|status| {
            status.position = to;
            status.position_recorded_at = None;
            status.state = ProjectorState::Running;
        });
    }

    /// What the checkpoint says while no events come: `None` when nothing
    /// keeps this instance from applying the next batch (a paused instance
    /// is then shown running again).
    async fn idle_check(
        &self,
        client: &tokio_postgres::Client,
        position: u64,
    ) -> Result<Option<Applied>, tokio_postgres::Error> {
        let blocked = Checkpoint::read(client, self.projector.name(), false)
            .await?
            .blocks(self.projector.version(), position);
        if blocked != Some(Applied::Paused) {
            self.status.send_if_modified(|status| {
                let resumed = status.state == ProjectorState::Paused;
                if resumed {
                    status.state = ProjectorState::Running;
                }
                resumed
            });
        }
        Ok(blocked)
    }

    /// After something kept a batch from being applied: waits out a pause,
    /// follows a moved checkpoint, and answers the position to read on
    /// from, or `None` when the projection is another version now (this
    /// instance must leave it).
    async fn settle(
        &self,
        client: &tokio_postgres::Client,
        mut blocked: Applied,
        position: u64,
    ) -> Result<Option<u64>, tokio_postgres::Error> {
        loop {
            match blocked {
                Applied::Done => return Ok(Some(position)),
                Applied::Moved(to) => {
                    self.moved(position, to);
                    return Ok(Some(to));
                }
                Applied::Outdated(stored) => {
                    self.outdated(stored);
                    return Ok(None);
                }
                Applied::Paused => {
                    self.status
                        .send_modify(|status| status.state = ProjectorState::Paused);
                    // One cheap read of the checkpoint row each time.
                    tokio::time::sleep(PAUSE_POLL).await;
                    blocked = self
                        .idle_check(client, position)
                        .await?
                        .unwrap_or(Applied::Done);
                }
            }
        }
    }

    /// The database holds another version of the projection than this code
    /// projects: say so once and leave it alone.
    fn outdated(&self, stored: u32) {
        let own = self.projector.version();
        let changed = self.status.send_if_modified(|status| {
            let state = ProjectorState::Outdated { stored };
            if status.state == state {
                return false;
            }
            status.state = state;
            true
        });
        if changed {
            tracing::warn!(
                projector = self.projector.name(),
                stored,
                version = own,
                "the projection in the database is another version than this process projects; leaving it to processes that run version {stored}"
            );
        }
    }

    fn advance(&self, position: &mut u64, applied: &[RecordedEvent]) {
        let Some(last) = applied.last() else { return };
        *position = last.global_position;
        self.status.send_modify(|status| {
            status.position = last.global_position;
            status.position_recorded_at = Some(last.recorded_at);
            status.state = ProjectorState::Running;
        });
    }

    /// Never skip: record the failure, wait, and let the caller read from the
    /// same place again.
    async fn stop_at(
        &self,
        client: &tokio_postgres::Client,
        failed_at: u64,
        error: &ProjectorError,
    ) -> Result<(), tokio_postgres::Error> {
        tracing::error!(projector = self.projector.name(), global_position = failed_at, %error, "projector handler failed; will retry");
        self.record_failure(client, failed_at, &error.to_string())
            .await?;
        tokio::time::sleep(self.options.failure_retry).await;
        Ok(())
    }

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
        let (mut client, connection) = self.store.config().connect(NoTls).await?;
        let _connection = AbortOnDrop::new(tokio::spawn(connection));
        ensure_checkpoint(&client, name, self.projector.version()).await?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(name)])
            .await?
            .get(0);
        if !locked {
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
            match self.apply_batch(&mut client, position, &events).await?? {
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

    /// Applies one batch and moves the checkpoint, in one transaction that
    /// first locks the checkpoint row: a rebuild's swap, a pause or a reset
    /// takes the same lock, so each sees the projection between batches.
    /// The outer error is the connection's (give up this life); the inner
    /// one is the handler's (retry the batch later).
    #[tracing::instrument(
        name = "projector_batch",
        level = "debug",
        skip_all,
        fields(projector = self.projector.name(), after = position, events = events.len())
    )]
    async fn apply_batch(
        &self,
        client: &mut tokio_postgres::Client,
        position: u64,
        events: &[RecordedEvent],
    ) -> Result<Result<Applied, ProjectorError>, tokio_postgres::Error> {
        let name = self.projector.name();
        let last = events.last().map_or(position, |e| e.global_position);
        let tx = client.transaction().await?;
        let outcome = Checkpoint::read(&tx, name, true)
            .await?
            .blocks(self.projector.version(), position);
        if let Some(outcome) = outcome {
            tx.rollback().await?;
            return Ok(Ok(outcome));
        }
        if let Err(error) = self.projector.apply(&tx, events).await {
            tx.rollback().await?;
            return Ok(Err(error));
        }
        tx.execute(
            "UPDATE projector_checkpoints
             SET position = $2, updated_at = now(), failed_position = NULL, failure = NULL
             WHERE projector = $1",
            &[&name, &to_i64(last)],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(Applied::Done))
    }

    async fn record_failure(
        &self,
        client: &tokio_postgres::Client,
        global_position: u64,
        error: &str,
    ) -> Result<(), tokio_postgres::Error> {
        client
            .execute(
                "UPDATE projector_checkpoints SET failed_position = $2, failure = $3 WHERE projector = $1",
                &[&self.projector.name(), &to_i64(global_position), &error],
            )
            .await?;
        self.status.send_modify(|status| {
            status.state = ProjectorState::Failed {
                global_position,
                error: error.to_owned(),
            };
        });
        Ok(())
    }
}

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
    /// Reads `name`'s checkpoint; with `lock`, holds its row for the rest of
    /// the transaction (the live projector, a swap, a pause and a reset all
    /// take that lock, so each sees the others between batches).
    pub(crate) async fn read(
        client: &impl tokio_postgres::GenericClient,
        name: &str,
        lock: bool,
    ) -> Result<Self, tokio_postgres::Error> {
        let sql = if lock {
            "SELECT position, version, paused FROM public.projector_checkpoints
             WHERE projector = $1 FOR UPDATE"
        } else {
            "SELECT position, version, paused FROM public.projector_checkpoints
             WHERE projector = $1"
        };
        let row = client.query_one(sql, &[&name]).await?;
        Ok(Self {
            position: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            version: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
            paused: row.get(2),
        })
    }

    /// What keeps a projector of `version`, which has applied up to
    /// `position`, from applying its next batch.
    fn blocks(self, version: u32, position: u64) -> Option<Applied> {
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

/// Where a projector stands against the log, as recorded in the database
/// (so it is the same answer whichever process runs the projector).
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorLag {
    /// The projector's name.
    pub name: String,
    /// The version its checkpoint was written by.
    pub version: u32,
    /// Its checkpoint: every event up to here is in its tables.
    pub position: u64,
    /// The log's head when this was read.
    pub head: u64,
    /// Events in the log it has not applied yet.
    pub lag_events: u64,
    /// How long ago the oldest event it has not applied was recorded (0 when
    /// it is caught up).
    pub lag_seconds: f64,
    /// The event it fails on and why, while it fails.
    pub failure: Option<(u64, String)>,
    /// Whether an operator paused it.
    pub paused: bool,
    /// Whether some process runs it right now (holds its leader lock).
    pub active: bool,
}

/// Every projector's checkpoint, the log's head, and the distance between
/// them, by name.
///
/// # Errors
/// When the database does not answer.
pub async fn lags(
    client: &tokio_postgres::Client,
) -> Result<Vec<ProjectorLag>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.projector, c.version, c.position, c.failed_position, c.failure, h.head,
                    coalesce((SELECT extract(epoch FROM now() - e.recorded_at)::float8
                              FROM events e WHERE e.global_position = c.position + 1), 0),
                    c.paused
             FROM projector_checkpoints c,
                  (SELECT coalesce(max(global_position), 0) AS head FROM events) h
             ORDER BY c.projector",
            &[],
        )
        .await?;
    // Which projectors some process is running right now: their leader
    // locks are held.
    let held = held_locks(client).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let position = u64::try_from(row.get::<_, i64>(2)).unwrap_or(0);
            let head = u64::try_from(row.get::<_, i64>(5)).unwrap_or(0);
            let failed: Option<i64> = row.get(3);
            let failure: Option<String> = row.get(4);
            ProjectorLag {
                name: row.get(0),
                version: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
                position,
                head,
                lag_events: head.saturating_sub(position),
                lag_seconds: row.get::<_, f64>(6).max(0.0),
                failure: failed
                    .map(|at| (u64::try_from(at).unwrap_or(0), failure.unwrap_or_default())),
                paused: row.get(7),
                active: held.contains(&lock_key(row.get(0))),
            }
        })
        .collect())
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

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Stops the connection task when the runtime's life ends (which closes the
/// connection and releases the lock): tokio-util's handle.
pub(crate) use tokio_util::task::AbortOnDropHandle as AbortOnDrop;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("tasks"), lock_key("tasks"));
        assert_ne!(lock_key("tasks"), lock_key("results"));
    }
}
