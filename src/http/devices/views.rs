//! What the device reads answer with: a device, a message, their pages,
//! the query types of the listings, and the CSV export of messages.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use taskledger_projections::devices::query::{DeviceRow, MessageRow};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::problem::Problem;
use crate::http::tasks::spreadsheet_safe;

/// A modem, as the `devices` read model holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceView {
    /// Its IMEI.
    pub imei: String,
    /// When it first appeared (a message to or from it).
    pub first_seen_at: chrono::DateTime<Utc>,
    /// When its last message arrived.
    pub last_seen_at: Option<chrono::DateTime<Utc>>,
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
    /// The tenant it is assigned to (`null` until a platform admin assigns
    /// it: then only platform keys see it).
    #[schema(example = "acme")]
    pub tenant: Option<String>,
}

impl From<DeviceRow> for DeviceView {
    fn from(row: DeviceRow) -> Self {
        Self {
            imei: row.imei,
            first_seen_at: row.first_seen_at,
            last_seen_at: row.last_seen_at,
            last_latitude: row.last_latitude,
            last_longitude: row.last_longitude,
            last_cep: row.last_cep,
            received_count: row.received_count,
            queued_count: row.queued_count,
            sent_count: row.sent_count,
            failed_count: row.failed_count,
            stream_version: row.stream_version,
            tenant: row.tenant,
        }
    }
}

/// A page of devices, by IMEI.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DevicePage {
    /// The devices.
    pub items: Vec<DeviceView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A message to or from a device.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceMessageView {
    /// Its id.
    pub message_id: Uuid,
    /// The device.
    pub imei: String,
    /// `mt` (to the device) or `mo` (from it).
    pub direction: String,
    /// mt: `queued`, `sending`, `sent`, `failed`; mo: `received`.
    pub status: String,
    /// The payload, base64.
    pub payload_base64: String,
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
    pub created_at: chrono::DateTime<Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<MessageRow> for DeviceMessageView {
    fn from(row: MessageRow) -> Self {
        Self {
            message_id: row.message_id,
            imei: row.imei,
            direction: row.direction,
            status: row.status,
            payload_base64: base64::engine::general_purpose::STANDARD.encode(row.payload),
            attempts: row.attempts,
            mt_id: row.mt_id,
            error_code: row.error_code,
            error_text: row.error_text,
            momsn: row.momsn,
            transmit_time: row.transmit_time,
            latitude: row.latitude,
            longitude: row.longitude,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A page of messages, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceMessagePage {
    /// The messages.
    pub items: Vec<DeviceMessageView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of devices.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// Devices per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only the devices assigned to this tenant (for a tenant key, only its
    /// own gives any). A name no device has gives an empty list.
    pub tenant: Option<String>,
}

/// Filters and paging of a device's messages.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageListQuery {
    /// `mt` or `mo`.
    #[param(pattern = "^(mt|mo)$")]
    pub direction: Option<String>,
    /// One status (`queued`, `sending`, `sent`, `failed`, `received`).
    #[param(pattern = "^(queued|sending|sent|failed|received)$")]
    pub status: Option<String>,
    /// Messages per page, 1 to 1000 (default 100). For CSV: the most rows,
    /// 1 or more.
    #[param(minimum = 1)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The messages as one CSV file (`messages.csv`), formula-safe cells.
pub(super) fn csv_messages(items: &[DeviceMessageView]) -> Result<Response, Problem> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |_| Problem::internal();
    writer
        .write_record([
            "message_id",
            "imei",
            "direction",
            "status",
            "payload_base64",
            "attempts",
            "mt_id",
            "error_code",
            "error_text",
            "momsn",
            "transmit_time",
            "latitude",
            "longitude",
            "created_at",
            "updated_at",
        ])
        .map_err(failed)?;
    let text = |value: &Option<String>| spreadsheet_safe(value.as_deref().unwrap_or_default());
    let number = |value: Option<String>| value.unwrap_or_default();
    for message in items {
        writer
            .write_record([
                message.message_id.to_string(),
                message.imei.clone(),
                message.direction.clone(),
                message.status.clone(),
                message.payload_base64.clone(),
                message.attempts.to_string(),
                number(message.mt_id.map(|id| id.to_string())),
                number(message.error_code.map(|code| code.to_string())),
                text(&message.error_text),
                number(message.momsn.map(|momsn| momsn.to_string())),
                text(&message.transmit_time),
                number(message.latitude.map(|value| value.to_string())),
                number(message.longitude.map(|value| value.to_string())),
                message.created_at.to_rfc3339(),
                message.updated_at.to_rfc3339(),
            ])
            .map_err(failed)?;
    }
    let bytes = writer.into_inner().map_err(|_| Problem::internal())?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"messages.csv\"",
            ),
        ],
        bytes,
    )
        .into_response())
}
