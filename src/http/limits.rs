//! What one process allows each API key: requests per second (a `governor`
//! rate limiter per key, 429 with `Retry-After` beyond it) and open event
//! streams (a slot per stream, held by an RAII guard; 429 beyond a key's
//! cap, 503 beyond the process's).
//!
//! The rate is the key's own (`keys create --rate-limit N`: N per second,
//! bursts of N) or else `[limits] requests_per_second` and `burst`; with
//! neither, a key is not limited. Every limit is per process: each API
//! process counts on its own.
//!
//! The IETF draft's `RateLimit` and `RateLimit-Policy` headers are not sent:
//! their syntax changed between drafts and is not settled yet; `Retry-After`
//! (RFC 9110) is.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use super::auth::Caller;
use super::problem::Problem;
use crate::config::limits::LimitsConfig;

/// Keys a limiter remembers before it forgets the ones whose bucket is full
/// again (they would be allowed a full burst anyway), so memory stays
/// bounded however many keys call.
const REMEMBERED_KEYS: usize = 10_000;

/// How long a client refused a stream should wait before it asks again.
const STREAM_RETRY_SECONDS: u64 = 5;

/// Anything that holds the process's limits (the app state).
pub trait Limited {
    /// The process's limits.
    fn limits(&self) -> &Limits;
}

/// One process's per-key limits.
#[derive(Debug)]
pub struct Limits {
    default_rate: Option<Rate>,
    /// One keyed limiter per distinct rate: the default's and each key's
    /// own (few distinct values), each keyed by key id.
    limiters: Mutex<HashMap<Rate, Arc<DefaultKeyedRateLimiter<Uuid>>>>,
    streams: Arc<StreamCounts>,
}

/// A rate: requests per second and the burst allowed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Rate {
    per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl Rate {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

#[derive(Debug)]
struct StreamCounts {
    per_key: u32,
    total: u32,
    open: Mutex<OpenStreams>,
}

#[derive(Debug, Default)]
struct OpenStreams {
    total: u32,
    by_key: HashMap<Uuid, u32>,
}

impl Limits {
    /// The limits of `config`.
    pub fn new(config: &LimitsConfig) -> Self {
        let default_rate = config.requests_per_second.map(|per_second| Rate {
            per_second,
            burst: config.burst.unwrap_or(per_second),
        });
        Self {
            default_rate,
            limiters: Mutex::new(HashMap::new()),
            streams: Arc::new(StreamCounts {
                per_key: config.streams_per_key,
                total: config.streams_total,
                open: Mutex::new(OpenStreams::default()),
            }),
        }
    }

    /// Counts one request of `caller` against its key's rate.
    ///
    /// # Errors
    /// 429 with `Retry-After` (whole seconds, at least 1) when the key has
    /// used up its rate; other keys are unaffected.
    pub fn check_request(&self, caller: &Caller) -> Result<(), Problem> {
        let rate = match caller.rate_limit {
            Some(per_second) => Rate {
                per_second,
                burst: per_second,
            },
            None => match self.default_rate {
                Some(rate) => rate,
                None => return Ok(()),
            },
        };
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
            limiters
                .entry(rate)
                .or_insert_with(|| Arc::new(RateLimiter::keyed(rate.quota())))
                .clone()
        };
        let outcome = limiter.check_key(&caller.key_id);
        if limiter.len() > REMEMBERED_KEYS {
            limiter.retain_recent();
        }
        outcome.map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Problem::too_many_requests(
                format!(
                    "this API key is over its rate here, {} per second in bursts of up to {}; slow down",
                    rate.per_second, rate.burst
                ),
                whole_seconds(wait),
            )
        })
    }

    /// A slot for one open event stream of `key_id`, freed when the guard
    /// is dropped (the stream ends or its client hangs up).
    ///
    /// # Errors
    /// 429 when the key holds `streams_per_key` streams already, 503 when
    /// the process holds `streams_total`; both with `Retry-After`.
    pub fn open_stream(&self, key_id: Uuid) -> Result<StreamSlot, Problem> {
        let counts = &self.streams;
        let mut open = counts.open.lock().unwrap_or_else(PoisonError::into_inner);
        let held = open.by_key.get(&key_id).copied().unwrap_or(0);
        if held >= counts.per_key {
            return Err(Problem::too_many_requests(
                format!(
                    "this API key holds {held} open event streams, the most it may here; close one first"
                ),
                STREAM_RETRY_SECONDS,
            ));
        }
        if open.total >= counts.total {
            return Err(Problem::unavailable(
                format!(
                    "this server holds {} open event streams, the most it serves; retry later",
                    open.total
                ),
                STREAM_RETRY_SECONDS,
            ));
        }
        open.total += 1;
        *open.by_key.entry(key_id).or_insert(0) += 1;
        Ok(StreamSlot {
            counts: counts.clone(),
            key_id,
        })
    }
}

/// A held slot of [`Limits::open_stream`]; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    counts: Arc<StreamCounts>,
    key_id: Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(held) = open.by_key.get_mut(&self.key_id) {
            *held -= 1;
            if *held == 0 {
                open.by_key.remove(&self.key_id);
            }
        }
    }
}

/// `wait` rounded up to whole seconds, at least 1 (what `Retry-After`
/// carries).
fn whole_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_events::tenant::Access;

    fn caller(rate_limit: Option<u32>) -> Caller {
        Caller {
            key_id: Uuid::new_v4(),
            scopes: Vec::new(),
            access: Access::AllTenants,
            rate_limit: rate_limit.and_then(NonZeroU32::new),
        }
    }

    #[test]
    fn a_key_over_its_rate_is_refused_and_others_are_not() {
        let limits = Limits::new(&LimitsConfig {
            requests_per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(2),
            ..LimitsConfig::default()
        });
        let busy = caller(None);
        assert!(limits.check_request(&busy).is_ok());
        assert!(limits.check_request(&busy).is_ok());
        let refused = limits.check_request(&busy).unwrap_err();
        assert_eq!(refused.status, 429);
        assert_eq!(refused.retry_after, Some(1));
        assert!(limits.check_request(&caller(None)).is_ok());
        let own = caller(Some(5));
        for _ in 0..5 {
            assert!(limits.check_request(&own).is_ok(), "its own rate wins");
        }
        assert!(limits.check_request(&own).is_err());
    }

    #[test]
    fn no_rate_means_no_limit() {
        let limits = Limits::new(&LimitsConfig::default());
        let caller = caller(None);
        for _ in 0..1000 {
            assert!(limits.check_request(&caller).is_ok());
        }
    }

    #[test]
    fn stream_slots_are_capped_per_key_and_in_total_and_freed_on_drop() {
        let limits = Limits::new(&LimitsConfig {
            streams_per_key: 2,
            streams_total: 3,
            ..LimitsConfig::default()
        });
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let a = limits.open_stream(first).unwrap();
        let _b = limits.open_stream(first).unwrap();
        assert_eq!(limits.open_stream(first).unwrap_err().status, 429);
        let _c = limits.open_stream(second).unwrap();
        assert_eq!(limits.open_stream(second).unwrap_err().status, 503);
        drop(a);
        assert!(limits.open_stream(first).is_ok());
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(10)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
    }
}
