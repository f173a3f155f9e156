//! The one middleware every request passes ([`per_request`]): its request
//! id, its span, its latency in `/metrics` and the log of a failure's cause.
//!
//! One `from_fn` layer instead of four (tower-http's request-id setter,
//! trace layer and request-id propagator, and a metrics layer): each layer
//! clones the inner service and wraps or boxes the future of every request,
//! which measurably slowed the cheapest reads (`bench api`, `GET
//! /v1/tasks/{id}`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

use super::metrics::HttpMetrics;
use super::problem;
use super::REQUEST_ID;

/// The longest request id taken from a client; a longer one is replaced.
const MAX_REQUEST_ID_BYTES: usize = 200;

/// Gives the request an id ([`REQUEST_ID`]: the client's, or a new UUID)
/// that the response echoes, and runs it in a span naming its method, route
/// template and id, so whatever a handler logs names the request (INFO, so
/// handlers' warnings carry it under the default filter; the span prints
/// nothing itself). When the request is answered, records its latency by
/// method, route and status, logs a failure's cause once
/// ([`problem::log_failure`]), and logs its status and latency at DEBUG.
pub(super) async fn per_request(
    State(metrics): State<Arc<HttpMetrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let began = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES && id.to_str().is_ok())
        .cloned()
        .unwrap_or_else(made_request_id);
    request.headers_mut().insert(REQUEST_ID, request_id.clone());
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        method = %method,
        route,
        request_id = request_id.to_str().unwrap_or_default(),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = began.elapsed();
    span.in_scope(|| {
        problem::log_failure(&response);
        tracing::debug!(
            status = response.status().as_u16(),
            latency_us = elapsed.as_micros(),
            "answered"
        );
    });
    metrics.observe(
        method.as_str(),
        route,
        response.status(),
        elapsed.as_secs_f64(),
    );
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// A new request id: a random UUID (uuid's fast-rng, not a system call).
fn made_request_id() -> HeaderValue {
    let mut text = Uuid::encode_buffer();
    let text = Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}
