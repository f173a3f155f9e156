//! Webhooks over HTTP: create (the secret is in that answer only), list,
//! read, delete, enable, replay, and the delivery log. A webhook is its
//! stream `webhook-{id}` in the log; reads fold it (there is no read model:
//! a list reads the `WebhookCreated` events by a partial index, then folds
//! each stream), so what a request changed shows on the next one.
//!
//! Tenant-scoped like tasks: a tenant key reaches its tenant's webhooks
//! only, and another tenant's answers exactly as a missing one (404); a
//! platform key reaches all and names the tenant of one it creates. The
//! target is checked at creation ([`crate::workers::webhooks::target`]):
//! an address that is loopback, private, link-local or metadata is a 422
//! unless `[webhooks] allow_private_targets` is on.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, SubsecRound, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use taskledger_events::command::{self, CommandError};
use taskledger_events::tenant::{Access, TenantName};
use taskledger_events::webhook::{
    CreateWebhook, DeleteWebhook, EnableWebhook, ReplayWebhook, Webhook, WebhookCommand,
    WebhookDeliveryAttempted, WebhookEvent, WebhookId, WebhookStatus, Webhooks,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Authorized, Caller, ReadWebhooks, WriteWebhooks};
use super::problem::{path_extractor, uuid_segment, ApiJson, ApiQuery, Problem};
use super::responses::{Authenticated, JsonBody, Malformed, NoSuchWebhook, OtherTenant};
use super::tenancy::{self, ActingFor};
use super::{database_error, execute_as, store_unreadable, AppState};
use crate::workers::webhooks::{sign, target};

/// A new webhook.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are POSTed: `http://` or `https://`, no
    /// credentials; it must resolve to public addresses only (unless the
    /// service allows private targets).
    #[schema(example = "https://hooks.example.com/taskledger")]
    pub url: String,
    /// The kinds of events wanted: `task.submitted`, `task.started`,
    /// `task.succeeded`, `task.failed`, `task.timed_out`, `task.canceled`,
    /// `task.retried`, `task.*`, `device.message.received`,
    /// `device.message.sent`, `device.message.failed`, `device.*`.
    #[schema(example = json!(["task.succeeded", "task.failed"]))]
    pub events: Vec<String>,
    /// The tenant whose events it receives: a platform key must name one; a
    /// tenant key may only name its own.
    pub tenant: Option<String>,
}

/// A replay.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The first global position of the log to deliver again (1 or more).
    pub from_position: u64,
}

/// A webhook, without its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    /// Its id.
    pub id: Uuid,
    /// Whose events it receives.
    pub tenant: String,
    /// Where they go.
    pub url: String,
    /// The kinds it wants.
    pub events: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: &'static str,
    /// Why it is disabled, while it is.
    pub disabled_reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Delivery attempts recorded.
    pub attempts: u64,
    /// Deliveries finished (delivered, or given up).
    pub deliveries: u64,
    /// Its stream's version.
    pub version: u64,
}

/// A new webhook with its secret, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    /// The signing secret (`whsec_` + base64; Standard Webhooks): verify
    /// `webhook-signature` with it. It cannot be shown again.
    pub secret: String,
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookView,
}

