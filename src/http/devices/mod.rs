//! Satellite devices: queueing messages to a modem
//! (`POST /v1/devices/{imei}/messages`), reading devices and their messages,
//! assigning one to a tenant (`PUT /v1/devices/{imei}`, platform admins),
//! and the provider's webhook for messages from one ([`mo`]).
//!
//! A tenant key sends to and reads only the devices assigned to its tenant;
//! any other device, assigned elsewhere or to nobody, is answered as one
//! that does not exist ([`super::tenancy`]). Platform keys reach every
//! device, also those never assigned (whose messages are still recorded).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use taskledger_events::device::{AssignDevice, DeviceCommand, Devices, Imei, QueueDeviceMessage};
use taskledger_projections::devices::query::{self as reads, MessageFilter};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Admin, Authorized, ReadDevices, WriteDevices};
use super::paging::{cut_page, page_size, Keyset};
use super::problem::{path_extractor, ApiJson, ApiQuery, Problem};
use super::responses::{
    Authenticated, JsonBody, Malformed, MalformedImeiOrBody, PlatformOnly, UnassignedDevice,
};
use super::tenancy::{self, listing_tenants, PlatformAuthorized};
use super::{execute_as, AppState};
use crate::adapters::rockblock::MoVerifier;

pub mod mo;
pub mod views;

use self::views::csv_messages;
pub use self::views::{
    DeviceListQuery, DeviceMessagePage, DeviceMessageView, DevicePage, DeviceView, MessageListQuery,
};

/// How mobile-originated webhooks are checked.
#[derive(Debug, Clone, Default)]
pub enum MoPolicy {
    /// No `[rockblock]` configuration: the webhook answers 503.
    #[default]
    NotConfigured,
    /// Every webhook's JWT is verified with this key.
    Verify(Arc<MoVerifier>),
    /// `verify_mo_jwt = false`: webhooks are accepted unsigned.
    Unverified,
}

/// Devices or messages per page when `limit` is not given.
const DEFAULT_PAGE: u32 = 100;
/// The most devices or messages one page holds.
const MAX_PAGE: u32 = 1_000;

/// A message for a device: text or base64 (exactly one), at most 270 bytes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    /// The payload as UTF-8 text.
    pub text: Option<String>,
    /// Or the payload as standard base64.
    pub base64: Option<String>,
    /// Ask the provider to drop the device's queued messages first.
    #[serde(default)]
    pub flush: bool,
}

/// A queued message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueuedMessage {
    /// The message's id.
    pub message_id: Uuid,
    /// The device.
    pub imei: String,
    /// `queued`: the gateway sends it.
    pub status: &'static str,
    /// The device stream's version after queueing.
    pub stream_version: u64,
    /// The global position of the queueing event.
    pub position: u64,
}

/// A device's assignment to a tenant.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignDeviceRequest {
    /// The tenant the device belongs to from now on.
    #[schema(example = "acme")]
    pub tenant: String,
}

/// A device's assignment, as recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceAssignment {
    /// The device.
    pub imei: String,
    /// Its tenant.
    pub tenant: String,
    /// The device stream's version after the assignment.
    pub stream_version: u64,
    /// The global position of the device's latest event.
    pub position: u64,
}

/// 404: no message went to or came from device `imei` yet — or, for a
/// tenant key, it is not its tenant's.
fn no_such_device(imei: &Imei) -> Problem {
    Problem::not_found(format!(
        "no message to or from device {} yet",
        imei.as_str()
    ))
}

fn imei_of(text: &str) -> Result<Imei, Problem> {
    Imei::new(text).map_err(Problem::bad_request)
}

/// A device's IMEI in the path (`{imei}`): 400 unless it is one.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ImeiPath {
    /// The modem's IMEI: 15 digits
    #[param(value_type = String, pattern = "^[0-9]{15}$")]
    pub imei: Imei,
}

path_extractor!(ImeiPath, "imei", |imei| Ok(Self {
    imei: imei_of(imei)?,
}));

