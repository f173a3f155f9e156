//! A kind's retry policy (`retry = { … }` in `[kinds.NAME]`): which failed
//! attempts are tried again, and how long the next attempt waits.
//!
//! ```toml
//! [kinds.flaky-fetch]
//! max_attempts = 5
//! retry = { initial_backoff_seconds = 2, max_backoff_seconds = 300, jitter = 0.2, retry_exit_codes = [75] }
//! ```
//!
//! Retried, while attempts remain (`max_attempts`): a failure of the
//! infrastructure (the engine, the blob store, a runner that died), always,
//! and an exit code listed in `retry_exit_codes`. Any other exit code is the
//! command's own verdict and fails the task at once; a timeout ends it too.
//! The next attempt waits `min(max, initial × 2^(attempt−1))`, scaled by a
//! random factor in `1 ± jitter` and never above the maximum. A kind without
//! `retry` waits 1 s, then 2 s, 4 s … up to 60 s, with a jitter of 0.1.

use std::time::Duration;

use serde::Deserialize;

/// How a kind's failed attempts are retried.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// The wait before the second attempt, in seconds (fractions allowed).
    #[serde(default = "default_initial")]
    pub initial_backoff_seconds: f64,
    /// The longest wait before an attempt, in seconds.
    #[serde(default = "default_max")]
    pub max_backoff_seconds: f64,
    /// How far, as a fraction from 0 to 1, a wait is moved at random
    /// either way (so that tasks failing together do not retry together).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// The exit codes that mean "try again" (e.g. 75, `EX_TEMPFAIL`). Empty
    /// (the default): no exit code is retried.
    #[serde(default)]
    pub retry_exit_codes: Vec<i32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff_seconds: default_initial(),
            max_backoff_seconds: default_max(),
            jitter: default_jitter(),
            retry_exit_codes: Vec::new(),
        }
    }
}

fn default_initial() -> f64 {
    1.0
}
fn default_max() -> f64 {
    60.0
}
fn default_jitter() -> f64 {
    0.1
}

/// The longest backoff a policy may name: a day.
const MAX_BACKOFF_SECONDS: f64 = 86_400.0;

