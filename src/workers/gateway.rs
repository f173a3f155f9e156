//! The device gateway: sends queued mobile-terminated messages through the
//! RockBLOCK MT endpoint and records each outcome.
//!
//! For each due message (from the `device_messages` read model) it records
//! the attempt (`AttemptSend`) *before* calling the provider, then the
//! answer (`RecordSendResult`): `OK` → sent; `FAILED` with codes 10–16 →
//! failed for good; 99, network errors and timeouts → retried with
//! exponential backoff until the configured number of attempts. So each
//! attempt record is sent at most once. An attempt whose answer was never
//! recorded (the gateway died mid-call) becomes due again after
//! [`ATTEMPT_RESOLUTION`] and is resolved as a failure of unknown outcome,
//! then retried under a new record: no message is forgotten.
//!
//! One gateway is active across processes (a session advisory lock); the
//! others stand by.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use taskledger_events::command::CommandError;
use taskledger_events::device::{AttemptSend, DeviceCommand, Imei, RecordSendResult, SendResult};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::Metadata;
use taskledger_projections::devices::ATTEMPT_RESOLUTION;
use tokio::sync::watch;
use uuid::Uuid;

use crate::adapters::rockblock::{MtClient, MtOutcome};
use crate::commands::execute_device;
use crate::workers::backoff::{stopped_during, Pauses};
use crate::workers::leader;

/// How often the work list is read when there was nothing to do.
const POLL: Duration = Duration::from_millis(250);
/// How often a standby gateway tries to become the active one.
const STANDBY_RETRY: Duration = Duration::from_secs(2);
/// The longest backoff between attempts of one message.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How the gateway is set up.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The provider's MT endpoint, with the account's credentials.
    pub client: MtClient,
    /// Attempts per message before it fails for good.
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles it.
    pub retry_backoff: Duration,
}

/// Runs the gateway until `stop` resolves. A message being sent when the
/// signal comes is finished (its answer recorded) before the gateway stops,
/// so stopping never causes a resend.
pub async fn run(
    store: PgEventStore,
    options: GatewayOptions,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    let (stopping_sender, stopping) = watch::channel(false);
    let work = async {
        while !*stopping.borrow() {
            if let Err(error) = active(&store, &options, &stopping).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "device gateway interrupted; retrying"
                );
            }
            let mut stopping = stopping.clone();
            if stopped_during(STANDBY_RETRY, stopping.wait_for(|stopping| *stopping)).await {
                break;
            }
        }
    };
    tokio::pin!(work);
    tokio::select! {
        () = stop => {
            let _ = stopping_sender.send(true);
            // Finish the message in hand, but do not hang on a database
            // that never comes back.
            if tokio::time::timeout(Duration::from_secs(60), work).await.is_err() {
                tracing::warn!("device gateway stopped with a send result unrecorded");
            }
        }
        () = &mut work => {}
    }
    tracing::info!("device gateway stopped");
}

/// One life of the gateway: lock, then work until something fails or the
/// gateway stops. Returns `Ok` at once when another gateway holds the lock.
async fn active(
    store: &PgEventStore,
    options: &GatewayOptions,
    stopping: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(leadership) = leader::try_lead(store, "device-gateway").await? else {
        return Ok(());
    };
    let client = &leadership.client;
    tracing::info!("device gateway active");
    while !*stopping.borrow() {
        let due = client
            .query(
                "SELECT message_id, imei, status, attempts, payload, flush FROM device_messages
                 WHERE direction = 'mt' AND status IN ('queued', 'sending')
                   AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT 20",
                &[],
            )
            .await?;
        let mut progressed = false;
        for row in due {
            if *stopping.borrow() {
                break;
            }
            let message_id: Uuid = row.get(0);
            let imei: String = row.get(1);
            let status: String = row.get(2);
            let attempts = u32::try_from(row.get::<_, i32>(3)).unwrap_or(0);
            let payload: Vec<u8> = row.get(4);
            let flush: bool = row.get(5);
            let Ok(imei) = Imei::new(&imei) else { continue };
            if status == "sending" {
                // An attempt whose answer was never recorded.
                let result = SendResult::Failed {
                    code: None,
                    text:
                        "the gateway stopped before the provider answered; the outcome is unknown"
                            .into(),
                    permanent: false,
                };
                record(store, options, &imei, message_id, attempts, result).await;
                progressed = true;
                continue;
            }
            match send(
                store,
                options,
                &imei,
                message_id,
                attempts + 1,
                &payload,
                flush,
            )
            .await
            {
                Ok(Attempt::Made) => progressed = true,
                Ok(Attempt::Skipped) => {}
                Err(error) => return Err(error.into()),
            }
        }
        if !progressed {
            // Nothing due, or the read model has not caught up with what
            // was done: wait instead of asking again at once.
            let mut stopping = stopping.clone();
            stopped_during(POLL, stopping.wait_for(|stopping| *stopping)).await;
        }
    }
    Ok(())
}

