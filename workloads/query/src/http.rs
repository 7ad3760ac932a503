//! The query node's HTTP API.

use std::sync::Arc;
use std::time::Instant;

use artstore_common::ApiError;
use artstore_common::auth::{Caller, Role, Verifier, require_auth};
use artstore_common::error::from_rejection;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use sqlx::PgPool;
use uuid::Uuid;

use crate::elements::{ElementClient, ElementError, RegistryWatcher};
use crate::metrics::Metrics;
use crate::search::{self, SearchRequest};
use crate::store;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub registry: Arc<RegistryWatcher>,
    pub elements: ElementClient,
    pub metrics: Metrics,
}

/// The `/api/` routes, all behind the bearer-token check (reader or higher).
pub fn api_router(state: AppState, verifier: Verifier) -> Router {
    Router::new()
        .route("/api/v1/search", post(search_handler))
        .route("/api/v1/files/{id}", get(get_file))
        .route("/api/v1/files/{id}/download", get(download))
        .route(artstore_contract::paths::STATUS, get(status))
        .route("/api/v1/elements", get(elements))
        .with_state(state)
        .layer(middleware::from_fn_with_state(verifier, require_auth))
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse::<Uuid>()
        .map_err(|_| ApiError::bad_request("invalid_file_id", "file id must be a UUID"))
}

fn db_unavailable(e: sqlx::Error) -> ApiError {
    if store::is_unavailable(&e) {
        tracing::warn!(error = %e, "cache database unavailable");
        ApiError::unavailable("database_unavailable", "the cache database is unavailable")
            .with_retry_after(1)
    } else {
        ApiError::internal(e)
    }
}

/// Full-text search with filters, sort and keyset paging.
#[utoipa::path(
    post, path = "/api/v1/search", tag = "search", operation_id = "search",
    request_body = SearchRequest,
    responses(
        (status = 200, description = "One page of matches.", body = search::SearchResponse),
        (status = 400, description = "Bad JSON, query, filter, sort, limit or cursor.", body = artstore_common::error::ErrorBody),
        (status = 503, description = "The index database is unavailable or the search timed out.", body = artstore_common::error::ErrorBody),
    )
)]
async fn search_handler(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Json<search::SearchResponse>, ApiError> {
    caller.require(Role::Reader)?;
    let Json(request) = body.map_err(|e| from_rejection(e.body_text(), "invalid_request"))?;
    let started = Instant::now();
    let result = search::search(&state.pool, request).await;
    state
        .metrics
        .search_seconds
        .observe(started.elapsed().as_secs_f64());
    result.map(Json)
}

/// What the operator shows as the QueryNode's `indexedFiles`.
/// How many files the node has indexed.
#[utoipa::path(
    get, path = "/api/v1/status", tag = "node", operation_id = "node_status",
    responses(
        (status = 200, description = "Counts.", body = artstore_contract::QueryNodeStatus),
        (status = 503, description = "The index database is unavailable (`database_unavailable`).", body = artstore_common::error::ErrorBody),
    )
)]
async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<artstore_contract::QueryNodeStatus>, ApiError> {
    caller.require(Role::Reader)?;
    let (live, deleted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted) FROM file_cache",
    )
    .fetch_one(&state.pool)
    .await
    .map_err(db_unavailable)?;
    Ok(Json(artstore_contract::QueryNodeStatus {
        indexed_files: live.max(0) as u64,
        tombstones: deleted.max(0) as u64,
    }))
}

/// The indexed record of a live file.
#[utoipa::path(
    get, path = "/api/v1/files/{id}", tag = "files", operation_id = "get_file",
    params(("id" = uuid::Uuid, Path, description = "The file id.")),
    responses(
        (status = 200, description = "The record.", body = store::CachedRecord),
        (status = 400, description = "Not a file id (`invalid_file_id`).", body = artstore_common::error::ErrorBody),
        (status = 404, description = "Unknown or deleted (`file_not_found`).", body = artstore_common::error::ErrorBody),
        (status = 503, description = "The index database is unavailable (`database_unavailable`).", body = artstore_common::error::ErrorBody),
    )
)]
async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Reader)?;
    let id = parse_id(&id)?;
    match store::get_live(&state.pool, id)
        .await
        .map_err(db_unavailable)?
    {
        Some(record) => Ok(Json(record.to_json())),
        None => Err(ApiError::not_found(
            "file_not_found",
            format!("file {id} is not known here"),
        )),
    }
}

