//! One event's delivery to one webhook: POSTs the signed body until the
//! receiver answers 2xx or the retry time runs out, recording every attempt
//! in the webhook's stream before it reports the delivery done: one append
//! per attempt, decided on the stream as the previous record left it. Its lane
//! ([`super::lane`]) calls it for each event in order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use rand::Rng;
use taskledger_events::command::{CommandError, Loaded};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::webhook::{
    DeliveryOutcome, RecordDelivery, WebhookCommand, WebhookDeliveryAttempted, WebhookId, Webhooks,
    MAX_ERROR_BYTES,
};
use taskledger_events::Metadata;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::lane::Shared;
use super::tls::{causes, TrustedRoots};
use super::{sign, target};
use crate::config::webhooks::WebhooksConfig;
use crate::workers::backoff::Pauses;

/// A webhook's status as the deliverer knows it.
pub(super) const ENABLED: u8 = 0;
/// Disabled: the lane waits, then catches up from where it stopped.
pub(super) const DISABLED: u8 = 1;
/// Deleted: the lane ends.
pub(super) const DELETED: u8 = 2;

/// One event to deliver to one webhook.
#[derive(Debug)]
pub(super) struct Job {
    /// The `webhook-id`.
    pub(super) message_id: String,
    /// The event's position and kind, for the attempt records.
    pub(super) position: u64,
    pub(super) kind: &'static str,
    /// The body, the same bytes on every attempt.
    pub(super) body: Arc<Vec<u8>>,
}

/// What one webhook's task needs.
#[derive(Debug)]
pub(super) struct Delivery {
    pub(super) store: PgEventStore,
    pub(super) webhook_id: WebhookId,
    pub(super) url: String,
    pub(super) key: Vec<u8>,
    pub(super) shared: Arc<Shared>,
    pub(super) config: WebhooksConfig,
    /// The roots an https target's certificate is checked against.
    pub(super) roots: TrustedRoots,
    /// The connection's client, kept while the target resolves to the
    /// same address.
    pub(super) client: Option<(std::net::SocketAddr, reqwest::Client)>,
    /// The webhook's stream as this lane's last record left it (`None`:
    /// load it first). Another writer (disable, enable, replay, delete)
    /// makes the next record's append conflict, and it is loaded again.
    pub(super) known: Option<Loaded<Webhooks>>,
    /// What every lane takes to use a database connection (not to append:
    /// appends share the store's appender), so that the lanes together
    /// never hold more than a few of the store's pool.
    pub(super) database: Arc<Semaphore>,
}

