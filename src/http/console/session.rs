//! Console sessions: an API key signed in through the form, held in this
//! process's memory behind a random cookie, with an idle expiry and a
//! per-session CSRF token.
//!
//! The browser holds only the session id (`HttpOnly; SameSite=Strict;
//! Path=/console`, `Secure` behind TLS); the key's secret stays here and is
//! presented to `/v1` as a Bearer key on every request ([`super::api`]), so
//! the console reaches exactly what the key reaches, and a revoked or
//! expired key stops the session at its next request. Sessions live in
//! memory: a restart signs everyone out, and with several `api` processes a
//! session works only on the process that made it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::pages::{self, Chrome};
use super::signin::form_fields;
use super::ConsoleState;
use crate::http::auth::Caller;

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "tl_console";
/// The cookie that carries the sign-in form's token (before a session).
pub(super) const SIGN_IN_COOKIE: &str = "tl_console_sign_in";
/// The most sessions a process holds; beyond it the oldest idle one goes.
const MAX_SESSIONS: usize = 10_000;

/// The signed-in sessions of this process.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    // Keyed by the SHA-256 of the session id, so a lookup's timing says
    // nothing about the ids held.
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Debug)]
struct Session {
    secret: SecretString,
    csrf: String,
    last_used: Instant,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(Duration::from_secs(30 * 60))
    }
}

