//! `/console/audit`: auditors' pages — verifying a range of the hash chain
//! (`GET /v1/audit/verify`), with the first bad sequence linked to its
//! event, and browsing any stream's events as stored (`GET
//! /v1/streams/{stream}/events`) as a timeline.
//!
//! Both are `/v1`'s audit routes, so they are for platform keys with
//! `audit:read` (or `admin`) only: any other key gets `/v1`'s 403 as the
//! refusal page.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::api::Refusal;
use super::pages::{self, render, Chrome};
use super::session::SignedIn;
use super::views::{path_segment, Event, EventPage};
use super::ConsoleState;

/// Events per page of a stream.
const STREAM_PAGE: u32 = 100;

/// Events shown before the one a link points at, for context.
const CONTEXT_EVENTS: u64 = 5;

/// `?from=&to=&from_last_verified=&from_anchor=` as the verify form sends
/// them (blank: `/v1`'s default; the tick box sends `true` when ticked).
#[derive(Debug, Default, Deserialize)]
pub(super) struct VerifyForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    from_last_verified: String,
    #[serde(default)]
    from_anchor: String,
}

impl VerifyForm {
    /// The `/v1/audit/verify` query of the fields filled in.
    fn query(&self) -> String {
        pages::filled_in([
            ("from", self.from.as_str()),
            ("to", &self.to),
            ("from_last_verified", &self.from_last_verified),
            ("from_anchor", &self.from_anchor),
        ])
        .finish()
    }

    /// Whether the tick box "from the last recorded verification" is ticked.
    fn resumes_from_last(&self) -> bool {
        self.from_last_verified.trim() == "true"
    }
}

/// `GET /v1/audit/verify`'s answer (`VerifyView`).
#[derive(Debug, Deserialize)]
struct Verdict {
    ok: bool,
    from: u64,
    to: u64,
    checked: u64,
    first_bad_sequence: Option<u64>,
    problem: Option<String>,
    #[serde(default)]
    resumed_from: Option<ResumedFrom>,
}

/// `VerifyView.resumed_from`: where a resumed verification started.
#[derive(Debug, Deserialize)]
struct ResumedFrom {
    position: u64,
    anchored_by: String,
    not_rechecked_through: u64,
}

/// One event of the global order, as far as a link to its stream needs.
#[derive(Debug, Deserialize)]
struct Located {
    position: u64,
    stream_id: String,
    version: u64,
}

#[derive(Debug, Deserialize)]
struct LocatedPage {
    items: Vec<Located>,
}

/// The audit page: the verify form, its verdict when one was asked for,
/// and the stream form.
#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Option<Chrome>,
    form: VerifyForm,
    verdict: Option<Verdict>,
    /// Where the first bad sequence's event is shown, when it is stored.
    first_bad_link: Option<String>,
    /// Why the range could not be verified (a malformed or refused range).
    error: String,
}

impl AuditPage {
    /// Whether the range was empty (an empty log with the default range).
    fn nothing_checked(&self, verdict: &Verdict) -> bool {
        verdict.from > verdict.to
    }
}

fn refused(signed_in: &SignedIn, refusal: &Refusal, what: &str) -> Response {
    pages::refused(Some(Chrome::of(signed_in)), refusal, what)
}

/// `GET /console/audit`: the forms. The log's first event is read to
/// learn whether the key may read the log at all (`/v1`'s audit rule).
pub(super) async fn show(State(state): State<ConsoleState>, signed_in: SignedIn) -> Response {
    if let Err(refusal) = state
        .api
        .get::<LocatedPage>(&signed_in.secret, "/v1/events?limit=1")
        .await
    {
        return refused(&signed_in, &refusal, "This page");
    }
    render(&AuditPage {
        chrome: Some(Chrome::of(&signed_in)),
        form: VerifyForm::default(),
        verdict: None,
        first_bad_link: None,
        error: String::new(),
    })
}

/// `GET /console/audit/verify?from=&to=`: the verdict on that range.
pub(super) async fn verify(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Query(form): Query<VerifyForm>,
) -> Response {
    let secret = &signed_in.secret;
    let path = format!("/v1/audit/verify?{}", form.query());
    let mut page = AuditPage {
        chrome: Some(Chrome::of(&signed_in)),
        form,
        verdict: None,
        first_bad_link: None,
        error: String::new(),
    };
    match state.api.get::<Verdict>(secret, &path).await {
        Ok(verdict) => {
            if let Some(sequence) = verdict.first_bad_sequence {
                page.first_bad_link = event_link(&state, &signed_in, sequence).await;
            }
            page.verdict = Some(verdict);
            render(&page)
        }
        // A range /v1 cannot check: said beside the form, kept as typed.
        Err(refusal)
            if matches!(
                refusal.status,
                StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
            ) =>
        {
            page.error = refusal.detail;
            (refusal.status, render(&page)).into_response()
        }
        Err(refusal) => refused(&signed_in, &refusal, "This page"),
    }
}

/// The stream page showing the event at `sequence`, marked, if one is
/// stored there (a missing sequence has none).
async fn event_link(state: &ConsoleState, signed_in: &SignedIn, sequence: u64) -> Option<String> {
    let path = format!("/v1/events?after={}&limit=1", sequence.saturating_sub(1));
    let page: LocatedPage = state.api.get(&signed_in.secret, &path).await.ok()?;
    let event = page
        .items
        .into_iter()
        .find(|event| event.position == sequence)?;
    let after = event
        .version
        .saturating_sub(1)
        .saturating_sub(CONTEXT_EVENTS);
    Some(format!(
        "/console/audit/streams/{}?after_version={after}&mark={sequence}#seq-{sequence}",
        path_segment(&event.stream_id)
    ))
}

