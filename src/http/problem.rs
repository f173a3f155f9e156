//! RFC 9457 problem details: the one error body of the API, and a JSON
//! extractor whose rejections use it.
//!
//! Every error the API returns is `application/problem+json` with `type`,
//! `title`, `status` and `detail`. Domain refusals are 4xx, version
//! conflicts 409, a caller over its limit 429 and overload 503, both with
//! `Retry-After`; anything else is an opaque
//! 500. The cause of a 5xx travels with the problem ([`Problem::because`]),
//! never to the client, and is logged once, by [`log_failure`], in the
//! request's span. A failed command becomes one through the one
//! `From<CommandError>`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use taskledger_events::command::CommandError;
use taskledger_events::RefusalKind;

/// Where the problem types are documented (relative URIs are allowed).
const TYPE_BASE: &str = "/v1/problems/";

/// A problem details body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type, e.g. `/v1/problems/not-found`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time, for a person.
    pub detail: String,
    /// Seconds after which to retry (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// What went wrong inside, with its cause chain: logged, never sent.
    #[serde(skip)]
    cause: Option<String>,
}

/// The cause of a problem, carried on its response to [`log_failure`].
#[derive(Debug, Clone)]
struct Cause(String);

impl Problem {
    /// A problem of type `slug` (e.g. `not-found`) with `status`.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("{TYPE_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            cause: None,
        }
    }

    /// This problem, caused by `error` while `context` (for example
    /// "reading a task"): both, with `error`'s sources, are logged once when
    /// the answer is a 5xx, and never sent.
    #[must_use]
    pub fn because<E>(mut self, context: impl std::fmt::Display, error: E) -> Self
    where
        E: Into<anyhow::Error>,
    {
        self.cause = Some(format!("{context}: {:#}", error.into()));
        self
    }

    /// The cause given by [`Problem::because`], for an answer that never
    /// reaches [`log_failure`] (a body that fails once it is streaming).
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 401: no valid API key.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// 403: the key lacks a scope.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 404: no such resource.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 409: the resource's state does not allow it, or it kept changing.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 422: well-formed but invalid.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid request",
            detail,
        )
    }

    /// 429 with `Retry-After`: the caller sent more than its limit allows.
    pub fn too_many_requests(detail: impl Into<String>, retry_after_seconds: u64) -> Self {
        Self {
            retry_after: Some(retry_after_seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
                detail,
            )
        }
    }

    /// 503 with `Retry-After`: try again shortly.
    pub fn unavailable(detail: impl Into<String>, retry_after_seconds: u64) -> Self {
        Self {
            retry_after: Some(retry_after_seconds),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            )
        }
    }

    /// The answer to a command an aggregate refused: unknown → 404, already
    /// there or not allowed now → 409, invalid → 422, with the aggregate's
    /// message. The one mapping for every aggregate.
    pub fn refused(kind: RefusalKind, message: impl Into<String>) -> Self {
        match kind {
            RefusalKind::NotFound => Self::not_found(message),
            RefusalKind::AlreadyExists | RefusalKind::InvalidTransition => Self::conflict(message),
            RefusalKind::Invalid => Self::unprocessable(message),
        }
    }

    /// 500 with nothing about the cause (log it where it happened).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; it has been logged",
        )
    }
}

