//! The group-committing appender: one task per store that takes every
//! append waiting on its channel, commits them together through the append
//! protocol ([`super::append`]) in one transaction, and answers each caller;
//! one round trip when it knows the log head, two otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::append::{
    insert_rows, lock_and_read, moved_under_lock, plan, AppendRequest, Begin, Commit, Guard, Rows,
    Snapshot, BEGIN_AND_LOCK, GUARDED_INSERT_SQL, READ_SQL,
};
use super::{to_u64, StoreOptions};
use crate::envelope::{AppendResult, ExpectedVersion};
use crate::error::{AppendError, StoreError};

/// An append waiting for the appender, with where to send its outcome.
pub(super) struct PendingAppend {
    pub(super) request: AppendRequest,
    pub(super) reply: oneshot::Sender<Result<AppendResult, AppendError>>,
}

/// Scheduler turns the appender gives waiting writers before it closes a
/// batch that nothing more has joined.
const YIELD_ROUNDS: u32 = 4;

/// How long the appender waits for a batch to grow back to the size of the
/// previous one.
const GATHER_WAIT: Duration = Duration::from_micros(300);

/// The appender task: takes every append waiting on the channel (up to the
/// batch limits), commits them together, answers each caller, repeats. Ends
/// when every sender is gone.
pub(super) async fn run_appender(
    pool: Pool,
    mut receiver: mpsc::Receiver<PendingAppend>,
    options: StoreOptions,
    alive: Arc<AtomicBool>,
    counters: Arc<CommitCounters>,
) {
    // Marks the appender dead however the task ends, panics included.
    struct AliveGuard(Arc<AtomicBool>);
    impl Drop for AliveGuard {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _guard = AliveGuard(alive);

    let mut head: Option<LogHead> = None;
    let max_appends = if options.group_commit {
        options.max_batch_appends.max(1)
    } else {
        1
    };
    let mut previous_batch = 1;
    // The batch sent ahead: its transaction waits at the server for the log
    // lock while the batch before it commits, so the lock passes from one
    // commit to the next without a round trip to this process in between.
    let mut ahead: Option<Ahead> = None;
    loop {
        let next = match ahead.as_mut() {
            None => receiver.recv().await.map_or(Next::Closed, Next::Append),
            Some(flight) => tokio::select! {
                biased;
                joined = &mut flight.task => Next::Committed(joined),
                pending = receiver.recv() => pending.map_or(Next::Closed, Next::Append),
            },
        };
        let first = match next {
            Next::Append(first) => first,
            Next::Committed(joined) => {
                let flight = ahead.take().expect("a batch was in flight");
                finish(&pool, flight, joined, &mut head, &counters).await;
                continue;
            }
            Next::Closed => break,
        };
        let batch = gather(first, &mut receiver, max_appends, &options, previous_batch).await;
        previous_batch = batch.len();
        // Behind a batch in flight, this one assumes the head that one
        // leaves; its guard holds only if that batch committed.
        let assumed = ahead.as_ref().map(|flight| flight.new_head).or(head);
        let sent = match assumed {
            Some(assumed) if options.group_commit && options.commit_ahead => {
                send_ahead(&pool, batch, assumed)
            }
            _ => Err(batch),
        };
        if let Some(mut flight) = ahead.take() {
            let joined = (&mut flight.task).await;
            finish(&pool, flight, joined, &mut head, &counters).await;
        }
        match sent {
            Ok(flight) => ahead = Some(flight),
            Err(batch) => commit_batch(&pool, batch, &mut head, &counters).await,
        }
    }
    if let Some(mut flight) = ahead.take() {
        let joined = (&mut flight.task).await;
        finish(&pool, flight, joined, &mut head, &counters).await;
    }
}

/// What the appender waits for next.
enum Next {
    Append(PendingAppend),
    Committed(Result<Result<usize, StoreError>, tokio::task::JoinError>),
    Closed,
}

/// Takes every append waiting on the channel after `first`, up to the batch
/// limits. The writers the last commit answered are probably about to
/// append again; give them a moment (up to `GATHER_WAIT`) to make the batch
/// as large as the last one. Past that, stop once a few scheduler turns
/// bring nothing new.
async fn gather(
    first: PendingAppend,
    receiver: &mut mpsc::Receiver<PendingAppend>,
    max_appends: usize,
    options: &StoreOptions,
    previous_batch: usize,
) -> Vec<PendingAppend> {
    let mut events = first.request.len();
    let mut batch = vec![first];
    let gathering_since = Instant::now();
    let mut quiet_rounds = 0;
    while batch.len() < max_appends && events < options.max_batch_events {
        match receiver.try_recv() {
            Ok(pending) => {
                events += pending.request.len();
                batch.push(pending);
                quiet_rounds = 0;
            }
            Err(_) if max_appends == 1 => break,
            Err(_) if batch.len() < previous_batch && gathering_since.elapsed() < GATHER_WAIT => {
                tokio::task::yield_now().await;
            }
            Err(_) if quiet_rounds < YIELD_ROUNDS => {
                quiet_rounds += 1;
                tokio::task::yield_now().await;
            }
            Err(_) => break,
        }
    }
    batch
}

/// A batch whose one-round-trip transaction was sent, assuming a log head,
/// before the batch ahead of it had committed.
struct Ahead {
    requests: Vec<AppendRequest>,
    replies: Vec<oneshot::Sender<Result<AppendResult, AppendError>>>,
    outcomes: Vec<Result<AppendResult, AppendError>>,
    rows: usize,
    new_head: LogHead,
    /// The transaction: how many rows it inserted (all, or none when its
    /// guard failed).
    task: tokio::task::JoinHandle<Result<usize, StoreError>>,
}

/// Sends `batch` on a connection of its own as a fast-path transaction
/// after `assumed`, or hands it back when the fast path does not apply.
fn send_ahead(
    pool: &Pool,
    batch: Vec<PendingAppend>,
    assumed: LogHead,
) -> Result<Ahead, Vec<PendingAppend>> {
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.request, pending.reply))
        .unzip();
    let Some(prepared) = prepare_fast(&requests, assumed) else {
        return Err(requests
            .into_iter()
            .zip(replies)
            .map(|(request, reply)| PendingAppend { request, reply })
            .collect());
    };
    let PreparedFast {
        rows,
        guard,
        outcomes,
        new_head,
    } = prepared;
    let count = rows.positions.len();
    let pool = pool.clone();
    let span = tracing::debug_span!("append_batch_ahead", appends = requests.len());
    let task = tokio::spawn(
        async move {
            let client = pool.get().await?;
            futures::try_join!(
                client.prepare_cached(READ_SQL),
                client.prepare_cached(GUARDED_INSERT_SQL)
            )
            .map_err(StoreError::db("preparing the append statements"))?;
            let inserted = insert_rows(
                &client,
                Some(BEGIN_AND_LOCK.as_str()),
                &rows,
                &guard,
                Commit::Pipelined,
            )
            .await;
            if inserted.is_err() {
                discard(client);
            }
            inserted
        }
        .instrument(span),
    );
    Ok(Ahead {
        requests,
        replies,
        outcomes,
        rows: count,
        new_head,
        task,
    })
}

