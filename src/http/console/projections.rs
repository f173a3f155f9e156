//! `/console/projections`: each projector's version, checkpoint, lag and
//! state (`GET /v1/projections`), pause and resume (`POST
//! /v1/projections/{name}/pause`, `…/resume`), and blue/green rebuilds
//! (`POST /v1/projections/{name}/rebuild`) with their progress.
//!
//! The page's script (`assets/projections.js`) polls
//! `/console/projections/status` — `/v1/projections` answered for the
//! session's key — to draw the lag chart and move the rebuild's progress
//! bar. Everything here is `/v1`'s admin routes, so it is for platform keys
//! with `admin` only: any other key gets `/v1`'s 403 as the refusal page.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::pages::{self, render, Chrome};
use super::session::{SignedForm, SignedIn};
use super::views::{path_segment, when};
use super::ConsoleState;

/// `GET /v1/projections`'s answer (`ProjectionPage`).
#[derive(Debug, Deserialize)]
struct ProjectionPage {
    items: Vec<Projection>,
}

/// One projector (`ProjectionView`).
#[derive(Debug, Deserialize)]
struct Projection {
    name: String,
    version: u32,
    position: u64,
    head: u64,
    lag_events: u64,
    lag_seconds: f64,
    state: String,
    failed_position: Option<u64>,
    failure: Option<String>,
    rebuild: Option<Rebuild>,
}

/// A projector's last blue/green rebuild (`RebuildView`).
#[derive(Debug, Deserialize)]
struct Rebuild {
    version: u32,
    state: String,
    position: u64,
    head: u64,
    events_per_s: f64,
    eta_seconds: Option<f64>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

impl Projection {
    /// The lag's age in words (`0.0 s`).
    fn lag_age(&self) -> String {
        format!("{:.1} s", self.lag_seconds)
    }

    fn is_paused(&self) -> bool {
        self.state == "paused"
    }

    /// A rebuild that has not read the log's head yet (it just started)
    /// measures against the head the projector saw, not 0.
    fn rebuild_head_from_the_log(&mut self) {
        let head = self.head;
        if let Some(rebuild) = self.rebuild.as_mut() {
            if rebuild.is_running() && rebuild.head == 0 {
                rebuild.head = head;
            }
        }
    }

    /// Whether a rebuild of it is going on (another would be refused).
    fn rebuilding(&self) -> bool {
        self.rebuild.as_ref().is_some_and(Rebuild::is_running)
    }

    /// The name as one path segment of a form's action.
    fn name_in_path(&self) -> String {
        path_segment(&self.name)
    }
}

impl Rebuild {
    /// Whether it is still going.
    fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "building" | "swapping")
    }

    /// The progress bar's full length: the head as last read (at least 1,
    /// so an empty log shows a full bar once done).
    fn bar_max(&self) -> u64 {
        self.head.max(self.position).max(1)
    }

    /// The bar's filled length: all of it once done.
    fn bar_value(&self) -> u64 {
        if self.state == "done" {
            self.bar_max()
        } else {
            self.position
        }
    }

    /// Its progress in words: events, rate and time left or taken.
    fn summary(&self) -> String {
        rebuild_summary(
            self.position,
            self.head,
            self.events_per_s,
            self.eta_seconds,
            self.is_running(),
        )
    }

    fn started(&self) -> String {
        when(&self.started_at)
    }

    fn finished(&self) -> String {
        self.finished_at.as_ref().map_or_else(String::new, when)
    }
}

/// A rebuild's progress in words, as the page's script also writes it:
/// `1200 of 5000 events · 800 events/s · about 5 s left`.
fn rebuild_summary(
    position: u64,
    head: u64,
    events_per_s: f64,
    eta_seconds: Option<f64>,
    running: bool,
) -> String {
    let mut words = format!("{position} of {head} events · {events_per_s:.0} events/s");
    if running {
        match eta_seconds {
            Some(eta) => words.push_str(&format!(" · about {} left", seconds(eta))),
            None => words.push_str(" · starting"),
        }
    }
    words
}

/// A duration in words (`42 s`, `3 min 5 s`).
fn seconds(total: f64) -> String {
    let total = total.max(0.0).ceil() as u64;
    if total < 60 {
        format!("{total} s")
    } else {
        format!("{} min {} s", total / 60, total % 60)
    }
}

/// The projections page.
#[derive(Template)]
#[template(path = "projections.html")]
struct ProjectionsPage {
    chrome: Option<Chrome>,
    projections: Vec<Projection>,
    /// The session's CSRF token, for the forms.
    csrf: String,
}