/// Webhooks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookPage {
    /// Every one the key reaches, oldest first.
    pub items: Vec<WebhookView>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` sent: the same for every attempt of one event.
    pub message_id: String,
    /// The event's global position.
    pub position: u64,
    /// Its kind.
    pub kind: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
    /// `delivered`, `retrying` or `gave_up`.
    pub outcome: String,
    /// When the next attempt is due, after one that ended `retrying`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Its position in the log.
    pub recorded_at_position: u64,
}

/// The delivery log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// The most recent attempts (at most `limit`; with `message_id` or
    /// `position`, the most recent of those that match, however old),
    /// oldest first.
    pub items: Vec<DeliveryView>,
}

/// `?limit=`, `?message_id=` and `?position=` of the delivery log.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// At most this many of the latest attempts (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only the attempts of this message, however old: the `webhook-id` a
    /// receiver got (`msg_` and 32 hex digits), or the UUID in it. Anything
    /// else is a 400.
    #[param(example = "msg_5f3c2d1e0b9a48c7a6e5d4c3b2a19080")]
    pub message_id: Option<String>,
    /// Only the attempts of the event at this global position of the log
    /// (a delivery body's `data.position`), however old; 1 or more.
    pub position: Option<u64>,
}

impl DeliveriesQuery {
    /// The message id as the deliverer writes it (`msg_` + the UUID's 32
    /// hex digits), if one was asked for.
    ///
    /// # Errors
    /// 400 when it is not a webhook-id or a UUID.
    fn message_id(&self) -> Result<Option<String>, Problem> {
        let Some(text) = &self.message_id else {
            return Ok(None);
        };
        let uuid = text.strip_prefix("msg_").unwrap_or(text);
        match Uuid::try_parse(uuid) {
            Ok(uuid) => Ok(Some(format!("msg_{}", uuid.simple()))),
            Err(_) => Err(Problem::bad_request(format!(
                "message_id {text:?} is not a webhook-id (msg_ and 32 hex digits, as in the webhook-id header)"
            ))),
        }
    }
}

/// `?tenant=` of the list.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWebhooksQuery {
    /// Only this tenant's (a tenant key sees only its own anyway).
    pub tenant: Option<String>,
}

/// A webhook's id in the path (`{id}`): 400 unless it is a UUID.
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    /// The webhook's id
    #[param(value_type = Uuid)]
    pub id: WebhookId,
}

path_extractor!(WebhookPath, "id", |id| Ok(Self {
    id: WebhookId(uuid_segment(id, "a webhook id")?),
}));

/// Creates a webhook; its secret is in this answer only.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "The webhook and its secret, shown this once", body = WebhookWithSecret),
        Authenticated, JsonBody, OtherTenant,
        (status = 422, description = "A URL that is not http(s), has credentials or resolves where webhooks may not point; an unknown event kind (the known ones are listed); or a platform key that names no tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:write"]))
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteWebhooks>,
    ApiJson(request): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, ApiJson<WebhookWithSecret>), Problem> {
    let tenant = tenancy::acting_tenant(&caller, request.tenant.as_deref(), ActingFor::Webhook)?;
    let event_kinds: BTreeSet<String> = request.events.into_iter().collect();
    taskledger_events::webhook::UnknownKinds::check(&event_kinds)
        .map_err(|error| Problem::unprocessable(format!("events: {error}")))?;
    target::resolve(&request.url, state.config.webhooks.allow_private_targets)
        .await
        .map_err(|refused| Problem::unprocessable(format!("url: {refused}")))?;
    let webhook_id = WebhookId(Uuid::new_v4());
    let secret = sign::new_secret(rand::rng().random());
    // The secret first: a webhook whose event is in the log always has
    // one; a secret whose append failed is never read.
    let client = state.store.pool().get().await.map_err(database_error(
        "getting a connection to store a webhook secret",
    ))?;
    client
        .execute(
            "INSERT INTO webhook_secrets (webhook_id, secret) VALUES ($1, $2)",
            &[&webhook_id.0, &secret],
        )
        .await
        .map_err(database_error("storing a webhook secret"))?;
    drop(client);
    let command = WebhookCommand::Create(CreateWebhook {
        webhook_id,
        tenant,
        url: request.url,
        event_kinds,
        created_at: Utc::now().trunc_subsecs(6),
        created_by: Some(caller.key_id.to_string()),
    });
    let webhook = run(&state, &caller, webhook_id, command).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(WebhookWithSecret {
            secret,
            webhook: view(&webhook),
        }),
    ))
}

/// The webhooks the key reaches, oldest first; never a secret.
#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    params(ListWebhooksQuery),
    responses(
        (status = 200, description = "The webhooks", body = WebhookPage),
        Authenticated, Malformed,
    ),
    security(("api_key" = ["webhooks:read"]))
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadWebhooks>,
    ApiQuery(query): ApiQuery<ListWebhooksQuery>,
) -> Result<ApiJson<WebhookPage>, Problem> {
    let tenants = tenancy::listing_tenants(&caller, query.tenant.as_deref());
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(database_error("getting a connection to list webhooks"))?;
    let rows = client
        .query(
            "SELECT stream_id FROM events
             WHERE event_type = 'WebhookCreated' AND data->>'tenant' = ALL($1)
             ORDER BY global_position",
            &[&tenants],
        )
        .await
        .map_err(database_error("listing webhooks"))?;
    drop(client);
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let stream: String = row.get(0);
        let Some(id) = WebhookId::from_stream_id(&stream) else {
            continue;
        };
        if let Some(webhook) = load(&state, id).await? {
            items.push(view(&webhook));
        }
    }
    Ok(ApiJson(WebhookPage {
        items,
        next_cursor: None,
    }))
}

/// One webhook; never its secret.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(WebhookPath),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        Authenticated, Malformed, NoSuchWebhook,
    ),
    security(("api_key" = ["webhooks:read"]))
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadWebhooks>,
    WebhookPath { id }: WebhookPath,
) -> Result<ApiJson<WebhookView>, Problem> {
    Ok(ApiJson(view(&reachable(&state, &caller, id).await?)))
}

/// Deletes a webhook: nothing is delivered to it any more.
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(WebhookPath),
    responses(
        (status = 204, description = "Deleted"),
        Authenticated, Malformed, NoSuchWebhook,
    ),
    security(("api_key" = ["webhooks:write"]))
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteWebhooks>,
    WebhookPath { id }: WebhookPath,
) -> Result<StatusCode, Problem> {
    reachable(&state, &caller, id).await?;
    let command = WebhookCommand::Delete(DeleteWebhook {
        webhook_id: id,
        deleted_at: Utc::now().trunc_subsecs(6),
        deleted_by: Some(caller.key_id.to_string()),
    });
    run(&state, &caller, id, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enables a disabled webhook: it catches up from where it stopped, in log
/// order — the event it gave up on first (under the same `webhook-id`),
/// then every wanted event appended while it was disabled, then new ones;
/// no replay is needed for those. Enabling an enabled one changes nothing.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/enable", tag = "webhooks",
    params(WebhookPath),
    responses(
        (status = 200, description = "The webhook, enabled: it catches up from the event it gave up on", body = WebhookView),
        Authenticated, Malformed, NoSuchWebhook,
    ),
    security(("api_key" = ["webhooks:write"]))
)]
pub async fn enable_webhook(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteWebhooks>,
    WebhookPath { id }: WebhookPath,
) -> Result<ApiJson<WebhookView>, Problem> {
    reachable(&state, &caller, id).await?;
    let command = WebhookCommand::Enable(EnableWebhook {
        webhook_id: id,
        enabled_at: Utc::now().trunc_subsecs(6),
        enabled_by: Some(caller.key_id.to_string()),
    });
    Ok(ApiJson(view(&run(&state, &caller, id, command).await?)))
}

/// Delivers again every event the webhook wants from `from_position` of
/// the log on (with the same `webhook-id`s as before, so a receiver that
/// has them can drop them).
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/replay", tag = "webhooks",
    params(WebhookPath),
    request_body = ReplayRequest,
    responses(
        (status = 202, description = "The replay is recorded; the deliverer sends the events", body = WebhookView),
        Authenticated, Malformed, JsonBody, NoSuchWebhook,
        (status = 409, description = "The webhook is disabled: enable it first", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["webhooks:write"]))
)]
pub async fn replay_webhook(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteWebhooks>,
    WebhookPath { id }: WebhookPath,
    ApiJson(request): ApiJson<ReplayRequest>,
) -> Result<(StatusCode, ApiJson<WebhookView>), Problem> {
    reachable(&state, &caller, id).await?;
    let command = WebhookCommand::Replay(ReplayWebhook {
        webhook_id: id,
        from_position: request.from_position,
        requested_at: Utc::now().trunc_subsecs(6),
        requested_by: Some(caller.key_id.to_string()),
    });
    let webhook = run(&state, &caller, id, command).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(view(&webhook))))
}

/// The delivery log: the latest attempts, each with its outcome (status
/// code or error, duration), from the webhook's stream; with `message_id`
/// or `position`, only that message's or that event's, however old (to
/// answer a receiver that says it never got one).
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(WebhookPath, DeliveriesQuery),
    responses(
        (status = 200, description = "The latest attempts (that match), oldest first", body = DeliveryPage),
        Authenticated, Malformed, NoSuchWebhook,
    ),
    security(("api_key" = ["webhooks:read"]))
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadWebhooks>,
    WebhookPath { id }: WebhookPath,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<ApiJson<DeliveryPage>, Problem> {
    reachable(&state, &caller, id).await?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("limit must be 1 to 1000"));
    }
    let message_id = query.message_id()?;
    if query.position == Some(0) {
        return Err(Problem::bad_request("position must be 1 or more"));
    }
    // Only the matches are read, however long the stream is (one query on
    // its index), and decoded as every read of the log is.
    let position = query.position.map(|position| position.to_string());
    let matching: Vec<(&str, &str)> = [
        ("message_id", message_id.as_deref()),
        ("position", position.as_deref()),
    ]
    .into_iter()
    .filter_map(|(field, value)| Some((field, value?)))
    .collect();
    let attempts = state
        .store
        .newest_of_type_matching(
            &id.stream_id(),
            "WebhookDeliveryAttempted",
            &matching,
            limit as usize,
        )
        .await
        .map_err(store_unreadable(format!("reading webhook {id}'s stream")))?;
    let items = attempts
        .iter()
        .map(|recorded| match WebhookEvent::from_recorded(recorded) {
            Ok(WebhookEvent::DeliveryAttempted(attempt)) => {
                Ok(delivery_view(attempt, recorded.global_position))
            }
            Ok(other) => Err(Problem::internal().because(
                "reading a webhook's delivery attempts",
                anyhow::anyhow!("read a {} among them", other.event_type()),
            )),
            Err(error) => {
                Err(Problem::internal().because("decoding a webhook's delivery attempt", error))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(ApiJson(DeliveryPage { items }))
}

fn delivery_view(attempt: WebhookDeliveryAttempted, recorded_at_position: u64) -> DeliveryView {
    DeliveryView {
        message_id: attempt.message_id,
        position: attempt.position,
        kind: attempt.kind,
        attempt: attempt.attempt,
        attempted_at: attempt.attempted_at,
        duration_ms: attempt.duration_ms,
        status_code: attempt.status_code,
        error: attempt.error,
        outcome: serde_json::to_value(attempt.outcome)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default(),
        next_attempt_at: attempt.next_attempt_at,
        recorded_at_position,
    }
}

/// The webhook, when it exists, is not deleted and the caller reaches it.
///
/// # Errors
/// 404 otherwise, the same for another tenant's webhook as for none.
async fn reachable(state: &AppState, caller: &Caller, id: WebhookId) -> Result<Webhook, Problem> {
    match load(state, id).await? {
        Some(webhook)
            if match &caller.access {
                Access::AllTenants => true,
                Access::Tenant(own) => *own == webhook.tenant,
            } =>
        {
            Ok(webhook)
        }
        _ => Err(no_such_webhook(id)),
    }
}

/// The webhook folded from its stream; `None` when there is none or it is
/// deleted.
async fn load(state: &AppState, id: WebhookId) -> Result<Option<Webhook>, Problem> {
    match command::load::<Webhooks>(&state.store, &id.stream_id()).await {
        Ok(loaded) => Ok(loaded
            .state
            .filter(|webhook| webhook.status != WebhookStatus::Deleted)),
        Err(CommandError::Store(error)) => Err(store_unreadable(format!(
            "reading webhook {id}'s stream"
        ))(error)),
        Err(error) => Err(Problem::from(error)),
    }
}

fn no_such_webhook(id: WebhookId) -> Problem {
    Problem::not_found(format!("webhook {id} does not exist"))
}

async fn run(
    state: &AppState,
    caller: &Caller,
    id: WebhookId,
    command: WebhookCommand,
) -> Result<Webhook, Problem> {
    let executed = execute_as::<Webhooks>(state, caller, &id.stream_id(), command).await?;
    executed.state.ok_or_else(|| no_such_webhook(id))
}

fn view(webhook: &Webhook) -> WebhookView {
    WebhookView {
        id: webhook.id.0,
        tenant: TenantName::as_str(&webhook.tenant).to_owned(),
        url: webhook.url.clone(),
        events: webhook.event_kinds.iter().cloned().collect(),
        status: webhook.status.as_str(),
        disabled_reason: webhook.disabled_reason.clone(),
        created_at: webhook.created_at,
        attempts: webhook.attempts,
        deliveries: webhook.finished,
        version: webhook.version,
    }
}
