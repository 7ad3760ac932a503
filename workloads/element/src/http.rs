//! The element's HTTP API. Roles: readers read (metadata, list, download, status, consistency);
//! writers upload, and change or delete the files they own, on a token an ingester signed for
//! them (internal audience), never on their own token; admins change or delete any file and run
//! cache maintenance.

use std::sync::Arc;

use artstore_common::ApiError;
use artstore_common::auth::{self, Caller as TokenCaller, Role, Verifier};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete as delete_route, get, post};
use futures::{StreamExt, TryStreamExt};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use uuid::Uuid;

use crate::backend::ByteRange;
use crate::core::{Caller, Core, MetadataPatch, UploadRequest};
use crate::error::ElementError;
use crate::maintenance::{self, MaintenanceKind};

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

type AppState = Arc<Core>;

pub fn api_router(core: Arc<Core>, verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/api/v1/files",
            post(upload).get(list).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/files/{id}",
            get(metadata).patch(patch).delete(delete),
        )
        .route("/api/v1/files/{id}/download", get(download))
        .route("/api/v1/uploads/{upload_id}", delete_route(cancel_upload))
        .route("/api/v1/status", get(status))
        .route("/api/v1/cache/consistency", get(consistency))
        .route("/api/v1/cache/consistency/last", get(last_consistency))
        .route("/api/v1/cache/rebuild", post(rebuild_full))
        .route(
            "/api/v1/cache/rebuild/incremental",
            post(rebuild_incremental),
        )
        .route("/api/v1/cache/cleanup-expired", post(cleanup_expired))
        .route("/api/v1/cache/retention", post(retention_sweep))
        .layer(axum::middleware::from_fn_with_state(
            verifier,
            auth::require_auth,
        ))
        .with_state(core)
}

fn caller(token: &TokenCaller) -> Caller {
    Caller {
        sub: token.sub.clone(),
        is_admin: token.role == Role::Admin,
    }
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("invalid_file_id", format!("{text:?} is not a file id")))
}

/// Decodes `a=1&b=2&b=3` (repeated keys kept, `+` as space).
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::bad_request("invalid_query", "query is not valid UTF-8"))
        };
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

/// Sent by the ingester with each internal upload: its identity for the upload, and the promise
/// that it counts a lost answer as a failure (see `docs/faults.md`).
pub const UPLOAD_ID_HEADER: &str = "x-artstore-upload-id";

