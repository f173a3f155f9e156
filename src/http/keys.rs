//! API key lifecycle over HTTP (scope `admin` on a platform key, checked by
//! [`PlatformAuthorized`] before the body is read: a tenant's admin manages
//! its tenant's work, not who may reach the service): create, list, revoke
//! and rotate keys. Every change is a command on the key's
//! stream, so it is audited and holds on the next request in every process
//! ([`super::auth`] checks keys against the log). A secret is in the answer
//! to its creation or rotation once, and nowhere else; only its SHA-256 is
//! stored.
//!
//! The answers to `POST`s are the key as the command left it (the folded
//! stream). `GET /v1/keys` reads the `api_keys` read model, which may lag the
//! log by a moment: a key created a moment ago may be missing from the list
//! though it already works.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use taskledger_events::apikey::{
    generate_secret, hash_secret, ApiKey, ApiKeyCommand, ApiKeyId, ApiKeys, CreateApiKey,
    RevokeApiKey, RotateApiKey, Scope,
};
use taskledger_events::tenant::{Access, TenantName};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Admin, Caller};
use super::problem::{path_extractor, uuid_segment, ApiJson, OptionalJson, Problem};
use super::responses::{JsonBody, Malformed, NoSuchKey, PlatformOnly};
use super::tenancy::PlatformAuthorized;
use super::{execute_as, AppState};

/// The grace period of a rotation that names none: the old secret stops at
/// once, the safe answer to a leak. Ask for one (`"grace": "1h"`) to roll a
/// new secret out first.
pub const DEFAULT_GRACE: TimeDelta = TimeDelta::zero();

/// A new key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// What the key is for (1 to 100 bytes, no control characters).
    pub name: String,
    /// What it may do: `tasks:write`, `tasks:read`, `devices:write`,
    /// `devices:read`, `audit:read`, `ledger:write`, `webhooks:write`, `webhooks:read`, `admin`.
    pub scopes: Vec<String>,
    /// The one tenant whose work it reaches. Exactly one of `tenant` and
    /// `all_tenants: true`.
    #[schema(value_type = Option<String>, example = "acme")]
    pub tenant: Option<TenantName>,
    /// A platform key: every tenant's work.
    #[serde(default)]
    pub all_tenants: bool,
    /// Stop working after this long: a number and a unit, such as `30d`,
    /// `12h` or `2s`. At most one of `expires_in` and `expires_at`.
    #[schema(example = "30d")]
    pub expires_in: Option<String>,
    /// Stop working at this instant (in the future).
    pub expires_at: Option<DateTime<Utc>>,
    /// At most this many requests per second instead of the service's
    /// default.
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub rate_limit: Option<NonZeroU32>,
}

/// A revocation (the body may be empty).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyRequest {
    /// Why, for the audit trail (at most 500 bytes, no control characters).
    pub reason: Option<String>,
}

/// A rotation (the body may be empty).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// How long the old secret keeps working: `0s` (the default: it stops
    /// at once) up to `7d`, such as `10m` or `1h`.
    #[schema(example = "10m")]
    pub grace: Option<String>,
}

/// An API key, without its secret or hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// Its id.
    pub id: Uuid,
    /// What it is for.
    pub name: String,
    /// The one tenant it reaches; `null` for a platform key.
    pub tenant: Option<String>,
    /// Whether it is a platform key (every tenant).
    pub all_tenants: bool,
    /// What it may do.
    pub scopes: Vec<String>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it (a key id or `cli`).
    pub created_by: Option<String>,
    /// When it stops working, if it ever does.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its own requests-per-second limit.
    pub rate_limit: Option<u32>,
    /// When it was last rotated.
    pub rotated_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key with its new secret, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyWithSecret {
    /// The secret: send it as `Authorization: Bearer <secret>`. It is not
    /// stored and cannot be shown again.
    pub secret: String,
    /// After a rotation, until when the replaced secret still works.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    /// The key.
    #[serde(flatten)]
    pub key: KeyView,
}

/// Every key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyPage {
    /// Every key, oldest first.
    pub items: Vec<KeyView>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

/// A key's id in the path (`{id}`): 400 unless it is a UUID.
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The key's id
    #[param(value_type = Uuid)]
    pub id: ApiKeyId,
}

path_extractor!(KeyPath, "id", |id| Ok(Self {
    id: ApiKeyId(uuid_segment(id, "an API key id")?),
}));

