//! `POST /v1/blobs`: uploading an input file for tasks. Blobs are
//! content-addressed (their SHA-256 is their name), so uploading the same
//! bytes twice stores one copy and a name always means the same bytes; a
//! submission names its inputs by these digests (`"inputs": {"page.html":
//! "<sha256>"}`) and the runner mounts each read-only at `/in/{name}`.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Authorized, WriteTasks};
use super::problem::{ApiJson, Problem};
use super::responses::Authenticated;
use super::AppState;

/// The largest input file, in bytes (16 MiB).
pub const MAX_BLOB_BYTES: usize = 16 * 1024 * 1024;

/// A stored blob.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BlobView {
    /// Its SHA-256, hexadecimal: name it in a submission's `inputs`.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Uploads an input file (the raw bytes as the body).
#[utoipa::path(
    post,
    path = "/v1/blobs",
    tag = "tasks",
    request_body(content = Vec<u8>, description = "The file's bytes", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = BlobView),
        (status = 200, description = "These bytes were already stored", body = BlobView),
        Authenticated,
        (status = 413, description = "Larger than 16 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The API key cannot be checked, or the blob store cannot be read or written right now; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn upload_blob(
    State(state): State<AppState>,
    _: Authorized<WriteTasks>,
    body: Body,
) -> Result<Response, Problem> {
    // Read here, not by an extractor, so this route alone takes more than
    // the API's usual body limit.
    let bytes = axum::body::to_bytes(body, MAX_BLOB_BYTES)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("an input file may be at most {MAX_BLOB_BYTES} bytes"),
            )
        })?;
    let (sha256, new) = state.blobs.store(&bytes).await.map_err(|error| {
        Problem::unavailable("the blob store cannot be written right now", 1)
            .because("storing an uploaded blob", error)
    })?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = BlobView {
        sha256,
        size: bytes.len() as u64,
    };
    Ok((status, ApiJson(view)).into_response())
}