/// Streams the request body into the backend while hashing it, writes the sidecar, then the cache
/// row and the outbox row in one transaction.
#[utoipa::path(
    post, path = "/api/v1/files", tag = "files", operation_id = "upload",
    params(
        ("filename" = String, Query, description = "The file's name: no `/` or `\\`, no control characters, at most 255 bytes.", min_length = 1, max_length = 255, pattern = r"^[^/\\\u0000-\u001f\u007f-\u009f]*[^/\\\s\u0000-\u001f\u007f-\u009f][^/\\\u0000-\u001f\u007f-\u009f]*$"),
        ("description" = Option<String>, Query, max_length = 4000, pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"),
        ("tag" = Option<Vec<Tag>>, Query, description = "Repeatable; `tags` is accepted too.", max_items = 50),
        ("retention" = Option<artstore_events::Retention>, Query),
        ("retention_days" = Option<u32>, Query, description = "Only with `retention=temporary` (default 30).", minimum = 1, maximum = 36500),
        ("mime_type" = Option<String>, Query, description = "Guessed from the name when absent.", pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}/[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"),
        ("X-Artstore-Upload-Id" = Option<String>, Header, description = "Sent by the ingester: its id for this upload, and its promise that it counts a lost answer as a failure. With it, an upload whose caller disconnects before the answer rolls back instead of committing."),
    ),
    request_body(content = Option<BinaryBody>, content_type = "application/octet-stream", description = "The file's bytes (none: an empty file). The `Content-Length` the HTTP client sends lets the element refuse a file that is too large before reading it."),
    responses(
        (status = 201, description = "Stored.", body = artstore_events::FileRecord),
        (status = 400, description = "Bad parameter or an interrupted body.", body = artstore_common::error::ErrorBody),
        (status = 409, description = "The element's mode does not accept writes (`element_not_writable`).", body = artstore_common::error::ErrorBody),
        (status = 413, description = "Larger than the element's limit (`file_too_large`).", body = artstore_common::error::ErrorBody),
        (status = 408, description = "With `X-Artstore-Upload-Id`: the caller went away before the upload committed; nothing stored (`upload_abandoned`).", body = artstore_common::error::ErrorBody),
        (status = 410, description = "With `X-Artstore-Upload-Id`: the ingester cancelled this upload id (`upload_cancelled`), or the file it stored has been deleted (`upload_deleted`); nothing stored.", body = artstore_common::error::ErrorBody),
        (status = 507, description = "Not enough free capacity (`insufficient_storage`).", body = artstore_common::error::ErrorBody),
    )
)]
async fn upload(
    State(core): State<AppState>,
    token: TokenCaller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    token.require_internal(Role::Writer)?;
    let mut request = UploadRequest::default();
    let mut filename = None;
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "filename" => filename = Some(value),
            "description" => request.description = Some(value),
            "tag" | "tags" => request.tags.push(value),
            "retention" => request.retention = Some(value),
            "retention_days" => request.retention_days = Some(value),
            "mime_type" => request.mime_type = Some(value),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}"),
                ));
            }
        }
    }
    request.filename = filename.ok_or_else(|| {
        ApiError::bad_request("invalid_filename", "query parameter filename is required")
    })?;
    request.content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    // An ingester's upload: all or nothing as the ingester sees it. If this handler is dropped
    // (the ingester disconnected after its idle timeout), the guard cancels the token and the
    // upload rolls back at its commit point.
    let upload_id = headers
        .get(UPLOAD_ID_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|text| text.parse::<Uuid>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_upload_id", "X-Artstore-Upload-Id is not a UUID")
                })
        })
        .transpose()?;
    request.upload_id = upload_id;
    let gone_guard = upload_id.as_ref().map(|id| {
        tracing::debug!(upload_id = %id, "upload on behalf of an ingester");
        let token = tokio_util::sync::CancellationToken::new();
        request.caller_gone = Some(token.clone());
        token.drop_guard()
    });
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    // In its own task: when the client goes away the body fails inside the upload, which then
    // aborts the multipart upload or removes the temporary file instead of being dropped midway.
    let created_by = token.sub.clone();
    let task = tokio::spawn(async move { core.upload(&created_by, request, stream).await });
    let uploaded = task.await.map_err(ApiError::internal)??;
    if let Some(guard) = gone_guard {
        guard.disarm();
    }
    // A repeated upload id: the file it produced, nothing new stored.
    let status = if uploaded.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(uploaded.record)).into_response())
}

#[derive(serde::Serialize)]
struct CancelledUpload {
    upload_id: Uuid,
    /// The file the upload had committed and that was deleted now; `null` when it never
    /// committed (a commit still to come is refused) or its file was gone already.
    deleted_file_id: Option<Uuid>,
}

/// `DELETE /api/v1/uploads/{upload_id}`: an ingester that gave up on this element for an upload
/// makes sure no copy of it stays here (see `docs/faults.md`).
async fn cancel_upload(
    State(core): State<AppState>,
    token: TokenCaller,
    Path(upload_id): Path<String>,
) -> Result<Response, ApiError> {
    token.require_internal(Role::Writer)?;
    let upload_id: Uuid = upload_id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_upload_id",
            format!("{upload_id:?} is not an upload id"),
        )
    })?;
    // In its own task, like a delete: once started it finishes whatever the caller does.
    let deleted_file_id = tokio::spawn(async move { core.cancel_upload(upload_id).await })
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(CancelledUpload {
        upload_id,
        deleted_file_id,
    })
    .into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of the element's files, oldest first.