/// Creates a key; its secret is in this answer only.
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The key and its secret, shown this once", body = KeyWithSecret),
        PlatformOnly, JsonBody,
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn create_key(
    State(state): State<AppState>,
    PlatformAuthorized { caller, .. }: PlatformAuthorized<Admin>,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, ApiJson<KeyWithSecret>), Problem> {
    let access = match (request.tenant, request.all_tenants) {
        (Some(tenant), false) => Access::Tenant(tenant),
        (None, true) => Access::AllTenants,
        _ => {
            return Err(Problem::unprocessable(
                "name exactly one of tenant (a tenant's name) and all_tenants: true",
            ))
        }
    };
    let scopes = request
        .scopes
        .iter()
        .map(|scope| scope.parse::<Scope>())
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|error| Problem::unprocessable(error.to_string()))?;
    let created_at = now();
    let expires_at = match (request.expires_in, request.expires_at) {
        (Some(_), Some(_)) => {
            return Err(Problem::unprocessable(
                "name at most one of expires_in and expires_at",
            ))
        }
        (Some(text), None) => {
            let duration = positive_duration("expires_in", &text)?;
            Some(created_at.checked_add_signed(duration).ok_or_else(|| {
                Problem::unprocessable(format!("expires_in {text:?} is too long"))
            })?)
        }
        (None, expires_at) => expires_at,
    };
    let key_id = ApiKeyId(Uuid::new_v4());
    let secret = new_secret(key_id);
    let command = ApiKeyCommand::Create(CreateApiKey {
        key_id,
        name: request.name,
        scopes,
        key_hash: hash_secret(secret.expose_secret()),
        created_at,
        created_by: Some(caller.key_id.to_string()),
        access,
        expires_at,
        rate_limit: request.rate_limit,
    });
    let key = run(&state, &caller, key_id, command).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(KeyWithSecret {
            secret: secret.expose_secret().to_owned(),
            previous_secret_valid_until: None,
            key: KeyView::from_key(&key, created_at),
        }),
    ))
}

/// Every key, oldest first, from the `api_keys` read model (which may lag
/// the log by a moment); never a secret or a hash.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "Every key", body = KeyPage),
        PlatformOnly,
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    _: PlatformAuthorized<Admin>,
) -> Result<ApiJson<KeyPage>, Problem> {
    let unavailable = || Problem::unavailable("the key list cannot be read right now", 1);
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|error| unavailable().because("getting a connection to list keys", error))?;
    let rows = client
        .query(
            "SELECT key_id, name, tenant, scopes, created_at, created_by, expires_at,
                    rate_limit, rotated_at, revoked_at
             FROM api_keys ORDER BY created_at, key_id",
            &[],
        )
        .await
        .map_err(|error| unavailable().because("listing keys", error))?;
    let now = Utc::now();
    let items = rows
        .iter()
        .map(|row| {
            let tenant: Option<String> = row.get(2);
            let expires_at: Option<DateTime<Utc>> = row.get(6);
            let revoked_at: Option<DateTime<Utc>> = row.get(9);
            let rate_limit: Option<i32> = row.get(7);
            KeyView {
                id: row.get(0),
                name: row.get(1),
                all_tenants: tenant.is_none(),
                tenant,
                scopes: row.get(3),
                status: status(revoked_at, expires_at, now),
                created_at: row.get(4),
                created_by: row.get(5),
                expires_at,
                rate_limit: rate_limit.and_then(|limit| u32::try_from(limit).ok()),
                rotated_at: row.get(8),
                revoked_at,
            }
        })
        .collect();
    Ok(ApiJson(KeyPage {
        items,
        next_cursor: None,
    }))
}

