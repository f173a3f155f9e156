//! The `devices` projector: one row per modem in `devices` (last contact,
//! last position, message counts) and one per message in `device_messages`
//! (direction, status, ids, payload, times), and the tenant a device is
//! assigned to (NULL until it is). The device gateway reads its
//! work list from `device_messages` (`next_attempt_at`).
//!
//! The API's reads of these tables are in [`query`].
//!
//! Deterministic: every value comes from the events. A message id of an
//! inbound message is its event's id.

use chrono::{DateTime, Duration, Utc};
use taskledger_events::device::{DeviceEvent, Imei};
use taskledger_events::RecordedEvent;
use tokio_postgres::types::ToSql;

use crate::declare::{each_event_projector, one_row_changed};
use crate::runtime::{Batch, ProjectorError};

pub mod query;

/// How long after an attempt began its outcome is taken as unknown (the
/// gateway then records a failure and tries again under a new attempt).
pub const ATTEMPT_RESOLUTION: Duration = Duration::seconds(120);

/// Projects device events into `devices` and `device_messages`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevicesProjector;

const DEVICE: &str =
    "INSERT INTO devices (imei, first_seen_at, updated_at, stream_version, last_position)
     VALUES ($1, $2, $2, $3, $4)
     ON CONFLICT (imei) DO UPDATE SET updated_at = $2, stream_version = $3, last_position = $4";
// The statements below that write a message row end with its stamp,
// `updated_at`, `stream_version` and `last_position` (see `stamped`).
const QUEUED: &str = "INSERT INTO device_messages (message_id, imei, direction, status, payload,
        flush, next_attempt_at, created_at, updated_at, stream_version, last_position)
     VALUES ($1, $2, 'mt', 'queued', $3, $4, $5, $5, $6, $7, $8)";
const SEND_ATTEMPTED: &str = "UPDATE device_messages SET status = 'sending', attempts = $2,
        next_attempt_at = $3, updated_at = $4, stream_version = $5, last_position = $6
     WHERE message_id = $1";
const SENT: &str = "UPDATE device_messages SET status = 'sent', mt_id = $2,
        next_attempt_at = NULL, error_code = NULL, error_text = NULL,
        updated_at = $3, stream_version = $4, last_position = $5
     WHERE message_id = $1";
const FAILED: &str = "UPDATE device_messages SET status = $2, error_code = $3, error_text = $4,
        next_attempt_at = $5, updated_at = $6, stream_version = $7, last_position = $8
     WHERE message_id = $1";