/// Queues a message for a device; the device gateway sends it.
#[utoipa::path(
    post, path = "/v1/devices/{imei}/messages", tag = "devices",
    params(ImeiPath),
    request_body = SendMessageRequest,
    responses(
        (status = 202, description = "Queued", body = QueuedMessage),
        Authenticated, JsonBody, MalformedImeiOrBody, UnassignedDevice,
        (status = 409, description = "The device's messages kept changing; retry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body of the wrong shape, neither or both of text and base64, bad base64, or a payload of 0 or over 270 bytes", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["devices:write"]))
)]
pub async fn send_message(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteDevices>,
    ImeiPath { imei }: ImeiPath,
    ApiJson(request): ApiJson<SendMessageRequest>,
) -> Result<Response, Problem> {
    tenancy::check_device(&state, &caller, &imei, || no_such_device(&imei)).await?;
    let payload = match (request.text, request.base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|error| {
                Problem::unprocessable(format!("base64 is not valid base64: {error}"))
            })?,
        _ => {
            return Err(Problem::unprocessable(
                "give exactly one of text and base64",
            ))
        }
    };
    let message_id = Uuid::now_v7();
    let command = DeviceCommand::Queue(QueueDeviceMessage {
        message_id,
        payload,
        flush: request.flush,
        queued_at: Utc::now().trunc_subsecs(6),
        queued_by: Some(caller.key_id.to_string()),
    });
    let executed =
        execute_as::<Devices>(&state, &caller, &imei.stream_id(), (imei.clone(), command)).await?;
    let body = QueuedMessage {
        message_id,
        imei: imei.as_str().to_owned(),
        status: "queued",
        stream_version: executed.stream_version,
        position: executed.position,
    };
    Ok((StatusCode::ACCEPTED, ApiJson(body)).into_response())
}