/// The answer to a command that did not happen, the same on every route: a
/// refusal by its kind ([`Problem::refused`]: 404, 409 or 422 with the
/// aggregate's message); a stream that kept changing or a command id already
/// used for another change 409; the store unavailable 503 with
/// `Retry-After`; an invalid or unreadable event (a bug) an opaque 500. The
/// cause of a 503 or 500 goes with it, to be logged once.
impl From<CommandError> for Problem {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Rejected(refusal) => Self::refused(refusal.kind(), refusal.message()),
            error @ (CommandError::Conflict { .. } | CommandError::DuplicateEvent(_)) => {
                Self::conflict(error.to_string())
            }
            CommandError::Store(error) => {
                Self::unavailable("the event store is unavailable right now; retry", 1)
                    .because("storing a command", error)
            }
            error @ (CommandError::Invalid(_) | CommandError::Corrupt(_)) => {
                Self::internal().because("handling a command", error)
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(Cause(cause));
        }
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Implements axum's extractor trait for `Name<T>`, a wrapper of axum's own
/// extractor `Inner<T>` whose rejection (of type `Rejection`) `problem`, a
/// closure, turns into a problem:
/// `wraps_extractor!(Name(Inner): FromRequest, Rejection, problem)` for a
/// body, `FromRequestParts` for the parts of a request.
macro_rules! wraps_extractor {
    ($name:ident($($inner:ident)::+): FromRequest, $rejection:ty, $problem:expr) => {
        wraps_extractor!(@impl $name($($inner)::+), FromRequest::from_request(request: Request),
            $rejection, $problem);
    };
    ($name:ident($($inner:ident)::+): FromRequestParts, $rejection:ty, $problem:expr) => {
        wraps_extractor!(@impl $name($($inner)::+),
            FromRequestParts::from_request_parts(parts: &mut Parts), $rejection, $problem);
    };
    (@impl $name:ident($($inner:ident)::+), $extractor:ident::$extract:ident($input:ident: $input_type:ty),
        $rejection:ty, $problem:expr) => {
        impl<S, T> $extractor<S> for $name<T>
        where
            $($inner)::+<T>: $extractor<S, Rejection = $rejection>,
            S: Send + Sync,
        {
            type Rejection = Problem;

            async fn $extract($input: $input_type, state: &S) -> Result<Self, Self::Rejection> {
                let problem: fn($rejection) -> Problem = $problem;
                match $($inner)::+::<T>::$extract($input, state).await {
                    Ok($($inner)::+(value)) => Ok(Self(value)),
                    Err(rejection) => Err(problem(rejection)),
                }
            }
        }
    };
}

/// `Json<T>` whose rejections are problems: a wrong content type is 415, a
/// body over the limit 413, malformed JSON 400, and JSON of the wrong shape
/// (a missing, unknown or mistyped field) 422 — with serde's explanation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

wraps_extractor!(ApiJson(axum::Json): FromRequest, JsonRejection, |rejection| problem_for(&rejection));

fn problem_for(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        JsonRejection::JsonDataError(error) => Problem::unprocessable(body_text(error.body_text())),
        JsonRejection::JsonSyntaxError(error) => Problem::bad_request(body_text(error.body_text())),
        JsonRejection::BytesRejection(error) => bytes_problem(error),
        other => Problem::new(
            other.status(),
            "bad-request",
            "Bad request",
            other.body_text(),
        ),
    }
}

/// The body as bytes, whose rejections are problems: a body over the limit
/// is 413 (as for [`ApiJson`]), one that cannot be read 400.
#[derive(Debug, Clone, Default)]
pub struct ApiBytes(pub Bytes);

impl<S> FromRequest<S> for ApiBytes
where
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection| bytes_problem(&rejection))
    }
}

fn bytes_problem(rejection: &BytesRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request body too large",
            "the request body is larger than this endpoint accepts",
        )
    } else {
        Problem::new(
            rejection.status(),
            "bad-request",
            "Bad request",
            rejection.body_text(),
        )
    }
}

/// axum's messages start with a generic sentence; keep serde's part.
fn body_text(text: String) -> String {
    text.split_once(": ")
        .map_or_else(|| text.clone(), |(_, rest)| rest.to_owned())
}

/// An optional JSON body: empty means `T::default()`; anything else must be
/// JSON (415 otherwise) of the right shape (400 or 422, as [`ApiJson`]),
/// and no larger than [`ApiBytes`] reads (413).
#[derive(Debug, Clone, Default)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| {
                let media = media.trim();
                media.eq_ignore_ascii_case("application/json")
                    || (media.starts_with("application/") && media.ends_with("+json"))
            });
        let ApiBytes(body) = ApiBytes::from_request(request, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !is_json {
            return Err(unsupported_media_type());
        }
        let deserializer = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(deserializer)
            .map(Self)
            .map_err(|error| {
                let detail = error.to_string();
                match error.inner().classify() {
                    serde_json::error::Category::Data => Problem::unprocessable(detail),
                    _ => Problem::bad_request(detail),
                }
            })
    }
}

fn unsupported_media_type() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        "send the body as JSON with Content-Type: application/json",
    )
}