// An inbound message's id is its event's.
const RECEIVED: &str = "INSERT INTO device_messages (message_id, imei, direction, status, payload,
        momsn, transmit_time, latitude, longitude, cep, created_at, updated_at,
        stream_version, last_position)
     VALUES ($1, $2, 'mo', 'received', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

each_event_projector! {
    DevicesProjector: (Imei::from_stream_id, apply_one),
    name: "devices",
    /// 2: a device carries the tenant it is assigned to.
    version: 2,
    tables: ["devices", "device_messages"],
    schema: concat!(
        include_str!("../../../migrations/0007_device_read_models.sql"),
        include_str!("../../../migrations/0013_device_tenants.sql")
    ),
}

/// Runs `sql` with `values` followed by the event's time, stream version
/// and position: the last three parameters of every statement here that
/// stamps a row (`updated_at`, `stream_version`, `last_position`).
async fn stamped(
    tx: &Batch<'_>,
    recorded: &RecordedEvent,
    sql: &str,
    values: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let version = i64::try_from(recorded.version).unwrap_or(i64::MAX);
    let position = i64::try_from(recorded.global_position).unwrap_or(i64::MAX);
    let stamp: [&(dyn ToSql + Sync); 3] = [&recorded.recorded_at, &version, &position];
    let values: Vec<&(dyn ToSql + Sync)> = values.iter().copied().chain(stamp).collect();
    tx.execute(sql, &values).await
}

fn hex_payload(recorded: &RecordedEvent, hex_text: &str) -> Result<Vec<u8>, ProjectorError> {
    hex::decode(hex_text).map_err(|error| ProjectorError::Event {
        global_position: recorded.global_position,
        reason: format!("payload_hex: {error}"),
    })
}

async fn apply_one(
    tx: &Batch<'_>,
    imei: Imei,
    recorded: &RecordedEvent,
    event: &DeviceEvent,
) -> Result<(), ProjectorError> {
    stamped(tx, recorded, DEVICE, &[&imei.as_str()]).await?;
    let changed = match event {
        DeviceEvent::Queued(queued) => {
            let payload = hex_payload(recorded, &queued.payload_hex)?;
            tx.execute(
                "UPDATE devices SET queued_count = queued_count + 1 WHERE imei = $1",
                &[&imei.as_str()],
            )
            .await?;
            let values: [&(dyn ToSql + Sync); 5] = [
                &queued.message_id,
                &imei.as_str(),
                &payload,
                &queued.flush,
                &queued.queued_at,
            ];
            stamped(tx, recorded, QUEUED, &values).await?
        }
        DeviceEvent::SendAttempted(attempted) => {
            let resolve_at: DateTime<Utc> = attempted.attempted_at + ATTEMPT_RESOLUTION;
            let attempt = i32::try_from(attempted.attempt).unwrap_or(i32::MAX);
            let values: [&(dyn ToSql + Sync); 3] = [&attempted.message_id, &attempt, &resolve_at];
            stamped(tx, recorded, SEND_ATTEMPTED, &values).await?
        }
        DeviceEvent::Sent(sent) => {
            tx.execute(
                "UPDATE devices SET sent_count = sent_count + 1 WHERE imei = $1",
                &[&imei.as_str()],
            )
            .await?;
            let mt_id = i64::try_from(sent.mt_id).unwrap_or(i64::MAX);
            stamped(tx, recorded, SENT, &[&sent.message_id, &mt_id]).await?
        }
        DeviceEvent::Failed(failed) => {
            if failed.final_failure {
                tx.execute(
                    "UPDATE devices SET failed_count = failed_count + 1 WHERE imei = $1",
                    &[&imei.as_str()],
                )
                .await?;
            }
            let status = if failed.final_failure {
                "failed"
            } else {
                "queued"
            };
            let values: [&(dyn ToSql + Sync); 5] = [
                &failed.message_id,
                &status,
                &failed.code.map(i32::from),
                &failed.text,
                &failed.retry_at,
            ];
            stamped(tx, recorded, FAILED, &values).await?
        }
        DeviceEvent::Received(received) => {
            let payload = hex_payload(recorded, &received.payload_hex)?;
            tx.execute(
                "UPDATE devices SET received_count = received_count + 1, last_seen_at = $2,
                     last_latitude = coalesce($3, last_latitude),
                     last_longitude = coalesce($4, last_longitude),
                     last_cep = coalesce($5, last_cep)
                 WHERE imei = $1",
                &[
                    &imei.as_str(),
                    &received.received_at,
                    &received.latitude,
                    &received.longitude,
                    &received.cep,
                ],
            )
            .await?;
            let momsn = i64::try_from(received.momsn).unwrap_or(i64::MAX);
            let values: [&(dyn ToSql + Sync); 9] = [
                &recorded.event_id,
                &imei.as_str(),
                &payload,
                &momsn,
                &received.transmit_time,
                &received.latitude,
                &received.longitude,
                &received.cep,
                &received.received_at,
            ];
            stamped(tx, recorded, RECEIVED, &values).await?
        }
        DeviceEvent::Assigned(assigned) => {
            tx.execute(
                "UPDATE devices SET tenant = $2 WHERE imei = $1",
                &[&imei.as_str(), &assigned.tenant.as_str()],
            )
            .await?
        }
    };
    one_row_changed(changed, recorded, || {
        format!("no message row to apply {}", event.event_type())
    })
}
