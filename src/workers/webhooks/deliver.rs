//! One webhook's deliveries: a task per webhook takes its queue in order
//! and, for each event, POSTs the signed body until the receiver answers
//! 2xx or the retry time runs out, recording every attempt in the
//! webhook's stream before it reports the delivery done. A slow receiver
//! holds back only its own queue.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use rand::Rng;
use taskledger_events::command::CommandError;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::webhook::{
    DeliveryOutcome, RecordDelivery, WebhookCommand, WebhookDeliveryAttempted, WebhookId, Webhooks,
    MAX_ERROR_BYTES,
};
use taskledger_events::Metadata;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{sign, target};
use crate::config::webhooks::WebhooksConfig;
use crate::workers::backoff::Pauses;

/// A webhook's status as the deliverer knows it.
pub(super) const ENABLED: u8 = 0;
/// Disabled: queued events are dropped (reported done) until enabled.
pub(super) const DISABLED: u8 = 1;
/// Deleted: the queue ends.
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
    /// The position whose checkpoint waits for this delivery.
    pub(super) holds: u64,
}

/// What one webhook's task needs.
#[derive(Debug)]
pub(super) struct Delivery {
    pub(super) store: PgEventStore,
    pub(super) webhook_id: WebhookId,
    pub(super) url: String,
    pub(super) key: Vec<u8>,
    pub(super) status: Arc<AtomicU8>,
    pub(super) config: WebhooksConfig,
    /// Where finished deliveries are reported (the position they held).
    pub(super) done: mpsc::UnboundedSender<u64>,
}

impl Delivery {
    /// Delivers `queue` in order until it closes or the webhook is deleted.
    pub(super) async fn run(self, mut queue: mpsc::UnboundedReceiver<Job>) {
        let mut client = None;
        while let Some(job) = queue.recv().await {
            let holds = job.holds;
            match self.status.load(Ordering::Acquire) {
                ENABLED => {
                    if let Err(error) = self.deliver(&mut client, &job).await {
                        // Recording failed (the database): the checkpoint
                        // must not pass it, so stop; the deliverer restarts
                        // from its checkpoint.
                        tracing::warn!(
                            webhook = %self.webhook_id,
                            error = format!("{error:#}"),
                            "recording a webhook delivery failed"
                        );
                        return;
                    }
                }
                DELETED => {
                    let _ = self.done.send(holds);
                    return;
                }
                _ => {}
            }
            let _ = self.done.send(holds);
        }
    }

    /// Attempts `job` until delivered or given up, each attempt recorded.
    ///
    /// # Errors
    /// When an attempt cannot be recorded.
    async fn deliver(
        &self,
        client: &mut Option<(std::net::SocketAddr, reqwest::Client)>,
        job: &Job,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let retry_for = Duration::from_secs(self.config.retry_for_seconds);
        let mut pauses = Pauses::doubling(
            Duration::from_millis(self.config.first_retry_ms),
            Duration::from_secs(self.config.max_retry_seconds),
        );
        for attempt in 1u32.. {
            let attempted_at = Utc::now().trunc_subsecs(6);
            let begun = Instant::now();
            let answer = self.post(client, job).await;
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
            let give_up_reason = (outcome == DeliveryOutcome::GaveUp).then(|| {
                format!(
                    "deliveries failed for {} s (last: {}); enable the webhook to deliver again",
                    started.elapsed().as_secs(),
                    error.as_deref().unwrap_or("unknown")
                )
            });
            let recorded = crate::commands::execute::<Webhooks>(
                &self.store,
                &self.webhook_id.stream_id(),
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
            match recorded {
                Ok(_) => {}
                Err(CommandError::Rejected(_)) => {
                    // Deleted meanwhile: nothing more to deliver to it.
                    self.status.store(DELETED, Ordering::Release);
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            }
            match outcome {
                DeliveryOutcome::Delivered => return Ok(()),
                DeliveryOutcome::GaveUp => {
                    self.status.store(DISABLED, Ordering::Release);
                    return Ok(());
                }
                DeliveryOutcome::Retrying => tokio::time::sleep(pause).await,
            }
            if self.status.load(Ordering::Acquire) != ENABLED {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One POST: the receiver's status code, or why there was none. The
    /// target is resolved and checked again first, and the connection goes
    /// only to the address checked.
    async fn post(
        &self,
        client: &mut Option<(std::net::SocketAddr, reqwest::Client)>,
        job: &Job,
    ) -> Result<u16, String> {
        let target = target::resolve(&self.url, self.config.allow_private_targets)
            .await
            .map_err(|refused| refused.to_string())?;
        let address = target.addresses[0];
        let reuse = client
            .as_ref()
            .is_some_and(|(pinned, _)| *pinned == address);
        if !reuse {
            let built = reqwest::Client::builder()
                .resolve(&target.host, address)
                .timeout(self.config.timeout())
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|error| format!("building the HTTP client: {error}"))?;
            *client = Some((address, built));
        }
        let (_, http) = client.as_ref().expect("set above");
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
                format!("the request {kind}: {error}")
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
