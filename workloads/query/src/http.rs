//! The query node's HTTP API.

use std::sync::Arc;
use std::time::Instant;

use artstore_common::ApiError;
use artstore_common::auth::{Caller, Role, Verifier, require_auth};
use artstore_common::error::from_rejection;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
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
