//! `GET /v1/tasks/stream`: the caller's tenant's task status changes, live,
//! as Server-Sent Events — so a frontend is told when its task finishes
//! instead of polling `GET /v1/tasks/{id}`.
//!
//! It follows the global order as `GET /v1/events/stream` does, through
//! the same machinery ([`crate::http::sse`]: stream slots, the key watch,
//! `Last-Event-ID`, keep-alive), and shows of it only the changes
//! [`super::changes`] finds of tasks the key may see: a tenant key its own
//! tenant's, a platform key every tenant's.

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::Response;
use serde::Deserialize;
use std::borrow::Cow;
use taskledger_events::EventStore as _;

use utoipa::openapi::schema::{ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::changes::{ChangeFilter, TaskChangeView, TaskChanges};
use crate::http::auth::{Authorized, ReadTasks};
use crate::http::problem::{ApiQuery, Problem};
use crate::http::responses::{Authenticated, Malformed};
use crate::http::sse::{Admitted, LastEventId};
use crate::http::{log_unreadable, tenancy, AppState};

/// The SSE event name of every change.
pub const CHANGE_EVENT: &str = "task";

/// One Server-Sent Event of `GET /v1/tasks/stream`, as the document
/// describes it: `id`, `event` and `data` (a [`TaskChangeView`] as JSON).
/// Only a description: the handler writes [`Event`]s.
#[derive(Debug)]
pub struct TaskChangeEvent;

impl PartialSchema for TaskChangeEvent {
    fn schema() -> RefOr<Schema> {
        let string = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .description(Some(
                "One Server-Sent Event of the stream: a change of a task's status",
            ))
            .property(
                "id",
                string("The change's position in the log, in decimal: send the last one seen as `Last-Event-ID` to resume after it")
                    .pattern(Some("^[0-9]+$")),
            )
            .property(
                "event",
                string("Always `task`").enum_values(Some([CHANGE_EVENT])),
            )
            .property(
                "data",
                string("The change, as JSON (`TaskChangeView`)")
                    .content_media_type("application/json")
                    .content_schema(Some(Ref::from_schema_name(TaskChangeView::name()))),
            )
            .required("id")
            .required("event")
            .required("data")
            .into()
    }
}

impl ToSchema for TaskChangeEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TaskChangeEvent")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            TaskChangeView::name().into_owned(),
            TaskChangeView::schema(),
        ));
        <TaskChangeView as ToSchema>::schemas(schemas);
    }
}

/// Where to start and which tasks to show.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskStreamQuery {
    /// Changes after this position (a write's `position`, to miss nothing
    /// that followed it; 0 replays from the start). Default: the log's head
    /// when the stream opens (changes from now on). A `Last-Event-ID`
    /// header takes precedence.
    pub after: Option<u64>,
    /// Only this frontend's tasks.
    pub frontend_id: Option<String>,
    /// Only tasks of this kind.
    pub kind: Option<String>,
    /// Only this tenant's tasks (platform keys; for a tenant key only its
    /// own tenant gives any).
    pub tenant: Option<String>,
}

/// The caller's tasks' status changes, live, as Server-Sent Events: each
/// event's `id` is its position in the log, `event` is `task`, `data` a
/// [`TaskChangeView`]. One event per change of status (submitted, started,
/// retried, succeeded, failed, timed out, canceled), in the log's order;
/// progress changes no status and is not sent. A tenant key hears only of
/// its own tenant's tasks (never of another tenant's, nor how many), a
/// platform key of every tenant's. Resume after a disconnect with
/// `Last-Event-ID` (browsers' `EventSource` sends it): the stream goes on
/// exactly after that change. Idle streams get a comment every 15 s. A key
/// may hold `[limits] streams_per_key` streams open (429 beyond), the server
/// `streams_total` (503 beyond); a stream ends within about a second of its
/// key being revoked or expiring.
#[utoipa::path(
    get, path = "/v1/tasks/stream", tag = "tasks",
    params(
        TaskStreamQuery,
        LastEventId,
    ),
    responses(
        (status = 200, description = "An endless event stream: each event's `id` is its position in the log, `event` is `task`, `data` the change as JSON (`TaskChangeView`)", body = TaskChangeEvent, content_type = "text/event-stream"),
        Authenticated, Malformed,
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn stream_tasks(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadTasks>,
    last_seen: LastEventId,
    ApiQuery(query): ApiQuery<TaskStreamQuery>,
) -> Result<Response, Problem> {
    for (name, value) in [
        ("kind", &query.kind),
        ("frontend_id", &query.frontend_id),
        ("tenant", &query.tenant),
    ] {
        if value
            .as_deref()
            .is_some_and(|value| value.chars().any(char::is_control))
        {
            return Err(Problem::bad_request(format!(
                "{name} must not contain control characters"
            )));
        }
    }
    let after = match last_seen.after.or(query.after) {
        Some(after) => after,
        None => state
            .store
            .head_position()
            .await
            .map_err(log_unreadable("reading the log's head"))?,
    };
    let filter = ChangeFilter {
        tenants: tenancy::listing_tenants(&caller, query.tenant.as_deref()),
        frontend_id: query.frontend_id,
        kind: query.kind,
    };
    let admitted = Admitted::admit(&state, caller.key_id)?;
    let feed = state.store.subscribe_all(after);
    let follower = TaskChanges::new(state.store.clone(), filter);
    // An event that cannot be read ends the stream (never skipped); the
    // client reconnects with Last-Event-ID and meets it again.
    let changes = futures::stream::unfold(
        (feed, follower),
        |(mut feed, mut follower)| async move {
            loop {
                let recorded = match feed.next().await? {
                    Ok(recorded) => recorded,
                    Err(error) => {
                        tracing::warn!(error = %error, "a task stream cannot read the log; ending it");
                        return None;
                    }
                };
                match follower.change(&recorded).await {
                    Ok(None) => {}
                    Ok(Some(change)) => {
                        let event = change_event(&change)?;
                        return Some((event, (feed, follower)));
                    }
                    Err(error) => {
                        tracing::warn!(
                            position = recorded.global_position,
                            error = format!("{:#}", anyhow::Error::from(error)),
                            "a task stream cannot read a task's events; ending it"
                        );
                        return None;
                    }
                }
            }
        },
    );
    Ok(admitted.respond(changes))
}

/// `change` as its Server-Sent Event.
fn change_event(change: &TaskChangeView) -> Option<Event> {
    let data = serde_json::to_string(change).ok()?;
    Some(
        Event::default()
            .id(change.position.to_string())
            .event(CHANGE_EVENT)
            .data(data),
    )
}