/// Assigns a device to a tenant (platform admins only): from now on that
/// tenant's keys send to it and read it, and no other tenant's do.
/// Assigning it to the tenant it has changes nothing.
#[utoipa::path(
    put, path = "/v1/devices/{imei}", tag = "devices",
    params(ImeiPath),
    request_body = AssignDeviceRequest,
    responses(
        (status = 200, description = "Assigned (or it already was)", body = DeviceAssignment),
        PlatformOnly, JsonBody, MalformedImeiOrBody,
        (status = 409, description = "The device's events kept changing; retry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body of the wrong shape, or a tenant that is not a tenant name", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn assign_device(
    State(state): State<AppState>,
    PlatformAuthorized { caller, .. }: PlatformAuthorized<Admin>,
    ImeiPath { imei }: ImeiPath,
    ApiJson(request): ApiJson<AssignDeviceRequest>,
) -> Result<ApiJson<DeviceAssignment>, Problem> {
    let tenant: taskledger_events::tenant::TenantName = request
        .tenant
        .parse()
        .map_err(|error| Problem::unprocessable(format!("tenant: {error}")))?;
    let command = DeviceCommand::Assign(AssignDevice {
        tenant: tenant.clone(),
        assigned_at: Utc::now().trunc_subsecs(6),
        assigned_by: Some(caller.key_id.to_string()),
    });
    let executed =
        execute_as::<Devices>(&state, &caller, &imei.stream_id(), (imei.clone(), command)).await?;
    Ok(ApiJson(DeviceAssignment {
        imei: imei.as_str().to_owned(),
        tenant: tenant.as_str().to_owned(),
        stream_version: executed.stream_version,
        position: executed.position,
    }))
}

/// Lists devices by IMEI: a tenant key's own tenant's only, every device
/// for a platform key (`tenant` filters).
#[utoipa::path(
    get, path = "/v1/devices", tag = "devices",
    params(DeviceListQuery),
    responses(
        (status = 200, description = "A page of devices", body = DevicePage),
        Authenticated, Malformed,
    ),
    security(("api_key" = ["devices:read"]))
)]
pub async fn list_devices(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadDevices>,
    ApiQuery(query): ApiQuery<DeviceListQuery>,
) -> Result<ApiJson<DevicePage>, Problem> {
    let limit = page_size(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let after = query.cursor.unwrap_or_default();
    let tenants = listing_tenants(&caller, query.tenant.as_deref());
    let client = super::connection(&state).await?;
    let rows = reads::devices(&client, &tenants, &after, i64::from(limit) + 1)
        .await
        .map_err(super::database_error("reading devices"))?;
    let items = rows.into_iter().map(DeviceView::from).collect();
    let (items, next_cursor) = cut_page(items, limit as usize, |device: &DeviceView| {
        device.imei.clone()
    });
    Ok(ApiJson(DevicePage { items, next_cursor }))
}

/// One device.
#[utoipa::path(
    get, path = "/v1/devices/{imei}", tag = "devices",
    params(ImeiPath),
    responses(
        (status = 200, description = "The device", body = DeviceView),
        Authenticated, Malformed,
        (status = 404, description = "No message to or from it yet (for a tenant key: or it is not assigned to its tenant)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["devices:read"]))
)]
pub async fn get_device(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadDevices>,
    ImeiPath { imei }: ImeiPath,
) -> Result<ApiJson<DeviceView>, Problem> {
    tenancy::check_device(&state, &caller, &imei, || no_such_device(&imei)).await?;
    let client = super::connection(&state).await?;
    let row = reads::device(&client, &imei)
        .await
        .map_err(super::database_error("reading devices"))?
        .ok_or_else(|| no_such_device(&imei))?;
    Ok(ApiJson(DeviceView::from(row)))
}

/// A device's messages, newest first, as JSON pages or (with
/// `Accept: text/csv`) one CSV export.
#[utoipa::path(
    get, path = "/v1/devices/{imei}/messages", tag = "devices",
    params(ImeiPath, MessageListQuery),
    responses(
        (status = 200, description = "A page of messages, or the CSV export", content(
            (DeviceMessagePage = "application/json"),
            (String = "text/csv")
        )),
        Authenticated,
        (status = 400, description = "A malformed IMEI, filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
        UnassignedDevice,
    ),
    security(("api_key" = ["devices:read"]))
)]
pub async fn list_messages(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadDevices>,
    ImeiPath { imei }: ImeiPath,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<MessageListQuery>,
) -> Result<Response, Problem> {
    tenancy::check_device(&state, &caller, &imei, || no_such_device(&imei)).await?;
    if let Some(direction) = &query.direction {
        if !matches!(direction.as_str(), "mt" | "mo") {
            return Err(Problem::bad_request("direction is mt or mo"));
        }
    }
    if let Some(status) = &query.status {
        if !matches!(
            status.as_str(),
            "queued" | "sending" | "sent" | "failed" | "received"
        ) {
            return Err(Problem::bad_request(
                "status is one of queued, sending, sent, failed, received",
            ));
        }
    }
    let csv = super::tasks::wants_csv(&headers);
    let limit = if csv {
        if query.limit == Some(0) {
            return Err(Problem::bad_request("limit must be 1 or more"));
        }
        query.limit.unwrap_or(u32::MAX).min(1_000_000)
    } else {
        page_size(query.limit, DEFAULT_PAGE, MAX_PAGE)?
    };
    let before = query
        .cursor
        .as_deref()
        .map(Keyset::parse)
        .transpose()?
        .map(|Keyset { at, id }| (at, id));
    let filter = MessageFilter {
        direction: query.direction,
        status: query.status,
        before,
    };
    let client = super::connection(&state).await?;
    let rows = reads::messages(&client, &imei, &filter, i64::from(limit) + 1)
        .await
        .map_err(super::database_error("reading devices"))?;
    let items = rows.into_iter().map(DeviceMessageView::from).collect();
    let (items, next_cursor) = cut_page(items, limit as usize, |message: &DeviceMessageView| {
        Keyset {
            at: message.created_at,
            id: message.message_id,
        }
        .to_string()
    });
    if csv {
        return csv_messages(&items);
    }
    Ok(ApiJson(DeviceMessagePage { items, next_cursor }).into_response())
}
