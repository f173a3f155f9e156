//! `/console/webhooks` and `/console/webhooks/{id}`: the webhooks a key
//! may see (`GET /v1/webhooks`), and one webhook with its state and its
//! delivery log — every attempt, its outcome and when the next is due
//! (`GET /v1/webhooks/{id}/deliveries`); enable and replay for keys that
//! may (`POST /v1/webhooks/{id}/enable`, `/replay`), each form carrying the
//! session's CSRF token.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::pages::{self, render, Chrome};
use super::session::{SignedForm, SignedIn};
use super::views::when;
use super::ConsoleState;
use crate::http::auth::{RequiredScopes, WriteWebhooks};

/// The most attempts the page shows (`/v1`'s largest page).
const LOG_PAGE: u32 = 1_000;

/// `GET /v1/webhooks`.
#[derive(Debug, Deserialize)]
struct WebhookPage {
    items: Vec<Webhook>,
}

/// A webhook (`WebhookView`).
#[derive(Debug, Deserialize)]
struct Webhook {
    id: Uuid,
    tenant: String,
    url: String,
    events: Vec<String>,
    status: String,
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    attempts: u64,
    deliveries: u64,
}

impl Webhook {
    fn created(&self) -> String {
        when(&self.created_at)
    }

    fn kinds(&self) -> String {
        self.events.join(", ")
    }

    fn is_enabled(&self) -> bool {
        self.status == "enabled"
    }
}

/// `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize)]
struct DeliveryPage {
    items: Vec<Delivery>,
}

/// One attempt (`DeliveryView`).
#[derive(Debug, Deserialize)]
struct Delivery {
    message_id: String,
    position: u64,
    kind: String,
    attempt: u32,
    attempted_at: DateTime<Utc>,
    duration_ms: u64,
    status_code: Option<u16>,
    error: Option<String>,
    outcome: String,
    #[serde(default)]
    next_attempt_at: Option<DateTime<Utc>>,
}

impl Delivery {
    fn attempted(&self) -> String {
        when(&self.attempted_at)
    }

    fn next_attempt(&self) -> String {
        self.next_attempt_at.as_ref().map_or_else(String::new, when)
    }

    /// The receiver's answer: its status code, or `—` when it gave none.
    fn answer(&self) -> String {
        self.status_code
            .map_or_else(|| "—".to_owned(), |code| code.to_string())
    }

    /// The badge's class: delivered is a success, giving up a failure.
    fn badge(&self) -> &'static str {
        match self.outcome.as_str() {
            "delivered" => "status-succeeded",
            "gave_up" => "status-failed",
            _ => "status-timed_out",
        }
    }
}

/// The list.
#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    chrome: Option<Chrome>,
    webhooks: Vec<Webhook>,
}

/// `GET /console/webhooks`.
pub(super) async fn list(State(state): State<ConsoleState>, signed_in: SignedIn) -> Response {
    let chrome = || Some(Chrome::of(&signed_in));
    match state
        .api
        .get::<WebhookPage>(&signed_in.secret, "/v1/webhooks")
        .await
    {
        Ok(page) => render(&WebhooksPage {
            chrome: chrome(),
            webhooks: page.items,
        }),
        Err(refusal) => pages::message(refusal.status, chrome(), &refusal.title, &refusal.detail),
    }
}

/// One webhook's page.
#[derive(Template)]
#[template(path = "webhook.html")]
struct WebhookPageView {
    chrome: Option<Chrome>,
    webhook: Webhook,
    deliveries: Vec<Delivery>,
    /// Whether the key may enable and replay it.
    can_write: bool,
    csrf: String,
}

/// The webhook id of a path, if it is one: anything else is a webhook that
/// does not exist.
fn webhook_id(id: &str) -> Option<Uuid> {
    Uuid::parse_str(id).ok()
}

/// `GET /console/webhooks/{id}`.
pub(super) async fn show(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let chrome = || Some(Chrome::of(&signed_in));
    let Some(id) = webhook_id(&id) else {
        return pages::not_found(chrome(), "This webhook");
    };
    let secret = &signed_in.secret;
    let webhook: Webhook = match state.api.get(secret, &format!("/v1/webhooks/{id}")).await {
        Ok(webhook) => webhook,
        Err(refusal) => return pages::refused(chrome(), &refusal, "This webhook"),
    };
    let path = format!("/v1/webhooks/{id}/deliveries?limit={LOG_PAGE}");
    let deliveries = match state.api.get::<DeliveryPage>(secret, &path).await {
        Ok(page) => page.items,
        Err(refusal) => return pages::refused(chrome(), &refusal, "This webhook"),
    };
    render(&WebhookPageView {
        chrome: chrome(),
        webhook,
        deliveries,
        can_write: signed_in.caller.require_any(WriteWebhooks::SCOPES).is_ok(),
        csrf: signed_in.csrf.clone(),
    })
}

/// `POST /console/webhooks/{id}/enable`, with the session's CSRF token.
pub(super) async fn enable(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    SignedForm { signed_in, .. }: SignedForm,
) -> Response {
    let Some(id) = webhook_id(&id) else {
        return pages::not_found(Some(Chrome::of(&signed_in)), "This webhook");
    };
    let path = format!("/v1/webhooks/{id}/enable");
    match state.api.post(&signed_in.secret, &path).await {
        Ok(_) => Redirect::to(&format!("/console/webhooks/{id}")).into_response(),
        Err(refusal) => pages::refused(Some(Chrome::of(&signed_in)), &refusal, "This webhook"),
    }
}

/// `POST /console/webhooks/{id}/replay` (`from_position`), with the
/// session's CSRF token. A position that is not a number goes to `/v1` as
/// 0, which refuses it with its own words (422).
pub(super) async fn replay(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    SignedForm { signed_in, fields }: SignedForm,
) -> Response {
    let Some(id) = webhook_id(&id) else {
        return pages::not_found(Some(Chrome::of(&signed_in)), "This webhook");
    };
    let from_position = fields
        .get("from_position")
        .and_then(|position| position.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let path = format!("/v1/webhooks/{id}/replay");
    let request = serde_json::json!({ "from_position": from_position });
    match state
        .api
        .post_json(&signed_in.secret, &path, &request)
        .await
    {
        Ok(_) => Redirect::to(&format!("/console/webhooks/{id}")).into_response(),
        Err(refusal) => pages::refused(Some(Chrome::of(&signed_in)), &refusal, "This webhook"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(outcome: &str, status_code: Option<u16>) -> Delivery {
        serde_json::from_value(serde_json::json!({
            "message_id": "msg_1", "position": 7, "kind": "task.succeeded",
            "attempt": 1, "attempted_at": "2026-12-01T18:00:00Z",
            "duration_ms": 3, "status_code": status_code, "error": null,
            "outcome": outcome, "recorded_at_position": 9
        }))
        .unwrap()
    }

    #[test]
    fn an_attempt_shows_its_answer_and_its_outcome() {
        assert_eq!(delivery("delivered", Some(200)).answer(), "200");
        assert_eq!(delivery("retrying", None).answer(), "—");
        assert_eq!(delivery("delivered", None).badge(), "status-succeeded");
        assert_eq!(delivery("gave_up", None).badge(), "status-failed");
        assert_eq!(delivery("retrying", None).badge(), "status-timed_out");
        assert_eq!(delivery("retrying", None).next_attempt(), "");
    }
}
