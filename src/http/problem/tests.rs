//! The problem body, its extractors' rejections and the command mapping.

use super::*;
use axum::body::Body;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use tower::ServiceExt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    name: String,
    count: u32,
}

async fn echo(ApiJson(input): ApiJson<Input>) -> String {
    format!("{} x{}", input.name, input.count)
}

fn app() -> Router {
    Router::new()
        .route("/", post(echo))
        .layer(axum::extract::DefaultBodyLimit::max(64))
}

async fn send(
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let mut request = Request::post("/");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let response = app()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn every_json_rejection_is_a_problem() {
    let json = Some("application/json");
    let cases = [
        (json, r#"{"name":"a","count":1}"#, StatusCode::OK, None),
        (
            json,
            r#"{"name":"a","count":"#,
            StatusCode::BAD_REQUEST,
            Some("EOF"),
        ),
        (
            json,
            r#"{"name":"a","count":1,"extra":2}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("unknown field `extra`"),
        ),
        (
            json,
            r#"{"name":"a"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("missing field `count`"),
        ),
        (
            json,
            r#"{"name":"a","count":-1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("invalid value"),
        ),
        (
            Some("text/plain"),
            r#"{"name":"a","count":1}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("Content-Type"),
        ),
        (
            None,
            r#"{"name":"a","count":1}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("Content-Type"),
        ),
        (
            json,
            &format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(100)),
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("larger"),
        ),
    ];
    for (content_type, body, status, detail) in cases {
        let (got, got_type, problem) = send(content_type, body).await;
        assert_eq!(got, status, "{body}: {problem}");
        if let Some(detail) = detail {
            assert_eq!(
                got_type.as_deref(),
                Some("application/problem+json"),
                "{body}"
            );
            assert_eq!(problem["status"], status.as_u16(), "{problem}");
            assert!(
                problem["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("/v1/problems/"),
                "{problem}"
            );
            assert!(!problem["title"].as_str().unwrap().is_empty(), "{problem}");
            assert!(
                problem["detail"].as_str().unwrap().contains(detail),
                "{body}: {problem}"
            );
        }
    }
}

/// Sends `request` to `app`: the answer must have `status` and, unless that
/// is 200, a problem+json body; `case` names the request in a failure.
async fn expect_answer(app: &Router, request: Request<Body>, status: StatusCode, case: &str) {
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), status, "{case}");
    if status != StatusCode::OK {
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json",
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_problem() {
    async fn item(ApiPath(name): ApiPath<String>) -> String {
        name
    }
    let app = Router::new().route("/items/{name}", axum::routing::get(item));
    for (uri, status) in [
        ("/items/ok", StatusCode::OK),
        ("/items/%FF", StatusCode::BAD_REQUEST),
    ] {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        expect_answer(&app, request, status, uri).await;
    }
}

#[tokio::test]
async fn a_raw_body_over_the_limit_is_a_problem() {
    async fn length(ApiBytes(body): ApiBytes) -> String {
        body.len().to_string()
    }
    let app = Router::new()
        .route("/", post(length))
        .layer(axum::extract::DefaultBodyLimit::max(64));
    for (size, status) in [(10, StatusCode::OK), (100, StatusCode::PAYLOAD_TOO_LARGE)] {
        let request = Request::post("/")
            .body(Body::from(vec![b'a'; size]))
            .unwrap();
        expect_answer(&app, request, status, &format!("{size} bytes")).await;
    }
}

#[test]
fn every_command_error_has_one_answer() {
    use taskledger_events::{InvalidInput, Refusal, StoreError};
    let cases = [
        (
            CommandError::Rejected(Refusal::not_found("task 1 does not exist")),
            StatusCode::NOT_FOUND,
        ),
        (
            CommandError::Rejected(Refusal::already_exists("task 1 already exists")),
            StatusCode::CONFLICT,
        ),
        (
            CommandError::Rejected(Refusal::invalid_transition("task 1 is queued")),
            StatusCode::CONFLICT,
        ),
        (
            CommandError::Rejected(Refusal::invalid("kind must not be empty")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            CommandError::Conflict {
                stream_id: "task-1".into(),
                attempts: 4,
            },
            StatusCode::CONFLICT,
        ),
        (
            CommandError::DuplicateEvent("command 1 was already used".into()),
            StatusCode::CONFLICT,
        ),
        (
            CommandError::Store(StoreError::Pool("timed out".into())),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            CommandError::Invalid(InvalidInput::EmptyBatch),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            CommandError::Corrupt("task-1 version 2 cannot be read".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (error, status) in cases {
        let shown = error.to_string();
        let problem = Problem::from(error);
        assert_eq!(problem.status, status.as_u16(), "{shown}");
        assert_eq!(
            problem.retry_after.is_some(),
            status == StatusCode::SERVICE_UNAVAILABLE,
            "{shown}"
        );
        if status.is_client_error() {
            // The refusal's or the conflict's own words.
            assert_eq!(problem.detail, shown);
        } else {
            assert!(!problem.detail.contains(&shown), "{shown} leaked");
        }
    }
}

#[tokio::test]
async fn a_cause_is_kept_for_the_log_and_never_sent() {
    let problem = Problem::unavailable("the database could not answer right now", 1).because(
        "reading a task",
        anyhow::Error::msg("connection reset by peer"),
    );
    assert_eq!(
        problem.cause(),
        Some("reading a task: connection reset by peer")
    );
    let response = problem.into_response();
    assert!(response.extensions().get::<Cause>().is_some());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(!body.contains("connection reset"), "{body}");
}

#[tokio::test]
async fn unavailable_carries_retry_after() {
    let response = Problem::unavailable("the projection is catching up", 2).into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");
}
