//! Reading the `devices` and `device_messages` read models, for the API:
//! devices by IMEI (keyset-paged), one device, and a device's messages,
//! newest first (keyset-paged by creation time and id).

use chrono::{DateTime, Utc};
use taskledger_events::device::Imei;
use tokio_postgres::{Client, Error, Row};
use uuid::Uuid;

/// A modem, as `devices` holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    /// Its IMEI.
    pub imei: String,
    /// When it first appeared (a message to or from it).
    pub first_seen_at: DateTime<Utc>,
    /// When its last message arrived.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The network's last position estimate.
    pub last_latitude: Option<f64>,
    /// The network's last position estimate.
    pub last_longitude: Option<f64>,
    /// That estimate's radius, in km.
    pub last_cep: Option<f64>,
    /// Messages received from it.
    pub received_count: i64,
    /// Messages queued for it.
    pub queued_count: i64,
    /// Messages the provider accepted for it.
    pub sent_count: i64,
    /// Messages given up.
    pub failed_count: i64,
    /// Its stream's version.
    pub stream_version: i64,
    /// The tenant it is assigned to; `None` until a platform admin assigns
    /// it.
    pub tenant: Option<String>,
}

const DEVICE_COLUMNS: &str = "imei, first_seen_at, last_seen_at, last_latitude, last_longitude,
    last_cep, received_count, queued_count, sent_count, failed_count, stream_version, tenant";

impl DeviceRow {
    fn from_row(row: &Row) -> Self {
        Self {
            imei: row.get(0),
            first_seen_at: row.get(1),
            last_seen_at: row.get(2),
            last_latitude: row.get(3),
            last_longitude: row.get(4),
            last_cep: row.get(5),
            received_count: row.get(6),
            queued_count: row.get(7),
            sent_count: row.get(8),
            failed_count: row.get(9),
            stream_version: row.get(10),
            tenant: row.get(11),
        }
    }
}

/// Up to `limit` devices with an IMEI after `after`, by IMEI, assigned to
/// each of `tenants` (none: every device; two different names: none).
///
/// # Errors
/// The database failed.
pub async fn devices(
    client: &Client,
    tenants: &[String],
    after: &str,
    limit: i64,
) -> Result<Vec<DeviceRow>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {DEVICE_COLUMNS} FROM devices
                 WHERE imei > $1 AND tenant = ALL($3::text[])
                 ORDER BY imei LIMIT $2"
            ),
            &[&after, &limit, &tenants],
        )
        .await?;
    Ok(rows.iter().map(DeviceRow::from_row).collect())
}

/// The device `imei`, once a message went to or came from it.
///
/// # Errors
/// The database failed.
pub async fn device(client: &Client, imei: &Imei) -> Result<Option<DeviceRow>, Error> {
    let row = client
        .query_opt(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE imei = $1"),
            &[&imei.as_str()],
        )
        .await?;
    Ok(row.as_ref().map(DeviceRow::from_row))
}

/// A message to or from a device, as `device_messages` holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    /// Its id.
    pub message_id: Uuid,
    /// The device.
    pub imei: String,
    /// `mt` or `mo`.
    pub direction: String,
    /// mt: `queued`, `sending`, `sent`, `failed`; mo: `received`.
    pub status: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Attempts made (mt).
    pub attempts: i32,
    /// The provider's id (mt, once sent).
    pub mt_id: Option<i64>,
    /// The provider's error code of the last failure (mt).
    pub error_code: Option<i32>,
    /// The last failure's text (mt).
    pub error_text: Option<String>,
    /// The modem's sequence number (mo).
    pub momsn: Option<i64>,
    /// When the network received it (mo), as the provider wrote it.
    pub transmit_time: Option<String>,
    /// Position estimate (mo).
    pub latitude: Option<f64>,
    /// Position estimate (mo).
    pub longitude: Option<f64>,
    /// When it was queued (mt) or received (mo).
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Which of a device's messages to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only `mt` or only `mo`.
    pub direction: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only messages before this (creation time, id), the last of the
    /// previous page.
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

/// Up to `limit` of `imei`'s messages that `filter` admits, newest first.
///
/// # Errors
/// The database failed.
pub async fn messages(
    client: &Client,
    imei: &Imei,
    filter: &MessageFilter,
    limit: i64,
) -> Result<Vec<MessageRow>, Error> {
    let rows = client
        .query(
            "SELECT message_id, imei, direction, status, payload, attempts, mt_id, error_code,
                    error_text, momsn, transmit_time, latitude, longitude, created_at, updated_at
             FROM device_messages
             WHERE imei = $1
               AND ($2::text IS NULL OR direction = $2)
               AND ($3::text IS NULL OR status = $3)
               AND ($4::timestamptz IS NULL OR (created_at, message_id) < ($4, $5))
             ORDER BY created_at DESC, message_id DESC
             LIMIT $6",
            &[
                &imei.as_str(),
                &filter.direction,
                &filter.status,
                &filter.before.map(|(at, _)| at),
                &filter.before.map_or(Uuid::nil(), |(_, id)| id),
                &limit,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| MessageRow {
            message_id: row.get(0),
            imei: row.get(1),
            direction: row.get(2),
            status: row.get(3),
            payload: row.get(4),
            attempts: row.get(5),
            mt_id: row.get(6),
            error_code: row.get(7),
            error_text: row.get(8),
            momsn: row.get(9),
            transmit_time: row.get(10),
            latitude: row.get(11),
            longitude: row.get(12),
            created_at: row.get(13),
            updated_at: row.get(14),
        })
        .collect())
}