#[utoipa::path(
    get, path = "/api/v1/files", tag = "files", operation_id = "list_files",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Default 100."),
        ("cursor" = Option<uuid::Uuid>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "One page.", body = crate::core::FileList),
        (status = 400, description = "Bad `limit` or `cursor`.", body = artstore_common::error::ErrorBody),
    )
)]
async fn list(
    State(core): State<AppState>,
    token: TokenCaller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    token.require(Role::Reader)?;
    let mut q = ListQuery {
        limit: None,
        cursor: None,
    };
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "limit" => q.limit = Some(value),
            // An empty cursor is refused like any other that is not a file id.
            "cursor" => q.cursor = Some(value),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}"),
                ));
            }
        }
    }
    let limit = match q.limit {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be 1 to {MAX_PAGE}"),
                ));
            }
        },
    };
    let cursor = q
        .cursor
        .map(|c| {
            c.parse::<Uuid>()
                .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor is not valid"))
        })
        .transpose()?;
    Ok(Json(core.list(limit, cursor).await?).into_response())
}

/// The record plus the cache's view of it.
#[utoipa::path(
    get, path = "/api/v1/files/{id}", tag = "files", operation_id = "get_file",
    params(("id" = uuid::Uuid, Path, description = "The file id.")),
    responses(
        (status = 200, description = "The record.", body = crate::core::FileView),
        (status = 400, description = "Not a file id (`invalid_file_id`).", body = artstore_common::error::ErrorBody),
        (status = 404, description = "No such file here (`file_not_found`).", body = artstore_common::error::ErrorBody),
    )
)]
async fn metadata(
    State(core): State<AppState>,
    token: TokenCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    token.require(Role::Reader)?;
    let id = parse_id(&id)?;
    Ok(Json(core.get(id).await?).into_response())
}

/// A change of metadata: at least one field; `description: null` clears the description.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 4000, pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$")]
    description: Option<Option<String>>,
    /// Replaces every tag.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Tag>>, max_items = 50)]
    tags: Option<Vec<String>>,
}

/// A tag: 1 to 100 characters (after trimming), no control characters.
#[derive(utoipa::ToSchema)]
#[schema(
    min_length = 1,
    max_length = 100,
    pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
)]
#[allow(dead_code)]
struct Tag(String);

/// Any bytes.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
#[allow(dead_code)]
struct BinaryBody(Vec<u8>);

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Changes description and/or tags; owners and admins only, in mode `edit`.
#[utoipa::path(
    patch, path = "/api/v1/files/{id}", tag = "files", operation_id = "update_file",
    params(("id" = uuid::Uuid, Path, description = "The file id.")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The changed record.", body = crate::core::FileView),
        (status = 400, description = "Bad id or body.", body = artstore_common::error::ErrorBody),
        (status = 404, description = "No such file here (`file_not_found`).", body = artstore_common::error::ErrorBody),
        (status = 409, description = "The element is not in mode `edit` (`element_not_editable`).", body = artstore_common::error::ErrorBody),
    )
)]
async fn patch(
    State(core): State<AppState>,
    token: TokenCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    token.require_internal(Role::Writer)?;
    let id = parse_id(&id)?;
    // Through a map first: serde would also read a struct from a JSON array (`[null, null]`).
    let body: PatchBody =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
            .and_then(|map| serde_json::from_value(serde_json::Value::Object(map)))
            .map_err(|e| {
                ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}"))
            })?;
    if body.description.is_none() && body.tags.is_none() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "nothing to change: give description and/or tags",
        ));
    }
    // In its own task: a client that goes away must not stop the change between the sidecar
    // and the cache row (the sidecar would say one thing, the cache and search another).
    let caller = caller(&token);
    let view = tokio::spawn(async move {
        core.patch(
            &caller,
            id,
            MetadataPatch {
                description: body.description,
                tags: body.tags,
            },
        )
        .await
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(view).into_response())
}

