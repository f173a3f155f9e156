//! The global order for ledger sync consumers and auditors: `GET
//! /v1/events?after=SEQ` pages through it, `GET /v1/events/stream?after=SEQ`
//! follows it live as Server-Sent Events. Both give every event once, in
//! order, with its sequence (global position) and hash, read from the log
//! itself (never from a projection).
//!
//! A live stream takes one of its key's stream slots, freed when it ends,
//! and ends when its key is revoked or expires or the service stops
//! ([`super::sse`]). It holds no database connection while it waits: the
//! store's one listener wakes it.

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::Response;
use futures::StreamExt;
use serde::Deserialize;
use taskledger_events::EventStore;
use utoipa::IntoParams;

use super::auth::ReadLog;
use super::paging::page_size;
use super::problem::{ApiJson, ApiQuery, Problem};
use super::responses::{Malformed, PlatformOnly};
use super::sse::{Admitted, LastEventId};
use super::tasks::{event_view, EventPage, DEFAULT_PAGE, MAX_EVENTS_PAGE};
use super::tenancy::PlatformAuthorized;
use super::{log_unreadable, AppState};

/// Where to start reading.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Events after this sequence (0, the default, reads from the start).
    /// Polling consumers pass the last sequence they recorded.
    pub after: Option<u64>,
    /// Events per page, 1 to 1000 (default 100; pages only).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page of the global order, oldest first.
#[utoipa::path(
    get, path = "/v1/events", tag = "ledger",
    params(FeedQuery),
    responses(
        (status = 200, description = "Events after `after`, in order; `next_cursor` is the last sequence when more may follow at once", body = EventPage),
        PlatformOnly, Malformed,
    ),
    security(("api_key" = ["audit:read"]))
)]
pub async fn list_events(
    State(state): State<AppState>,
    _: PlatformAuthorized<ReadLog>,
    ApiQuery(query): ApiQuery<FeedQuery>,
) -> Result<ApiJson<EventPage>, Problem> {
    let limit = page_size(query.limit, DEFAULT_PAGE, MAX_EVENTS_PAGE)?;
    let events = state
        .store
        .read_all(query.after.unwrap_or(0), limit as usize)
        .await
        .map_err(log_unreadable("reading the global order"))?;
    let next_cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|event| event.global_position.to_string()))
        .flatten();
    Ok(ApiJson(EventPage {
        items: events.into_iter().map(event_view).collect(),
        next_cursor,
    }))
}

/// The global order, live, as Server-Sent Events: `id` = sequence, `event`
/// = event type, `data` = the event as in `GET /v1/events`. A reconnecting
/// client's `Last-Event-ID` header takes precedence over `after`. A key may
/// hold `[limits] streams_per_key` streams open (429 beyond), the server
/// `streams_total` (503 beyond); a stream ends within about a second of its
/// key being revoked or expiring.
#[utoipa::path(
    get, path = "/v1/events/stream", tag = "ledger",
    params(
        FeedQuery,
        LastEventId,
    ),
    responses(
        (status = 200, description = "An endless event stream: each event's `id` is its sequence, `event` its type, `data` the event as in `GET /v1/events`", content_type = "text/event-stream"),
        PlatformOnly,
        (status = 400, description = "A malformed query or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server holds as many open event streams as it serves (`[limits] streams_total`), or the database cannot answer right now; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("api_key" = ["audit:read"]))
)]
pub async fn stream_events(
    State(state): State<AppState>,
    PlatformAuthorized { caller, .. }: PlatformAuthorized<ReadLog>,
    last_seen: LastEventId,
    ApiQuery(query): ApiQuery<FeedQuery>,
) -> Result<Response, Problem> {
    let after = last_seen.after.or(query.after).unwrap_or(0);
    let admitted = Admitted::admit(&state, caller.key_id)?;
    // An unreadable event ends the stream (never skipped); the client
    // reconnects with Last-Event-ID and meets the same event again.
    let events = state
        .store
        .subscribe_all(after)
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(|event| async move {
            let recorded = event.ok()?;
            let position = recorded.global_position;
            let event_type = recorded.event_type.clone();
            let data = serde_json::to_string(&event_view(recorded)).ok()?;
            Some(
                Event::default()
                    .id(position.to_string())
                    .event(event_type)
                    .data(data),
            )
        });
    Ok(admitted.respond(events))
}