/// Answers a batch sent ahead: with its outcomes when it committed, through
/// the full path (which reads what is stored) when its guard failed or the
/// database refused it, with the error when the connection failed.
async fn finish(
    pool: &Pool,
    flight: Ahead,
    joined: Result<Result<usize, StoreError>, tokio::task::JoinError>,
    head: &mut Option<LogHead>,
    counters: &CommitCounters,
) {
    let error = match joined {
        Ok(Ok(inserted)) if inserted == flight.rows => {
            *head = Some(flight.new_head);
            counters.fast.fetch_add(1, Ordering::Relaxed);
            for (reply, outcome) in flight.replies.into_iter().zip(flight.outcomes) {
                // A caller that stopped waiting is fine: its append stands.
                let _ = reply.send(outcome);
            }
            return;
        }
        // The guard failed (the batch ahead did not commit, or another
        // process appended): nothing written.
        Ok(Ok(_)) => None,
        Ok(Err(error)) if error_is_statement_level(&error) => None,
        Ok(Err(error)) => Some(error),
        Err(_) => Some(StoreError::AppenderStopped),
    };
    *head = None;
    match error {
        None => {
            let batch = flight
                .requests
                .into_iter()
                .zip(flight.replies)
                .map(|(request, reply)| PendingAppend { request, reply })
                .collect();
            commit_batch(pool, batch, head, counters).await;
        }
        Some(error) => {
            tracing::warn!(error = %error, appends = flight.requests.len(), "append batch failed");
            let shared = Arc::new(error);
            for reply in flight.replies {
                let _ = reply.send(Err(AppendError::Store(StoreError::Shared(shared.clone()))));
            }
        }
    }
}

