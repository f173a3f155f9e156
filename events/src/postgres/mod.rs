//! The PostgreSQL event store.
//!
//! # How the global order is kept
//!
//! Appends are **group-committed under one transaction-scoped advisory lock**
//! (`appender.rs` and `append.rs` have the details). Each process has one
//! appender task; callers hand it their appends and it writes everything
//! waiting in one transaction: take the log lock, check every append's
//! expected version against the log, insert the rows with consecutive
//! positions and chained hashes, `NOTIFY`, commit. Because the lock is
//! released only after the commit has become visible, commit order is
//! position order, which gives the four properties ARCHITECTURE.md asks for:
//!
//! 1. *Never skip*: position `n + 1` cannot commit before `n` is visible, so a
//!    reader that sees `n + 1` has already been able to see `n`.
//! 2. *Never stall*: positions are taken from the head under the lock, not
//!    from a sequence, so a rolled-back transaction leaves no hole; readers
//!    never wait on a lock (only writers do, and only while one batch commits).
//! 3. *Gapless and total*, with the SHA-256 chain of [`crate::chain`] computed
//!    in the same transaction.
//! 4. *No queue of writers on the lock*: within a process, writers queue on a
//!    channel and share one commit, so at most one connection per process
//!    waits for the lock. Several processes do take turns on it, one batch
//!    each.
//!
//! A commit costs one round trip when the appender knows the head (it wrote
//! or read it last) and every append names its stream's version (`Exact` or
//! `NoStream`, as load-decide-append commands do): positions and hashes are
//! computed from what it knows, and the insert is guarded so that, under the
//! lock, it writes nothing unless the head and each stream's version are as
//! assumed. Otherwise (or when the guard fails) it takes two: read under the
//! lock, then insert and commit.
//!
//! Why not the alternative ARCHITECTURE.md names (writers insert unnumbered
//! rows; a leader-elected sequencer numbers those below `pg_snapshot_xmin`):
//! it writes every row twice, adds a sequencer hop to subscriber lag, leaves
//! an append's position and hash unknown when it returns, and without
//! batching is bounded by the one-row-per-commit rate (7,700/s at 16 clients
//! with pgbench here) that group commit beats. `taskledger-bench append`
//! prints the figures; `--no-group-commit` shows the same protocol with one
//! commit per append (about 1,300/s whatever the writer count: that is the
//! lock queue group commit avoids).
//!
//! Measured and dropped on a 2-core machine: two batches in flight on two
//! connections (the lock hand-over between backends cost more than it saved:
//! 16 writers fell from ~8,000 to ~3,900 events/s); closing a batch as soon as
//! one append arrives (a median of 3 appends per commit); a fresh plan per
//! execution against stale statistics (planning the append statement took
//! 0.8 ms, as long as running it — hence `enable_seqscan=off` on the store's
//! own connections: a plan cached while `events` was small would otherwise
//! scan the table until the next ANALYZE). `data`/`metadata` are checked to be
//! objects by a text prefix, not `json_typeof`, which parsed every row again
//! (~15% of throughput).
//!
//! The tests in `events/tests/it` prove 1–3 under 32+ concurrent writers,
//! including writers that hold the lock while they sleep and writers that roll
//! back.

mod append;
mod appender;
mod listener;
mod read;
pub mod snapshots;
mod subscribe;
mod tail;
pub mod verify;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

pub use append::{append_in_transaction, AppendRequest};

use crate::envelope::{AppendResult, Direction, ExpectedVersion, NewEvent, RecordedEvent};
use crate::error::{AppendError, StoreError};
use crate::store::{EventStore, Subscription};
use crate::stream_id::StreamId;
use crate::upcast::Upcasters;

/// The channel every commit that appended events notifies, with the last new
/// position as payload.
pub const EVENTS_CHANNEL: &str = "taskledger_events";

