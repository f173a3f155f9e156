//! API key authentication: `Authorization: Bearer <key>` → the key's
//! stream in the log → its scopes and tenant. Missing, unknown, revoked or
//! expired keys (and a secret replaced by a rotation, once its grace ended)
//! are 401, a key without the route's scope 403, both as problem+json.
//!
//! **The log decides, on every request.** A secret names its key
//! (`tlk_<key id>_<random>`, [`key_id_of_secret`]); the key's stream
//! `apikey-{id}` (a handful of events, read by the stream index in one
//! prepared query; past the version this process already folded, kept in
//! [`KeyCache`], so usually none) is folded and the presented secret's SHA-256 is compared
//! with the hashes it holds ([`ApiKey::secret_at`]), then the key must be
//! usable now ([`ApiKey::is_usable_at`]). An append returns only after it
//! committed, and a later read in any process sees every committed event of
//! the stream, so a key works on the first request after `keys create` (or
//! `POST /v1/keys`) returned, and is refused on the first request after a
//! revocation returned — in every process, whatever the `api_keys`
//! projection's lag, pause, rebuild or reset. A secret of the older format
//! (no key id) is first looked up by hash in the `api_keys` read model
//! (current or rotated-away hash), only to learn the key's id; the same log
//! check follows, so its revocation is as immediate. Such a secret is refused
//! while the projection does not have its key yet (after a reset, until the
//! projector caught up); rotating the key gives it a secret of the new format.
//!
//! Only hashes are compared, so the secret is never held longer than the
//! request and never compared byte by byte. A connection that cannot be had
//! within the pool's bounded wait answers 503.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, SecondsFormat, Utc};
use taskledger_events::apikey::{
    apply, hash_secret, key_id_of_secret, ApiKey, ApiKeyEvent, ApiKeyId, ApiKeys, Scope,
    SecretMatch,
};
use taskledger_events::command::{self, CommandError};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::tenant::Access;
use taskledger_events::{Direction, EventStore, Metadata};
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
    /// The event store: the keys' streams, and the `api_keys` read model
    /// that older secrets are looked up in.
    fn key_store(&self) -> &PgEventStore;

    /// This process's keys as folded so far ([`KeyCache`]).
    fn key_cache(&self) -> &KeyCache;
}

/// The most keys a [`KeyCache`] holds; when full it starts again empty.
const MAX_CACHED_KEYS: usize = 10_000;

/// Events read per round trip while catching a key up.
const KEY_EVENTS_PER_READ: usize = 64;

/// The keys this process has checked, each folded up to a stream version.
///
/// Not a cache that can be stale: every check still reads the key's
/// stream, but only past the version already folded, which is almost
/// always nothing. Streams are append-only with gapless versions, so
/// folding the new events onto the kept state is the same fold as from the
/// start; a revocation committed anywhere is the next read's one new event.
/// It saves decoding a key's whole history on every request, not the round
/// trip that makes access changes hold at once.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<ApiKeyId, (ApiKey, u64)>>,
}

impl KeyCache {
    /// The key `key_id` as its stream in the log leaves it now; `None` when
    /// it has no events. One prepared query by the stream index.
    async fn current(
        &self,
        store: &PgEventStore,
        key_id: ApiKeyId,
    ) -> Result<Option<ApiKey>, Problem> {
        let kept = self.lock().get(&key_id).cloned();
        let (mut key, mut version) = match kept {
            Some((key, version)) => (Some(key), version),
            None => (None, 0),
        };
        let stream = key_id.stream_id();
        loop {
            let events = store
                .read_stream(
                    &stream,
                    version + 1,
                    Direction::Forward,
                    KEY_EVENTS_PER_READ,
                )
                .await
                .map_err(|error| cannot_check().because("reading an API key's stream", error))?;
            for recorded in &events {
                let event = ApiKeyEvent::from_recorded(recorded).map_err(|error| {
                    Problem::internal().because("decoding an API key's event", error)
                })?;
                key = apply(key, &event);
                version = recorded.version;
            }
            if events.len() < KEY_EVENTS_PER_READ {
                break;
            }
        }
        if let Some(key) = &key {
            let mut keys = self.lock();
            if keys.len() >= MAX_CACHED_KEYS && !keys.contains_key(&key_id) {
                keys.clear();
            }
            // Another request may have folded further meanwhile: keep the
            // furthest.
            if keys.get(&key_id).is_none_or(|(_, kept)| *kept < version) {
                keys.insert(key_id, (key.clone(), version));
            }
        }
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ApiKeyId, (ApiKey, u64)>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
        authenticate(state.key_store(), state.key_cache(), secret).await
    }
}