/// `GET /console/projections`.
pub(super) async fn show(State(state): State<ConsoleState>, signed_in: SignedIn) -> Response {
    let page: ProjectionPage = match state.api.get(&signed_in.secret, "/v1/projections").await {
        Ok(page) => page,
        Err(refusal) => return pages::refused(Some(Chrome::of(&signed_in)), &refusal, "This page"),
    };
    let mut projections = page.items;
    for projection in &mut projections {
        projection.rebuild_head_from_the_log();
    }
    render(&ProjectionsPage {
        chrome: Some(Chrome::of(&signed_in)),
        projections,
        csrf: signed_in.csrf.clone(),
    })
}

/// `GET /console/projections/status`: `GET /v1/projections` as `/v1`
/// answers it to the session's key (JSON, or its problem), for the page's
/// script.
pub(super) async fn status(State(state): State<ConsoleState>, signed_in: SignedIn) -> Response {
    state
        .api
        .send(&signed_in.secret, Method::GET, "/v1/projections", None)
        .await
}

/// `GET /console/projections/{name}`: the page, at the projection's row (a
/// stable link to one projection; also where sign-in returns to after a
/// form was sent with an expired session).
pub(super) async fn one(_: SignedIn, Path(name): Path<String>) -> Redirect {
    Redirect::to(&format!(
        "/console/projections#projection-{}",
        path_segment(&name)
    ))
}

/// What a form on the page asks of a projection.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Pause,
    Resume,
    Rebuild,
}

impl Operation {
    fn of(path: &str) -> Option<Self> {
        match path {
            "pause" => Some(Self::Pause),
            "resume" => Some(Self::Resume),
            "rebuild" => Some(Self::Rebuild),
            _ => None,
        }
    }

    /// The `/v1` route's last segment.
    fn segment(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Rebuild => "rebuild",
        }
    }
}

/// `POST /console/projections/{name}/{pause|resume|rebuild}`, with the
/// session's CSRF token: the `/v1` operation, then back to the page (at
/// the projection's row).
pub(super) async fn operate(
    State(state): State<ConsoleState>,
    Path((name, operation)): Path<(String, String)>,
    SignedForm { signed_in, .. }: SignedForm,
) -> Response {
    let Some(operation) = Operation::of(&operation) else {
        return pages::not_found(Some(Chrome::of(&signed_in)), "This page");
    };
    let name = path_segment(&name);
    let path = format!("/v1/projections/{name}/{}", operation.segment());
    match state.api.post(&signed_in.secret, &path).await {
        Ok(_) => Redirect::to(&format!("/console/projections#projection-{name}")).into_response(),
        Err(refusal) => pages::refused(Some(Chrome::of(&signed_in)), &refusal, "This projection"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_says_how_far_it_is_and_how_long_is_left() {
        assert_eq!(
            rebuild_summary(1200, 5000, 800.0, Some(4.75), true),
            "1200 of 5000 events · 800 events/s · about 5 s left"
        );
        assert_eq!(
            rebuild_summary(0, 5000, 0.0, None, true),
            "0 of 5000 events · 0 events/s · starting"
        );
        assert_eq!(
            rebuild_summary(5000, 5000, 812.4, None, false),
            "5000 of 5000 events · 812 events/s"
        );
        assert_eq!(seconds(185.0), "3 min 5 s");
    }

    #[test]
    fn the_page_has_nothing_inline_and_escapes_what_it_shows() {
        let page = ProjectionsPage {
            chrome: None,
            projections: vec![Projection {
                name: "tasks".to_owned(),
                version: 4,
                position: 10,
                head: 12,
                lag_events: 2,
                lag_seconds: 0.25,
                state: "failed".to_owned(),
                failed_position: Some(11),
                failure: Some("<b>no task row</b>".to_owned()),
                rebuild: None,
            }],
            csrf: "token\"><script>".to_owned(),
        }
        .render()
        .unwrap();
        assert!(page.contains("at #11: &#60;b&#62;no task row"), "{page}");
        assert!(!page.contains("token\"><script>"), "{page}");
        assert!(
            !page.contains("<script>") && !page.contains("style="),
            "{page}"
        );
        assert!(page.contains(r#"<script src="/console/assets/projections.js" defer></script>"#));
        assert!(
            page.contains(r#"<tr class="rebuild" id="rebuild-tasks" data-rebuild="tasks" hidden>"#)
        );
    }

    #[test]
    fn a_done_rebuild_fills_its_bar() {
        let rebuild = Rebuild {
            version: 2,
            state: "done".to_owned(),
            position: 0,
            head: 0,
            events_per_s: 0.0,
            eta_seconds: None,
            started_at: Utc::now(),
            finished_at: Some(Utc::now()),
            error: None,
        };
        assert_eq!((rebuild.bar_value(), rebuild.bar_max()), (1, 1));
        assert!(!rebuild.is_running());
    }
}
