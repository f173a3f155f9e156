//! `[webhooks]`: where webhooks may point, which certificates an https
//! target may show, and how long deliveries are retried.
//!
//! ```toml
//! [webhooks]
//! allow_private_targets = false   # loopback, private, link-local, metadata
//! timeout_seconds = 10            # one attempt, connect to last byte
//! retry_for_seconds = 86400       # then the webhook is disabled
//! first_retry_ms = 1000           # doubles per attempt, with jitter
//! max_retry_seconds = 3600        # the longest pause between attempts
//! ca_file = "/path/ca.pem"        # extra trusted roots for https targets
//! queue_length = 1000             # events held per webhook; past that it reads the log
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The `[webhooks]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Accept targets that resolve to loopback, private, link-local,
    /// unique-local or cloud-metadata addresses (for tests and for
    /// receivers inside one's own network). Off by default: a tenant could
    /// otherwise make the service call into its own network.
    #[serde(default)]
    pub allow_private_targets: bool,
    /// How long one attempt may take, connect to last byte.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// How long one event's delivery is retried before the webhook is
    /// disabled.
    #[serde(default = "default_retry_for")]
    pub retry_for_seconds: u64,
    /// The pause before the first retry; each further one doubles it, with
    /// jitter.
    #[serde(default = "default_first_retry")]
    pub first_retry_ms: u64,
    /// The longest pause between two attempts.
    #[serde(default = "default_max_retry")]
    pub max_retry_seconds: u64,
    /// A PEM bundle of certificates trusted as roots for https targets, on
    /// top of the system's; a relative path is read from the configuration
    /// file's directory. Read once at start-up.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Events held in memory for one webhook; a webhook further behind
    /// reads them from the log itself, so memory stays bounded.
    #[serde(default = "default_queue_length")]
    pub queue_length: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout_seconds: default_timeout(),
            retry_for_seconds: default_retry_for(),
            first_retry_ms: default_first_retry(),
            max_retry_seconds: default_max_retry(),
            ca_file: None,
            queue_length: default_queue_length(),
        }
    }
}

fn default_timeout() -> u64 {
    10
}
fn default_retry_for() -> u64 {
    86_400
}
fn default_first_retry() -> u64 {
    1_000
}
fn default_max_retry() -> u64 {
    3_600
}
fn default_queue_length() -> usize {
    1_000
}

impl WebhooksConfig {
    /// Checks the values are usable.
    ///
    /// # Errors
    /// A timeout, first retry or queue length of 0, or a longest pause
    /// shorter than the first.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.timeout_seconds > 0,
            "timeout_seconds must be at least 1"
        );
        anyhow::ensure!(self.first_retry_ms > 0, "first_retry_ms must be at least 1");
        anyhow::ensure!(self.queue_length > 0, "queue_length must be at least 1");
        anyhow::ensure!(
            self.max_retry_seconds.saturating_mul(1000) >= self.first_retry_ms,
            "max_retry_seconds must be at least first_retry_ms"
        );
        Ok(())
    }

    /// One attempt's timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}
