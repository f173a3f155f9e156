//! An attempt's lease (`attempt_leases`): taken before the attempt claims
//! its task (within its kind's `max_running`: [`super::limit`]), renewed
//! while it runs, dropped when it ends. A redelivered job is retried only
//! once its lease has expired.

use super::*;

/// Renews the lease of `attempt` (taken by [`super::limit::take_slot`])
/// every third of [`RunnerOptions::lease_ttl`] until aborted, the first
/// time a third of the TTL after it was taken (taking it stamped it, so an
/// attempt shorter than that renews nothing). A lease that
/// is gone (dropped by a runner that took this one for dead) is taken
/// again if no other attempt's holds the task, so the kind's count keeps
/// an attempt that still runs; another's is never overwritten.
pub(super) async fn hold_lease(context: Context, task_id: TaskId, attempt: u32, kind: String) {
    let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
    loop {
        tokio::time::sleep(context.options.lease_ttl / 3).await;
        let renewed = async {
            let client = context.store.pool().get().await.ok()?;
            let renewed = client
                .execute(
                    "UPDATE attempt_leases SET renewed_at = now()
                     WHERE task_id = $1 AND attempt = $2 AND worker_id = $3",
                    &[&task_id.0, &attempt, &context.options.worker_id],
                )
                .await
                .ok()?;
            if renewed == 0 {
                tracing::warn!(task = %task_id, attempt, "an attempt's lease was gone; taking it again");
                client
                    .execute(
                        "INSERT INTO attempt_leases (task_id, attempt, worker_id, kind)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (task_id) DO NOTHING",
                        &[&task_id.0, &attempt, &context.options.worker_id, &kind],
                    )
                    .await
                    .ok()?;
            }
            Some(())
        }
        .await;
        if renewed.is_none() {
            tracing::warn!(task = %task_id, "renewing an attempt's lease failed");
        }
    }
}

/// Whether a runner renewed the lease of this attempt within the TTL.
pub(super) async fn lease_is_fresh(context: &Context, task_id: TaskId, attempt: u32) -> bool {
    let Ok(client) = context.store.pool().get().await else {
        // Cannot tell: assume alive; the job comes back later.
        return true;
    };
    let ttl = context.options.lease_ttl.as_secs_f64();
    client
        .query_opt(
            "SELECT 1 FROM attempt_leases
             WHERE task_id = $1 AND attempt = $2
               AND renewed_at > now() - make_interval(secs => $3)",
            &[
                &task_id.0,
                &i32::try_from(attempt).unwrap_or(i32::MAX),
                &ttl,
            ],
        )
        .await
        .map_or(true, |row| row.is_some())
}

/// Drops this runner's lease of `attempt` of `task_id`, freeing its kind's
/// slot (the attempt ended, or its claim was lost); another runner's lease
/// of the task is left alone.
pub(super) async fn release_lease(context: &Context, task_id: TaskId, attempt: u32) {
    let Ok(client) = context.store.pool().get().await else {
        return;
    };
    // Once per attempt: prepared once per pooled connection.
    let Ok(release) = client
        .prepare_cached(
            "DELETE FROM attempt_leases
             WHERE task_id = $1 AND attempt = $2 AND worker_id = $3",
        )
        .await
    else {
        return;
    };
    let _ = client
        .execute(
            &release,
            &[
                &task_id.0,
                &i32::try_from(attempt).unwrap_or(i32::MAX),
                &context.options.worker_id,
            ],
        )
        .await;
}

/// Drops the expired lease of `attempt` of `task_id` that a dead runner
/// left (its retry is recorded); a later attempt's lease is left alone.
pub(super) async fn drop_dead_lease(context: &Context, task_id: TaskId, attempt: u32) {
    if let Ok(client) = context.store.pool().get().await {
        let _ = client
            .execute(
                "DELETE FROM attempt_leases WHERE task_id = $1 AND attempt = $2",
                &[&task_id.0, &i32::try_from(attempt).unwrap_or(i32::MAX)],
            )
            .await;
    }
}

/// Drops this runner's lease of `task_id`, whichever attempt (an attempt
/// abandoned at shutdown).
pub(super) async fn release_own_lease(context: &Context, task_id: TaskId) {
    if let Ok(client) = context.store.pool().get().await {
        let _ = client
            .execute(
                "DELETE FROM attempt_leases WHERE task_id = $1 AND worker_id = $2",
                &[&task_id.0, &context.options.worker_id],
            )
            .await;
    }
}