/// The transaction-scoped advisory lock that orders all appends.
pub const LOG_LOCK_KEY: i64 = 0x746c_6c6f_675f_6c6b; // "tllog_lk"

/// Tuning for [`PgEventStore`]; the defaults suit most installations.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in each of the store's two pools: the one its own
    /// statements share (readers and the appender) and the one
    /// [`PgEventStore::pool`] hands out. Connections open on demand.
    pub pool_size: usize,
    /// How long taking a connection from either pool may wait before it
    /// fails with [`StoreError::Pool`] (which the API answers with 503), so
    /// a saturated pool never makes a request wait without bound.
    pub pool_wait: Duration,
    /// At most this many appends share one commit.
    pub max_batch_appends: usize,
    /// A commit is closed once it holds this many events (a single larger
    /// append still goes in whole).
    pub max_batch_events: usize,
    /// Appends that may wait for the appender before `append` itself waits.
    pub queue_capacity: usize,
    /// Events a subscription reads per query while catching up.
    pub subscription_batch: usize,
    /// How often a subscription looks for new events while the store's
    /// listener is not listening (a lost connection); while it listens, a
    /// subscription reads when notified, and at most ten times this apart
    /// (for rows written without a notification).
    pub poll_interval: Duration,
    /// Whether concurrent appends share commits. Off, every append commits on
    /// its own (for comparison in benchmarks).
    pub group_commit: bool,
    /// Whether, with group commit, the next batch is sent while the one
    /// before it commits (it waits for the log lock at the server and is
    /// guarded on the head that batch leaves). Off by default: it saves a
    /// round trip per commit but may make batches smaller, and no quiet
    /// measurement has yet shown it faster (`taskledger-bench append
    /// --baseline --commit-ahead`).
    pub commit_ahead: bool,
    /// Whether loads of aggregates that opt in read and write snapshots
    /// ([`crate::snapshot`]). Off, every load folds its whole stream (for
    /// comparison in benchmarks).
    pub snapshots: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            pool_wait: Duration::from_secs(5),
            max_batch_appends: 512,
            max_batch_events: 5_000,
            queue_capacity: 10_000,
            subscription_batch: 1_000,
            poll_interval: Duration::from_millis(500),
            group_commit: true,
            commit_ahead: false,
            snapshots: true,
        }
    }
}

/// The PostgreSQL [`EventStore`]. Cheap to clone; clones share the pool and
/// the appender. The appender task stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The store's own statements' connections, with the planner hint.
    own_pool: Pool,
    /// Plain connections for everyone else ([`PgEventStore::pool`]).
    shared_pool: Pool,
    config: tokio_postgres::Config,
    appender: mpsc::Sender<appender::PendingAppend>,
    appender_alive: Arc<AtomicBool>,
    commit_counters: Arc<appender::CommitCounters>,
    upcasters: Upcasters,
    options: StoreOptions,
    /// The one `LISTEN` connection every subscription of this store shares.
    listener: Arc<listener::SharedListener>,
    /// The newest events read, shared by the live subscriptions.
    tail: tail::Tail,
    /// Reads of the global order made for subscriptions.
    feed_reads: AtomicU64,
    /// The snapshot table, unless [`StoreOptions::snapshots`] is off.
    snapshots: Option<snapshots::Snapshots>,
}

