//! An API key as its events leave it ([`ApiKey`], [`ApiKeyState`]) and the
//! fold that builds it ([`apply`], [`fold`]).

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use chrono::{DateTime, Utc};

use super::{ApiKeyEvent, ApiKeyId, Scope};
use crate::tenant::Access;

/// The state of one API key stream: `None` until the key is created.
pub type ApiKeyState = Option<ApiKey>;

/// A created API key, as its events leave it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// Its id.
    pub id: ApiKeyId,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// The SHA-256 of its current secret.
    pub key_hash: String,
    /// The SHA-256 of the secret the last rotation replaced, and until when
    /// (exclusive) that secret still works; `None` until it is rotated.
    pub previous_key_hash: Option<(String, DateTime<Utc>)>,
    /// When it was last rotated.
    pub rotated_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: Option<String>,
    /// Whose work it reaches.
    pub access: Access,
    /// When it stops working, if it ever does.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its own requests-per-second limit, if it has one.
    pub rate_limit: Option<NonZeroU32>,
    /// When it was revoked; `None` while it is active.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was revoked, if it was and a reason was given.
    pub revoked_reason: Option<String>,
    /// Who revoked it, if it was and that is known.
    pub revoked_by: Option<String>,
}

impl ApiKey {
    /// Whether the key has not been revoked (requests with its secret are
    /// accepted, within its scopes).
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// Which of the key's secrets the secret whose hash is `key_hash` is,
    /// at `now`. Whether the key itself is usable is [`ApiKey::is_usable_at`].
    pub fn secret_at(&self, key_hash: &str, now: DateTime<Utc>) -> SecretMatch {
        if key_hash == self.key_hash {
            return SecretMatch::Current;
        }
        match &self.previous_key_hash {
            Some((previous, until)) if previous == key_hash && now < *until => {
                SecretMatch::InGrace(*until)
            }
            Some((previous, until)) if previous == key_hash => SecretMatch::Replaced(*until),
            _ => SecretMatch::Unknown,
        }
    }

    /// Whether requests with its secret are accepted at `now`: not revoked
    /// and not expired (a key expires at the instant `expires_at` names).
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        self.is_active() && self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// What a presented secret is to a key ([`ApiKey::secret_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    /// Its current secret.
    Current,
    /// The secret its last rotation replaced, still working until the
    /// instant given.
    InGrace(DateTime<Utc>),
    /// The secret its last rotation replaced, which stopped working at the
    /// instant given.
    Replaced(DateTime<Utc>),
    /// None of its secrets (or one replaced before its last rotation).
    Unknown,
}

/// The state after `event`. Total: it never fails.
///
/// An event that does not fit the state — `ApiKeyRevoked` or
/// `ApiKeyRotated` before `ApiKeyCreated` or after an `ApiKeyRevoked`, or a
/// second `ApiKeyCreated` — leaves the state as it was. [`decide`](super::decide)
/// never produces such an event, and the store's expected versions keep
/// decisions in order, so one can only come from a stream written by other
/// code; the auditor's replay, not this fold, is the place to report it.
pub fn apply(state: ApiKeyState, event: &ApiKeyEvent) -> ApiKeyState {
    let Some(mut key) = state else {
        return match event {
            ApiKeyEvent::Created(created) => Some(ApiKey {
                id: created.key_id,
                name: created.name.clone(),
                scopes: created.scopes.clone(),
                key_hash: created.key_hash.clone(),
                previous_key_hash: None,
                rotated_at: None,
                created_at: created.created_at,
                created_by: created.created_by.clone(),
                access: created.access.clone(),
                expires_at: created.expires_at,
                rate_limit: created.rate_limit,
                revoked_at: None,
                revoked_reason: None,
                revoked_by: None,
            }),
            ApiKeyEvent::Revoked(_) | ApiKeyEvent::Rotated(_) => None,
        };
    };
    match event {
        ApiKeyEvent::Revoked(revoked) if key.is_active() => {
            key.revoked_at = Some(revoked.revoked_at);
            key.revoked_reason = revoked.reason.clone();
            key.revoked_by = revoked.revoked_by.clone();
        }
        ApiKeyEvent::Rotated(rotated) if key.is_active() => {
            let replaced = std::mem::replace(&mut key.key_hash, rotated.key_hash.clone());
            key.previous_key_hash = Some((replaced, rotated.previous_valid_until));
            key.rotated_at = Some(rotated.rotated_at);
        }
        // Does not fit: see the function's documentation.
        _ => {}
    }
    Some(key)
}

/// The state after all of `events`, in order, starting from no key.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a ApiKeyEvent>) -> ApiKeyState {
    events.into_iter().fold(None, apply)
}
