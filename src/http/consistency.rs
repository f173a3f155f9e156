//! Read-your-writes: a read that names a version (or position) the caller
//! wrote waits, up to [`AppState::read_wait`], until the projection shows it,
//! and otherwise answers 503 with `Retry-After`.
//!
//! The wait is woken by this process's projector (when it is the active
//! one) and falls back to polling the read model, so it also works when the
//! projector is active in another process.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::problem::Problem;
use super::AppState;

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
    let mut pause = Duration::from_millis(1);
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
        let nap = pause.min(deadline - now);
        match progress.as_mut() {
            Some(receiver) => {
                if let Ok(Err(_)) = tokio::time::timeout(nap, receiver.changed()).await {
                    // The local projector stopped; keep polling.
                    progress = None;
                }
            }
            None => tokio::time::sleep(nap).await,
        }
        pause = (pause * 2).min(MAX_POLL);
    }
}
