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
//! Up to [`GatewayOptions::in_flight`] messages are with the provider at
//! once, never two of one device: a device's next message starts only once
//! the previous one's outcome is recorded, and devices take turns (the
//! rules are in [`worklist`]).
//!
//! One gateway is active across processes (a session advisory lock); the
//! others stand by. Every new send follows a successful read of the work
//! list on the lock's own connection, so a gateway that lost its lock
//! starts nothing more; it finishes (records) what it has in flight.

mod worklist;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{SubsecRound, Utc};
use taskledger_events::command::CommandError;
use taskledger_events::device::{AttemptSend, DeviceCommand, Imei, RecordSendResult, SendResult};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::Metadata;
use taskledger_projections::devices::ATTEMPT_RESOLUTION;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapters::rockblock::{MtClient, MtOutcome};
use crate::commands::execute_device;
use crate::workers::backoff::Pauses;
use crate::workers::leader;
use worklist::{Due, Work};

/// How often the work list is read when there was nothing to do.
const POLL: Duration = Duration::from_millis(250);
/// How soon it is read again when nothing was due just after a send ended:
/// the device's row says `sending` until the projector has caught up with
/// the recorded outcome, which takes milliseconds.
const CATCH_UP_POLL: Duration = Duration::from_millis(20);
/// How long the gateway remembers the outcomes it recorded, for a read
/// model that has not caught up (it takes milliseconds; the log refuses a
/// second attempt on a stale row anyway).
const RECORDED_MEMORY: Duration = Duration::from_secs(60);
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
    /// Messages with the provider at once (at least one; one per device).
    pub in_flight: usize,
}

/// Runs the gateway until `stop` resolves. Messages being sent when the
/// signal comes are finished (their answers recorded) before the gateway
/// stops, so stopping never causes a resend.
pub async fn run(
    store: PgEventStore,
    options: GatewayOptions,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    leader::run(
        "device gateway",
        // Finish the messages in hand, but do not hang on a database that
        // never comes back.
        leader::OnStop::Finish(Duration::from_secs(60)),
        stop,
        |stopping| {
            let (store, options) = (&store, &options);
            async move { active(store, options, &stopping).await }
        },
    )
    .await;
}

/// One life of the gateway: lock, then work until something fails or the
/// gateway stops. Returns `Ok` at once when another gateway holds the lock.
/// Whatever ends it, the sends in flight are finished first.
async fn active(
    store: &PgEventStore,
    options: &GatewayOptions,
    stopping: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(leadership) = leader::try_lead(store, "device-gateway").await? else {
        return Ok(());
    };
    tracing::info!(in_flight = options.in_flight, "device gateway active");
    let mut sends = InFlight::default();
    let outcome = dispatch(store, options, stopping, &leadership.client, &mut sends).await;
    // Finish what is with the provider, whatever stopped the dispatching:
    // an abandoned send would leave a known answer unrecorded.
    let drained = sends.drain().await;
    outcome.and(drained)
}

/// The sends this gateway has in hand, one per device.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<(Due, Result<Attempt, CommandError>)>,
    devices: HashSet<Imei>,
    /// Attempts whose outcome this gateway recorded lately, by message:
    /// the read model may not show them yet, and the device's next message
    /// need not wait for it (the log already has the outcome).
    recorded: HashMap<Uuid, (u32, Instant)>,
    /// Devices whose work was skipped (the read model had not caught up),
    /// left alone until then instead of being offered again at once.
    resting: HashMap<Imei, Instant>,
}

impl InFlight {
    /// Takes the result of a finished send, freeing its device.
    fn finished(
        &mut self,
        joined: Result<(Due, Result<Attempt, CommandError>), tokio::task::JoinError>,
    ) -> anyhow::Result<Attempt> {
        let (due, result) = joined.context("a device gateway send panicked")?;
        self.devices.remove(&due.imei);
        let attempt = result
            .with_context(|| format!("recording an attempt for device {}", due.imei.as_str()))?;
        match attempt {
            Attempt::Made => {
                self.recorded
                    .insert(due.message_id, (due.work.attempt(), Instant::now()));
            }
            Attempt::Skipped => {
                self.resting.insert(due.imei, Instant::now() + POLL);
            }
        }
        Ok(attempt)
    }

    /// The devices the work list must leave out: those with a send in hand
    /// and those resting.
    fn unavailable(&mut self) -> HashSet<Imei> {
        let now = Instant::now();
        self.resting.retain(|_, until| *until > now);
        self.recorded
            .retain(|_, (_, at)| now.duration_since(*at) < RECORDED_MEMORY);
        self.devices
            .iter()
            .chain(self.resting.keys())
            .cloned()
            .collect()
    }

    /// Waits for every send in hand; the first failure, if any.
    async fn drain(&mut self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = self.finished(joined) {
                outcome = outcome.and(Err(error));
            }
        }
        outcome
    }
}

/// Reads the work list whenever a slot is free and starts a send for each
/// due device, until the gateway stops or something fails.
async fn dispatch(
    store: &PgEventStore,
    options: &GatewayOptions,
    stopping: &CancellationToken,
    lock_client: &tokio_postgres::Client,
    sends: &mut InFlight,
) -> anyhow::Result<()> {
    let slots = options.in_flight.max(1);
    // The device served last: the next round starts after it.
    let mut last_served: Option<Imei> = None;
    // Whether an attempt ended since the work list was last read.
    let mut just_ended = false;
    while !stopping.is_cancelled() {
        let free = slots - sends.tasks.len();
        let mut started = 0;
        if free > 0 {
            let unavailable = sends.unavailable();
            let recorded: Vec<(Uuid, u32)> = sends
                .recorded
                .iter()
                .map(|(message_id, (attempt, _))| (*message_id, *attempt))
                .collect();
            let due = worklist::due(
                lock_client,
                &unavailable,
                &recorded,
                last_served.as_ref(),
                free,
            )
            .await
            .context("reading the device gateway's work list")?;
            for due in due {
                last_served = Some(due.imei.clone());
                sends.devices.insert(due.imei.clone());
                let (store, options) = (store.clone(), options.clone());
                sends.tasks.spawn(async move {
                    let result = work(&store, &options, &due).await;
                    (due, result)
                });
                started += 1;
            }
        }
        let idle = sends.tasks.is_empty() || free > started;
        let pause = if just_ended { CATCH_UP_POLL } else { POLL };
        just_ended = false;
        tokio::select! {
            Some(joined) = sends.tasks.join_next() => {
                just_ended = matches!(sends.finished(joined)?, Attempt::Made);
            }
            // Nothing (more) due: look again later, or when a send ends.
            () = tokio::time::sleep(pause), if idle => {}
            () = stopping.cancelled() => {}
        }
    }
    Ok(())
}

/// Does one [`Due`] message's work: sends it, or resolves its attempt whose
/// answer never came.
async fn work(
    store: &PgEventStore,
    options: &GatewayOptions,
    due: &Due,
) -> Result<Attempt, CommandError> {
    match &due.work {
        Work::Send {
            attempt,
            payload,
            flush,
        } => {
            send(
                store,
                options,
                &due.imei,
                due.message_id,
                *attempt,
                payload,
                *flush,
            )
            .await
        }
        Work::Resolve { attempt } => {
            let result = SendResult::Failed {
                code: None,
                text: "the gateway stopped before the provider answered; the outcome is unknown"
                    .into(),
                permanent: false,
            };
            record(store, options, &due.imei, due.message_id, *attempt, result).await;
            Ok(Attempt::Made)
        }
    }
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
