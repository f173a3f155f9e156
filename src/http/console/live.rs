//! `/console/tasks/live`: the task list's live changes, for its script to
//! reload its rows — `/v1`'s own `GET /v1/tasks/stream` with the session's
//! key, passed through as it streams.
//!
//! So the console has no rule of its own here: `/v1` decides which tasks the
//! key hears of (a tenant key only its tenant's), takes the key's stream
//! slot, and ends the stream when the key is revoked or expires, or the
//! service stops. The list's kind and frontend filters become the
//! stream's, and the browser's `Last-Event-ID` is passed on, so an
//! `EventSource` that reconnects resumes exactly after the last change it
//! saw.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::api;
use super::pages::{self, Chrome};
use super::session::SignedIn;
use super::ConsoleState;

/// The list's filters the stream takes (an empty one is no filter).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct LiveQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    frontend_id: String,
}

impl LiveQuery {
    /// The list's `kind` and `frontend_id`, as the stream's filters.
    pub(super) fn new(kind: &str, frontend_id: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            frontend_id: frontend_id.to_owned(),
        }
    }

    /// The filters given, as a query string.
    fn query_string(&self) -> String {
        pages::filled_in([
            ("kind", self.kind.as_str()),
            ("frontend_id", &self.frontend_id),
        ])
        .finish()
    }

    /// This page, for the list's script.
    pub(super) fn link(&self) -> String {
        format!("/console/tasks/live?{}", self.query_string())
    }

    /// `/v1`'s stream of the changes of the tasks these filters list.
    fn api_path(&self) -> String {
        format!("/v1/tasks/stream?{}", self.query_string())
    }
}

/// `GET /console/tasks/live`.
pub(super) async fn tasks(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Response {
    let last_event_id = headers.get("last-event-id").cloned();
    let response = state
        .api
        .stream(&signed_in.secret, &query.api_path(), last_event_id)
        .await;
    if response.status().is_success() {
        return response;
    }
    let refusal = api::refusal(response).await;
    pages::message(
        refusal.status,
        Some(Chrome::of(&signed_in)),
        &refusal.title,
        &refusal.detail,
    )
}
