//! `/console/tasks`: counts by status, the filtered list with keyset paging
//! (a page of `GET /v1/tasks`), its CSV export, and the fragment the page's
//! script reloads when one of the listed kind's and frontend's tasks
//! changes ([`super::live`]).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use taskledger_projections::tasks::query::{status_counts, TaskFilter};

use super::api::Refusal;
use super::live::LiveQuery;
use super::pages::{self, render, Chrome};
use super::session::SignedIn;
use super::views::{Task, TaskPage};
use super::ConsoleState;
use crate::http::auth::{ReadTasks, RequiredScopes};
use crate::http::{connection, read_error, tenancy};

/// Tasks per page of the console's list.
const PAGE: u32 = 50;

/// The statuses, in a task's order of life.
const STATUSES: [&str; 7] = [
    "waiting",
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "canceled",
];

/// The list's filters and page, as the page's URL gives them (an empty
/// field is no filter).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    frontend_id: String,
    #[serde(default)]
    submitted_after: String,
    #[serde(default)]
    submitted_before: String,
    #[serde(default)]
    cursor: String,
}

impl ListQuery {
    /// The filters (and, with `cursor`, the page) as a query string.
    fn query_string(&self, cursor: bool) -> String {
        let mut query = pages::filled_in([
            ("status", self.status.as_str()),
            ("kind", &self.kind),
            ("frontend_id", &self.frontend_id),
            ("submitted_after", &self.submitted_after),
            ("submitted_before", &self.submitted_before),
        ]);
        if cursor && !self.cursor.is_empty() {
            query.append_pair("cursor", &self.cursor);
        }
        query.finish()
    }

    /// This page of `GET /v1/tasks`.
    fn api_path(&self, limit: Option<u32>) -> String {
        let mut path = format!("/v1/tasks?{}", self.query_string(true));
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        path
    }
}

/// One status's count, with the link that filters by it.
#[derive(Debug)]
struct Count {
    status: &'static str,
    count: u64,
    link: String,
    selected: bool,
}

/// The part of the list the script reloads: counts and rows.
#[derive(Template)]
#[template(path = "task_rows.html")]
struct TaskRows {
    counts: Vec<Count>,
    total: u64,
    all_link: String,
    /// Whether no status is chosen (the "all" count is the one selected).
    all_selected: bool,
    tasks: Vec<Task>,
}

/// The list page.
#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    chrome: Option<Chrome>,
    filters: ListQuery,
    statuses: [&'static str; 7],
    rows: TaskRows,
    next_link: String,
    first_link: String,
    csv_link: String,
    rows_link: String,
    live_link: String,
}

/// The rows and counts of `query`'s page, and the next page's cursor.
async fn load(
    state: &ConsoleState,
    signed_in: &SignedIn,
    query: &ListQuery,
) -> Result<(TaskRows, Option<String>), Response> {
    let chrome = || Some(Chrome::of(signed_in));
    let page: TaskPage = state
        .api
        .get(&signed_in.secret, &query.api_path(Some(PAGE)))
        .await
        .map_err(|refusal| list_refused(chrome(), &refusal))?;
    let counts = counts(state, signed_in, query).await.map_err(|problem| {
        pages::message(
            problem_status(&problem),
            chrome(),
            &problem.title,
            &problem.detail,
        )
    })?;
    let total = counts.iter().map(|(_, count)| count).sum();
    let counts = STATUSES
        .into_iter()
        .map(|status| {
            let filtered = ListQuery {
                status: status.to_owned(),
                cursor: String::new(),
                ..query.clone()
            };
            Count {
                status,
                count: counts
                    .iter()
                    .find(|(name, _)| name == status)
                    .map_or(0, |(_, count)| *count),
                link: format!("/console/tasks?{}", filtered.query_string(false)),
                selected: query.status == status,
            }
        })
        .collect();
    let everything = ListQuery {
        status: String::new(),
        cursor: String::new(),
        ..query.clone()
    };
    let rows = TaskRows {
        counts,
        total,
        all_link: format!("/console/tasks?{}", everything.query_string(false)),
        all_selected: query.status.is_empty(),
        tasks: page.items,
    };
    Ok((rows, page.next_cursor))
}

fn problem_status(problem: &crate::http::problem::Problem) -> StatusCode {
    StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A refused listing: a malformed filter is said on the page (400).
fn list_refused(chrome: Option<Chrome>, refusal: &Refusal) -> Response {
    pages::message(refusal.status, chrome, &refusal.title, &refusal.detail)
}

/// How many of the caller's tasks (with `query`'s kind and frontend) have
/// each status, from the read model `/v1/tasks` lists, scoped as it is.
async fn counts(
    state: &ConsoleState,
    signed_in: &SignedIn,
    query: &ListQuery,
) -> Result<Vec<(String, u64)>, crate::http::problem::Problem> {
    signed_in.caller.require_any(ReadTasks::SCOPES)?;
    let non_empty = |text: &str| (!text.trim().is_empty()).then(|| text.trim().to_owned());
    let filter = TaskFilter {
        tenants: tenancy::listing_tenants(&signed_in.caller, None),
        statuses: None,
        kind: non_empty(&query.kind),
        frontend_id: non_empty(&query.frontend_id),
        submitted_after: None,
        submitted_before: None,
    };
    let client = connection(&state.app).await?;
    let counts = status_counts(&client, &filter)
        .await
        .map_err(read_error("counting tasks by status"))?;
    Ok(counts
        .into_iter()
        .map(|(status, count)| (status.as_str().to_owned(), count))
        .collect())
}

/// `GET /console/tasks`.
pub(super) async fn list(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Query(query): Query<ListQuery>,
) -> Response {
    let (rows, next_cursor) = match load(&state, &signed_in, &query).await {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let filters = query.query_string(false);
    let next_link = next_cursor.map_or_else(String::new, |cursor| {
        let next = ListQuery {
            cursor,
            ..query.clone()
        };
        format!("/console/tasks?{}", next.query_string(true))
    });
    let page = TasksPage {
        chrome: Some(Chrome::of(&signed_in)),
        statuses: STATUSES,
        rows,
        next_link,
        first_link: if query.cursor.is_empty() {
            String::new()
        } else {
            format!("/console/tasks?{filters}")
        },
        csv_link: format!("/console/tasks.csv?{filters}"),
        rows_link: format!("/console/tasks/rows?{}", query.query_string(true)),
        live_link: LiveQuery::new(&query.kind, &query.frontend_id).link(),
        filters: query,
    };
    render(&page)
}

/// `GET /console/tasks/rows`: the counts and rows of the list, alone.
pub(super) async fn rows(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Query(query): Query<ListQuery>,
) -> Response {
    match load(&state, &signed_in, &query).await {
        Ok((rows, _)) => render(&rows),
        Err(page) => page,
    }
}

/// `GET /console/tasks.csv`: `/v1`'s CSV export of every task the filters
/// match, streamed as it comes.
pub(super) async fn csv(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Query(query): Query<ListQuery>,
) -> Response {
    let query = ListQuery {
        cursor: String::new(),
        ..query
    };
    let response = state
        .api
        .send(
            &signed_in.secret,
            Method::GET,
            &query.api_path(None),
            Some("text/csv"),
        )
        .await;
    if response.status().is_success() {
        return response;
    }
    let refusal = super::api::refusal(response).await;
    list_refused(Some(Chrome::of(&signed_in)), &refusal)
}
