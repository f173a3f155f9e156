//! The gateway's work list: which message of which device goes next, read
//! from the `device_messages` read model on the gateway's lock connection.
//!
//! The rules that make the gateway in order per device and fair between
//! devices live here:
//!
//! - **One message per device at a time.** A device with a message
//!   `sending` (an attempt recorded, its outcome not yet) offers nothing
//!   else until that attempt is resolved: its answer recorded, or, when it
//!   never came, the attempt resolved as "outcome unknown" once due. A
//!   device the gateway has a send in hand for is left out too.
//! - **Oldest first within a device**: its due message first due, then
//!   first queued (a message waiting for a retry does not hold later ones
//!   back).
//! - **Round robin between devices**: one message per device per round, in
//!   IMEI order starting after the device served last, so a device with a
//!   long backlog gets one send per round like every other.

use std::collections::HashSet;

use taskledger_events::device::Imei;
use uuid::Uuid;

/// One device's next piece of work.
#[derive(Debug, Clone)]
pub(super) struct Due {
    pub(super) message_id: Uuid,
    pub(super) imei: Imei,
    /// What to do with it.
    pub(super) work: Work,
}

impl Work {
    /// The attempt this work is about.
    pub(super) fn attempt(&self) -> u32 {
        match self {
            Self::Send { attempt, .. } | Self::Resolve { attempt } => *attempt,
        }
    }
}

/// What the gateway does with a [`Due`] message.
#[derive(Debug, Clone)]
pub(super) enum Work {
    /// Send attempt `attempt` (the attempts so far, plus one).
    Send {
        attempt: u32,
        payload: Vec<u8>,
        flush: bool,
    },
    /// Resolve attempt `attempt`, whose answer was never recorded, as a
    /// failure of unknown outcome.
    Resolve { attempt: u32 },
}

/// The head of each device's queue that is due now, in round-robin order:
/// devices after `after` (by IMEI) first, then from the lowest; devices in
/// `unavailable` left out; at most `limit`. `recorded` are the attempts
/// (message, attempt) whose outcome this gateway recorded lately.
///
/// # Errors
/// When the database cannot be reached (the lock is then lost too).
pub(super) async fn due(
    client: &tokio_postgres::Client,
    unavailable: &HashSet<Imei>,
    recorded: &[(Uuid, u32)],
    after: Option<&Imei>,
    limit: usize,
) -> Result<Vec<Due>, tokio_postgres::Error> {
    let unavailable: Vec<&str> = unavailable.iter().map(Imei::as_str).collect();
    let after = after.map_or("", Imei::as_str);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (recorded_ids, recorded_attempts): (Vec<Uuid>, Vec<i32>) = recorded
        .iter()
        .map(|(message_id, attempt)| (*message_id, i32::try_from(*attempt).unwrap_or(i32::MAX)))
        .unzip();
    // The inner query picks each device's head: its `sending` message if
    // it has one (nothing else of the device may go before that attempt is
    // resolved), else its first due, first queued message. The outer one
    // keeps the heads that are due and orders the devices for the round.
    // A row older than an outcome this gateway recorded (`recorded`: the
    // projector has not caught up) neither blocks its device nor is sent.
    let rows = client
        .query(
            "SELECT message_id, imei, status, attempts, payload, flush FROM (
                 SELECT DISTINCT ON (imei) message_id, imei, status, attempts, payload, flush,
                        next_attempt_at <= now() AS due
                 FROM device_messages
                 LEFT JOIN unnest($4::uuid[], $5::int[]) AS recorded (message_id, attempt)
                     USING (message_id)
                 WHERE direction = 'mt' AND status IN ('queued', 'sending')
                   AND NOT (imei = ANY($1))
                   AND NOT coalesce(attempts < recorded.attempt
                       OR (attempts = recorded.attempt AND status = 'sending'), false)
                 ORDER BY imei, status = 'sending' DESC, next_attempt_at, created_at, message_id
             ) AS heads
             WHERE due
             ORDER BY imei <= $2, imei
             LIMIT $3",
            &[
                &unavailable,
                &after,
                &limit,
                &recorded_ids,
                &recorded_attempts,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let imei = Imei::new(row.get::<_, &str>(1)).ok()?;
            let attempts = u32::try_from(row.get::<_, i32>(3)).unwrap_or(0);
            let work = if row.get::<_, &str>(2) == "sending" {
                Work::Resolve { attempt: attempts }
            } else {
                Work::Send {
                    attempt: attempts + 1,
                    payload: row.get(4),
                    flush: row.get(5),
                }
            };
            Some(Due {
                message_id: row.get(0),
                imei,
                work,
            })
        })
        .collect())
}