async fn commit_batch(
    pool: &Pool,
    batch: Vec<PendingAppend>,
    head: &mut Option<LogHead>,
    counters: &CommitCounters,
) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.request, pending.reply))
        .unzip();
    let span = tracing::debug_span!("append_batch", appends = requests.len());
    let outcome = commit(pool, &requests, head, counters)
        .instrument(span)
        .await;
    match outcome {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that stopped waiting is fine: its append stands.
                let _ = reply.send(outcome);
            }
        }
        Err(error) if requests.len() > 1 && error_is_statement_level(&error) => {
            // One request may have tripped the database (a check or a unique
            // index outside the lock protocol); commit each alone so the
            // others are not punished for it.
            tracing::warn!(error = %error, appends = requests.len(), "batch append failed; retrying appends one by one");
            for (request, reply) in requests.into_iter().zip(replies) {
                let outcome =
                    match commit(pool, std::slice::from_ref(&request), head, counters).await {
                        Ok(mut outcomes) => outcomes
                            .pop()
                            .unwrap_or(Err(AppendError::Store(StoreError::AppenderStopped))),
                        Err(error) => Err(AppendError::Store(error)),
                    };
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, appends = requests.len(), "append batch failed");
            let shared = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(AppendError::Store(StoreError::Shared(shared.clone()))));
            }
        }
    }
}

/// The head of the log as this appender last wrote or read it.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogHead {
    position: u64,
    hash: [u8; 32],
    recorded_at: DateTime<Utc>,
    /// The database clock minus this process's clock, as last measured.
    clock_offset: chrono::TimeDelta,
}

impl LogHead {
    /// The head after `rows` (None when there are none), with the clock
    /// offset still to be filled in.
    fn after(rows: &Rows) -> Option<Self> {
        let position = *rows.positions.last()?;
        let hash = <[u8; 32]>::try_from(rows.hashes.last()?.as_slice()).ok()?;
        Some(LogHead {
            position: to_u64(position),
            hash,
            recorded_at: rows.recorded_at,
            clock_offset: chrono::TimeDelta::zero(),
        })
    }
}

/// Commits that took one round trip, and commits that took the full path.
#[derive(Debug, Default)]
pub(super) struct CommitCounters {
    pub(super) fast: AtomicU64,
    pub(super) full: AtomicU64,
}

/// One append transaction on a pooled connection.
///
/// The fast path, one round trip: when this appender knows the log head (it
/// wrote or read it last) and every request says which version its stream is
/// at (`Exact` or `NoStream`), the rows and hashes are computed from that
/// knowledge and sent with `BEGIN`, the lock and `COMMIT` in one pipeline. The
/// insert is guarded: under the lock it checks that the head and every
/// stream's version are what was assumed, and inserts nothing if not.
///
/// The full path, two round trips: `BEGIN` + lock + read what the log holds,
/// then insert + `COMMIT`. Taken when the fast path does not apply, its guard
/// failed (another process appended, or an expectation is wrong), or the
/// database refused its insert (an event id already stored); it gives every
/// request its precise outcome.
async fn commit(
    pool: &Pool,
    requests: &[AppendRequest],
    head: &mut Option<LogHead>,
    counters: &CommitCounters,
) -> Result<Vec<Result<AppendResult, AppendError>>, StoreError> {
    let mut client = pool.get().await?;
    // Prepared before any transaction is opened, so that a failure to prepare
    // cannot leave a transaction (and the log lock) open.
    futures::try_join!(
        client.prepare_cached(READ_SQL),
        client.prepare_cached(GUARDED_INSERT_SQL)
    )
    .map_err(StoreError::db("preparing the append statements"))?;
    if let Some(known) = *head {
        match commit_fast(&client, requests, known).await {
            Ok(Some((outcomes, new_head))) => {
                *head = Some(new_head);
                counters.fast.fetch_add(1, Ordering::Relaxed);
                return Ok(outcomes);
            }
            // The path does not apply or its guard failed: nothing written.
            Ok(None) => {}
            Err(error) => {
                // The transaction's state is unknown: never pool this
                // connection again.
                discard(client);
                // Refused by the database (e.g. an event id stored
                // elsewhere): nothing written; the full path tells each
                // request why.
                if !error_is_statement_level(&error) {
                    *head = None;
                    return Err(error);
                }
                client = pool.get().await?;
            }
        }
    }
    match commit_full(&client, requests).await {
        Ok((outcomes, new_head)) => {
            *head = Some(new_head);
            counters.full.fetch_add(1, Ordering::Relaxed);
            Ok(outcomes)
        }
        Err(error) => {
            *head = None;
            discard(client);
            Err(error)
        }
    }
}