/// Whether [`send`] made an attempt.
enum Attempt {
    /// Attempted, and the provider's answer (or its absence) recorded.
    Made,
    /// Not attempted: the message or its device moved on since the work
    /// list was read.
    Skipped,
}

/// One send of a due message: the attempt recorded first, then the call to
/// the provider, then its answer. A store failure while recording the
/// attempt is returned (nothing was sent); the answer is recorded come what
/// may (see [`record`]).
#[tracing::instrument(
    name = "gateway_send",
    skip_all,
    fields(imei = imei.as_str(), message = %message_id, attempt)
)]
async fn send(
    store: &PgEventStore,
    options: &GatewayOptions,
    imei: &Imei,
    message_id: Uuid,
    attempt: u32,
    payload: &[u8],
    flush: bool,
) -> Result<Attempt, CommandError> {
    let started = command(
        store,
        imei,
        DeviceCommand::AttemptSend(AttemptSend {
            message_id,
            attempt,
            attempted_at: Utc::now().trunc_subsecs(6),
        }),
    )
    .await;
    match started {
        Ok(()) => {}
        // The read model trails the log: someone (or an earlier pass)
        // already moved this message on; or the device's stream moved (an
        // MO message) and it is tried next pass.
        Err(CommandError::Rejected(_) | CommandError::Conflict { .. }) => {
            return Ok(Attempt::Skipped)
        }
        Err(error) => return Err(error),
    }
    let result = match options.client.send(imei.as_str(), payload, flush).await {
        MtOutcome::Sent { mt_id } => SendResult::Sent { mt_id },
        MtOutcome::Failed {
            code,
            text,
            permanent,
        } => SendResult::Failed {
            code: Some(code),
            text,
            permanent,
        },
        MtOutcome::Transient { reason } => SendResult::Failed {
            code: None,
            text: reason,
            permanent: false,
        },
    };
    record(store, options, imei, message_id, attempt, result).await;
    Ok(Attempt::Made)
}

/// When a message whose `attempt` failed is tried again: the first retry's
/// delay, doubled for each attempt before, at most [`MAX_BACKOFF`]. The one
/// rule for every retry, whether the provider refused, the call failed or
/// its outcome was never recorded.
fn retry_delay(first: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    first.saturating_mul(1 << exponent).min(MAX_BACKOFF)
}

/// Records the provider's answer to an attempt, retrying until it is stored
/// (or refused because the attempt was already resolved): a known answer
/// that is not recorded would become an "unknown outcome" and a resend.
async fn record(
    store: &PgEventStore,
    options: &GatewayOptions,
    imei: &Imei,
    message_id: Uuid,
    attempt: u32,
    result: SendResult,
) {
    let backoff = retry_delay(options.retry_backoff, attempt);
    let mut pauses = Pauses::doubling(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let now = Utc::now().trunc_subsecs(6);
        let retry_at = now + chrono::Duration::from_std(backoff).unwrap_or(ATTEMPT_RESOLUTION);
        let recorded = command(
            store,
            imei,
            DeviceCommand::RecordSendResult(RecordSendResult {
                message_id,
                attempt,
                result: result.clone(),
                max_attempts: options.max_attempts,
                recorded_at: now,
                retry_at,
            }),
        )
        .await;
        match recorded {
            Ok(()) | Err(CommandError::Rejected(_)) => return,
            Err(error) => {
                let pause = pauses.next_pause();
                tracing::warn!(%error, %message_id, retry_in = ?pause, "recording a send result failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn command(
    store: &PgEventStore,
    imei: &Imei,
    command: DeviceCommand,
) -> Result<(), CommandError> {
    execute_device(store, imei, command, Metadata::of_actor("device-gateway"))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_an_hour() {
        let first = Duration::from_secs(30);
        let delays: Vec<u64> = (1..=9)
            .map(|attempt| retry_delay(first, attempt).as_secs())
            .collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1_920, 3_600, 3_600]);
        assert_eq!(retry_delay(first, 0), first);
        assert_eq!(retry_delay(first, u32::MAX), MAX_BACKOFF);
    }
}
