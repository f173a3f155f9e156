//! `/v1/tasks/{id}/artifacts`: the files a succeeded task produced, listed
//! from the `results` read model and served from the blob store with their
//! media type, length, `ETag` (the SHA-256) and byte ranges.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::typed_header::TypedHeaderRejection;
use axum_extra::TypedHeader;
use headers::{ContentRange, ETag, HeaderMapExt, IfNoneMatch};
use serde::Serialize;
use taskledger_events::task::TaskId;
use taskledger_projections::tasks::query;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use utoipa::ToSchema;

use super::auth::{Authorized, ReadTasks};
use super::problem::{ApiJson, ApiPath, Problem};
use super::responses::{Authenticated, Malformed};
use super::tasks::{ArtifactView, TaskPath};
use super::tenancy;
use super::{connection, read_error, AppState};

/// A task's files.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ArtifactPage {
    /// The files, by name.
    pub items: Vec<ArtifactView>,
    /// Always `null`: a task's files fit one page.
    pub next_cursor: Option<String>,
}

// For the OpenAPI document: a generated client reads an artifact as bytes
// (`*/*` alone gives it nothing to read it as).
/// A file's bytes, whatever its media type.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct FileContent(Vec<u8>);

/// Lists a succeeded task's files.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/artifacts", tag = "tasks",
    params(TaskPath),
    responses(
        (status = 200, description = "The files", body = ArtifactPage),
        Authenticated, Malformed,
        (status = 404, description = "No such task, or it has no files (it has not succeeded or failed)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn list_artifacts(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadTasks>,
    TaskPath { id: task_id }: TaskPath,
) -> Result<ApiJson<ArtifactPage>, Problem> {
    tenancy::check_task(&state, &caller, task_id).await?;
    Ok(ApiJson(ArtifactPage {
        items: artifacts_of(&state, task_id).await?,
        next_cursor: None,
    }))
}

/// Downloads one file (`Range: bytes=…` and `If-None-Match` supported).
#[utoipa::path(
    get, path = "/v1/tasks/{id}/artifacts/{name}", tag = "tasks",
    params(
        TaskPath,
        ("name" = String, Path, description = "The file's name"),
        ("Range" = Option<String>, Header, nullable = false,
         description = "One byte range, e.g. bytes=0-1023 (anything else is ignored: the whole file is sent)"),
        ("If-None-Match" = Option<String>, Header, nullable = false,
         description = "ETags the client holds (or `*`): a match answers 304"),
    ),
    responses(
        (status = 200, description = "The file, as the artifact's `media_type` (`application/json`, `text/plain`, `image/png`, …; `application/octet-stream` when unknown), always as an attachment",
            content((inline(FileContent) = "application/octet-stream"), ("*/*")),
            headers(
                ("ETag" = String, description = "The SHA-256 of the content, quoted"),
                ("Content-Disposition" = String, description = "`attachment; filename=\"…\"`"),
                ("Accept-Ranges" = String, description = "`bytes`"),
            )),
        (status = 206, description = "The requested range of the file, as its `media_type`",
            content((inline(FileContent) = "application/octet-stream"), ("*/*")),
            headers(
                ("ETag" = String, description = "The SHA-256 of the whole content, quoted"),
                ("Content-Range" = String, description = "`bytes first-last/size`"),
            )),
        (status = 304, description = "Unchanged: If-None-Match named its ETag",
            headers(("ETag" = String, description = "The SHA-256 of the content, quoted"))),
        Authenticated, Malformed,
        (status = 404, description = "No such task or file, or its content is missing from this server's blob store", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the file", body = Problem, content_type = "application/problem+json",
            headers(("Content-Range" = String, description = "`bytes */size`"))),
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn get_artifact(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadTasks>,
    TaskPath { id: task_id }: TaskPath,
    ApiPath((_, name)): ApiPath<(String, String)>,
    if_none_match: Result<TypedHeader<IfNoneMatch>, TypedHeaderRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    tenancy::check_task(&state, &caller, task_id).await?;
    let artifact = artifacts_of(&state, task_id)
        .await?
        .into_iter()
        .find(|artifact| artifact.name == name)
        .ok_or_else(|| {
            Problem::not_found(format!("task {task_id} has no artifact named {name:?}"))
        })?;
    let etag: ETag = format!("\"{}\"", artifact.sha256)
        .parse()
        .map_err(|_| Problem::internal())?;
    // A malformed If-None-Match matches nothing, as one naming other tags.
    if let Ok(TypedHeader(if_none_match)) = if_none_match {
        if !if_none_match.precondition_passes(&etag) {
            return Ok((StatusCode::NOT_MODIFIED, TypedHeader(etag)).into_response());
        }
    }
    let path = state
        .blobs
        .path(&artifact.sha256)
        .ok_or_else(Problem::internal)?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|error| {
        // Logged here: a 404 is not logged as a failure, but a blob the
        // read model names and the store lacks is an operator's problem.
        tracing::error!(%error, path = %path.display(), "an artifact's blob is missing");
        Problem::new(
            StatusCode::NOT_FOUND,
            "blob-missing",
            "Artifact content missing",
            format!("the content of {name:?} is not in this server's blob store"),
        )
    })?;
    let size = artifact.size;
    let range = match headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    {
        None => None,
        Some(value) => match parse_range(value, size) {
            Ok(range) => range,
            Err(()) => {
                let problem = Problem::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range-not-satisfiable",
                    "Range not satisfiable",
                    format!("the file has {size} bytes; ask for one range inside them"),
                );
                let unsatisfied = ContentRange::unsatisfied_bytes(size);
                return Ok((TypedHeader(unsatisfied), problem).into_response());
            }
        },
    };
    let (status, start, length) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, size),
    };
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|error| Problem::internal().because("seeking in an artifact", error))?;
    let body = Body::from_stream(ReaderStream::new(file.take(length)));
    let mut response = (status, body).into_response();
    let response_headers = response.headers_mut();
    let text = |value: String| HeaderValue::try_from(value).map_err(|_| Problem::internal());
    response_headers.insert(header::CONTENT_TYPE, text(artifact.media_type.clone())?);
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response_headers.typed_insert(etag);
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Task output is untrusted: never let a browser render it as part of
    // this origin.
    response_headers.insert(
        header::CONTENT_DISPOSITION,
        text(format!(
            "attachment; filename=\"{}\"",
            name.replace(|c: char| c == '"' || c == '\\' || c.is_control(), "_")
        ))?,
    );
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response_headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let range =
            ContentRange::bytes(start..start + length, size).map_err(|_| Problem::internal())?;
        response_headers.typed_insert(range);
    }
    Ok(response)
}

