//! What every live stream of the log shares (`GET /v1/events/stream`,
//! `GET /v1/tasks/stream`): where it resumes (`Last-Event-ID`, the last
//! position the client saw), one of its key's stream slots
//! ([`super::limits`]) held for as long as it is open, its end when the key
//! is revoked or expires ([`super::key_watch`]) or the service stops, and
//! its keep-alive.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use utoipa::IntoParams;
use uuid::Uuid;

use super::key_watch::WatchedKey;
use super::limits::StreamSlot;
use super::problem::{optional_header, Problem};
use super::AppState;
use crate::service::shutdown::Shutdown;

/// How often an idle stream sends a comment, so proxies and clients see a
/// live connection (and a hung-up client is noticed, freeing its slot).
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The `Last-Event-ID` header a reconnecting client sends: the position
/// (each event's `id`) it saw last, which its stream resumes after and
/// which takes precedence over the query's `after`.
#[derive(Debug, Clone, Copy, Default, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct LastEventId {
    /// Resume after this position (a reconnecting client sends the last
    /// `id` it saw)
    #[param(rename = "Last-Event-ID", value_type = u64, required = false)]
    pub after: Option<u64>,
}

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = Problem;

    /// 400 when `Last-Event-ID` is not a position.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let not_position = "Last-Event-ID must be a position in the log";
        let after = optional_header(parts, "last-event-id", not_position, |text| {
            text.trim()
                .parse::<u64>()
                .map_err(|_| Problem::bad_request(not_position))
        })?;
        Ok(Self { after })
    }
}

/// An admitted stream, before it has events: its key's slot and watch.
#[derive(Debug)]
pub(crate) struct Admitted {
    slot: StreamSlot,
    key: WatchedKey,
    shutdown: Option<Shutdown>,
}

impl Admitted {
    /// Takes one of `key_id`'s stream slots and starts watching the key.
    ///
    /// # Errors
    /// 429 when the key holds its `streams_per_key`, 503 when this process
    /// holds `streams_total` (both with `Retry-After`).
    pub(crate) fn admit(state: &AppState, key_id: Uuid) -> Result<Self, Problem> {
        let slot = state.limits.open_stream(key_id)?;
        let key = state.key_watches.watch(&state.store, key_id);
        Ok(Self {
            slot,
            key,
            shutdown: state.shutdown.clone(),
        })
    }

    /// `events` as Server-Sent Events, until they end, the key can no
    /// longer be used or the service stops — so a graceful shutdown does
    /// not wait for consumers to hang up. The slot is freed when the
    /// response is dropped (ended or hung up).
    pub(crate) fn respond<S>(self, events: S) -> Response
    where
        S: Stream<Item = Event> + Send + 'static,
    {
        let Self {
            slot,
            key,
            shutdown,
        } = self;
        let events = events
            .take_until(key.unusable_or_stopped(shutdown))
            .map(move |event| {
                let _held = &slot;
                Ok::<_, Infallible>(event)
            });
        Sse::new(events)
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response()
    }
}