/// Deletes the file; owners and admins only, in mode `edit`.
#[utoipa::path(
    delete, path = "/api/v1/files/{id}", tag = "files", operation_id = "delete_file",
    params(("id" = uuid::Uuid, Path, description = "The file id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "Not a file id (`invalid_file_id`).", body = artstore_common::error::ErrorBody),
        (status = 404, description = "No such file here (`file_not_found`).", body = artstore_common::error::ErrorBody),
        (status = 409, description = "The element is not in mode `edit` (`element_not_editable`).", body = artstore_common::error::ErrorBody),
    )
)]
async fn delete(
    State(core): State<AppState>,
    token: TokenCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    token.require_internal(Role::Writer)?;
    let id = parse_id(&id)?;
    // In its own task, for the same reason as a patch: once the sidecar is gone the delete must
    // reach the cache row and the outbox, whatever the client does.
    let caller = caller(&token);
    tokio::spawn(async move { core.delete(&caller, id).await })
        .await
        .map_err(ApiError::internal)??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Parses a `Range` header against a file of `size` bytes. `Ok(None)`: serve everything.
pub fn parse_range(header: &str, size: u64) -> Result<Option<ByteRange>, ElementError> {
    let unsatisfiable = ElementError::RangeNotSatisfiable { size };
    let spec = header
        .trim()
        .strip_prefix("bytes=")
        .ok_or(ElementError::RangeNotSatisfiable { size })?;
    if spec.contains(',') {
        // Several ranges: answering with the whole file is allowed and simpler.
        return Ok(None);
    }
    let (first, last) = spec
        .trim()
        .split_once('-')
        .ok_or(ElementError::RangeNotSatisfiable { size })?;
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| ElementError::RangeNotSatisfiable { size })
    };
    let range = match (first.is_empty(), last.is_empty()) {
        (true, true) => return Err(unsatisfiable),
        (true, false) => {
            let suffix = parse(last)?;
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable);
            }
            ByteRange {
                start: size.saturating_sub(suffix),
                end: size - 1,
            }
        }
        (false, _) => {
            let start = parse(first)?;
            let end = if last.is_empty() {
                u64::MAX
            } else {
                parse(last)?
            };
            if start >= size || end < start {
                return Err(unsatisfiable);
            }
            ByteRange {
                start,
                end: end.min(size - 1),
            }
        }
    };
    Ok(Some(range))
}

/// Streams the file: `Range` (one range) gives 206, `If-None-Match` with the ETag gives 304.
#[utoipa::path(
    get, path = "/api/v1/files/{id}/download", tag = "files", operation_id = "download_file",
    params(
        ("id" = uuid::Uuid, Path, description = "The file id."),
        ("Range" = Option<String>, Header, description = "`bytes=<first>-<last>`, `bytes=<first>-` or `bytes=-<suffix>`; several ranges give the whole file."),
        ("If-None-Match" = Option<String>, Header, description = "An ETag seen before (or `*`)."),
    ),
    responses(
        (status = 200, description = "The whole file, in its own media type.", content_type = "*/*", body = inline(BinaryBody), headers(
            ("ETag" = String, description = "The SHA-256 of the content, quoted."),
            ("Content-Length" = u64),
            ("Accept-Ranges" = String, description = "`bytes`"),
            ("Content-Disposition" = String, description = "`attachment` with the original name (RFC 6266/5987)."),
        )),
        (status = 206, description = "The requested range.", content_type = "*/*", body = inline(BinaryBody), headers(
            ("Content-Range" = String, description = "`bytes <first>-<last>/<size>`"),
            ("ETag" = String),
            ("Content-Length" = u64),
        )),
        (status = 304, description = "Not modified (the ETag matched).", headers(("ETag" = String))),
        (status = 400, description = "Not a file id (`invalid_file_id`).", body = artstore_common::error::ErrorBody),
        (status = 404, description = "No such file here (`file_not_found`, `blob_missing`).", body = artstore_common::error::ErrorBody),
        (status = 416, description = "The range is outside the file (`range_not_satisfiable`).", body = artstore_common::error::ErrorBody, headers(("Content-Range" = String, description = "`bytes */<size>`"))),
    )
)]
async fn download(
    State(core): State<AppState>,
    token: TokenCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    token.require(Role::Reader)?;
    let id = parse_id(&id)?;
    let record = core.get(id).await?.record;
    let etag = format!("\"{}\"", record.sha256);
    if let Some(candidates) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && candidates
            .split(',')
            .any(|c| c.trim() == etag || c.trim() == "*")
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    let size = record.size;
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ElementError::RangeNotSatisfiable { size });
            match text.and_then(|t| parse_range(t, size)) {
                Ok(range) => range,
                Err(e) => {
                    let mut response = ApiError::from(e).into_response();
                    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        response.headers_mut().insert(header::CONTENT_RANGE, value);
                    }
                    return Ok(response);
                }
            }
        }
    };
    let stream = core
        .backend
        .get_stream(&record.storage_key, range)
        .await
        .map_err(|e| match e {
            crate::backend::BackendError::NotFound(_) => ApiError::not_found(
                "blob_missing",
                format!("the content of file {id} is missing"),
            ),
            other => ApiError::from(ElementError::from(other)),
        })?;
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, record.mime_type.as_str())
        .header(header::ETAG, etag.as_str())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            artstore_common::headers::content_disposition(&record.original_filename),
        );
    builder = match range {
        Some(r) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end),
            )
            .header(header::CONTENT_LENGTH, r.end - r.start + 1),
        None => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size),
    };
    builder
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

