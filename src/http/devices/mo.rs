//! `POST /v1/rockblock/mo`: the provider's webhook for a message a device
//! sent. It does the least it can before answering: parse, verify the
//! provider's RS256 JWT against the body, append `DeviceMessageReceived`
//! (once per `(imei, momsn, transmit_time)`), and answer 200 as soon as the
//! append committed. Everything else happens in projectors.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{SubsecRound, Utc};
use taskledger_events::device::{self, DeviceCommand, Devices, ReceiveDeviceMessage};
use taskledger_events::{Aggregate, AppendError, EventStore, ExpectedVersion, Metadata};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{imei_of, MoPolicy};
use crate::adapters::rockblock::{self, MoError};
use crate::http::problem::{ApiBytes, Problem};
use crate::http::AppState;

// The webhook's fields as `rockblock::parse_mo_form` and `parse_mo_json`
// read them, for the OpenAPI document only: the body is parsed by hand, so
// that an empty or repeated field is handled as the provider means it.
/// An MO webhook: the message a device sent, as the provider delivers it.
/// Other fields (such as `device_type`) are ignored; an empty one counts as
/// absent.
#[derive(ToSchema)]
#[allow(dead_code)]
struct MoWebhook {
    /// The sending device's IMEI.
    #[schema(pattern = "^[0-9]{15}$")]
    imei: String,
    /// The device's RockBLOCK serial number.
    #[schema(required = false)]
    serial: u64,
    /// The device's MO message sequence number.
    momsn: u64,
    /// When the message was sent, in the provider's format (UTC,
    /// `YY-MM-DD HH:MM:SS`); 1 to 64 characters, kept as given.
    #[schema(min_length = 1, max_length = 64, example = "26-01-31 12:00:00")]
    transmit_time: String,
    /// Iridium's estimate of the device's latitude, in degrees.
    #[schema(required = false, minimum = -90, maximum = 90)]
    iridium_latitude: f64,
    /// Iridium's estimate of the device's longitude, in degrees.
    #[schema(required = false, minimum = -180, maximum = 180)]
    iridium_longitude: f64,
    /// The radius of that estimate, in km.
    #[schema(required = false)]
    iridium_cep: f64,
    /// The payload, hex (at most 340 bytes); empty or absent when none.
    #[schema(required = false, pattern = "^([0-9a-fA-F]{2}){0,340}$")]
    data: String,
    /// The provider's RS256 JWT over the same fields (required unless the
    /// server is configured with `verify_mo_jwt = false`).
    #[schema(required = false, rename = "JWT")]
    jwt: String,
}

/// The provider's webhook for a message a device sent: its form-encoded
/// body (or the JSON variant) with an RS256 JWT over the same fields.
#[utoipa::path(
    post, path = "/v1/rockblock/mo", tag = "devices",
    request_body(description = "The webhook's fields, form-encoded as the provider sends them, or as a JSON object (numbers as JSON numbers or strings)",
        content((MoWebhook = "application/x-www-form-urlencoded"), (MoWebhook = "application/json"))),
    responses(
        (status = 200, description = "Recorded (or already recorded)", body = String, content_type = "text/plain"),
        (status = 400, description = "A malformed webhook: missing field, bad hex, bad IMEI, payload too long", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The JWT is missing, invalid, or disagrees with the body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the 256 KiB any route accepts", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither form-encoded nor JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "RockBLOCK is not configured on this server (`[rockblock]`), or the event store is unavailable; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn rockblock_mo(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
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
    let command = DeviceCommand::Receive(ReceiveDeviceMessage {
        momsn: message.momsn,
        transmit_time: message.transmit_time.clone(),
        payload: message.data,
        serial: message.serial,
        latitude: message.iridium_latitude,
        longitude: message.iridium_longitude,
        cep: message.iridium_cep,
        received_at: Utc::now().trunc_subsecs(6),
    });
    // Receiving depends on the device's state only for deduplication, and
    // the event id does that here: the same delivery always gets the same
    // id, and the store answers a repeated id at the same stream with the
    // original result. So the append needs neither the device's stream nor
    // an expected version, and concurrent webhooks of one device never
    // conflict.
    let event = device::decide(&imei, &device::DeviceState::default(), command)
        .map_err(|error| Problem::bad_request(error.message()))?
        .pop()
        .ok_or_else(Problem::internal)?;
    let event_id = Uuid::new_v5(
        &MO_NAMESPACE,
        format!(
            "{}:{}:{}",
            imei.as_str(),
            message.momsn,
            message.transmit_time
        )
        .as_bytes(),
    );
    let metadata = Metadata {
        actor: Some("rockblock".into()),
        command_id: Some(event_id),
        ..Metadata::default()
    };
    // The same metrics as a command through `commands::execute`.
    let appended = crate::metrics::timed_append(state.store.append(
        &imei.stream_id(),
        ExpectedVersion::Any,
        vec![event.to_new_event(event_id, metadata)],
    ))
    .await;
    let outcome = match &appended {
        Ok(_) | Err(AppendError::DuplicateEventId { .. }) => crate::metrics::CommandOutcome::Ok,
        Err(_) => crate::metrics::CommandOutcome::Error,
    };
    crate::metrics::record_command(<Devices as Aggregate>::NAME, "Receive", outcome);
    match appended {
        Ok(_) => Ok((StatusCode::OK, "OK").into_response()),
        Err(AppendError::DuplicateEventId { .. }) => Ok((StatusCode::OK, "OK").into_response()),
        Err(error) => Err(Problem::unavailable(
            "the message could not be stored right now; the provider retries",
            1,
        )
        .because("recording an MO message", error)),
    }
}

/// The namespace of MO event ids (fixed: changing it would make redelivered
/// webhooks look new).
const MO_NAMESPACE: Uuid = Uuid::from_u128(0x0b3c_51e2_7d4a_4f0e_9a61_5c2d_8e7f_1a90);

fn mo_problem(error: &MoError) -> Problem {
    match error {
        MoError::MissingJwt
        | MoError::JwtAlgorithm(_)
        | MoError::BadJwt(_)
        | MoError::JwtMismatch(_) => Problem::unauthorized(error.to_string()),
        _ => Problem::bad_request(error.to_string()),
    }
}
