//! `/console/tasks/{id}`: one task — its status, parameters, result
//! document, files, and its history as a timeline (`GET
//! /v1/tasks/{id}/events`), optionally as it was at one of its events (`?
//! at_version=`, the time-travel read); cancel for keys that may.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::api::Refusal;
use super::pages::{self, render, Chrome};
use super::session::{SignedForm, SignedIn};
use super::views::{
    path_segment, size, Artifact, ArtifactPage, Event, EventPage, Task, TaskResult,
};
use super::ConsoleState;
use crate::http::auth::{RequiredScopes, WriteTasks};

/// The most events of a history one page shows.
const HISTORY_PAGE: u32 = 1_000;

/// `?at_version=`: the task as it was at that event; `?min_version=`: once
/// the read model shows at least that version (after a write).
#[derive(Debug, Default, Deserialize)]
pub(super) struct TaskQuery {
    #[serde(default)]
    at_version: Option<u64>,
    #[serde(default)]
    min_version: Option<u64>,
}

/// The task page.
#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    chrome: Option<Chrome>,
    task: Task,
    /// The event the task is shown as of, when it is not now.
    at_version: Option<u64>,
    result: Option<TaskResult>,
    artifacts: Vec<Artifact>,
    history: Option<EventPage>,
    /// Why the history is not shown, when it is not.
    history_refused: String,
    can_cancel: bool,
    /// The session's CSRF token, for the cancel form.
    csrf: String,
}

impl TaskPage {
    fn artifact_size(&self, artifact: &Artifact) -> String {
        size(&artifact.size)
    }

    /// Whether the page shows the task as of `event`.
    fn is_current(&self, event: &Event) -> bool {
        self.at_version == Some(event.version)
    }
}

/// The task id of a path, if it is one: anything else is a task that does
/// not exist.
fn task_id(id: &str) -> Option<Uuid> {
    Uuid::parse_str(id).ok()
}

fn no_such_task(signed_in: &SignedIn) -> Response {
    pages::not_found(Some(Chrome::of(signed_in)), "This task")
}

fn refused(signed_in: &SignedIn, refusal: &Refusal) -> Response {
    pages::refused(Some(Chrome::of(signed_in)), refusal, "This task")
}

/// `GET /console/tasks/{id}`.
pub(super) async fn show(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<TaskQuery>,
) -> Response {
    let Some(id) = task_id(&id) else {
        return no_such_task(&signed_in);
    };
    let secret = &signed_in.secret;
    let task_path = match (query.at_version, query.min_version) {
        (Some(version), _) => format!("/v1/tasks/{id}?at_version={version}"),
        (None, Some(version)) => format!("/v1/tasks/{id}?min_version={version}"),
        (None, None) => format!("/v1/tasks/{id}"),
    };
    let task: Task = match state.api.get(secret, &task_path).await {
        Ok(task) => task,
        Err(refusal) => return refused(&signed_in, &refusal),
    };
    let events_path = format!("/v1/tasks/{id}/events?limit={HISTORY_PAGE}");
    let (history, history_refused) = match state.api.get::<EventPage>(secret, &events_path).await {
        Ok(history) => (Some(history), String::new()),
        Err(refusal) => (None, refusal.detail),
    };
    let result = if task.status == "succeeded" {
        state
            .api
            .get::<TaskResult>(secret, &format!("/v1/tasks/{id}/result"))
            .await
            .ok()
    } else {
        None
    };
    // A task without a result row has no files: /v1 answers 404. Files
    // are the task's now: shown as of an event only once it had ended.
    let artifacts = if query.at_version.is_none() || task.is_final() {
        state
            .api
            .get::<ArtifactPage>(secret, &format!("/v1/tasks/{id}/artifacts"))
            .await
            .map_or_else(|_| Vec::new(), |page| page.items)
    } else {
        Vec::new()
    };
    let can_cancel = query.at_version.is_none()
        && task.cancelable()
        && signed_in.caller.require_any(WriteTasks::SCOPES).is_ok();
    render(&TaskPage {
        chrome: Some(Chrome::of(&signed_in)),
        task,
        at_version: query.at_version,
        result,
        artifacts,
        history,
        history_refused,
        can_cancel,
        csrf: signed_in.csrf.clone(),
    })
}

/// `POST /console/tasks/{id}/cancel`, with the session's CSRF token.
pub(super) async fn cancel(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    SignedForm { signed_in, .. }: SignedForm,
) -> Response {
    let Some(id) = task_id(&id) else {
        return no_such_task(&signed_in);
    };
    match state
        .api
        .post(&signed_in.secret, &format!("/v1/tasks/{id}/cancel"))
        .await
    {
        // The task page waits until the read model shows the cancellation.
        Ok(task) => match task["stream_version"].as_u64() {
            Some(version) => Redirect::to(&format!("/console/tasks/{id}?min_version={version}")),
            None => Redirect::to(&format!("/console/tasks/{id}")),
        }
        .into_response(),
        Err(refusal) => refused(&signed_in, &refusal),
    }
}

/// `GET /console/tasks/{id}/artifacts/{name}`: the file, streamed from
/// `/v1`.
pub(super) async fn artifact(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let Some(id) = task_id(&id) else {
        return no_such_task(&signed_in);
    };
    let name = path_segment(&name);
    let response = state
        .api
        .send(
            &signed_in.secret,
            Method::GET,
            &format!("/v1/tasks/{id}/artifacts/{name}"),
            None,
        )
        .await;
    if response.status().is_success() {
        return response;
    }
    let refusal = super::api::refusal(response).await;
    pages::refused(Some(Chrome::of(&signed_in)), &refusal, "This file")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task as `GET /v1/tasks/{id}` answers it, with `extra` fields.
    fn task(extra: serde_json::Value) -> Task {
        let mut view = serde_json::json!({
            "id": "01a232ee-9661-7280-b55c-64e2493f54d5", "kind": "flaky",
            "status": "queued", "tenant": "acme", "frontend_id": "acme",
            "client_task_id": null, "params": {}, "priority": 0,
            "max_attempts": 3, "attempts": 1, "worker_id": null,
            "progress": null, "error": "exit 75", "exit_code": 75,
            "submitted_at": "2026-12-01T18:00:00Z", "submitted_by": null,
            "started_at": null, "finished_at": null, "stream_version": 4
        });
        view.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(view).unwrap()
    }

    fn page(task: Task) -> String {
        TaskPage {
            chrome: None,
            task,
            at_version: None,
            result: None,
            artifacts: Vec::new(),
            history: None,
            history_refused: String::new(),
            can_cancel: false,
            csrf: String::new(),
        }
        .render()
        .unwrap()
    }

    #[test]
    fn a_waiting_retry_shows_when_its_attempt_may_start() {
        let waiting = page(task(
            serde_json::json!({ "next_attempt_at": "2026-12-01T18:00:04Z" }),
        ));
        assert!(waiting.contains("Next attempt"), "{waiting}");
        assert!(
            waiting.contains(&super::super::views::when(
                &"2026-12-01T18:00:04Z".parse().unwrap()
            )),
            "{waiting}"
        );
        let not_waiting = page(task(serde_json::json!({})));
        assert!(!not_waiting.contains("Next attempt"), "{not_waiting}");
    }
}
