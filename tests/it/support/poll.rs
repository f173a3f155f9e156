//! Waiting for something to become true, with a deadline instead of a
//! sleep.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Calls `attempt` every `every` until it returns `Ok`, and returns that
/// value. `Err` carries what was seen instead; once `within` has passed it
/// becomes the panic message. `attempt` may panic itself to give up early.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, every: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(seen) => assert!(Instant::now() < deadline, "{seen}"),
        }
        tokio::time::sleep(every).await;
    }
}
