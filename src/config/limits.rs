//! `[limits]`: what one process allows each API key, and all keys together.
//!
//! ```toml
//! [limits]
//! requests_per_second = 100   # per key; a key's own --rate-limit wins
//! burst = 200                 # requests a key may send at once
//! streams_per_key = 16        # open event streams per key
//! streams_total = 1024        # open event streams in all
//! ```
//!
//! Every limit is per process: two API processes each allow a key its
//! requests per second.

use std::num::NonZeroU32;

use serde::Deserialize;

/// The `[limits]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per second a key may make; unset: no limit, except a key's
    /// own (`keys create --rate-limit`), which always wins.
    #[serde(default)]
    pub requests_per_second: Option<NonZeroU32>,
    /// Requests a key may make at once before the rate applies; unset: one
    /// second's worth (`requests_per_second`).
    #[serde(default)]
    pub burst: Option<NonZeroU32>,
    /// Event streams (`GET /v1/events/stream`, `GET /v1/tasks/stream`) one
    /// key may hold open.
    #[serde(default = "default_streams_per_key")]
    pub streams_per_key: u32,
    /// Event streams this process holds open, for all keys together.
    #[serde(default = "default_streams_total")]
    pub streams_total: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_second: None,
            burst: None,
            streams_per_key: default_streams_per_key(),
            streams_total: default_streams_total(),
        }
    }
}

fn default_streams_per_key() -> u32 {
    16
}
fn default_streams_total() -> u32 {
    1024
}

impl LimitsConfig {
    /// Checks the limits are usable.
    ///
    /// # Errors
    /// A burst without a rate, or a stream cap of 0.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.burst.is_none() || self.requests_per_second.is_some(),
            "burst needs requests_per_second"
        );
        anyhow::ensure!(
            self.streams_per_key >= 1,
            "streams_per_key must be at least 1"
        );
        anyhow::ensure!(self.streams_total >= 1, "streams_total must be at least 1");
        Ok(())
    }
}