/// Revokes a key: requests with any of its secrets are refused from the
/// next one on, in every process.
#[utoipa::path(
    post, path = "/v1/keys/{id}/revoke", tag = "keys",
    params(KeyPath),
    request_body(content = Option<RevokeKeyRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The key, revoked", body = KeyView),
        PlatformOnly, JsonBody, NoSuchKey,
        (status = 409, description = "The key is already revoked", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    PlatformAuthorized { caller, .. }: PlatformAuthorized<Admin>,
    KeyPath { id: key_id }: KeyPath,
    OptionalJson(request): OptionalJson<RevokeKeyRequest>,
) -> Result<ApiJson<KeyView>, Problem> {
    let revoked_at = now();
    let command = ApiKeyCommand::Revoke(RevokeApiKey {
        key_id,
        reason: request.reason,
        revoked_at,
        revoked_by: Some(caller.key_id.to_string()),
    });
    let key = run(&state, &caller, key_id, command).await?;
    Ok(ApiJson(KeyView::from_key(&key, revoked_at)))
}

/// Gives a key a new secret, in this answer only; the old one keeps
/// working for `grace` (default `0s`: it stops at once; at most `7d`). A
/// key has at most two working secrets: a rotation ends the grace of the
/// one before.
#[utoipa::path(
    post, path = "/v1/keys/{id}/rotate", tag = "keys",
    params(KeyPath),
    request_body(content = Option<RotateKeyRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The key and its new secret, shown this once", body = KeyWithSecret),
        PlatformOnly, JsonBody, Malformed, NoSuchKey,
        (status = 409, description = "The key is revoked or expired", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["admin"]))
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    PlatformAuthorized { caller, .. }: PlatformAuthorized<Admin>,
    KeyPath { id: key_id }: KeyPath,
    OptionalJson(request): OptionalJson<RotateKeyRequest>,
) -> Result<ApiJson<KeyWithSecret>, Problem> {
    let grace = match request.grace.as_deref() {
        Some(text) => duration("grace", text)?,
        None => DEFAULT_GRACE,
    };
    let secret = new_secret(key_id);
    let rotated_at = now();
    let command = ApiKeyCommand::Rotate(RotateApiKey {
        key_id,
        key_hash: hash_secret(secret.expose_secret()),
        grace,
        rotated_at,
        rotated_by: Some(caller.key_id.to_string()),
    });
    let key = run(&state, &caller, key_id, command).await?;
    Ok(ApiJson(KeyWithSecret {
        secret: secret.expose_secret().to_owned(),
        previous_secret_valid_until: key.previous_key_hash.as_ref().map(|(_, until)| *until),
        key: KeyView::from_key(&key, rotated_at),
    }))
}

/// A fresh secret for `key_id` from a cryptographically secure generator
/// (the thread's, seeded by the operating system), held where nothing can
/// print it by accident.
pub fn new_secret(key_id: ApiKeyId) -> SecretString {
    let mut random = [0_u8; 32];
    rand::rng().fill(&mut random);
    SecretString::from(generate_secret(key_id, random))
}

impl KeyView {
    /// The key as its events leave it, with its status at `now`.
    fn from_key(key: &ApiKey, now: DateTime<Utc>) -> Self {
        Self {
            id: key.id.0,
            name: key.name.clone(),
            tenant: key.access.tenant().map(|tenant| tenant.as_str().to_owned()),
            all_tenants: key.access.is_platform(),
            scopes: key.scopes.iter().map(ToString::to_string).collect(),
            status: status(key.revoked_at, key.expires_at, now),
            created_at: key.created_at,
            created_by: key.created_by.clone(),
            expires_at: key.expires_at,
            rate_limit: key.rate_limit.map(NonZeroU32::get),
            rotated_at: key.rotated_at,
            revoked_at: key.revoked_at,
        }
    }
}

fn status(
    revoked_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> &'static str {
    match (revoked_at, expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(expires_at)) if expires_at <= now => "expired",
        (None, _) => "active",
    }
}

/// Runs `command` on the key's stream as the caller; the key after it.
async fn run(
    state: &AppState,
    caller: &Caller,
    key_id: ApiKeyId,
    command: ApiKeyCommand,
) -> Result<ApiKey, Problem> {
    let executed = execute_as::<ApiKeys>(state, caller, &key_id.stream_id(), command).await?;
    executed.state.ok_or_else(Problem::internal)
}

/// `field`'s duration (`10m`, `0s`, `7d`); 422 naming the accepted form.
fn duration(field: &str, text: &str) -> Result<TimeDelta, Problem> {
    humantime::parse_duration(text)
        .ok()
        .and_then(|duration| TimeDelta::from_std(duration).ok())
        .ok_or_else(|| {
            Problem::unprocessable(format!(
                "{field} {text:?} is not a duration: use a number and a unit, such as 30d, \
                 12h, 15m or 2s"
            ))
        })
}

/// As [`duration`], and more than zero.
fn positive_duration(field: &str, text: &str) -> Result<TimeDelta, Problem> {
    match duration(field, text)? {
        duration if duration > TimeDelta::zero() => Ok(duration),
        _ => Err(Problem::unprocessable(format!(
            "{field} {text:?} must be longer than zero, such as 30d, 12h, 15m or 2s"
        ))),
    }
}

/// The current instant at the database's precision (microseconds), so what
/// a command answers equals what the read model later shows.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