/// `?stream=` of the stream form.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamForm {
    #[serde(default)]
    stream: String,
}

/// `GET /console/audit/streams?stream=…`: the stream's page (the form's
/// answer, so the page has a stable URL).
pub(super) async fn open_stream(_: SignedIn, Query(form): Query<StreamForm>) -> Redirect {
    let stream = form.stream.trim();
    if stream.is_empty() {
        return Redirect::to("/console/audit");
    }
    Redirect::to(&format!("/console/audit/streams/{}", path_segment(stream)))
}

/// `?after_version=` (paging) and `?mark=` (the sequence a link points at).
#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamQuery {
    #[serde(default)]
    after_version: Option<u64>,
    #[serde(default)]
    mark: Option<u64>,
}

/// A stream's page of events.
#[derive(Template)]
#[template(path = "stream.html")]
struct StreamPage {
    chrome: Option<Chrome>,
    stream: String,
    /// The task page, for a task's stream.
    task_link: Option<String>,
    events: EventPage,
    after_version: u64,
    mark: Option<u64>,
}

impl StreamPage {
    fn is_marked(&self, event: &Event) -> bool {
        self.mark == Some(event.position)
    }

    /// The stream as one path segment of a link.
    fn stream_in_path(&self) -> String {
        path_segment(&self.stream)
    }

    /// `after_version` of the page before this one.
    fn earlier(&self) -> u64 {
        self.after_version.saturating_sub(u64::from(STREAM_PAGE))
    }
}

/// `GET /console/audit/streams/{stream}`.
pub(super) async fn stream(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(stream): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Response {
    let after_version = query.after_version.unwrap_or(0);
    let path = format!(
        "/v1/streams/{}/events?after_version={after_version}&limit={STREAM_PAGE}",
        path_segment(&stream)
    );
    let events: EventPage = match state.api.get(&signed_in.secret, &path).await {
        Ok(events) => events,
        // A name no stream can have is a stream that does not exist.
        Err(refusal) if refusal.status == StatusCode::BAD_REQUEST => {
            return pages::not_found(Some(Chrome::of(&signed_in)), "This stream")
        }
        Err(refusal) => return refused(&signed_in, &refusal, "This stream"),
    };
    let task_link = stream
        .strip_prefix("task-")
        .map(|id| format!("/console/tasks/{}", path_segment(id)));
    render(&StreamPage {
        chrome: Some(Chrome::of(&signed_in)),
        stream,
        task_link,
        events,
        after_version,
        mark: query.mark,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_fields_are_left_to_v1s_defaults() {
        let form = |from: &str, to: &str| VerifyForm {
            from: from.to_owned(),
            to: to.to_owned(),
            ..VerifyForm::default()
        };
        assert_eq!(form("", " ").query(), "");
        assert_eq!(form("5", "").query(), "from=5");
        assert_eq!(form(" 1", "9 ").query(), "from=1&to=9");
        assert_eq!(form("1&to=2", "").query(), "from=1%26to%3D2");
        let resumed = VerifyForm {
            to: "9".to_owned(),
            from_last_verified: "true".to_owned(),
            from_anchor: " ".to_owned(),
            ..VerifyForm::default()
        };
        assert_eq!(resumed.query(), "to=9&from_last_verified=true");
        assert!(resumed.resumes_from_last());
        let anchored = VerifyForm {
            from_anchor: "chain-a".to_owned(),
            ..VerifyForm::default()
        };
        assert_eq!(anchored.query(), "from_anchor=chain-a");
        assert!(!anchored.resumes_from_last());
    }

    #[test]
    fn a_resumed_verdict_says_where_it_resumed_and_what_it_did_not_recheck() {
        let page = AuditPage {
            chrome: None,
            form: VerifyForm {
                from_last_verified: "true".to_owned(),
                ..VerifyForm::default()
            },
            verdict: Some(Verdict {
                ok: true,
                from: 12,
                to: 20,
                checked: 9,
                first_bad_sequence: None,
                problem: None,
                resumed_from: Some(ResumedFrom {
                    position: 12,
                    anchored_by: "ledger chain-a".to_owned(),
                    not_rechecked_through: 11,
                }),
            }),
            first_bad_link: None,
            error: String::new(),
        }
        .render()
        .unwrap();
        assert!(
            page.contains("Resumed at #12, anchored there by ledger chain-a."),
            "{page}"
        );
        assert!(
            page.contains("Sequences #1 to #11 were not re-checked"),
            "{page}"
        );
        assert!(
            page.contains(r#"id="verify-from-last" value="true" checked>"#),
            "{page}"
        );
    }

    #[test]
    fn a_bad_verdict_names_and_links_the_first_bad_sequence() {
        let page = AuditPage {
            chrome: None,
            form: VerifyForm::default(),
            verdict: Some(Verdict {
                ok: false,
                from: 1,
                to: 20,
                checked: 6,
                first_bad_sequence: Some(7),
                problem: Some("the hash at global position 7 does not verify".to_owned()),
                resumed_from: None,
            }),
            first_bad_link: Some("/console/audit/streams/task-1?mark=7#seq-7".to_owned()),
            error: String::new(),
        }
        .render()
        .unwrap();
        assert!(page.contains("does not verify"), "{page}");
        assert!(
            page.contains(
                r##"id="first-bad" href="/console/audit/streams/task-1?mark=7#seq-7">#7</a>"##
            ),
            "{page}"
        );
        assert!(
            page.contains("6 events verified before the first bad one"),
            "{page}"
        );
        assert!(
            !page.contains("<script>") && !page.contains("style="),
            "{page}"
        );
    }
}
