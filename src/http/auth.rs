//! API key authentication: `Authorization: Bearer <key>` → SHA-256 → an
//! active row in `api_keys` → the key's scopes and tenant. Missing, unknown,
//! revoked or expired keys are 401, a key without the route's scope 403,
//! both as problem+json.
//!
//! Only hashes are compared (a lookup by the hash's unique index), so the
//! secret is never held longer than the request and never compared byte by
//! byte.

use std::marker::PhantomData;
use std::num::NonZeroU32;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, SecondsFormat, Utc};
use taskledger_events::apikey::{hash_secret, Scope};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::tenant::Access;
use taskledger_events::Metadata;
use uuid::Uuid;

use super::limits::Limited;
use super::problem::Problem;

/// The caller, authenticated by an active, unexpired API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (recorded as the actor of what the caller does).
    pub key_id: Uuid,
    /// The key's scopes.
    pub scopes: Vec<Scope>,
    /// Whose work the key reaches: one tenant's, or all.
    pub access: Access,
    /// The key's own requests-per-second limit, if it has one.
    pub rate_limit: Option<NonZeroU32>,
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

impl Caller {
    /// The metadata of a command the caller gives: the key as its actor.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            actor: Some(self.key_id.to_string()),
            ..Metadata::default()
        }
    }

    /// Checks the caller holds at least one of `scopes` (`admin` holds
    /// every scope).
    ///
    /// # Errors
    /// A 403 problem naming the scopes that would do.
    pub fn require_any(&self, scopes: &[Scope]) -> Result<(), Problem> {
        if scopes.iter().any(|scope| self.require(*scope).is_ok()) {
            Ok(())
        } else {
            let names: Vec<String> = scopes.iter().map(ToString::to_string).collect();
            Err(Problem::forbidden(format!(
                "this API key lacks the scopes {}; one of them is needed",
                names.join(" and ")
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
        // The scheme name is case-insensitive (RFC 9110, section 11.1).
        let secret = header
            .to_str()
            .ok()
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim())
            .filter(|secret| !secret.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be 'Bearer <key>'")
            })?;
        let client = state.key_store().pool().get().await.map_err(|error| {
            Problem::unavailable("the service cannot check API keys right now", 1)
                .because("getting a database connection to check an API key", error)
        })?;
        let lookup_failed = |error: tokio_postgres::Error| {
            Problem::unavailable("the service cannot check API keys right now", 1)
                .because("looking up an API key", error)
        };
        // Prepared once per connection: one round trip per lookup.
        let statement = client
            .prepare_cached(
                "SELECT key_id, array_to_string(scopes, ','), tenant, expires_at, rate_limit
                 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .await
            .map_err(lookup_failed)?;
        let row = client
            .query_opt(&statement, &[&hash_secret(secret)])
            .await
            .map_err(lookup_failed)?
            .ok_or_else(|| Problem::unauthorized("this API key is unknown or revoked"))?;
        let expires_at: Option<DateTime<Utc>> = row.get(3);
        if let Some(expires_at) = expires_at.filter(|expires_at| *expires_at <= Utc::now()) {
            return Err(Problem::unauthorized(format!(
                "this API key expired at {}; ask an operator for a new one",
                expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            )));
        }
        let scopes: String = row.get(1);
        // Scopes, tenant names and limits were validated when the key was
        // created.
        let tenant: Option<String> = row.get(2);
        let access = match tenant {
            Some(tenant) => Access::Tenant(tenant.parse().map_err(|error| {
                Problem::unavailable("the service cannot check API keys right now", 1)
                    .because("reading an API key's tenant", error)
            })?),
            None => Access::AllTenants,
        };
        let rate_limit: Option<i32> = row.get(4);
        Ok(Self {
            key_id: row.get(0),
            scopes: scopes
                .split(',')
                .filter_map(|scope| scope.parse().ok())
                .collect(),
            access,
            rate_limit: rate_limit
                .and_then(|limit| u32::try_from(limit).ok())
                .and_then(NonZeroU32::new),
        })
    }
}

/// The scopes a route needs: one of them suffices.
pub trait RequiredScopes {
    /// The scopes, any one of which admits the caller.
    const SCOPES: &'static [Scope];
}

/// Declares route markers and the scopes each admits: `Marker => [Scope, …]`.
macro_rules! required_scopes {
    ($($(#[$doc:meta])* $marker:ident => [$($scope:ident),+];)+) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $marker {}
            impl RequiredScopes for $marker {
                const SCOPES: &'static [Scope] = &[$(Scope::$scope),+];
            }
        )+
    };
}

required_scopes! {
    /// Routes that read tasks.
    ReadTasks => [TasksRead];
    /// Routes that submit or cancel tasks.
    WriteTasks => [TasksWrite];
    /// The list of task kinds: any frontend key.
    ReadKinds => [TasksRead, TasksWrite];
    /// Routes that read a task's history: frontends and auditors.
    ReadHistory => [TasksRead, AuditRead];
    /// Routes that read the log itself: auditors and ledger consumers.
    ReadLog => [AuditRead];
    /// Routes that confirm ledger entries.
    WriteLedger => [LedgerWrite];
    /// Routes that send messages to devices.
    WriteDevices => [DevicesWrite];
    /// Routes that read devices and their messages.
    ReadDevices => [DevicesRead];
    /// Routes that read a ledger's status: auditors and the ledger's consumer.
    ReadLedger => [AuditRead, LedgerWrite];
    /// Operations routes.
    Admin => [Admin];
}

/// A caller holding one of `R`'s scopes, within its key's request rate. As
/// an extractor it runs before the body is read, so a caller without the
/// scope gets 403, and one over its rate 429, whatever they sent.
#[derive(Debug)]
pub struct Authorized<R> {
    /// Who is calling.
    pub caller: Caller,
    scopes: PhantomData<R>,
}

impl<S, R> FromRequestParts<S> for Authorized<R>
where
    S: KeyStore + Limited + Send + Sync,
    R: RequiredScopes,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_any(R::SCOPES)?;
        state.limits().check_request(&caller)?;
        Ok(Self {
            caller,
            scopes: PhantomData,
        })
    }
}

/// Whether the key `key_id` may still be used: known, not revoked and not
/// expired (what an open event stream checks while it runs).
///
/// # Errors
/// 503 when the keys cannot be read.
pub async fn key_is_usable(store: &PgEventStore, key_id: Uuid) -> Result<bool, Problem> {
    let unavailable = || Problem::unavailable("the service cannot check API keys right now", 1);
    let client = store.pool().get().await.map_err(|error| {
        unavailable().because("getting a database connection to check an API key", error)
    })?;
    let failed = |error: tokio_postgres::Error| unavailable().because("checking an API key", error);
    let statement = client
        .prepare_cached(
            "SELECT 1 FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())",
        )
        .await
        .map_err(failed)?;
    let row = client
        .query_opt(&statement, &[&key_id])
        .await
        .map_err(failed)?;
    Ok(row.is_some())
}
