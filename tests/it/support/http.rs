//! Sending a request and reading its answer in one step, and reading the
//! `/metrics` text.

use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;

/// Sends `request`; panics if it cannot be sent.
pub(crate) async fn send(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}

/// Sends `request` and parses the answer as JSON (whatever its status);
/// panics if it cannot be sent or the body is not JSON.
pub(crate) async fn send_json(request: RequestBuilder) -> Value {
    send(request).await.json().await.unwrap()
}

/// Sends `request` and reads the answer as text (whatever its status).
pub(crate) async fn send_text(request: RequestBuilder) -> String {
    send(request).await.text().await.unwrap()
}

/// The JSON body of `response`, which must have status 200 (else the test
/// fails naming `what` and showing the body).
pub(crate) async fn ok_json(response: Response, what: &str) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    body
}

/// Expects a problem+json answer with `status` (in the header and the body)
/// whose detail holds every one of `needles`; the body.
pub(crate) async fn problem(response: Response, status: StatusCode, needles: &[&str]) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    let detail = body["detail"].as_str().unwrap();
    for needle in needles {
        assert!(detail.contains(needle), "expected {needle:?} in {body}");
    }
    body
}

/// The value of the first line of the metrics `text` that starts with
/// `series`; panics (showing `text`) if there is none or it is not a number.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The string field `field` of every item of a page's `items`.
pub(crate) fn item_fields<'page>(page: &'page Value, field: &str) -> Vec<&'page str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap())
        .collect()
}
