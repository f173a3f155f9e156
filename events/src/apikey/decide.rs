//! The API key's rules: which command is allowed in which state, and which
//! events it produces ([`decide`]).

use chrono::{SecondsFormat, TimeDelta};

use super::commands::{
    ApiKeyCommand, CreateApiKey, RevokeApiKey, RotateApiKey, MAX_NAME_BYTES, MAX_REASON_BYTES,
    MAX_ROTATION_GRACE,
};
use super::events::{ApiKeyEvent, ApiKeyRevoked, ApiKeyRotated};
use super::{ApiKey, ApiKeyId, ApiKeyState};
use crate::{check, Refusal};

/// The events `command` produces in `state`, or why it is refused. Pure: the
/// same state and command always give the same answer.
///
/// Checks run in this order and the first refusal is returned: the key
/// exists (or, for [`CreateApiKey`], does not); it is active; the command's
/// own fields are valid.
///
/// Outcomes:
/// - [`CreateApiKey`] → `ApiKeyCreated`; the key is active.
/// - [`RevokeApiKey`] (active) → `ApiKeyRevoked`; the key is revoked for
///   good.
/// - [`RotateApiKey`] (active, not expired at `rotated_at`) →
///   `ApiKeyRotated`; the new secret is current, the replaced one works
///   until `rotated_at + grace`.
///
/// # Errors
/// A [`Refusal`] whose [`kind`](Refusal::kind) is
/// - `NotFound` for a [`RevokeApiKey`] or [`RotateApiKey`] when the state holds no key, or holds
///   a different key than the command names (the caller loaded the wrong
///   stream);
/// - `AlreadyExists` for a [`CreateApiKey`] when the key exists (revoked or
///   not: a key id is never reused);
/// - `InvalidTransition` for a [`RevokeApiKey`] when the key is already
///   revoked, and for a [`RotateApiKey`] when it is revoked or expired;
/// - `Invalid` when a field of [`CreateApiKey`] is malformed: the name is
///   empty, longer than [`MAX_NAME_BYTES`] or has control characters; there
///   are no scopes; the hash is not 64 lowercase hexadecimal digits; it
///   expires no later than it is created; a revocation's reason is longer
///   than [`MAX_REASON_BYTES`] or has control characters; a rotation's hash
///   is malformed or the current one, or its grace is negative or longer
///   than [`MAX_ROTATION_GRACE`].
pub fn decide(state: &ApiKeyState, command: ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, Refusal> {
    let event = match command {
        ApiKeyCommand::Create(create) => create_api_key(state, create)?,
        ApiKeyCommand::Revoke(revoke) => revoke_api_key(existing(state, revoke.key_id)?, revoke)?,
        ApiKeyCommand::Rotate(rotate) => rotate_api_key(existing(state, rotate.key_id)?, rotate)?,
    };
    Ok(vec![event])
}

fn existing(state: &ApiKeyState, key_id: ApiKeyId) -> Result<&ApiKey, Refusal> {
    match state {
        Some(key) if key.id == key_id => Ok(key),
        _ => Err(not_found(key_id)),
    }
}

/// "api key 3f2a1b4c… does not exist".
fn not_found(key_id: ApiKeyId) -> Refusal {
    Refusal::not_found(format!("api key {} does not exist", key_id.short()))
}

fn create_api_key(state: &ApiKeyState, create: CreateApiKey) -> Result<ApiKeyEvent, Refusal> {
    let key_id = create.key_id;
    if state.is_some() {
        return Err(Refusal::already_exists(format!(
            "api key {} already exists",
            key_id.short()
        )));
    }
    check::text("name", &create.name, MAX_NAME_BYTES)?;
    let problem = if create.scopes.is_empty() {
        Some("scopes must name at least one scope".to_owned())
    } else if !check::is_lowercase_sha256(&create.key_hash) {
        Some(
            "key_hash must be 64 lowercase hexadecimal digits (the SHA-256 of the secret)"
                .to_owned(),
        )
    } else if create
        .expires_at
        .is_some_and(|expires_at| expires_at <= create.created_at)
    {
        Some("expires_at must be after created_at".to_owned())
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(Refusal::invalid(problem));
    }
    Ok(ApiKeyEvent::Created(create))
}

fn revoke_api_key(key: &ApiKey, revoke: RevokeApiKey) -> Result<ApiKeyEvent, Refusal> {
    if !key.is_active() {
        return Err(Refusal::invalid_transition(format!(
            "api key {} is already revoked",
            key.id.short()
        )));
    }
    if let Some(reason) = &revoke.reason {
        if reason.len() > MAX_REASON_BYTES {
            return Err(Refusal::invalid(format!(
                "reason is {} bytes long; the limit is {MAX_REASON_BYTES}",
                reason.len()
            )));
        }
        if reason.chars().any(char::is_control) {
            return Err(Refusal::invalid(
                "reason must not contain control characters",
            ));
        }
    }
    Ok(ApiKeyEvent::Revoked(ApiKeyRevoked {
        reason: revoke.reason,
        revoked_at: revoke.revoked_at,
        revoked_by: revoke.revoked_by,
    }))
}

fn rotate_api_key(key: &ApiKey, rotate: RotateApiKey) -> Result<ApiKeyEvent, Refusal> {
    if !key.is_active() {
        return Err(Refusal::invalid_transition(format!(
            "api key {} is revoked; create a new key instead",
            key.id.short()
        )));
    }
    if let Some(expires_at) = key
        .expires_at
        .filter(|expires_at| *expires_at <= rotate.rotated_at)
    {
        return Err(Refusal::invalid_transition(format!(
            "api key {} expired at {}; create a new key instead",
            key.id.short(),
            expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )));
    }
    if !check::is_lowercase_sha256(&rotate.key_hash) {
        return Err(Refusal::invalid(
            "key_hash must be 64 lowercase hexadecimal digits (the SHA-256 of the new secret)",
        ));
    }
    if rotate.key_hash == key.key_hash {
        return Err(Refusal::invalid(
            "key_hash is the current secret's; a rotation needs a new secret",
        ));
    }
    if rotate.grace < TimeDelta::zero() {
        return Err(Refusal::invalid("grace must not be negative"));
    }
    if rotate.grace > MAX_ROTATION_GRACE {
        return Err(Refusal::invalid(format!(
            "grace is {} s; the limit is {} s (7 days)",
            rotate.grace.num_seconds(),
            MAX_ROTATION_GRACE.num_seconds()
        )));
    }
    let previous_valid_until = rotate
        .rotated_at
        .checked_add_signed(rotate.grace)
        .ok_or_else(|| Refusal::invalid("rotated_at plus grace is out of range"))?;
    Ok(ApiKeyEvent::Rotated(ApiKeyRotated {
        key_hash: rotate.key_hash,
        previous_valid_until,
        rotated_at: rotate.rotated_at,
        rotated_by: rotate.rotated_by,
    }))
}