// Parsed here rather than by `headers::Range`, which drops a suffix longer
// than the file (RFC 9110 serves all of it) and takes `+5` for 5.
/// One `bytes=` range of a file of `size` bytes, as inclusive offsets.
/// `Ok(None)` for a header this server ignores (another unit, several
/// ranges, or a malformed one: RFC 9110 says to send the whole file);
/// `Err` for a well-formed range outside the file.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let digits = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (start, end) = match (first.trim(), last.trim()) {
        ("", "") => return Ok(None),
        ("", suffix) => {
            let Some(suffix) = digits(suffix) else {
                return Ok(None);
            };
            if suffix == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (start, "") => {
            let Some(start) = digits(start) else {
                return Ok(None);
            };
            (start, size.saturating_sub(1))
        }
        (start, end) => {
            let (Some(start), Some(end)) = (digits(start), digits(end)) else {
                return Ok(None);
            };
            if end < start {
                return Ok(None);
            }
            (start, end.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start >= size || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// The task's artifacts from `results`; 404 when it has no result.
async fn artifacts_of(state: &AppState, task_id: TaskId) -> Result<Vec<ArtifactView>, Problem> {
    let client = connection(state).await?;
    let artifacts = query::artifacts(&client, task_id)
        .await
        .map_err(read_error("reading artifacts"))?
        .ok_or_else(|| {
            Problem::not_found(format!(
                "task {task_id} has no files (it does not exist, or has not succeeded or failed yet)"
            ))
        })?;
    Ok(artifacts.into_iter().map(ArtifactView::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=95-200", 100), Ok(Some((95, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=x-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=+5-9", 100), Ok(None));
    }
}