/// `Query<T>` whose rejection is a 400 problem naming the bad parameter
/// (an unknown one too, when `T` denies unknown fields).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

wraps_extractor!(ApiQuery(axum::extract::Query): FromRequestParts, QueryRejection, |rejection| match rejection {
    QueryRejection::FailedToDeserializeQueryString(error) => {
        Problem::bad_request(body_text(error.body_text()))
    }
    other => Problem::bad_request(other.body_text()),
});

/// `Path<T>` whose rejection is a problem: a segment that is not UTF-8
/// once percent-decoded, or does not parse as `T`, is 400 (axum's own
/// rejection is plain text).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

wraps_extractor!(ApiPath(axum::extract::Path): FromRequestParts, PathRejection, |rejection| {
    if rejection.status().is_client_error() {
        Problem::bad_request(rejection.body_text())
    } else {
        // A route whose template and extractor disagree: our bug.
        Problem::internal().because(
            "extracting a path",
            anyhow::Error::msg(rejection.body_text()),
        )
    }
});

/// The header `name` as `parse` reads it, if sent: a 400 saying `not_text`
/// when it is not visible ASCII, or `parse`'s own problem.
///
/// # Errors
/// As said; nothing else fails.
pub(crate) fn optional_header<'a, T>(
    parts: &'a Parts,
    name: &str,
    not_text: &str,
    parse: impl FnOnce(&'a str) -> Result<T, Problem>,
) -> Result<Option<T>, Problem> {
    parts
        .headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Problem::bad_request(not_text))
                .and_then(parse)
        })
        .transpose()
}

/// Logs the cause of `response` once if it is a 5xx, in the request's span
/// (so with its request id): the problem's own cause when it has one. A 500
/// without one is logged too (a bug that said nothing); a 503 without one is
/// an answer that already explains itself (not configured, no answer in
/// time). Called for every answer by the one per-request middleware,
/// [`crate::http::traced::per_request`].
pub fn log_failure(response: &Response) {
    let status = response.status();
    if status.is_server_error() {
        match response.extensions().get::<Cause>() {
            Some(Cause(cause)) => {
                tracing::error!(status = status.as_u16(), %cause, "a request failed")
            }
            None if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(
                    status = status.as_u16(),
                    "a request failed; no cause was recorded"
                );
            }
            None => {}
        }
    }
}

/// The route's path segment `{name}`, percent-decoded (400 as [`ApiPath`]
/// when it is not UTF-8): what the typed path extractors (a task's id, a
/// device's IMEI, a ledger's name) parse.
pub(crate) async fn path_segment<S>(
    parts: &mut Parts,
    state: &S,
    name: &str,
) -> Result<String, Problem>
where
    S: Send + Sync,
{
    // A list, not a map: no hashing for the one or two segments a route has.
    let ApiPath(segments) =
        ApiPath::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
    let found = segments
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value));
    found.ok_or_else(|| {
        // A route whose template and extractor disagree: our bug.
        Problem::internal().because(
            "extracting a path",
            anyhow::Error::msg(format!("the route has no {{{name}}}")),
        )
    })
}

/// `text`, a path segment naming `what` (such as "a task id"), as a UUID;
/// 400 when it is not one.
pub(crate) fn uuid_segment(text: &str, what: &str) -> Result<uuid::Uuid, Problem> {
    uuid::Uuid::parse_str(text)
        .map_err(|_| Problem::bad_request(format!("{text:?} is not {what} (a UUID)")))
}

/// Implements `FromRequestParts` for a typed path extractor (a task's id,
/// a device's IMEI, a ledger's name): the route's segment `{name}`
/// ([`path_segment`]), parsed by `parse`, a closure from its text to the
/// extractor or a 400 problem. `path_extractor!(TaskPath, "id", parse)`.
macro_rules! path_extractor {
    ($path:ty, $segment:literal, $parse:expr) => {
        impl<S: Send + Sync> axum::extract::FromRequestParts<S> for $path {
            type Rejection = $crate::http::problem::Problem;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let text = $crate::http::problem::path_segment(parts, state, $segment).await?;
                let parse: fn(&str) -> Result<Self, Self::Rejection> = $parse;
                parse(&text)
            }
        }
    };
}
pub(crate) use path_extractor;

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests;