/// Mode, priority, capacity, used bytes and file count.
#[utoipa::path(
    get, path = "/api/v1/status", tag = "element", operation_id = "element_status",
    responses((status = 200, description = "The element's status.", body = artstore_contract::ElementStatus))
)]
async fn status(State(core): State<AppState>, token: TokenCaller) -> Result<Response, ApiError> {
    token.require(Role::Reader)?;
    Ok(Json(core.status().await?).into_response())
}

/// Compares sidecars with the cache (read-only).
#[utoipa::path(
    get, path = "/api/v1/cache/consistency", tag = "cache", operation_id = "consistency",
    responses((status = 200, description = "The report.", body = artstore_contract::ConsistencyReport))
)]
async fn consistency(
    State(core): State<AppState>,
    token: TokenCaller,
) -> Result<Response, ApiError> {
    token.require(Role::Reader)?;
    Ok(Json(maintenance::run(&core, MaintenanceKind::Consistency).await?).into_response())
}

/// The last consistency report recorded here, without running a check (a check lists every
/// object of the backend).
#[utoipa::path(
    get, path = "/api/v1/cache/consistency/last", tag = "cache", operation_id = "last_consistency",
    responses(
        (status = 200, description = "The last report; `details.checked_at` says when.", body = artstore_contract::ConsistencyReport),
        (status = 404, description = "No check has run on this element yet (`no_consistency_report`).", body = artstore_common::error::ErrorBody),
    )
)]
async fn last_consistency(
    State(core): State<AppState>,
    token: TokenCaller,
) -> Result<Response, ApiError> {
    token.require(Role::Reader)?;
    match maintenance::last_consistency(&core).await? {
        Some(report) => Ok(Json(report).into_response()),
        None => Err(ApiError::not_found(
            "no_consistency_report",
            "no consistency check has run on this element yet",
        )),
    }
}

/// Runs maintenance in its own task, so a client that goes away does not cut a run in half.
async fn run_maintenance(
    core: AppState,
    token: TokenCaller,
    kind: MaintenanceKind,
) -> Result<Response, ApiError> {
    token.require(Role::Admin)?;
    let task = tokio::spawn(async move { maintenance::run(&core, kind).await });
    let report = task.await.map_err(ApiError::internal)??;
    Ok(Json(report).into_response())
}

/// Rebuilds the whole cache from the sidecars; admins only. Waits for a run in progress.
#[utoipa::path(
    post, path = "/api/v1/cache/rebuild", tag = "cache", operation_id = "rebuild_full",
    responses((status = 200, description = "What was done and how long it took.", body = crate::maintenance::RunReport))
)]
async fn rebuild_full(
    State(core): State<AppState>,
    token: TokenCaller,
) -> Result<Response, ApiError> {
    run_maintenance(core, token, MaintenanceKind::Full).await
}

/// Adds orphan sidecars and drops rows whose sidecar is gone; admins only. Waits for a run in progress.
#[utoipa::path(
    post, path = "/api/v1/cache/rebuild/incremental", tag = "cache", operation_id = "rebuild_incremental",
    responses((status = 200, description = "What was done and how long it took.", body = crate::maintenance::RunReport))
)]
async fn rebuild_incremental(
    State(core): State<AppState>,
    token: TokenCaller,
) -> Result<Response, ApiError> {
    run_maintenance(core, token, MaintenanceKind::Incremental).await
}

