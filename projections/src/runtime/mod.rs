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
//!   A batch with no event the projector projects ([`Projector::projects`]
//!   `false` for all) takes no transaction: the checkpoint row stays behind,
//!   and is moved past such events with the next batch it applies, or
//!   within [`CHECKPOINT_LAG`] (a crash meanwhile re-reads events that
//!   change nothing).
//! - **Batches and wake-ups**: it reads the global order from its checkpoint
//!   through a store subscription (catch-up in batches, then `NOTIFY`), and
//!   applies whatever is ready, up to [`RuntimeOptions::batch_size`] events, in
//!   one transaction.
//! - **Never skips**: when the handler fails on an event, the transaction
//!   rolls back, the failure is recorded (in `projector_checkpoints` and the
//!   status), and the runtime tries the same event again after
//!   [`RuntimeOptions::failure_retry`] — so it resumes once the cause is fixed.
//!
//! Here: the [`Projector`] contract, the runtime's options and status. The
//! worker loop is in `worker.rs`, one batch's transaction in `batch.rs`,
//! [`ProjectorRuntime::catch_up`] in `catch_up.rs`, the checkpoint row and
//! the operator's controls (pause, reset) in `checkpoint.rs`, the lag report
//! in `lag.rs`, and the advisory locks in `locks.rs`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::RecordedEvent;
use tokio::sync::watch;

mod batch;
mod catch_up;
mod checkpoint;
mod lag;
mod locks;
mod statements;
mod worker;

pub use catch_up::CatchUpError;
pub(crate) use checkpoint::{ensure_checkpoint, to_i64, Checkpoint};
pub use checkpoint::{reset, set_paused};
pub use lag::{lags, ProjectorLag};
pub use locks::lock_key;
pub(crate) use locks::{connect, held_locks, try_lock};
pub use statements::{Batch, Statements};

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
    /// Applies `events` (consecutive, in global order) inside `tx`, whose
    /// `execute` and `query` prepare each statement once per connection.
    /// Must be deterministic: no clock, no randomness, no network.
    ///
    /// # Errors
    /// Anything that should stop the projector at this batch; it is retried.
    async fn apply(&self, tx: &Batch<'_>, events: &[RecordedEvent]) -> Result<(), ProjectorError>;
    /// Whether [`Projector::apply`] may change a table for `event`. `false`
    /// promises that it changes nothing and cannot fail for it, so the
    /// runtime may move past a batch of such events without a transaction
    /// (the checkpoint follows within [`CHECKPOINT_LAG`]). The default
    /// answers `true` for every event.
    fn projects(&self, event: &RecordedEvent) -> bool {
        let _ = event;
        true
    }
}

/// How long a projector's checkpoint may stay behind events it does not
/// project before it is written anyway (a crash meanwhile re-reads them,
/// which changes nothing).
pub const CHECKPOINT_LAG: std::time::Duration = std::time::Duration::from_secs(1);

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
}
