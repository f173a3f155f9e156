//! The console reads and writes through `/v1`, inside the process: each
//! page sends its requests to the same router `/v1` is served by, with the
//! session's key as `Authorization: Bearer`. So the console has no access
//! rule of its own: scopes, tenancy, rate limits, revocation and the
//! listings' paging are exactly `/v1`'s, and a refusal is `/v1`'s problem.

use axum::body::{to_bytes, Body};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The largest `/v1` answer a page reads whole (downloads stream instead).
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// `/v1`, as the console calls it.
#[derive(Debug, Clone)]
pub(super) struct Api {
    router: Router,
}

/// What `/v1` answered instead of a success: its problem.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    /// The answer's status.
    pub(super) status: StatusCode,
    /// The problem's title.
    pub(super) title: String,
    /// The problem's detail.
    pub(super) detail: String,
}

#[derive(Deserialize)]
struct ProblemBody {
    #[serde(default)]
    title: String,
    #[serde(default)]
    detail: String,
}

impl Api {
    /// `/v1` served by `router` (the routes, with their state).
    pub(super) fn new(router: Router) -> Self {
        Self { router }
    }

    /// Sends `method path` (path and query) with the key `secret`, and
    /// `accept` when given; `/v1`'s answer as it is.
    pub(super) async fn send(
        &self,
        secret: &SecretString,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Response {
        let accept = accept.and_then(|accept| HeaderValue::from_str(accept).ok());
        self.send_with(
            secret,
            method,
            path,
            accept.map(|accept| (ACCEPT, accept)),
            Body::empty(),
        )
        .await
    }

    /// `GET path` (an event stream of `/v1`) with the key `secret`, passing
    /// on the browser's `Last-Event-ID`, so a reconnect resumes where it
    /// left off; `/v1`'s answer as it is, its body streaming.
    pub(super) async fn stream(
        &self,
        secret: &SecretString,
        path: &str,
        last_event_id: Option<HeaderValue>,
    ) -> Response {
        let header = last_event_id.map(|value| (HeaderName::from_static("last-event-id"), value));
        self.send_with(secret, Method::GET, path, header, Body::empty())
            .await
    }

    async fn send_with(
        &self,
        secret: &SecretString,
        method: Method,
        path: &str,
        header: Option<(HeaderName, HeaderValue)>,
        body: Body,
    ) -> Response {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {}", secret.expose_secret()));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let Ok(request) = request.body(body) else {
            return refusal_response(StatusCode::BAD_REQUEST);
        };
        let mut router = self.router.clone();
        match tower::Service::call(&mut router, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// `GET path` as JSON of type `T`.
    ///
    /// # Errors
    /// `/v1`'s problem when it did not answer 200, or a 502 refusal when
    /// the answer is not the JSON expected.
    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        secret: &SecretString,
        path: &str,
    ) -> Result<T, Refusal> {
        let response = self.send(secret, Method::GET, path, None).await;
        let body = answer(response).await?;
        serde_json::from_slice(&body).map_err(|error| Refusal {
            status: StatusCode::BAD_GATEWAY,
            title: "Unexpected answer".to_owned(),
            detail: format!("GET {path} answered JSON the console cannot read: {error}"),
        })
    }

    /// `POST path` with no body; the answer's JSON (`null` if it is not
    /// JSON).
    ///
    /// # Errors
    /// `/v1`'s problem when it did not answer 2xx.
    pub(super) async fn post(
        &self,
        secret: &SecretString,
        path: &str,
    ) -> Result<serde_json::Value, Refusal> {
        let response = self.send(secret, Method::POST, path, None).await;
        let body = answer(response).await?;
        Ok(serde_json::from_slice(&body).unwrap_or_default())
    }

    /// `POST path` with `body` as JSON; the answer's JSON (`null` if it is
    /// not JSON).
    ///
    /// # Errors
    /// `/v1`'s problem when it did not answer 2xx.
    pub(super) async fn post_json(
        &self,
        secret: &SecretString,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, Refusal> {
        let content_type = (CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = Body::from(body.to_string());
        let response = self
            .send_with(secret, Method::POST, path, Some(content_type), body)
            .await;
        let body = answer(response).await?;
        Ok(serde_json::from_slice(&body).unwrap_or_default())
    }
}

/// The problem of an answer that is not a success.
pub(super) async fn refusal(response: Response) -> Refusal {
    let status = response.status();
    answer(response).await.err().unwrap_or(Refusal {
        status,
        title: "Unexpected answer".to_owned(),
        detail: String::new(),
    })
}

/// The body of a 2xx answer, or the answer's problem.
async fn answer(response: Response) -> Result<axum::body::Bytes, Refusal> {
    let status = response.status();
    let body = to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|error| Refusal {
            status: StatusCode::BAD_GATEWAY,
            title: "Unreadable answer".to_owned(),
            detail: format!("the answer could not be read: {error}"),
        })?;
    if status.is_success() {
        return Ok(body);
    }
    let problem: Option<ProblemBody> = serde_json::from_slice(&body).ok();
    let (title, detail) = problem.map_or_else(
        || {
            (
                status.canonical_reason().unwrap_or("Error").to_owned(),
                String::new(),
            )
        },
        |problem| (problem.title, problem.detail),
    );
    Err(Refusal {
        status,
        title,
        detail,
    })
}

fn refusal_response(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}