/// Re-reads the rows whose TTL expired; admins only. Waits for a run in progress.
#[utoipa::path(
    post, path = "/api/v1/cache/cleanup-expired", tag = "cache", operation_id = "cleanup_expired",
    responses((status = 200, description = "What was done and how long it took.", body = crate::maintenance::RunReport))
)]
async fn cleanup_expired(
    State(core): State<AppState>,
    token: TokenCaller,
) -> Result<Response, ApiError> {
    run_maintenance(core, token, MaintenanceKind::CleanupExpired).await
}

/// Deletes temporary files past their retention; admins only. Waits for a run in progress.
#[utoipa::path(
    post, path = "/api/v1/cache/retention", tag = "cache", operation_id = "retention_sweep",
    responses((status = 200, description = "What was done and how long it took.", body = crate::maintenance::RunReport))
)]
async fn retention_sweep(
    State(core): State<AppState>,
    token: TokenCaller,
) -> Result<Response, ApiError> {
    run_maintenance(core, token, MaintenanceKind::Retention).await
}

/// Error codes this API answers with, besides the ones every role has.
const ERROR_CODES: &[&str] = &[
    "blob_missing",
    "element_not_editable",
    "element_not_writable",
    "file_not_found",
    "database_unavailable",
    "file_too_large",
    "insufficient_storage",
    "internal_only",
    "invalid_body",
    "invalid_cursor",
    "invalid_description",
    "invalid_file_id",
    "invalid_filename",
    "invalid_limit",
    "invalid_mime_type",
    "invalid_query",
    "invalid_record",
    "invalid_retention",
    "invalid_retention_days",
    "invalid_tag",
    "invalid_upload_id",
    "no_consistency_report",
    "range_not_satisfiable",
    "storage_unavailable",
    "upload_abandoned",
    "upload_cancelled",
    "upload_deleted",
    "upload_interrupted",
];

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ArtStore storage element",
        description = "Stores files, their sidecars and its metadata cache; serves them to query nodes and the ingester."
    ),
    paths(
        upload,
        list,
        metadata,
        patch,
        delete,
        download,
        status,
        consistency,
        last_consistency,
        rebuild_full,
        rebuild_incremental,
        cleanup_expired,
        retention_sweep
    ),
    components(schemas(artstore_common::error::ErrorBody))
)]
struct ApiDoc;

/// The storage element's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc =
        artstore_common::openapi::finish(<ApiDoc as utoipa::OpenApi>::openapi(), ERROR_CODES);
    // Every route reads the cache database or the storage backend.
    artstore_common::openapi::respond_everywhere(
        &mut doc,
        "503",
        "The storage backend (`storage_unavailable`) or the cache database \
         (`database_unavailable`) is unavailable.",
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_against_the_size() {
        let r = |s, size| parse_range(s, size).map_err(|_| ());
        assert_eq!(
            r("bytes=0-9", 100),
            Ok(Some(ByteRange { start: 0, end: 9 }))
        );
        assert_eq!(
            r("bytes=90-", 100),
            Ok(Some(ByteRange { start: 90, end: 99 }))
        );
        assert_eq!(
            r("bytes=-10", 100),
            Ok(Some(ByteRange { start: 90, end: 99 }))
        );
        assert_eq!(
            r("bytes=-500", 100),
            Ok(Some(ByteRange { start: 0, end: 99 }))
        );
        assert_eq!(
            r("bytes=50-5000", 100),
            Ok(Some(ByteRange { start: 50, end: 99 }))
        );
        assert_eq!(r("bytes=0-1,5-6", 100), Ok(None));
        assert!(r("bytes=100-", 100).is_err());
        assert!(r("bytes=9-3", 100).is_err());
        assert!(r("bytes=-0", 100).is_err());
        assert!(r("items=0-1", 100).is_err());
        assert!(r("bytes=a-b", 100).is_err());
        assert!(r("bytes=0-0", 0).is_err());
    }
}