impl RetryPolicy {
    /// Checks the policy; each message names its field (`retry.jitter`).
    ///
    /// # Errors
    /// A negative or non-finite backoff, one above a day, an initial backoff
    /// above the maximum, or a jitter outside 0 to 1.
    pub fn check(&self) -> anyhow::Result<()> {
        for (field, seconds) in [
            ("initial_backoff_seconds", self.initial_backoff_seconds),
            ("max_backoff_seconds", self.max_backoff_seconds),
        ] {
            anyhow::ensure!(
                (0.0..=MAX_BACKOFF_SECONDS).contains(&seconds),
                "retry.{field} must be from 0 to {MAX_BACKOFF_SECONDS} seconds; got {seconds}"
            );
        }
        anyhow::ensure!(
            self.initial_backoff_seconds <= self.max_backoff_seconds,
            "retry.initial_backoff_seconds ({}) must not be above retry.max_backoff_seconds ({})",
            self.initial_backoff_seconds,
            self.max_backoff_seconds
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.jitter),
            "retry.jitter must be from 0 to 1; got {}",
            self.jitter
        );
        Ok(())
    }

    /// Whether an attempt that exited with `code` (not 0) is retried.
    pub fn retries_exit_code(&self, code: i32) -> bool {
        self.retry_exit_codes.contains(&code)
    }

    /// The wait after attempt `attempt` (from 1) failed, for a random
    /// `draw` from -1 to 1 (the caller draws it: see the module docs).
    pub fn backoff(&self, attempt: u32, draw: f64) -> Duration {
        let doublings = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (self.initial_backoff_seconds * 2f64.powi(doublings.min(64)))
            .min(self.max_backoff_seconds);
        let jittered = base * (1.0 + self.jitter * draw.clamp(-1.0, 1.0));
        Duration::from_secs_f64(jittered.clamp(0.0, self.max_backoff_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn kind_with(retry: &str) -> String {
        format!("[kinds.flaky]\nimage = \"i\"\ncommand = [\"run\"]\nretry = {{ {retry} }}\n")
    }

    fn refusal(retry: &str) -> String {
        format!("{:#}", FileConfig::parse(&kind_with(retry)).unwrap_err())
    }

    #[test]
    fn the_documented_policy_parses() {
        let config = FileConfig::parse(&kind_with(
            "initial_backoff_seconds = 2, max_backoff_seconds = 300, jitter = 0.2, retry_exit_codes = [75]",
        ))
        .unwrap();
        let retry = &config.kind("flaky").unwrap().retry;
        assert_eq!(retry.initial_backoff_seconds, 2.0);
        assert_eq!(retry.max_backoff_seconds, 300.0);
        assert_eq!(retry.jitter, 0.2);
        assert!(retry.retries_exit_code(75));
        assert!(!retry.retries_exit_code(1));
    }

    #[test]
    fn a_kind_without_a_policy_backs_off_from_one_second_and_retries_no_exit_code() {
        let config = FileConfig::parse("[kinds.k]\nimage = \"i\"\ncommand = [\"run\"]\n").unwrap();
        let retry = &config.kind("k").unwrap().retry;
        assert_eq!(*retry, RetryPolicy::default());
        assert_eq!(retry.backoff(1, 0.0), Duration::from_secs(1));
        assert!(!retry.retries_exit_code(1));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_within_its_jitter() {
        let retry = RetryPolicy {
            initial_backoff_seconds: 2.0,
            max_backoff_seconds: 300.0,
            jitter: 0.2,
            retry_exit_codes: Vec::new(),
        };
        let seconds = |attempt, draw| retry.backoff(attempt, draw).as_secs_f64();
        assert_eq!(seconds(1, 0.0), 2.0);
        assert_eq!(seconds(2, 0.0), 4.0);
        assert_eq!(seconds(5, 0.0), 32.0);
        assert_eq!(seconds(9, 0.0), 300.0);
        assert_eq!(seconds(100, 0.0), 300.0);
        assert!((seconds(1, -1.0) - 1.6).abs() < 1e-9);
        assert!((seconds(1, 1.0) - 2.4).abs() < 1e-9);
        // Never above the maximum, whatever the draw.
        assert_eq!(seconds(9, 1.0), 300.0);
    }

    #[test]
    fn a_negative_backoff_is_refused_naming_the_kind_and_field() {
        let error = refusal("initial_backoff_seconds = -1");
        assert!(error.contains("task kind \"flaky\""), "{error}");
        assert!(error.contains("retry.initial_backoff_seconds"), "{error}");
    }

    #[test]
    fn an_initial_backoff_above_the_maximum_is_refused() {
        let error = refusal("initial_backoff_seconds = 10, max_backoff_seconds = 5");
        assert!(error.contains("task kind \"flaky\""), "{error}");
        assert!(
            error.contains("retry.initial_backoff_seconds (10) must not be above retry.max_backoff_seconds (5)"),
            "{error}"
        );
    }

    #[test]
    fn a_jitter_outside_zero_to_one_is_refused() {
        let error = refusal("jitter = 1.5");
        assert!(error.contains("task kind \"flaky\""), "{error}");
        assert!(
            error.contains("retry.jitter must be from 0 to 1"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_field_of_a_policy_is_refused_naming_it() {
        let error = refusal("initial_backoff = 2");
        assert!(error.contains("unknown field `initial_backoff`"), "{error}");
        assert!(error.contains("task kind \"flaky\""), "{error}");
    }

    #[test]
    fn a_refusal_names_the_file() {
        let dir = std::env::temp_dir().join(format!("taskledger-retry-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kinds.toml");
        std::fs::write(&path, kind_with("max_backoff_seconds = -3")).unwrap();
        let error = format!("{:#}", FileConfig::load(&path).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("task kind \"flaky\""), "{error}");
        assert!(error.contains("retry.max_backoff_seconds"), "{error}");
    }
}
