//! `/console/tasks/live`: Server-Sent Events naming each task that changes
//! from now on, for the list page's script to reload its rows.
//!
//! It follows the log as `GET /v1/events/stream` does, but says only which
//! task changed (id and event type), and only of tasks the key may see: a
//! tenant key hears only of its own tenant's tasks ([`tenancy::check_task`],
//! the check of `GET /v1/tasks/{id}`). Like `/v1`'s stream it takes one of
//! the key's stream slots and ends when the key is revoked or expires, or
//! the service stops.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use taskledger_events::task::TaskId;
use taskledger_events::EventStore as _;

use super::pages::{self, Chrome};
use super::session::SignedIn;
use super::ConsoleState;
use crate::http::auth::{ReadTasks, RequiredScopes};
use crate::http::tenancy;

/// `GET /console/tasks/live`.
pub(super) async fn tasks(State(state): State<ConsoleState>, signed_in: SignedIn) -> Response {
    let caller = signed_in.caller.clone();
    if let Err(problem) = caller.require_any(ReadTasks::SCOPES) {
        let chrome = Some(Chrome::of(&signed_in));
        return pages::message(
            StatusCode::FORBIDDEN,
            chrome,
            &problem.title,
            &problem.detail,
        );
    }
    let app = state.app;
    let slot = match app.limits.open_stream(caller.key_id) {
        Ok(slot) => slot,
        Err(problem) => return problem.into_response(),
    };
    let head = match app.store.head_position().await {
        Ok(head) => head,
        Err(error) => {
            return crate::http::log_unreadable("reading the log's head")(error).into_response()
        }
    };
    let key = app.key_watches.watch(&app.store, caller.key_id);
    let shutdown = app.shutdown.clone();
    let changes = app
        .store
        .subscribe_all(head)
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(move |event| {
            let app = app.clone();
            let caller = caller.clone();
            async move {
                let recorded = event.ok()?;
                let task_id = TaskId::from_stream_id(&recorded.stream_id)?;
                tenancy::check_task(&app, &caller, task_id).await.ok()?;
                let data = serde_json::json!({
                    "task_id": task_id.0,
                    "event_type": recorded.event_type,
                });
                Some(Ok::<_, Infallible>(
                    Event::default()
                        .id(recorded.global_position.to_string())
                        .event("task")
                        .data(data.to_string()),
                ))
            }
        })
        .take_until(key.unusable_or_stopped(shutdown))
        .map(move |event| {
            let _held = &slot;
            event
        });
    Sse::new(changes)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
