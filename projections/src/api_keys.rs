//! The `api_keys` projector: one row per API key in `api_keys` (name, scopes,
//! the SHA-256 of its secret, its tenant — NULL for a platform key —, expiry,
//! rate limit, creation, the last rotation and revocation). A read model:
//! `GET /v1/keys` and `keys list` show it; the HTTP layer decides whether a
//! key works from the key's stream in the log, and only looks a secret of
//! the format without a key id up here (by `key_hash` or
//! `previous_key_hash`) to learn which stream that is.
//!
//! Deterministic: every value comes from the events, so a rebuild gives the
//! same rows. Like the fold ([`taskledger_events::apikey::apply`]), the first
//! revocation of a key is the one kept.

use taskledger_events::apikey::{ApiKeyEvent, ApiKeyId};
use taskledger_events::tenant::TenantName;
use taskledger_events::RecordedEvent;
use tokio_postgres::types::ToSql;

use crate::declare::{each_event_projector, one_row_changed};
use crate::runtime::{Batch, ProjectorError};

/// Projects API key events into `api_keys`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiKeysProjector;

const CREATED: &str = "INSERT INTO api_keys (key_id, name, scopes, key_hash, created_at,
        created_by, stream_version, last_position, tenant, expires_at, rate_limit)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
// Every right-hand side sees the row as it was, so a key revoked before keeps
// its first revocation (the fold ignores a second one too).
const REVOKED: &str = "UPDATE api_keys SET
        revoked_at = COALESCE(revoked_at, $2),
        revoked_reason = CASE WHEN revoked_at IS NULL THEN $3 ELSE revoked_reason END,
        revoked_by = CASE WHEN revoked_at IS NULL THEN $4 ELSE revoked_by END,
        stream_version = $5, last_position = $6
     WHERE key_id = $1";
// The replaced hash moves to previous_key_hash (right-hand sides see the row
// as it was). A revoked key's rotation is ignored, as the fold ignores it.
const ROTATED: &str = "UPDATE api_keys SET
        previous_key_hash = CASE WHEN revoked_at IS NULL THEN key_hash ELSE previous_key_hash END,
        key_hash = CASE WHEN revoked_at IS NULL THEN $2 ELSE key_hash END,
        previous_valid_until = CASE WHEN revoked_at IS NULL THEN $3 ELSE previous_valid_until END,
        rotated_at = CASE WHEN revoked_at IS NULL THEN $4 ELSE rotated_at END,
        stream_version = $5, last_position = $6
     WHERE key_id = $1";

each_event_projector! {
    ApiKeysProjector: (ApiKeyId::from_stream_id, apply_one),
    name: "api_keys",
    /// 2: a key's tenant (NULL for a platform key), expiry and rate
    /// limit. 3: rotation (the replaced hash and until when it works).
    version: 3,
    tables: ["api_keys"],
    schema: concat!(
        include_str!("../../migrations/0004_api_keys.sql"),
        include_str!("../../migrations/0012_api_key_access.sql"),
        include_str!("../../migrations/0014_api_key_rotation.sql")
    ),
}

async fn apply_one(
    tx: &Batch<'_>,
    ApiKeyId(key_id): ApiKeyId,
    recorded: &RecordedEvent,
    event: &ApiKeyEvent,
) -> Result<(), ProjectorError> {
    let version = i64::try_from(recorded.version).unwrap_or(i64::MAX);
    let position = i64::try_from(recorded.global_position).unwrap_or(i64::MAX);
    let changed = match event {
        ApiKeyEvent::Created(created) => {
            let scopes: Vec<&str> = created.scopes.iter().map(|scope| scope.as_str()).collect();
            let tenant = created.access.tenant().map(TenantName::as_str);
            let rate_limit = created
                .rate_limit
                .map(|limit| i32::try_from(limit.get()).unwrap_or(i32::MAX));
            let values: [&(dyn ToSql + Sync); 11] = [
                &key_id,
                &created.name,
                &scopes,
                &created.key_hash,
                &created.created_at,
                &created.created_by,
                &version,
                &position,
                &tenant,
                &created.expires_at,
                &rate_limit,
            ];
            tx.execute(CREATED, &values).await?
        }
        ApiKeyEvent::Revoked(revoked) => {
            tx.execute(
                REVOKED,
                &[
                    &key_id,
                    &revoked.revoked_at,
                    &revoked.reason,
                    &revoked.revoked_by,
                    &version,
                    &position,
                ],
            )
            .await?
        }
        ApiKeyEvent::Rotated(rotated) => {
            tx.execute(
                ROTATED,
                &[
                    &key_id,
                    &rotated.key_hash,
                    &rotated.previous_valid_until,
                    &rotated.rotated_at,
                    &version,
                    &position,
                ],
            )
            .await?
        }
    };
    // A revocation or rotation of a key the projection does not have.
    one_row_changed(changed, recorded, || {
        format!(
            "no api key row for {key_id} to apply {}",
            event.event_type()
        )
    })
}
