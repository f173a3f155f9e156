//! How long a worker loop waits before it tries again: one exponential
//! backoff (backon's, each loop with its own first and longest pause) and a
//! wait that shutdown cuts short.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first pause before a worker reconnects to the broker or the database.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between a worker's reconnection attempts.
const RECONNECT_LONGEST: Duration = Duration::from_secs(10);

/// Pauses that start at `first` and double after each, never above
/// `longest`, without end; [`Pauses::reset`] starts again from `first`.
#[derive(Debug)]
pub(crate) struct Pauses {
    builder: ExponentialBuilder,
    pauses: ExponentialBackoff,
    longest: Duration,
}

impl Pauses {
    /// Pauses of `first`, `2 × first`, `4 × first`, … up to `longest`.
    pub(crate) fn doubling(first: Duration, longest: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(longest)
            .without_max_times();
        Self {
            pauses: builder.build(),
            builder,
            longest,
        }
    }

    /// A worker's reconnection pauses: 100 ms doubling to at most 10 s.
    pub(crate) fn reconnect() -> Self {
        Self::doubling(RECONNECT_FIRST, RECONNECT_LONGEST)
    }

    /// The next pause.
    pub(crate) fn next_pause(&mut self) -> Duration {
        // Without a limit on retries the backoff never ends; `longest` only
        // guards against that changing.
        self.pauses.next().unwrap_or(self.longest)
    }

    /// Starts again from the first pause (after a success).
    pub(crate) fn reset(&mut self) {
        self.pauses = self.builder.build();
    }

    /// The pause before `worker` reconnects after `error`, which is logged
    /// here, once, with its cause chain and that pause.
    pub(crate) fn interrupted(&mut self, worker: &str, error: &anyhow::Error) -> Duration {
        let pause = self.next_pause();
        tracing::warn!(
            error = format!("{error:#}"),
            retry_in = ?pause,
            "{worker} interrupted; reconnecting"
        );
        pause
    }
}

/// Sleeps for `pause` unless `stop` finishes first; whether it did (the
/// loop then ends instead of trying again).
pub(crate) async fn stopped_during<T>(pause: Duration, stop: impl Future<Output = T>) -> bool {
    tokio::select! {
        _ = stop => true,
        () = tokio::time::sleep(pause) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_longest_and_start_again_after_a_reset() {
        let mut pauses = Pauses::reconnect();
        let taken: Vec<u128> = (0..10).map(|_| pauses.next_pause().as_millis()).collect();
        assert_eq!(
            taken,
            [100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000, 10_000]
        );
        pauses.reset();
        assert_eq!(pauses.next_pause(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_stop_cuts_the_pause_short() {
        assert!(stopped_during(Duration::from_secs(3600), async {}).await);
        assert!(!stopped_during(Duration::ZERO, std::future::pending::<()>()).await);
    }
}
