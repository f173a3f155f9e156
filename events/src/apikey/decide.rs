//! The API key's rules: which command is allowed in which state, and which
//! events it produces ([`decide`]).

use super::commands::{ApiKeyCommand, CreateApiKey, RevokeApiKey, MAX_NAME_BYTES};
use super::events::{ApiKeyEvent, ApiKeyRevoked};
use super::{ApiKey, ApiKeyId, ApiKeyState};
use crate::Refusal;

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
///
/// # Errors
/// A [`Refusal`] whose [`kind`](Refusal::kind) is
/// - `NotFound` for a [`RevokeApiKey`] when the state holds no key, or holds
///   a different key than the command names (the caller loaded the wrong
///   stream);
/// - `AlreadyExists` for a [`CreateApiKey`] when the key exists (revoked or
///   not: a key id is never reused);
/// - `InvalidTransition` for a [`RevokeApiKey`] when the key is already
///   revoked;
/// - `Invalid` when a field of [`CreateApiKey`] is malformed: the name is
///   empty, longer than [`MAX_NAME_BYTES`] or has control characters; there
///   are no scopes; the hash is not 64 lowercase hexadecimal digits; it
///   expires no later than it is created.
pub fn decide(state: &ApiKeyState, command: ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, Refusal> {
    let event = match command {
        ApiKeyCommand::Create(create) => create_api_key(state, create)?,
        ApiKeyCommand::Revoke(revoke) => revoke_api_key(existing(state, revoke.key_id)?, revoke)?,
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
    let name = create.name.as_str();
    let problem = if name.is_empty() {
        Some("name must not be empty".to_owned())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "name is {} bytes long; the limit is {MAX_NAME_BYTES}",
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        Some("name must not contain control characters".to_owned())
    } else if create.scopes.is_empty() {
        Some("scopes must name at least one scope".to_owned())
    } else if !is_lowercase_sha256(&create.key_hash) {
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
    Ok(ApiKeyEvent::Revoked(ApiKeyRevoked {
        reason: revoke.reason,
        revoked_at: revoke.revoked_at,
        revoked_by: revoke.revoked_by,
    }))
}

fn is_lowercase_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}