/// The full path of [`commit`]: read under the lock, then insert and commit.
async fn commit_full(
    client: &deadpool_postgres::Client,
    requests: &[AppendRequest],
) -> Result<(Vec<Result<AppendResult, AppendError>>, LogHead), StoreError> {
    let snapshot = lock_and_read(client, Begin::Pipelined, requests).await?;
    let clock_offset = snapshot.recorded_at - Utc::now();
    let read_head = LogHead {
        position: snapshot.head_position,
        hash: snapshot.head_hash,
        recorded_at: snapshot.recorded_at,
        clock_offset,
    };
    let guard = Guard::of(&snapshot);
    let (rows, outcomes) = plan(snapshot, requests);
    let inserted = insert_rows(client, None, &rows, &guard, Commit::Pipelined).await?;
    if inserted != rows.positions.len() {
        return Err(moved_under_lock(&guard));
    }
    let new_head = LogHead::after(&rows).map_or(read_head, |head| LogHead {
        clock_offset,
        ..head
    });
    Ok((outcomes, new_head))
}

/// Closes a connection instead of returning it to the pool: its transaction
/// may still be open (and hold the log lock). The server rolls it back when
/// the connection goes.
fn discard(client: deadpool_postgres::Client) {
    drop(deadpool_postgres::Object::take(client));
}

/// The fast path of [`commit`]: `Ok(None)` when it does not apply or its
/// guard failed, in both cases with nothing written.
async fn commit_fast(
    client: &deadpool_postgres::Client,
    requests: &[AppendRequest],
    head: LogHead,
) -> Result<Option<(Vec<Result<AppendResult, AppendError>>, LogHead)>, StoreError> {
    let Some(prepared) = prepare_fast(requests, head) else {
        return Ok(None);
    };
    let inserted = insert_rows(
        client,
        Some(BEGIN_AND_LOCK.as_str()),
        &prepared.rows,
        &prepared.guard,
        Commit::Pipelined,
    )
    .await?;
    Ok((inserted == prepared.rows.positions.len())
        .then_some((prepared.outcomes, prepared.new_head)))
}

/// A fast-path transaction computed from an assumed log head, not sent yet.
struct PreparedFast {
    rows: Rows,
    guard: Guard,
    outcomes: Vec<Result<AppendResult, AppendError>>,
    new_head: LogHead,
}

/// The rows, guard and outcomes of `requests` appended after `head`, or
/// `None` when the fast path does not apply (an expectation that names no
/// version, or a refusal only the full path may give).
fn prepare_fast(requests: &[AppendRequest], head: LogHead) -> Option<PreparedFast> {
    // What each stream is assumed to be at: the first request's expectation.
    let mut stream_versions: HashMap<String, u64> = HashMap::new();
    for request in requests {
        let assumed = match request.expected {
            // A version past what the table can hold is wrong anyway; the
            // full path says so with the actual version.
            ExpectedVersion::Exact(version) if i64::try_from(version).is_err() => return None,
            ExpectedVersion::Exact(version) => version,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Any | ExpectedVersion::StreamExists => return None,
        };
        stream_versions
            .entry(request.stream_id.as_str().to_owned())
            .or_insert(assumed);
    }
    // This process's clock corrected to the database's, never earlier than
    // the head's time (the full path keeps the same rule with the database
    // clock itself).
    let now = Utc::now() + head.clock_offset;
    let now =
        DateTime::<Utc>::from_timestamp_micros(now.timestamp_micros()).unwrap_or(head.recorded_at);
    let snapshot = Snapshot {
        recorded_at: now.max(head.recorded_at),
        head_position: head.position,
        head_hash: head.hash,
        stream_versions,
        placements: HashMap::new(),
    };
    let guard = Guard::of(&snapshot);
    let (rows, outcomes) = plan(snapshot, requests);
    if outcomes.iter().any(Result::is_err) {
        // A refusal decided against assumed versions could be wrong (an
        // idempotent retry, an id stored elsewhere): only the full path,
        // which reads what is stored, may refuse.
        return None;
    }
    let new_head = LogHead::after(&rows)?;
    Some(PreparedFast {
        rows,
        guard,
        outcomes,
        new_head: LogHead {
            clock_offset: head.clock_offset,
            ..new_head
        },
    })
}

/// True for errors the database raised about a statement (as opposed to a
/// lost connection), where retrying the requests one by one can help.
fn error_is_statement_level(error: &StoreError) -> bool {
    match error {
        StoreError::Database { source, .. } => source.as_db_error().is_some(),
        _ => false,
    }
}
