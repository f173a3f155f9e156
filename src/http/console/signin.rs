//! Signing in with an API key and out again.
//!
//! The key is checked exactly as a Bearer key on `/v1` is; a wrong one
//! gets the form again with `/v1`'s reason and no session. The sign-in form
//! itself carries a token matched against a cookie set with the form, so
//! another site cannot sign a browser in with a key of its choosing.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::{self, render, Chrome};
use super::session::{
    cookie, local_next, random_token, set_cookie, sign_in_url, tokens_match, SignedForm,
    SESSION_COOKIE, SIGN_IN_COOKIE,
};
use super::ConsoleState;

/// The sign-in form.
#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Option<Chrome>,
    next: String,
    token: String,
    notice: String,
    error: String,
}

/// `?next=` (where to go after) and `?reason=` (why the visitor is here).
#[derive(Debug, Deserialize)]
pub(super) struct SignInQuery {
    next: Option<String>,
    reason: Option<String>,
}

/// The fields of a form body, by name (the last of a repeated one).
pub(super) fn form_fields(body: &Bytes) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The form, with a fresh token in its cookie.
fn form_page(
    headers: &HeaderMap,
    status: StatusCode,
    next: String,
    notice: &str,
    error: &str,
) -> Response {
    let token = random_token();
    let page = SignInPage {
        chrome: None,
        next,
        token: token.clone(),
        notice: notice.to_owned(),
        error: error.to_owned(),
    };
    (
        status,
        AppendHeaders([(SET_COOKIE, set_cookie(headers, SIGN_IN_COOKIE, &token))]),
        render(&page),
    )
        .into_response()
}

/// `GET /console/sign-in`.
pub(super) async fn form(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Response {
    let idle_minutes = state.sessions.idle().as_secs().div_ceil(60);
    let notice = match query.reason.as_deref() {
        Some("expired") => {
            format!("Your session ended after {idle_minutes} minutes without use. Sign in again.")
        }
        Some("key") => "The key of your session no longer works (revoked, expired or rotated \
                        away). Sign in with a current key."
            .to_owned(),
        Some("signed-out") => "You are signed out.".to_owned(),
        _ => String::new(),
    };
    form_page(
        &headers,
        StatusCode::OK,
        local_next(query.next.as_deref()),
        &notice,
        "",
    )
}

/// `POST /console/sign-in`: `key`, `next` and the form's `token`.
pub(super) async fn sign_in(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form_fields(&body);
    let next = local_next(fields.get("next").map(String::as_str));
    let token_ok = match (fields.get("token"), cookie(&headers, SIGN_IN_COOKIE)) {
        (Some(given), Some(expected)) => tokens_match(given, expected),
        _ => false,
    };
    if !token_ok {
        return form_page(
            &headers,
            StatusCode::FORBIDDEN,
            next,
            "",
            "The form had expired or did not come from this console. Please sign in again.",
        );
    }
    let key = fields.get("key").map_or("", |key| key.trim());
    if key.is_empty() {
        return form_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            next,
            "",
            "Enter an API key.",
        );
    }
    match super::session::check_key(&state, key).await {
        Ok(_) => {
            let session_id = state.sessions.open(key);
            (
                AppendHeaders([
                    (
                        SET_COOKIE,
                        set_cookie(&headers, SESSION_COOKIE, &session_id),
                    ),
                    (SET_COOKIE, set_cookie(&headers, SIGN_IN_COOKIE, "")),
                ]),
                Redirect::to(&next),
            )
                .into_response()
        }
        Err(problem) if problem.status == 401 => form_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            next,
            "",
            &format!(
                "That key was not accepted: {}.",
                problem.detail.trim_end_matches('.')
            ),
        ),
        Err(problem) => pages::problem_page(&problem),
    }
}

/// `POST /console/sign-out`, with the session's CSRF token.
pub(super) async fn sign_out(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    SignedForm { signed_in, .. }: SignedForm,
) -> Response {
    state.sessions.close(&signed_in.session_id);
    (
        AppendHeaders([(SET_COOKIE, set_cookie(&headers, SESSION_COOKIE, ""))]),
        Redirect::to(&sign_in_url("/console/tasks", Some("signed-out"))),
    )
        .into_response()
}