/// The caller whose secret is `secret`, checked against the key's events in
/// the log (see the module's documentation).
///
/// # Errors
/// 401 for an unknown, revoked, expired or replaced secret; 503 when the
/// database cannot answer.
async fn authenticate(
    store: &PgEventStore,
    cache: &KeyCache,
    secret: &str,
) -> Result<Caller, Problem> {
    let unknown = || Problem::unauthorized("this API key is unknown or revoked");
    let hash = hash_secret(secret);
    let key_id = match key_id_of_secret(secret) {
        Some(key_id) => key_id,
        None => legacy_key_id(store, &hash).await?.ok_or_else(unknown)?,
    };
    let key = cache.current(store, key_id).await?.ok_or_else(unknown)?;
    let now = Utc::now();
    let replaced = match key.secret_at(&hash, now) {
        SecretMatch::Current | SecretMatch::InGrace(_) => None,
        SecretMatch::Replaced(until) => Some(until),
        SecretMatch::Unknown => return Err(unknown()),
    };
    if !key.is_active() {
        return Err(unknown());
    }
    if let Some(expires_at) = key.expires_at.filter(|expires_at| *expires_at <= now) {
        return Err(Problem::unauthorized(format!(
            "this API key expired at {}; ask an operator for a new one",
            rfc3339(expires_at)
        )));
    }
    if let Some(until) = replaced {
        return Err(Problem::unauthorized(format!(
            "this secret was replaced when the API key was rotated and stopped working at {}; \
             use the key's new secret",
            rfc3339(until)
        )));
    }
    Ok(Caller {
        key_id: key.id.0,
        scopes: key.scopes.into_iter().collect(),
        access: key.access,
        rate_limit: key.rate_limit,
    })
}

/// Whether the key `key_id` is usable now (created, not revoked, not
/// expired), read from its stream in the log, never a read model: what an
/// open stream checks to end when its key is revoked or expires. Whether a
/// particular secret of the key still works (a rotation's grace) is not
/// part of it.
///
/// # Errors
/// 503 when the log cannot be read; 500 when the key's stream is corrupt.
pub async fn key_is_usable(store: &PgEventStore, key_id: Uuid) -> Result<bool, Problem> {
    Ok(key_from_log(store, ApiKeyId(key_id))
        .await?
        .is_some_and(|key| key.is_usable_at(Utc::now())))
}

/// The key `key_id` as its stream in the log leaves it; `None` when it has
/// no events. One prepared query by the stream index.
async fn key_from_log(store: &PgEventStore, key_id: ApiKeyId) -> Result<Option<ApiKey>, Problem> {
    match command::load::<ApiKeys>(store, &key_id.stream_id()).await {
        Ok(loaded) => Ok(loaded.state),
        Err(CommandError::Store(error)) => {
            Err(cannot_check().because("reading an API key's stream", error))
        }
        Err(error) => Err(Problem::from(error)),
    }
}

/// The id of the key whose current or rotated-away secret has the hash
/// `hash`, from the `api_keys` read model: for secrets made before secrets
/// named their key. One prepared query by the hash indexes.
async fn legacy_key_id(store: &PgEventStore, hash: &str) -> Result<Option<ApiKeyId>, Problem> {
    let client = store.pool().get().await.map_err(|error| {
        cannot_check().because("getting a database connection to check an API key", error)
    })?;
    let lookup_failed =
        |error: tokio_postgres::Error| cannot_check().because("looking up an API key", error);
    let statement = client
        .prepare_cached(
            "SELECT key_id FROM api_keys WHERE key_hash = $1 OR previous_key_hash = $1 LIMIT 1",
        )
        .await
        .map_err(lookup_failed)?;
    let row = client
        .query_opt(&statement, &[&hash])
        .await
        .map_err(lookup_failed)?;
    Ok(row.map(|row| ApiKeyId(row.get(0))))
}

fn cannot_check() -> Problem {
    Problem::unavailable("the service cannot check API keys right now", 1)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
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
    /// Routes that create, enable, replay or delete webhooks.
    WriteWebhooks => [WebhooksWrite];
    /// Routes that read webhooks and their delivery logs.
    ReadWebhooks => [WebhooksRead];
    /// Operations routes.
    Admin => [Admin];
}

/// Which keys a route admits, beyond their scopes: [`AnyTenant`], or
/// platform keys only ([`super::tenancy::Platform`]).
pub trait Reach {
    /// Checks that `caller` may call the route of `parts`.
    ///
    /// # Errors
    /// A 403 problem saying why not.
    fn check(caller: &Caller, parts: &Parts) -> Result<(), Problem>;
}

/// Every key, a tenant's or a platform's: what it reaches is checked per
/// task or device ([`super::tenancy`]).
#[derive(Debug)]
pub enum AnyTenant {}

impl Reach for AnyTenant {
    fn check(_: &Caller, _: &Parts) -> Result<(), Problem> {
        Ok(())
    }
}

/// A caller holding one of `R`'s scopes, within its key's request rate,
/// with a key `T` admits (any, by default). As an extractor it runs before
/// the body is read, so a caller without the scope gets 403, one over its
/// rate 429, and a key the route does not admit 403, whatever they sent.
#[derive(Debug)]
pub struct Authorized<R, T = AnyTenant> {
    /// Who is calling.
    pub caller: Caller,
    scopes: PhantomData<(R, T)>,
}

impl<S, R, T> FromRequestParts<S> for Authorized<R, T>
where
    S: KeyStore + Limited + Send + Sync,
    R: RequiredScopes,
    T: Reach,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_any(R::SCOPES)?;
        state.limits().check_request(&caller)?;
        T::check(&caller, parts)?;
        Ok(Self {
            caller,
            scopes: PhantomData,
        })
    }
}
