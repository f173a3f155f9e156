//! Sending a request and reading its answer in one step, checking what an
//! answer holds, and reading the `/metrics` text.

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
    let answered = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap();
    assert_eq!(answered, status, "{text}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
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

/// The first item of `list` (a JSON array) whose `field` is `value`; panics,
/// showing the list, if there is none.
pub(crate) fn item_with<'list>(list: &'list Value, field: &str, value: &str) -> &'list Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|item| item[field] == value)
        .unwrap_or_else(|| panic!("no item with {field} {value:?} in {list}"))
}

/// Asserts that `text` holds `needle`; the failure shows both.
#[track_caller]
pub(crate) fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in: {text}");
}

/// Asserts that `text` is a JSON string holding `needle`; the failure shows
/// `shown` (the document `text` is part of).
#[track_caller]
pub(crate) fn assert_text_contains(text: &Value, needle: &str, shown: &Value) {
    let holds = text.as_str().is_some_and(|text| text.contains(needle));
    assert!(holds, "expected {needle:?} in {text}: {shown}");
}