impl Delivery {
    /// Attempts `job` until delivered or given up, each attempt recorded:
    /// whether it was delivered (not: it gave up, which disabled the
    /// webhook, or the webhook was disabled or deleted meanwhile).
    ///
    /// # Errors
    /// When an attempt cannot be recorded.
    pub(super) async fn deliver(&mut self, job: &Job) -> anyhow::Result<bool> {
        let started = Instant::now();
        let retry_for = Duration::from_secs(self.config.retry_for_seconds);
        let mut pauses = Pauses::doubling(
            Duration::from_millis(self.config.first_retry_ms),
            Duration::from_secs(self.config.max_retry_seconds),
        );
        for attempt in 1u32.. {
            let attempted_at = Utc::now().trunc_subsecs(6);
            let begun = Instant::now();
            let answer = self.post(job).await;
            let duration_ms = u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (status_code, error) = match &answer {
                Ok(status) if (200..300).contains(status) => (Some(*status), None),
                Ok(status) => (
                    Some(*status),
                    Some(format!("the receiver answered {status}")),
                ),
                Err(error) => (None, Some(cut(error))),
            };
            let delivered = error.is_none();
            // Jitter: up to a quarter of the pause either way.
            let pause = jittered(pauses.next_pause());
            let out_of_time = started.elapsed() + pause > retry_for;
            let outcome = if delivered {
                DeliveryOutcome::Delivered
            } else if out_of_time {
                DeliveryOutcome::GaveUp
            } else {
                DeliveryOutcome::Retrying
            };
            let next_attempt_at = (outcome == DeliveryOutcome::Retrying).then(|| {
                Utc::now().trunc_subsecs(6)
                    + chrono::Duration::from_std(pause).unwrap_or(chrono::Duration::zero())
            });
            let give_up_reason = (outcome == DeliveryOutcome::GaveUp).then(|| {
                format!(
                    "deliveries failed for {} s (last: {}); enable the webhook to deliver again",
                    started.elapsed().as_secs(),
                    error.as_deref().unwrap_or("unknown")
                )
            });
            // Recorded on the stream as the last record left it: one
            // append. Without it (the first, or after a failure) the stream
            // is loaded, under a database permit.
            let known = self.known.take();
            let permit = match known {
                Some(_) => None,
                None => Some(self.database.acquire().await?),
            };
            let recorded = crate::commands::execute_known::<Webhooks>(
                &self.store,
                &self.webhook_id.stream_id(),
                known,
                WebhookCommand::RecordDelivery(RecordDelivery {
                    webhook_id: self.webhook_id,
                    attempt: WebhookDeliveryAttempted {
                        message_id: job.message_id.clone(),
                        position: job.position,
                        kind: job.kind.to_owned(),
                        attempt,
                        attempted_at,
                        duration_ms,
                        status_code,
                        error,
                        outcome,
                        next_attempt_at,
                    },
                    give_up_reason: give_up_reason.map(|reason| cut_to(&reason, 500)),
                }),
                Uuid::new_v4(),
                Metadata {
                    actor: Some("webhook-deliverer".into()),
                    ..Metadata::default()
                },
            )
            .await;
            drop(permit);
            match recorded {
                Ok(executed) => self.known = Some(Loaded::after(executed)),
                Err(CommandError::Rejected(_)) => {
                    // Deleted meanwhile: nothing more to deliver to it.
                    self.shared.status.store(DELETED, Ordering::Release);
                    return Ok(false);
                }
                Err(error) => return Err(error.into()),
            }
            match outcome {
                DeliveryOutcome::Delivered => return Ok(true),
                DeliveryOutcome::GaveUp => {
                    self.shared.status.store(DISABLED, Ordering::Release);
                    return Ok(false);
                }
                DeliveryOutcome::Retrying => tokio::time::sleep(pause).await,
            }
            if self.shared.status.load(Ordering::Acquire) != ENABLED {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// One POST: the receiver's status code, or why there was none. The
    /// target is resolved and checked again first, and the connection goes
    /// only to the address checked.
    async fn post(&mut self, job: &Job) -> Result<u16, String> {
        let target = target::resolve(&self.url, self.config.allow_private_targets)
            .await
            .map_err(|refused| refused.to_string())?;
        let address = target.addresses[0];
        let reuse = self
            .client
            .as_ref()
            .is_some_and(|(pinned, _)| *pinned == address);
        if !reuse {
            // Pinned by name: the connection goes to `address`, and TLS
            // (SNI, the certificate's name) still uses the URL's host.
            let built = self
                .roots
                .client_builder()
                .resolve(&target.host, address)
                .timeout(self.config.timeout())
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|error| format!("building the HTTP client: {}", causes(&error)))?;
            self.client = Some((address, built));
        }
        let (_, http) = self.client.as_ref().expect("set above");
        let timestamp = Utc::now().timestamp();
        let signature = sign::signature(&self.key, &job.message_id, timestamp, &job.body);
        let response = http
            .post(target.url)
            .header("content-type", "application/json")
            .header("user-agent", "taskledger-webhooks")
            .header("webhook-id", &job.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(job.body.as_ref().clone())
            .send()
            .await
            .map_err(|error| {
                let kind = if error.is_timeout() {
                    "timed out"
                } else if error.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                format!("the request {kind}: {}", causes(&error))
            })?;
        Ok(response.status().as_u16())
    }
}

/// `pause` moved by up to a quarter either way.
fn jittered(pause: Duration) -> Duration {
    let quarter = pause / 4;
    let spread = u64::try_from(quarter.as_millis()).unwrap_or(0);
    if spread == 0 {
        return pause;
    }
    let offset = rand::rng().random_range(0..=2 * spread);
    (pause - quarter) + Duration::from_millis(offset)
}

fn cut(error: &str) -> String {
    cut_to(error, MAX_ERROR_BYTES)
}

/// `text` cut to at most `limit` bytes at a character boundary, without
/// control characters.
fn cut_to(text: &str, limit: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= limit {
        return clean;
    }
    let mut end = limit;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::jittered;

    #[test]
    fn a_pause_moves_by_at_most_a_quarter_either_way_and_varies_across_that_range() {
        for pause in [
            Duration::from_millis(20),
            Duration::from_millis(1_001),
            Duration::from_secs(3_600),
        ] {
            let (lowest, highest) = (pause * 3 / 4, pause * 5 / 4);
            let draws: Vec<Duration> = (0..10_000).map(|_| jittered(pause)).collect();
            for draw in &draws {
                assert!(
                    (lowest..=highest).contains(draw),
                    "{draw:?} is outside {lowest:?}..={highest:?} for {pause:?}"
                );
            }
            let distinct: BTreeSet<&Duration> = draws.iter().collect();
            assert!(distinct.len() > 5, "{pause:?} hardly varies: {distinct:?}");
            // Both ends are reached: the spread is the whole quarter, not
            // a sliver of it.
            let spread = pause / 4;
            let (min, max) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
            assert!(
                *min < pause - spread * 4 / 5,
                "{pause:?}: lowest draw {min:?}"
            );
            assert!(
                *max > pause + spread * 4 / 5,
                "{pause:?}: highest draw {max:?}"
            );
        }
    }

    #[test]
    fn a_pause_too_short_to_move_by_a_millisecond_stays_as_it_is() {
        let pause = Duration::from_millis(3);
        assert!((0..100).all(|_| jittered(pause) == pause));
    }
}
