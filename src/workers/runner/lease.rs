//! An attempt's lease (`attempt_leases`): taken when it starts, renewed
//! while it runs, dropped when it ends. A redelivered job is retried only
//! once its lease has expired.

use super::*;

/// Holds the attempt's lease: takes it, then renews it every third of
/// [`RunnerOptions::lease_ttl`] until aborted.
pub(super) async fn hold_lease(context: Context, task_id: TaskId, attempt: u32) {
    let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
    let mut first = true;
    loop {
        let renewed = async {
            let client = context.store.pool().get().await.ok()?;
            let sql = if first {
                "INSERT INTO attempt_leases (task_id, attempt, worker_id) VALUES ($1, $2, $3)
                 ON CONFLICT (task_id) DO UPDATE
                 SET attempt = $2, worker_id = $3, renewed_at = now()"
            } else {
                "UPDATE attempt_leases SET renewed_at = now()
                 WHERE task_id = $1 AND attempt = $2 AND worker_id = $3"
            };
            client
                .execute(sql, &[&task_id.0, &attempt, &context.options.worker_id])
                .await
                .ok()
        }
        .await;
        if renewed.is_some() {
            first = false;
        } else {
            tracing::warn!(task = %task_id, "renewing an attempt's lease failed");
        }
        tokio::time::sleep(context.options.lease_ttl / 3).await;
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

pub(super) async fn release_lease(context: &Context, task_id: TaskId) {
    if let Ok(client) = context.store.pool().get().await {
        let _ = client
            .execute(
                "DELETE FROM attempt_leases WHERE task_id = $1",
                &[&task_id.0],
            )
            .await;
    }
}
