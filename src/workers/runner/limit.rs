//! A kind's `max_running`, held across every runner: an attempt takes its
//! lease (`attempt_leases`, now naming the kind) *before* it claims its
//! task, and for a kind with a limit only while fewer than the limit of that
//! kind's leases are fresh. The count and the insert run in one transaction
//! under a transaction-scoped advisory lock keyed by the kind, so two
//! runners cannot both see the last free slot. A slot is a lease, so it is
//! freed when the attempt ends (the lease is dropped) or, when its runner
//! died, once the lease has gone unrenewed for the TTL: nothing else has to
//! notice the crash.
//!
//! A job whose kind is at its limit holds no slot while it waits: it comes
//! back as [`Disposition::Wait`] and is parked like an early retry (a wait
//! queue, or a timer without a broker), so other kinds' jobs go on. The limit
//! is this runner's configuration of the kind (every runner of an
//! installation should share one file), and it holds as long as live
//! runners renew their leases within the TTL: a runner cut off from
//! PostgreSQL for longer loses its slot to another attempt while its own
//! may still run.

use super::*;

/// How long a job whose kind is at its limit waits before it is tried
/// again (its wait-queue hop is the longest not longer than this: 512 ms).
pub(super) const AT_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// The first key of the advisory locks of `max_running` (the second is
/// the kind's `hashtext`): "tlmr", apart from the log's and the leaders'
/// locks, which are single 64-bit keys (another key space).
const LIMIT_LOCK_CLASS: i32 = 0x746c_6d72;

/// Whether an attempt got its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// The lease is this runner's: claim the task.
    Taken,
    /// The kind already runs `running` attempts, its limit: try later.
    AtLimit {
        /// Fresh leases of the kind (other tasks').
        running: i64,
    },
    /// A fresh lease of this attempt is another's (a duplicate job being
    /// claimed elsewhere, or a runner that died before claiming, whose
    /// lease must expire first): try later, never drop the job.
    HeldElsewhere,
    /// The database could not be asked.
    Unknown,
}

/// Takes the lease of `attempt` of `task_id`, a task of `kind`, within
/// the kind's `max_running` (see the module documentation). A lease of an
/// earlier attempt, or an expired one, is taken over; a fresh one of this
/// attempt is left alone.
pub(super) async fn take_slot(
    context: &Context,
    task_id: TaskId,
    attempt: u32,
    kind: &str,
) -> Slot {
    let limit = context
        .options
        .config
        .kinds
        .get(kind)
        .and_then(|kind| kind.max_running);
    let Ok(mut client) = context.store.pool().get().await else {
        return Slot::Unknown;
    };
    match take_within_limit(&mut client, context, task_id, attempt, kind, limit).await {
        Ok(slot) => {
            if let Slot::AtLimit { running } = slot {
                tracing::debug!(task = %task_id, kind, running, "the kind is at its max_running; the job waits");
                metrics::kind_at_limit(kind);
            }
            slot
        }
        Err(error) => {
            tracing::warn!(%error, task = %task_id, "taking an attempt's lease failed");
            // It may still hold an open transaction: close it, never pool it.
            drop(deadpool_postgres::Object::take(client));
            Slot::Unknown
        }
    }
}

/// Takes over the expired lease of `attempt` from a runner that died while
/// its attempt still runs elsewhere (a Slurm job being adopted): the slot
/// is the one the dead runner held, so the kind's limit is not counted
/// again. [`Slot::HeldElsewhere`] when another runner took it first.
pub(super) async fn take_over(
    context: &Context,
    task_id: TaskId,
    attempt: u32,
    kind: &str,
) -> Slot {
    let Ok(mut client) = context.store.pool().get().await else {
        return Slot::Unknown;
    };
    match take_within_limit(&mut client, context, task_id, attempt, kind, None).await {
        Ok(slot) => slot,
        Err(error) => {
            tracing::warn!(%error, task = %task_id, "taking over an attempt's lease failed");
            Slot::Unknown
        }
    }
}

async fn take_within_limit(
    client: &mut deadpool_postgres::Object,
    context: &Context,
    task_id: TaskId,
    attempt: u32,
    kind: &str,
    limit: Option<u32>,
) -> Result<Slot, tokio_postgres::Error> {
    let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
    let ttl = context.options.lease_ttl.as_secs_f64();
    let lease: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &task_id.0,
        &attempt,
        &context.options.worker_id,
        &kind,
        &ttl,
    ];
    let Some(limit) = limit else {
        // No count to keep: one statement, no transaction (prepared once
        // per pooled connection: a prepare is a round trip of its own).
        let take = client.prepare_cached(TAKE_LEASE).await?;
        return Ok(taken_or_held(client.execute(&take, &lease).await?));
    };
    let tx = client.transaction().await?;
    // Serializes the check-and-take of this kind; every statement after
    // it (READ COMMITTED) sees the leases committed before it was
    // granted.
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .await?;
    tx.execute(&lock, &[&LIMIT_LOCK_CLASS, &kind]).await?;
    let count = tx
        .prepare_cached(
            "SELECT count(*) FROM attempt_leases
             WHERE kind = $1 AND task_id <> $2
               AND renewed_at > clock_timestamp() - make_interval(secs => $3)",
        )
        .await?;
    let running: i64 = tx
        .query_one(&count, &[&kind, &task_id.0, &ttl])
        .await?
        .get(0);
    if running >= i64::from(limit) {
        tx.commit().await?;
        return Ok(Slot::AtLimit { running });
    }
    let take = tx.prepare_cached(TAKE_LEASE).await?;
    let taken = tx.execute(&take, &lease).await?;
    tx.commit().await?;
    Ok(taken_or_held(taken))
}

/// Takes the lease of an attempt (`$1` task, `$2` attempt, `$3` worker,
/// `$4` kind, `$5` the TTL in seconds) unless a fresh one of this attempt
/// or a later one holds the task: one row if it was taken.
const TAKE_LEASE: &str =
    "INSERT INTO attempt_leases (task_id, attempt, worker_id, kind, renewed_at)
     VALUES ($1, $2, $3, $4, clock_timestamp())
     ON CONFLICT (task_id) DO UPDATE
     SET attempt = $2, worker_id = $3, kind = $4, renewed_at = clock_timestamp()
     WHERE attempt_leases.attempt < $2
        OR attempt_leases.renewed_at <= clock_timestamp() - make_interval(secs => $5)";

fn taken_or_held(rows: u64) -> Slot {
    if rows == 1 {
        Slot::Taken
    } else {
        Slot::HeldElsewhere
    }
}

/// When a job whose slot was not taken is tried again.
pub(super) fn retry_at() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(AT_LIMIT_WAIT).unwrap_or(chrono::Duration::zero())
}
