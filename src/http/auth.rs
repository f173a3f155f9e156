//! API key authentication: `Authorization: Bearer <key>` → SHA-256 → an
//! active row in `api_keys` → the key's scopes. Missing or unknown keys are
//! 401, a key without the route's scope 403, both as problem+json.
//!
//! Only hashes are compared (a lookup by the hash's unique index), so the
//! secret is never held longer than the request and never compared byte by
//! byte.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use taskledger_events::apikey::{hash_secret, Scope};
use taskledger_events::postgres::PgEventStore;
use uuid::Uuid;

use super::problem::Problem;

/// The caller, authenticated by an active API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (recorded as the actor of what the caller does).
    pub key_id: Uuid,
    /// The key's scopes.
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// Checks the caller holds `scope` (`admin` holds every scope).
    ///
    /// # Errors
    /// A 403 problem naming the missing scope.
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this API key lacks the scope {scope}; ask an operator for a key with it"
            )))
        }
    }
}

/// Anything that can look a key up (the app state).
pub trait KeyStore {
    /// The store holding the `api_keys` read model.
    fn key_store(&self) -> &PgEventStore;
}

impl<S> FromRequestParts<S> for Caller
where
    S: KeyStore + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            Problem::unauthorized("send an API key as 'Authorization: Bearer <key>'")
        })?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be 'Bearer <key>'")
            })?;
        let client = state.key_store().pool().get().await.map_err(|error| {
            tracing::error!(%error, "no database connection to check an API key");
            Problem::unavailable("the service cannot check API keys right now", 1)
        })?;
        let row = client
            .query_opt(
                "SELECT key_id, array_to_string(scopes, ',') FROM api_keys
                 WHERE key_hash = $1 AND revoked_at IS NULL",
                &[&hash_secret(secret)],
            )
            .await
            .map_err(|error| {
                tracing::error!(%error, "looking up an API key failed");
                Problem::internal()
            })?
            .ok_or_else(|| Problem::unauthorized("this API key is unknown or revoked"))?;
        let scopes: String = row.get(1);
        Ok(Self {
            key_id: row.get(0),
            // Scopes were validated when the key was created.
            scopes: scopes
                .split(',')
                .filter_map(|scope| scope.parse().ok())
                .collect(),
        })
    }
}
