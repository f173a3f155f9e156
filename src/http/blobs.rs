//! `POST /v1/blobs`: uploading an input file for tasks. Blobs are
//! content-addressed (their SHA-256 is their name), so uploading the same
//! bytes twice stores one copy and a name always means the same bytes; a
//! submission names its inputs by these digests (`"inputs": {"page.html":
//! "<sha256>"}`) and the runner mounts each read-only at `/in/{name}`.
//!
//! Each upload is recorded for its tenant (`blob_owners`): a submission may
//! name only blobs its tenant uploaded, and the answer (201 new, 200 seen
//! before) speaks of this tenant's uploads only, so the shared copy never
//! tells one tenant what another uploaded.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Authorized, WriteTasks};
use super::problem::{ApiJson, ApiQuery as Query, Problem};
use super::responses::{Authenticated, OtherTenant};
use super::tenancy::{acting_tenant, ActingFor};
use super::{connection, database_error, AppState};

/// The largest input file, in bytes (16 MiB).
pub const MAX_BLOB_BYTES: usize = 16 * 1024 * 1024;

/// `POST /v1/blobs`'s query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The tenant the file is for: required for a platform key, the key's
    /// own (or absent) for a tenant key.
    pub tenant: Option<String>,
}

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
    post, path = "/v1/blobs", tag = "tasks",
    params(UploadQuery),
    request_body(content = Vec<u8>, description = "The file's bytes", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored for this tenant", body = BlobView),
        (status = 200, description = "This tenant had uploaded these bytes before", body = BlobView),
        OtherTenant,
        (status = 422, description = "A platform key named no tenant, or a malformed one", body = Problem, content_type = "application/problem+json"),
        Authenticated,
        (status = 413, description = "Larger than 16 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The API key cannot be checked, or the blob store cannot be read or written right now; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn upload_blob(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteTasks>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<Response, Problem> {
    let tenant = acting_tenant(&caller, query.tenant.as_deref(), ActingFor::Upload)?;
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
    let sha256 = state.blobs.put(&bytes).await.map_err(|error| {
        Problem::unavailable("the blob store cannot be written right now", 1)
            .because("storing an uploaded blob", error)
    })?;
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    let recorded = connection(&state)
        .await?
        .execute(
            "INSERT INTO blob_owners (tenant, sha256, size, uploaded_at, uploaded_by)
             VALUES ($1, $2, $3, now(), $4) ON CONFLICT DO NOTHING",
            &[&tenant.as_str(), &sha256, &size, &caller.key_id],
        )
        .await
        .map_err(database_error("recording who uploaded a blob"))?;
    // New or not for this tenant: whether another tenant uploaded the same
    // bytes is never told.
    let status = if recorded == 1 {
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