impl Sessions {
    /// Sessions that end after `idle` without a request.
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            sessions: Mutex::default(),
        }
    }

    /// How long a session may go without a request.
    pub(super) fn idle(&self) -> Duration {
        self.idle
    }

    /// Opens a session for the key whose secret is `secret` (already
    /// checked); its id, for the cookie.
    pub(super) fn open(&self, secret: &str) -> String {
        let id = random_token();
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, session| now.duration_since(session.last_used) < self.idle);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, session)| session.last_used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            digest(&id),
            Session {
                secret: SecretString::from(secret.to_owned()),
                csrf: random_token(),
                last_used: now,
            },
        );
        id
    }

    /// The secret and CSRF token of session `id` if it has not been idle
    /// too long, marking it used now; an idle one is ended.
    fn resume(&self, id: &str) -> Option<(SecretString, String)> {
        let key = digest(id);
        let mut sessions = self.lock();
        let now = Instant::now();
        let session = sessions.get_mut(&key)?;
        if now.duration_since(session.last_used) >= self.idle {
            sessions.remove(&key);
            return None;
        }
        session.last_used = now;
        Some((session.secret.clone(), session.csrf.clone()))
    }

    /// Ends session `id` (sign-out, or its key stopped working).
    pub(super) fn close(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// 32 random bytes, hexadecimal: session ids and CSRF tokens.
pub(super) fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether `given` is `expected`, compared by their digests (so the time
/// taken says nothing about how much of a guess was right).
pub(super) fn tokens_match(given: &str, expected: &str) -> bool {
    !expected.is_empty() && digest(given) == digest(expected)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the request came over TLS: the service speaks plain HTTP, so
/// only through a proxy that says so with `X-Forwarded-Proto: https`; then
/// cookies are `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value for cookie `name` = `value` (an empty value with
/// `Max-Age=0` removes it).
pub(super) fn set_cookie(headers: &HeaderMap, name: &str, value: &str) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let max_age = if value.is_empty() { "; Max-Age=0" } else { "" };
    let cookie =
        format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/console{max_age}{secure}");
    // Both parts are hexadecimal or fixed text: always a valid header.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `next` if it is a console page of this service (a path under
/// `/console`), else the task list: sign-in never sends anyone elsewhere.
pub(super) fn local_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if (next == "/console"
                || next.starts_with("/console/")
                || next.starts_with("/console?"))
                && !next.contains("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next.to_owned()
        }
        _ => "/console/tasks".to_owned(),
    }
}

/// The sign-in page's address, asking to come back to `next` afterwards;
/// `reason` says why the visitor was sent there.
pub(super) fn sign_in_url(next: &str, reason: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("next", next);
    if let Some(reason) = reason {
        query.append_pair("reason", reason);
    }
    format!("/console/sign-in?{}", query.finish())
}

/// A visitor with a live session whose key works now: checked as a Bearer
/// key is on `/v1` ([`Caller`]'s extractor) on every request.
#[derive(Debug)]
pub(super) struct SignedIn {
    /// The session's id, as the cookie holds it.
    pub(super) session_id: String,
    /// The key's secret, presented to `/v1` for this visitor.
    pub(super) secret: SecretString,
    /// The session's CSRF token, for its forms.
    pub(super) csrf: String,
    /// The key, as `/v1` sees it.
    pub(super) caller: Caller,
}

impl SignedIn {
    /// Whether the form's `csrf` field is this session's token.
    pub(super) fn csrf_ok(&self, given: Option<&str>) -> bool {
        given.is_some_and(|given| tokens_match(given, &self.csrf))
    }
}

/// A form a signed-in visitor posted, its `csrf` field checked against the
/// session's token: a forged one is answered with the "forged" page.
#[derive(Debug)]
pub(super) struct SignedForm {
    /// Who posted it.
    pub(super) signed_in: SignedIn,
    /// Its fields, by name (the last of a repeated one).
    pub(super) fields: HashMap<String, String>,
}

impl FromRequest<ConsoleState> for SignedForm {
    type Rejection = Response;

    async fn from_request(request: Request<Body>, state: &ConsoleState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let signed_in = SignedIn::from_request_parts(&mut parts, state).await?;
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = form_fields(&body);
        if !signed_in.csrf_ok(fields.get("csrf").map(String::as_str)) {
            return Err(pages::forged(Chrome::of(&signed_in)));
        }
        Ok(Self { signed_in, fields })
    }
}

/// The key whose secret is `secret`, checked exactly as a request to `/v1`
/// with `Authorization: Bearer <secret>` is.
///
/// # Errors
/// The problem `/v1` would answer (401 for an unknown, revoked or expired
/// key; 503 when keys cannot be checked).
pub(super) async fn check_key(
    state: &ConsoleState,
    secret: &str,
) -> Result<Caller, crate::http::problem::Problem> {
    let request = Request::builder()
        .header(AUTHORIZATION, format!("Bearer {secret}"))
        .body(())
        .map_err(|_| crate::http::problem::Problem::unauthorized("a key is one line of text"))?;
    let (mut parts, ()) = request.into_parts();
    Caller::from_request_parts(&mut parts, &state.app).await
}

impl FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let asked = parts
            .uri
            .path_and_query()
            .map_or("/console/tasks", |path| path.as_str());
        // After sign-in a form's POST cannot be repeated: come back to the
        // page it was sent from instead.
        let next = if parts.method == axum::http::Method::GET {
            local_next(Some(asked))
        } else {
            local_next(asked.rsplit_once('/').map(|(page, _)| page))
        };
        let Some(session_id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(Redirect::to(&sign_in_url(&next, None)).into_response());
        };
        let Some((secret, csrf)) = state.sessions.resume(session_id) else {
            return Err(Redirect::to(&sign_in_url(&next, Some("expired"))).into_response());
        };
        match check_key(state, secret.expose_secret()).await {
            Ok(caller) => Ok(Self {
                session_id: session_id.to_owned(),
                secret,
                csrf,
                caller,
            }),
            Err(problem) if problem.status == 401 => {
                state.sessions.close(session_id);
                Err(Redirect::to(&sign_in_url(&next, Some("key"))).into_response())
            }
            Err(problem) => Err(super::pages::problem_page(&problem)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_sign_in() {
        for good in [
            "/console",
            "/console/tasks?status=queued",
            "/console/tasks/1",
        ] {
            assert_eq!(local_next(Some(good)), good);
        }
        for bad in [
            "https://example.test/console/",
            "//example.test/console",
            "/console//example.test",
            "/consoleevil",
            "/v1/tasks",
            "/console/\\example.test",
            "",
        ] {
            assert_eq!(local_next(Some(bad)), "/console/tasks", "{bad:?}");
        }
        assert_eq!(local_next(None), "/console/tasks");
    }

    #[test]
    fn an_idle_session_ends_and_a_closed_one_is_gone() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let id = sessions.open("tlk_secret");
        let (secret, csrf) = sessions.resume(&id).expect("a fresh session");
        assert_eq!(secret.expose_secret(), "tlk_secret");
        assert_eq!(csrf.len(), 64);
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.resume(&id).is_none(), "idle past its expiry");
        let id = sessions.open("tlk_secret");
        sessions.close(&id);
        assert!(sessions.resume(&id).is_none());
        assert!(sessions.resume("not-a-session").is_none());
    }

    #[test]
    fn cookies_are_read_and_set_strictly() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; tl_console=abc; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
        let plain = set_cookie(&headers, SESSION_COOKIE, "abc");
        assert_eq!(
            plain.to_str().unwrap(),
            "tl_console=abc; HttpOnly; SameSite=Strict; Path=/console"
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let secure = set_cookie(&headers, SESSION_COOKIE, "");
        assert!(secure.to_str().unwrap().ends_with("; Max-Age=0; Secure"));
        assert!(tokens_match("x", "x"));
        assert!(!tokens_match("x", "y"));
        assert!(!tokens_match("", ""));
    }
}
