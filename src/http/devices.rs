//! Satellite devices: queueing messages to a modem
//! (`POST /v1/devices/{imei}/messages`) and the provider's webhook for
//! messages from one (`POST /v1/rockblock/mo`).
//!
//! The webhook does the least it can before answering: parse, verify the
//! provider's RS256 JWT against the body, append `DeviceMessageReceived`
//! (once per `(imei, momsn, transmit_time)`), and answer 200 as soon as the
//! append committed. Everything else happens in projectors.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use taskledger_events::device::{
    DeviceCommand, DomainErrorKind, Imei, QueueDeviceMessage, ReceiveDeviceMessage,
};
use taskledger_events::Metadata;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Authorized, WriteDevices};
use super::problem::{ApiJson, Problem};
use super::AppState;
use crate::commands::{execute, CommandError, Devices};
use crate::rockblock::{self, MoError, MoVerifier};

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

fn imei_of(text: &str) -> Result<Imei, Problem> {
    Imei::new(text).map_err(Problem::bad_request)
}

/// Queues a message for a device; the device gateway sends it.
#[utoipa::path(
    post,
    path = "/v1/devices/{imei}/messages",
    tag = "devices",
    params(("imei" = String, Path, description = "The modem's IMEI: 15 digits")),
    request_body = SendMessageRequest,
    responses(
        (status = 202, description = "Queued", body = QueuedMessage),
        (status = 400, description = "A malformed IMEI or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks devices:write", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Neither or both of text and base64, bad base64, or a payload of 0 or over 270 bytes", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["devices:write"]))
)]
pub async fn send_message(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteDevices>,
    Path(imei): Path<String>,
    ApiJson(request): ApiJson<SendMessageRequest>,
) -> Result<Response, Problem> {
    let imei = imei_of(&imei)?;
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
    let metadata = Metadata {
        actor: Some(caller.key_id.to_string()),
        ..Metadata::default()
    };
    let executed = execute::<Devices>(
        &state.store,
        &imei.stream_id(),
        (imei.clone(), command),
        Uuid::new_v4(),
        metadata,
    )
    .await
    .map_err(command_problem)?;
    let body = QueuedMessage {
        message_id,
        imei: imei.as_str().to_owned(),
        status: "queued",
        stream_version: executed.stream_version,
        position: executed.position,
    };
    Ok((StatusCode::ACCEPTED, ApiJson(body)).into_response())
}

fn command_problem(error: CommandError<taskledger_events::device::DomainError>) -> Problem {
    match error {
        CommandError::Rejected(error) => match error.kind() {
            DomainErrorKind::NotFound => Problem::not_found(error.message()),
            DomainErrorKind::AlreadyExists | DomainErrorKind::InvalidTransition => {
                Problem::conflict(error.message())
            }
            DomainErrorKind::Invalid => Problem::unprocessable(error.message()),
        },
        error @ CommandError::Conflict { .. } => Problem::conflict(error.to_string()),
        error => {
            tracing::error!(%error, "a device command failed");
            Problem::unavailable("the event store is unavailable right now; retry", 1)
        }
    }
}

/// The provider's webhook for a message a device sent: its form-encoded
/// body (or the JSON variant) with an RS256 JWT over the same fields.
#[utoipa::path(
    post,
    path = "/v1/rockblock/mo",
    tag = "devices",
    request_body(content = String, description = "imei, serial, momsn, transmit_time, iridium_latitude, iridium_longitude, iridium_cep, data (hex), JWT", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Recorded (or already recorded)", content_type = "text/plain"),
        (status = 400, description = "A malformed webhook: missing field, bad hex, bad IMEI, payload too long", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The JWT is missing, invalid, or disagrees with the body", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither form-encoded nor JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "RockBLOCK is not configured, or the event store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rockblock_mo(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let parsed = match content_type.as_str() {
        "application/x-www-form-urlencoded" => rockblock::parse_mo_form(&body),
        "application/json" => rockblock::parse_mo_json(&body),
        _ => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the webhook form-encoded or as JSON",
            ))
        }
    }
    .map_err(|error| mo_problem(&error))?;
    let message = match &state.mo {
        MoPolicy::NotConfigured => {
            return Err(Problem::unavailable(
                "RockBLOCK is not configured on this server ([rockblock] in TASKLEDGER_CONFIG)",
                60,
            ))
        }
        MoPolicy::Verify(verifier) => verifier
            .verify_webhook(parsed)
            .map_err(|error| mo_problem(&error))?,
        MoPolicy::Unverified => parsed.0,
    };
    let imei = imei_of(&message.imei)?;
    // The same delivery always makes the same command and event ids, so a
    // webhook retried while the first is being stored is recognised too.
    let command_id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!(
            "rockblock-mo:{}:{}:{}",
            imei.as_str(),
            message.momsn,
            message.transmit_time
        )
        .as_bytes(),
    );
    let command = DeviceCommand::Receive(ReceiveDeviceMessage {
        momsn: message.momsn,
        transmit_time: message.transmit_time,
        payload: message.data,
        serial: message.serial,
        latitude: message.iridium_latitude,
        longitude: message.iridium_longitude,
        cep: message.iridium_cep,
        received_at: Utc::now().trunc_subsecs(6),
    });
    let metadata = Metadata {
        actor: Some("rockblock".into()),
        ..Metadata::default()
    };
    match execute::<Devices>(
        &state.store,
        &imei.stream_id(),
        (imei.clone(), command),
        command_id,
        metadata,
    )
    .await
    {
        Ok(_) => Ok((StatusCode::OK, "OK").into_response()),
        // A concurrent copy of this delivery stored the same event first.
        Err(CommandError::DuplicateEvent(_)) => Ok((StatusCode::OK, "OK").into_response()),
        Err(CommandError::Rejected(error)) => Err(Problem::bad_request(error.message())),
        Err(error) => Err(command_problem(error)),
    }
}

fn mo_problem(error: &MoError) -> Problem {
    match error {
        MoError::MissingJwt
        | MoError::JwtAlgorithm(_)
        | MoError::BadJwt(_)
        | MoError::JwtMismatch(_) => Problem::unauthorized(error.to_string()),
        _ => Problem::bad_request(error.to_string()),
    }
}
