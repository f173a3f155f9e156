//! Read-your-writes: a read that names a version (or position) the caller
//! wrote waits, up to [`AppState::read_wait`], until the projection shows it,
//! and otherwise answers 503 with `Retry-After`. A version or position the
//! log itself does not have can never be waited for: the caller's mistake is
//! a 422 at once, on every route, never a 503 that a client would retry
//! forever.
//!
//! The wait is woken by this process's projector (when it is the active
//! one) and falls back to polling the read model, so it also works when the
//! projector is active in another process.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use taskledger_events::EventStore;

use super::problem::Problem;
use super::AppState;
use crate::workers::backoff::Pauses;

/// The first pause between two looks at the read model.
const FIRST_POLL: Duration = Duration::from_millis(1);
/// The longest pause between two looks at the read model.
const MAX_POLL: Duration = Duration::from_millis(50);

/// Seconds a client is told to wait after a read timed out.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Calls `probe` until it returns `Some`, waking when the local projector
/// moves and at least every [`MAX_POLL`], for at most `state.read_wait`.
///
/// # Errors
/// `probe`'s error at once; 503 with `Retry-After` and `waiting_for` in its
/// detail when the bound passes.
pub(crate) async fn wait_for<T, F, Fut>(
    state: &AppState,
    waiting_for: impl FnOnce() -> String,
    mut probe: F,
) -> Result<T, Problem>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Problem>>,
{
    let deadline = Instant::now() + state.read_wait;
    let mut progress = state.tasks_projection.clone();
    if let Some(progress) = progress.as_mut() {
        progress.borrow_and_update();
    }
    let mut pauses = Pauses::doubling(FIRST_POLL, MAX_POLL);
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Problem::unavailable(
                format!(
                    "the read model has not caught up to {} within {} ms; retry shortly",
                    waiting_for(),
                    state.read_wait.as_millis()
                ),
                RETRY_AFTER_SECONDS,
            ));
        }
        let nap = pauses.next_pause().min(deadline - now);
        match progress.as_mut() {
            Some(receiver) => {
                if let Ok(Err(_)) = tokio::time::timeout(nap, receiver.changed()).await {
                    // The local projector stopped; keep polling.
                    progress = None;
                }
            }
            None => tokio::time::sleep(nap).await,
        }
    }
}

/// Waits until `projector` has applied every event up to `min_position`
/// (a read's `min_position`); at once without one.
///
/// # Errors
/// 422 at once when `min_position` is beyond the log's head; 503 when the
/// wait times out or the database cannot be read.
pub(crate) async fn wait_for_position(
    state: &AppState,
    projector: &str,
    min_position: Option<u64>,
) -> Result<(), Problem> {
    let Some(position) = min_position else {
        return Ok(());
    };
    if projection_reached(state, projector, position)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let head = state.store.head_position().await.map_err(|error| {
        Problem::unavailable(
            "the event store cannot be read right now",
            RETRY_AFTER_SECONDS,
        )
        .because("reading the log's head", error)
    })?;
    if position > head {
        return Err(Problem::unprocessable(format!(
            "min_position {position} is beyond the log, which ends at position {head}"
        )));
    }
    wait_for(
        state,
        || format!("global position {position}"),
        || projection_reached(state, projector, position),
    )
    .await
}

/// `Some(())` once the checkpoint of `projector` is at `position` or later
/// (a probe for [`wait_for`]).
///
/// # Errors
/// 503 when the database cannot be read.
async fn projection_reached(
    state: &AppState,
    projector: &str,
    position: u64,
) -> Result<Option<()>, Problem> {
    let client = super::connection(state).await?;
    let statement = client
        .prepare_cached("SELECT position FROM projector_checkpoints WHERE projector = $1")
        .await
        .map_err(super::database_error("preparing a checkpoint read"))?;
    let row = client
        .query_opt(&statement, &[&projector])
        .await
        .map_err(super::database_error("reading a projection's checkpoint"))?;
    let reached =
        row.is_some_and(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0) >= position);
    Ok(reached.then_some(()))
}