impl PgEventStore {
    /// Connects to the database at `url` (a `postgres://` URL or key=value
    /// string) and starts the appender. The schema must already be migrated
    /// ([`crate::migrate::migrate`]). Connections are opened lazily.
    ///
    /// # Errors
    /// [`StoreError::Pool`] when the URL cannot be parsed or the pool built.
    /// Must be called inside a Tokio runtime.
    pub fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|error: tokio_postgres::Error| {
                StoreError::Pool(format!("bad database URL: {error}"))
            })?;
        Self::from_config(config, options, Upcasters::new())
    }

    /// Like [`PgEventStore::connect`], from a parsed configuration and with
    /// upcasters for reading.
    ///
    /// # Errors
    /// [`StoreError::Pool`] when the pool cannot be built.
    pub fn from_config(
        config: tokio_postgres::Config,
        options: StoreOptions,
        upcasters: Upcasters,
    ) -> Result<Self, StoreError> {
        // Every statement of the store is a key lookup or a key range
        // (position, stream and version, event id), so tell the planner not
        // to scan whole tables. Without this, a plan cached while `events`
        // was small (a new install, a test) scans the whole table on every
        // execution until the next ANALYZE. Forcing a fresh plan per
        // execution would fix that too, but planning the append statement
        // costs more than executing it.
        // Only the store's own connections get it: `pool()` (read models,
        // exports, callers' transactions) and `config()` (the projectors'
        // and listeners' own connections) stay as given, so the hint never
        // steers a query it was not measured for.
        let mut hinted = config.clone();
        let session_options = match hinted.get_options() {
            Some(existing) => format!("{existing} -c enable_seqscan=off"),
            None => "-c enable_seqscan=off".to_owned(),
        };
        hinted.options(&session_options);
        let own_pool = build_pool(hinted, &options)?;
        let shared_pool = build_pool(config.clone(), &options)?;
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let appender_alive = Arc::new(AtomicBool::new(true));
        let commit_counters = Arc::new(appender::CommitCounters::default());
        tokio::spawn(appender::run_appender(
            own_pool.clone(),
            receiver,
            options.clone(),
            appender_alive.clone(),
            commit_counters.clone(),
        ));
        let snapshots = options
            .snapshots
            .then(|| snapshots::Snapshots::new(own_pool.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                snapshots,
                own_pool,
                shared_pool,
                listener: Arc::new(listener::SharedListener::new(config.clone())),
                tail: tail::Tail::default(),
                feed_reads: AtomicU64::new(0),
                config,
                appender: sender,
                appender_alive,
                commit_counters,
                upcasters,
                options,
            }),
        })
    }

    /// A pool of plain connections to the store's database, for callers'
    /// own queries and transactions (read models, exports, lookups,
    /// [`append_in_transaction`]).
    ///
    /// Its connections have the settings the store was configured with and
    /// nothing more: the planner hint the store's own statements run with
    /// (`enable_seqscan=off`) is on a separate pool that is never handed
    /// out. The two pools are separate in size too: callers here cannot
    /// starve the appender or the store's reads, nor they these callers. At
    /// most [`StoreOptions::pool_size`] connections; `get()` waits at most
    /// [`StoreOptions::pool_wait`], then fails.
    pub fn pool(&self) -> &Pool {
        &self.inner.shared_pool
    }

    /// The pool behind the store's own statements (for `crate::testing`).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn own_pool(&self) -> &Pool {
        &self.inner.own_pool
    }

    /// The connection settings the store was built from.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.inner.config
    }

    /// Whether the appender task, which orders the log for this process, is
    /// still running.
    pub fn appender_alive(&self) -> bool {
        self.inner.appender_alive.load(Ordering::Acquire) && !self.inner.appender.is_closed()
    }

    /// Commits made so far by this store's appender: (in one round trip, in
    /// two). For metrics and for tests that the fast path is taken.
    pub fn commit_counts(&self) -> (u64, u64) {
        (
            self.inner.commit_counters.fast.load(Ordering::Relaxed),
            self.inner.commit_counters.full.load(Ordering::Relaxed),
        )
    }

    /// Events of the global order as stored, without upcasting (what the hash
    /// chain covers).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    pub async fn read_all_as_stored(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.inner.own_pool.get().await?;
        read::read_all(&client, after_position, limit).await
    }

    /// [`PgEventStore::read_all_as_stored`], and whether the batch stopped
    /// before an unreadable event (for the feed, which must then read again
    /// at once rather than wait as if it had caught up).
    pub(super) async fn read_all_for_feed(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, bool), StoreError> {
        self.inner.feed_reads.fetch_add(1, Ordering::Relaxed);
        let client = self.inner.own_pool.get().await?;
        read::read_all_to_unreadable(&client, after_position, limit).await
    }

    /// How many reads of the global order this store's subscriptions have
    /// made (one query each), however many subscriptions took their events:
    /// feeds that have caught up share one read per commit they are woken
    /// for (`postgres/tail.rs`).
    #[must_use]
    pub fn feed_reads(&self) -> u64 {
        self.inner.feed_reads.load(Ordering::Relaxed)
    }

    /// The newest event of type `event_type` in one stream, if it has one:
    /// one indexed read, however long the stream (the last assignment of a
    /// device whose stream holds years of messages). Types read this way have
    /// a partial index (`events_stream_version_assigned`, migration 16);
    /// others scan the stream's index backward, still without decoding the
    /// events they pass.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails or the event is unreadable.
    pub async fn latest_of_type(
        &self,
        stream_id: &StreamId,
        event_type: &str,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let client = self.inner.own_pool.get().await?;
        let event = read::latest_of_type(&client, stream_id, event_type).await?;
        event
            .map(|event| self.inner.upcasters.upcast(event))
            .transpose()
    }

    /// The newest `limit` events of type `event_type` in one stream whose
    /// JSON data holds each `(field, value)` of `matching` (top-level
    /// fields, compared as text: a number as its decimal digits), oldest
    /// first, upcast as every read is. The filter runs in the database, on
    /// the stream's index; `matching` may be empty.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails or an event is unreadable.
    pub async fn newest_of_type_matching(
        &self,
        stream_id: &StreamId,
        event_type: &str,
        matching: &[(&str, &str)],
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.inner.own_pool.get().await?;
        read::newest_of_type_matching(&client, stream_id, event_type, matching, limit)
            .await?
            .into_iter()
            .map(|event| self.inner.upcasters.upcast(event))
            .collect()
    }

    /// Checks the database answers a trivial query.
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.inner.own_pool.get().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(StoreError::db("pinging the database"))?;
        Ok(())
    }

    fn upcast_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>, StoreError> {
        events
            .into_iter()
            .map(|event| self.inner.upcasters.upcast(event))
            .collect()
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    /// Its span carries the stream, the expectation, the number of events
    /// and the position of the last one written (or found already stored).
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(stream = %stream_id, expected = ?expected, events = events.len(), position),
        err(level = "debug")
    )]
    async fn append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        let request = AppendRequest::new(stream_id.clone(), expected, events)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .appender
            .send(appender::PendingAppend { request, reply })
            .await
            .map_err(|_| StoreError::AppenderStopped)?;
        let appended = answer.await.map_err(|_| StoreError::AppenderStopped)??;
        crate::command::own_span("append").record("position", appended.last_position);
        Ok(appended)
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.inner.own_pool.get().await?;
        let events = read::read_stream(&client, stream_id, from_version, direction, limit).await?;
        self.upcast_all(events)
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.read_all_as_stored(after_position, limit).await?;
        self.upcast_all(events)
    }

    fn subscribe_all(&self, after_position: u64) -> Subscription {
        subscribe::start(self.clone(), after_position)
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let client = self.inner.own_pool.get().await?;
        read::head_position(&client).await
    }

    fn snapshots(&self) -> Option<&snapshots::Snapshots> {
        self.inner.snapshots.as_ref()
    }
}

/// A pool of at most `pool_size` connections made from `config`, waiting
/// at most `pool_wait` for one.
fn build_pool(config: tokio_postgres::Config, options: &StoreOptions) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.pool_size.max(2))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(options.pool_wait))
        .create_timeout(Some(options.pool_wait))
        .build()
        .map_err(|error| StoreError::Pool(error.to_string()))
}

/// Converts a stored `bigint` that the schema keeps positive.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Converts a count or position for a `bigint` parameter.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