/// Streams the file from the storage element that holds it, passing `Range`, `If-None-Match`
/// and the answer's `ETag`, `Content-Range` and `Content-Disposition` through.
#[utoipa::path(
    get, path = "/api/v1/files/{id}/download", tag = "files", operation_id = "download_file",
    params(
        ("id" = uuid::Uuid, Path, description = "The file id."),
        ("Range" = Option<String>, Header, description = "`bytes=<first>-<last>`, `bytes=<first>-` or `bytes=-<suffix>`."),
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
        (status = 404, description = "Unknown, deleted, or its content is missing (`file_not_found`, `blob_missing`).", body = artstore_common::error::ErrorBody),
        (status = 416, description = "The range is outside the file (`range_not_satisfiable`).", body = artstore_common::error::ErrorBody, headers(("Content-Range" = String, description = "`bytes */<size>`"))),
        (status = 502, description = "The storage element failed (`element_unreachable`, `element_error`).", body = artstore_common::error::ErrorBody),
        (status = 503, description = "The element is not in the registry, or the database is unavailable.", body = artstore_common::error::ErrorBody),
    )
)]
async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Role::Reader)?;
    let id = parse_id(&id)?;
    let record = store::get_live(&state.pool, id)
        .await
        .map_err(db_unavailable)?
        .ok_or_else(|| {
            ApiError::not_found("file_not_found", format!("file {id} is not known here"))
        })?;
    let element = state
        .registry
        .element(&record.storage_element_id)
        .await
        .map_err(|e| match e {
            ElementError::UnknownElement(_) | ElementError::NoRegistry => ApiError::unavailable(
                "element_unknown",
                format!(
                    "storage element {:?} holding the file is not in the registry",
                    record.storage_element_id
                ),
            ),
            other => ApiError::unavailable("registry_unavailable", other.to_string()),
        })?;
    let upstream = state
        .elements
        .download(&element, id, &headers)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "download from storage element failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "element_unreachable",
                format!("storage element {:?} did not answer", element.id),
            )
        })?;
    let status = upstream.status();
    let passes = status.is_success()
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::RANGE_NOT_SATISFIABLE
        || status == StatusCode::NOT_FOUND;
    if !passes {
        let body = upstream.text().await.unwrap_or_default();
        tracing::warn!(%status, body, element = %element.id, "storage element refused a download");
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "element_error",
            format!("storage element {:?} answered {status}", element.id),
        ));
    }
    let mut response = Response::builder().status(status);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::LAST_MODIFIED,
        header::CONTENT_DISPOSITION,
    ] {
        if let Some(value) = upstream.headers().get(&name) {
            response = response.header(name, value.clone());
        }
    }
    if status.is_success() && !upstream.headers().contains_key(header::CONTENT_DISPOSITION) {
        response = response.header(
            header::CONTENT_DISPOSITION,
            artstore_common::headers::content_disposition(&record.original_filename),
        );
    }
    response
        .body(Body::from_stream(upstream.bytes_stream()))
        .map_err(ApiError::internal)
}

/// One storage element as the registry lists it, with what it says about itself now.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ElementReport {
    #[serde(flatten)]
    pub entry: artstore_contract::RegistryEntry,
    /// Its `GET /api/v1/status`; absent when it did not answer.
    pub status: Option<artstore_contract::ElementStatus>,
    /// Its last recorded consistency report (`details.checked_at` says when), or with
    /// `?check=now` a check run for this answer; absent when none has run or it did not answer.
    pub consistency: Option<artstore_contract::ConsistencyReport>,
    /// Why `status` or `consistency` is missing.
    pub error: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ElementsResponse {
    pub elements: Vec<ElementReport>,
}

/// `GET /api/v1/elements` query: `check=now` runs a consistency check on every element.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ElementsQuery {
    /// `now`: run a consistency check on each element (it lists every object of the element's
    /// backend) instead of showing the last one recorded.
    #[param(pattern = "^now$")]
    pub check: Option<String>,
}

/// The registry's storage elements with their status and last consistency report; admins only.
#[utoipa::path(
    get, path = "/api/v1/elements", tag = "node", operation_id = "list_elements",
    params(ElementsQuery),
    responses(
        (status = 200, description = "Every storage element in the registry.", body = ElementsResponse),
        (status = 400, description = "A `check` other than `now` (`invalid_query`).", body = artstore_common::error::ErrorBody),
        (status = 503, description = "No registry is configured or it is unreadable (`registry_unavailable`).", body = artstore_common::error::ErrorBody),
    )
)]
async fn elements(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ElementsQuery>, QueryRejection>,
) -> Result<Json<ElementsResponse>, ApiError> {
    caller.require(Role::Admin)?;
    let Query(query) = query.map_err(|e| from_rejection(e.body_text(), "invalid_query"))?;
    let consistency_path = match query.check.as_deref() {
        None => artstore_contract::paths::LAST_CONSISTENCY,
        Some("now") => artstore_contract::paths::CONSISTENCY,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("check must be \"now\", not {other:?}"),
            ));
        }
    };
    let registry = state
        .registry
        .current()
        .await
        .map_err(|e| ApiError::unavailable("registry_unavailable", e.to_string()))?;
    let reports = registry.elements.iter().map(|entry| {
        let client = state.elements.clone();
        async move {
            let (status, consistency) = tokio::join!(
                client.get_json::<artstore_contract::ElementStatus>(
                    entry,
                    artstore_contract::paths::STATUS
                ),
                client.get_json_if_any::<artstore_contract::ConsistencyReport>(
                    entry,
                    consistency_path
                ),
            );
            let error = [status.as_ref().err(), consistency.as_ref().err()]
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect::<Vec<_>>();
            ElementReport {
                entry: entry.clone(),
                status: status.ok(),
                consistency: consistency.ok().flatten(),
                error: (!error.is_empty()).then(|| error.join("; ")),
            }
        }
    });
    Ok(Json(ElementsResponse {
        elements: futures::future::join_all(reports).await,
    }))
}

/// Any bytes.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
#[allow(dead_code)]
struct BinaryBody(Vec<u8>);

/// Error codes this API answers with, besides the ones every role has. A download relays the
/// storage element's 404 and 416 as they are.
const ERROR_CODES: &[&str] = &[
    "blob_missing",
    "database_unavailable",
    "element_error",
    "element_unknown",
    "element_unreachable",
    "file_not_found",
    "invalid_cursor",
    "invalid_file_id",
    "invalid_filter",
    "invalid_limit",
    "invalid_query",
    "invalid_request",
    "invalid_sort",
    "range_not_satisfiable",
    "registry_unavailable",
    "search_timeout",
];

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ArtStore query node",
        description = "Search over the archive's index and download through the storage element that holds a file."
    ),
    paths(search_handler, get_file, download, status, elements),
    components(schemas(artstore_common::error::ErrorBody))
)]
struct ApiDoc;

/// The query node's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    artstore_common::openapi::finish(<ApiDoc as utoipa::OpenApi>::openapi(), ERROR_CODES)
}
