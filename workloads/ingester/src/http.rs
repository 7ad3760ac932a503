//! The ingester's HTTP API: upload, batch upload, and metadata changes relayed to the owner.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Json, extract::rejection::JsonRejection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::IngesterConfig;
use crate::element_client::{Attempt, ElementClient, ElementTimeouts, UploadMeta};
use crate::form::{FormLimits, FormReader, Part, clip};
use crate::idempotency::{Claim, Idempotency, parse_key};
use crate::limits;
use crate::metrics::{Metrics, Outcome};
use crate::ratelimit::{Decision, RateLimiter};
use crate::select;
use crate::spool::{Content, Spooled, spool};
use crate::spool_dir::SpoolDir;
use artstore_common::ApiError;
use artstore_common::auth::{Caller, Role, Signer, Verifier, require_auth};
use artstore_common::ops::Ops;
use artstore_common::registry::RegistryHandle;

struct Inner {
    config: IngesterConfig,
    spool_dir: SpoolDir,
    registry: RegistryHandle,
    elements: ElementClient,
    limiter: RateLimiter,
    idempotency: Idempotency,
    metrics: Metrics,
    /// Signs the ingester's own calls to storage elements (an upload's cancel).
    signer: Signer,
}

/// Lifetime of a token the ingester signs for one call to a storage element.
const CALL_TOKEN_TTL_SECONDS: u64 = 300;

#[derive(Clone)]
struct AppState(Arc<Inner>);

/// A built ingester: its router, ready to serve.
pub struct Ingester {
    pub router: Router,
}

/// Builds the ingester from its configuration, a registry and a token verifier.
pub async fn build(
    config: IngesterConfig,
    registry: RegistryHandle,
    verifier: Verifier,
) -> anyhow::Result<Ingester> {
    let signer = Signer::from_file(&config.jwt_secret_file).map_err(|e| {
        anyhow::anyhow!(
            "reading the JWT secret {} (the ingester signs its own calls to storage elements with it): {e}",
            config.jwt_secret_file.display()
        )
    })?;
    let client = redis::Client::open(config.redis_url.as_str())?;
    // Rate limits fail open and idempotency answers 503 when Redis does not answer in time.
    let redis_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let redis = redis::aio::ConnectionManager::new_with_config(client, redis_config).await?;
    let spool_base = config
        .spool_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("artstore-ingester-spool"));
    let (spool_dir, removed) = SpoolDir::open(&spool_base)?;
    if removed > 0 {
        tracing::info!(removed, dir = %spool_base.display(), "removed spool files of stopped ingesters");
    }
    let metrics = Metrics::default();
    let cors = crate::cors::layer(&config.cors_allowed_origins)?;
    let mut prometheus = prometheus_client::registry::Registry::default();
    metrics.register(&mut prometheus);
    let state = AppState(Arc::new(Inner {
        limiter: RateLimiter::new(
            redis.clone(),
            &config.redis_key_prefix,
            config.rate_limit_per_minute,
        ),
        idempotency: Idempotency::new(
            redis.clone(),
            &config.redis_key_prefix,
            config.idempotency_ttl_seconds,
        ),
        elements: ElementClient::new(ElementTimeouts {
            connect: Duration::from_secs(config.element_connect_timeout_seconds.max(1)),
            idle: Duration::from_secs(config.element_idle_timeout_seconds.max(1)),
        }),
        registry,
        metrics,
        config,
        spool_dir,
        signer,
    }));

    let ready_redis = redis.clone();
    let ops = Ops::new(
        prometheus,
        Arc::new(move || {
            let mut conn = ready_redis.clone();
            Box::pin(async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("redis: {e}"))
            })
        }),
    );

    let api = Router::new()
        .route("/api/v1/files/upload", post(upload))
        .route("/api/v1/files/batch", post(batch))
        .route("/api/v1/files/{id}", patch(update).delete(remove))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
        .layer(middleware::from_fn_with_state(verifier, require_auth))
        // Size is enforced while spooling (413), not by a blanket body limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    let router = artstore_common::harden::harden(
        api.merge(ops.router())
            .merge(artstore_common::openapi::router(&openapi())),
        artstore_common::harden::HeadLimits::PUBLIC,
    );
    // Outermost, so a preflight (sent without a token) is answered before the token check, and
    // every answer, errors included, carries the CORS headers the browser needs to read it.
    Ok(Ingester {
        router: match cors {
            Some(cors) => router.layer(cors),
            None => router,
        },
    })
}

async fn rate_limit(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
    next: Next,
) -> Response {
    match state.0.limiter.check(&caller.sub).await {
        Ok(Decision::Allowed) => next.run(request).await,
        Ok(Decision::Limited { retry_after_ms }) => {
            state.0.metrics.rate_limited.inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "more than {} requests in a minute; retry later",
                    state.0.config.rate_limit_per_minute
                ),
            )
            .with_retry_after(retry_after_ms.div_ceil(1000))
            .into_response()
        }
        // Fail closed would stop every upload when Redis blips; fail open and say so.
        Err(e) => {
            tracing::warn!(error = %e, "rate limiter unavailable; request let through");
            next.run(request).await
        }
    }
}

/// The token for the ingester's calls to storage elements on behalf of `caller`: signed here
/// with the internal audience (storage elements take writes only with it), never the client's
/// own token forwarded.
fn internal_bearer(state: &Inner, caller: &Caller) -> Result<String, ApiError> {
    state
        .signer
        .bearer(&caller.sub, caller.role, CALL_TOKEN_TTL_SECONDS)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be ASCII")
            })?;
            parse_key(text).map(Some)
        }
    }
}

/// Applies one non-file form field to the metadata; unknown fields are refused. Every field is
/// read up to its byte cap only, and error messages never carry the value back.
async fn read_meta_field(name: &str, field: Part, meta: &mut UploadMeta) -> Result<(), ApiError> {
    let cap = match name {
        "description" | "tags" | "tag" => limits::MAX_TEXT_FIELD_BYTES,
        _ => limits::MAX_SMALL_FIELD_BYTES,
    };
    let value = match name {
        "description" | "tags" | "tag" | "retention" | "retention_days" => field.text(cap).await?,
        _ => String::new(),
    };
    match name {
        "description" => {
            if value.chars().count() > limits::MAX_DESCRIPTION_CHARS {
                return Err(ApiError::bad_request(
                    "description_too_long",
                    format!(
                        "description is longer than {} characters",
                        limits::MAX_DESCRIPTION_CHARS
                    ),
                ));
            }
            meta.description = Some(value);
        }
        "tags" | "tag" => {
            // `tags` may repeat, or carry a comma-separated list.
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag.chars().count() > limits::MAX_TAG_CHARS {
                    return Err(ApiError::bad_request(
                        "tag_too_long",
                        format!("a tag is longer than {} characters", limits::MAX_TAG_CHARS),
                    ));
                }
                if meta.tags.len() >= limits::MAX_TAGS {
                    return Err(ApiError::bad_request(
                        "too_many_tags",
                        format!("at most {} tags", limits::MAX_TAGS),
                    ));
                }
                meta.tags.push(tag.to_string());
            }
        }
        "retention" => {
            if value != "temporary" && value != "permanent" {
                return Err(ApiError::bad_request(
                    "invalid_retention",
                    "retention must be `temporary` or `permanent`",
                ));
            }
            meta.retention = Some(value);
        }
        "retention_days" => {
            let days: u32 = value.trim().parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_retention_days",
                    "retention_days must be a whole number",
                )
            })?;
            if !(1..=36_500).contains(&days) {
                return Err(ApiError::bad_request(
                    "invalid_retention_days",
                    "retention_days must be between 1 and 36500",
                ));
            }
            meta.retention_days = Some(days.to_string());
        }
        other => {
            return Err(ApiError::bad_request(
                "unknown_field",
                format!(
                    "unknown form field {:?}: expected file, description, tags, retention, retention_days",
                    clip(other)
                ),
            ));
        }
    }
    let metadata_bytes = meta.description.as_deref().map_or(0, str::len)
        + meta.tags.iter().map(String::len).sum::<usize>();
    if metadata_bytes > limits::MAX_METADATA_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "metadata_too_large",
            format!(
                "description and tags together are longer than {} bytes",
                limits::MAX_METADATA_BYTES
            ),
        ));
    }
    Ok(())
}

/// Same content = same bytes and same metadata.
fn fingerprint(file: &Spooled, meta: &UploadMeta) -> String {
    let mut h = Sha256::new();
    for part in [
        file.sha256.as_str(),
        file.filename.as_str(),
        meta.description.as_deref().unwrap_or(""),
        &meta.tags.join("\u{1f}"),
        meta.retention.as_deref().unwrap_or(""),
        meta.retention_days.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// Offers the file to each candidate element in turn. With an `Idempotency-Key` (`key`), each
/// attempt is recorded under the key before it is sent (see [`resolve_earlier_attempts`]).
async fn store(
    state: &Inner,
    caller: &Caller,
    key: Option<&str>,
    file: &Spooled,
    meta: &UploadMeta,
    auth: &str,
) -> Result<serde_json::Value, ApiError> {
    let registry = registry(state).await?;
    let candidates = select::candidates(&registry, file.size);
    let mut reasons = Vec::new();
    let upload_id = uuid::Uuid::now_v7().to_string();
    for element in &candidates {
        if let Some(key) = key {
            resolve_earlier_attempts(state, caller, key, &registry, &element.id, &upload_id)
                .await?;
        }
        match state
            .elements
            .upload(element, file, meta, auth, &upload_id)
            .await
        {
            Attempt::Stored(record) => {
                state.metrics.upload_bytes.inc_by(file.size);
                return Ok(record);
            }
            Attempt::Rejected(e) => return Err(e),
            // Another request with the same key cancelled this upload (this one's claim had
            // expired while it stalled): that request's result is the key's.
            Attempt::Superseded(reason) => {
                return Err(ApiError::unavailable(
                    "idempotency_claim_lost",
                    format!("another request with this Idempotency-Key took over ({reason}); retry to get its result"),
                )
                .with_retry_after(1));
            }
            Attempt::GaveUp(reason) => {
                tracing::info!(element = %element.id, %reason, "gave up on a storage element; cancelling the upload there and trying the next");
                state.metrics.fallthroughs.inc();
                reasons.push(reason);
                let signer = state.signer.clone();
                let (sub, role) = (caller.sub.clone(), caller.role);
                state
                    .elements
                    .cancel_upload(element.clone(), upload_id.clone(), move || {
                        signer.bearer(&sub, role, CALL_TOKEN_TTL_SECONDS)
                    });
            }
            Attempt::Skip(reason) => {
                tracing::info!(element = %element.id, %reason, "storage element could not take the file; trying the next");
                state.metrics.fallthroughs.inc();
                reasons.push(reason);
            }
        }
    }
    let detail = if candidates.is_empty() {
        "no writable storage element has room for the file".to_string()
    } else {
        format!(
            "every writable storage element refused the file: {}",
            reasons.join("; ")
        )
    };
    Err(ApiError::unavailable("no_storage_available", detail).with_retry_after(30))
}

/// Stores one spooled file, honouring an idempotency key. Returns the record and whether it
/// was replayed.
async fn store_once(
    state: &Inner,
    caller: &Caller,
    key: Option<&str>,
    file: &Spooled,
    meta: &UploadMeta,
    auth: &str,
) -> Result<(serde_json::Value, bool), ApiError> {
    let Some(key) = key else {
        return store(state, caller, None, file, meta, auth)
            .await
            .map(|r| (r, false));
    };
    let print = fingerprint(file, meta);
    match state.idempotency.claim(&caller.sub, key, &print).await? {
        Claim::Replay(record) => Ok((record, true)),
        Claim::Owner(claim) => {
            // Keep the claim alive while storing: a claim whose owner died expires in seconds,
            // so a retry is let through instead of waiting out a long TTL.
            let stored = {
                let heartbeat = state.idempotency.keep_alive(&caller.sub, key, &claim);
                tokio::pin!(heartbeat);
                tokio::select! {
                    stored = store(state, caller, Some(key), file, meta, auth) => stored,
                    () = &mut heartbeat => unreachable!("the heartbeat never ends"),
                }
            };
            match stored {
                Ok(record) => {
                    // Answered "stored" only once the result is recorded: a retry then replays
                    // it, where otherwise it would cancel this very upload as an earlier attempt.
                    let recorded = state
                        .idempotency
                        .complete(&caller.sub, key, &claim, &print, &record)
                        .await;
                    match recorded {
                        Ok(true) => Ok((record, false)),
                        Ok(false) => claim_lost(state, caller, key).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => {
                    state.idempotency.release(&caller.sub, key, &claim).await;
                    Err(e)
                }
            }
        }
    }
}

/// Records under `key` that `upload_id` goes to `element_id`, after cancelling the attempts
/// other requests with the key left without a result, each on the element it went to: their
/// ingester may have died after the element committed, never answering and never cancelling,
/// so without this the file would be stored twice. When such an element cannot be asked,
/// nothing is sent (503, the client retries later); an element no longer in the registry
/// cannot be asked either, and holds nothing the archive serves.
async fn resolve_earlier_attempts(
    state: &Inner,
    caller: &Caller,
    key: &str,
    registry: &artstore_contract::Registry,
    element_id: &str,
    upload_id: &str,
) -> Result<(), ApiError> {
    let earlier = state
        .idempotency
        .record_attempt(&caller.sub, key, element_id, upload_id)
        .await?;
    if earlier.is_empty() {
        return Ok(());
    }
    let internal = state
        .signer
        .bearer(&caller.sub, caller.role, CALL_TOKEN_TTL_SECONDS)?;
    state
        .elements
        .cancel_attempts(registry, &earlier, &internal)
        .await
        .map_err(|why| {
            ApiError::unavailable(
                "earlier_attempt_unresolved",
                format!("an earlier request with this Idempotency-Key may have stored the file on an element that cannot be asked now ({why}); retry later"),
            )
            .with_retry_after(5)
        })?;
    state
        .idempotency
        .forget_attempts(&caller.sub, key, &earlier)
        .await;
    Ok(())
}

/// The file is stored but the key's claim passed to another request meanwhile (this one stalled
/// past the claim's expiry): the key's recorded result is the answer; without one yet, the
/// client retries (the other request may have cancelled this upload, or this upload is now an
/// earlier attempt the next request cancels).
async fn claim_lost(
    state: &Inner,
    caller: &Caller,
    key: &str,
) -> Result<(serde_json::Value, bool), ApiError> {
    match state.idempotency.recorded(&caller.sub, key).await? {
        Some(record) => Ok((record, true)),
        None => Err(ApiError::unavailable(
            "idempotency_claim_lost",
            "another request with this Idempotency-Key took over while this one stalled; retry to get its result",
        )
        .with_retry_after(1)),
    }
}

/// [`store_once`] in its own task: once the file is spooled, a client that disconnects (or
/// times out) no longer cancels the store half-way. The task always finishes, recording the
/// result under the key (a retry replays it) or releasing the key (a retry stores it), so a cut
/// request never leaves a claim behind that answers 409 until it expires.
async fn store_detached(
    state: &AppState,
    caller: &Caller,
    key: Option<String>,
    file: Spooled,
    meta: UploadMeta,
    auth: String,
) -> Result<(serde_json::Value, bool), ApiError> {
    let state = state.clone();
    let caller = caller.clone();
    tokio::spawn(async move {
        let result = store_once(&state.0, &caller, key.as_deref(), &file, &meta, &auth).await;
        count(&state.0, &result);
        result
    })
    .await
    .map_err(ApiError::internal)?
}

fn count(state: &Inner, result: &Result<(serde_json::Value, bool), ApiError>) {
    let outcome = match result {
        Ok((_, true)) => "replayed",
        Ok((_, false)) => "stored",
        Err(e) if e.status.is_client_error() => "rejected",
        Err(_) => "failed",
    };
    state
        .metrics
        .uploads
        .get_or_create(&Outcome { outcome })
        .inc();
}

/// Stores one file in the first storage element that can take it.
#[utoipa::path(
    post, path = "/api/v1/files/upload", tag = "files", operation_id = "upload",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; the same key with the same content replays the first answer.", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored.", body = artstore_events::FileRecord),
        (status = 200, description = "Replayed: the record stored under the same `Idempotency-Key`.", body = artstore_events::FileRecord, headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "Bad form, field or key (`invalid_multipart`, `missing_file`, `too_many_files`, `missing_filename`, `filename_too_long`, `unknown_field`, `description_too_long`, `tag_too_long`, `too_many_tags`, `invalid_retention`, `invalid_retention_days`, `invalid_idempotency_key`, or the element's `invalid_filename`, `invalid_tag`, …).", body = artstore_common::error::ErrorBody),
        (status = 409, description = "The same key is being used by a request in flight (`idempotency_in_progress`).", body = artstore_common::error::ErrorBody),
        (status = 413, description = "Over a limit: the file (`file_too_large`), one text field as sent (`field_too_large`), description and tags together (`metadata_too_large`), parts in the form (`too_many_parts`), or part headers and preamble (`multipart_overhead_too_large`).", body = artstore_common::error::ErrorBody),
        (status = 422, description = "The same key with different content (`idempotency_key_reused`).", body = artstore_common::error::ErrorBody),
        (status = 429, description = "Over the rate limit (`rate_limited`).", body = artstore_common::error::ErrorBody, headers(("Retry-After" = u64, description = "Seconds."))),
        (status = 503, description = "No storage element could take the file (`no_storage_available`), an element that may hold an earlier attempt under the same `Idempotency-Key` cannot be asked (`earlier_attempt_unresolved`), another request with the key took over while this one stalled (`idempotency_claim_lost`), or the registry (`registry_unavailable`) or Redis (`redis_unavailable`) is unavailable.", body = artstore_common::error::ErrorBody, headers(("Retry-After" = u64, description = "Seconds."))),
    )
)]
async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Role::Writer)?;
    let key = idempotency_key(&headers)?;
    let mut multipart = FormReader::new(&headers, body, FormLimits::UPLOAD)?;
    let mut meta = UploadMeta::default();
    let mut file = None;
    while let Some(field) = multipart.next_part().await? {
        let name = field.name().to_string();
        if name == "file" {
            if file.is_some() {
                return Err(ApiError::bad_request(
                    "too_many_files",
                    "one file per upload; use /api/v1/files/batch for several",
                ));
            }
            file = Some(
                spool(
                    field,
                    state.0.config.max_upload_bytes,
                    state.0.config.memory_spool_bytes,
                    &state.0.spool_dir,
                )
                .await?,
            );
        } else {
            read_meta_field(&name, field, &mut meta).await?;
        }
    }
    let file =
        file.ok_or_else(|| ApiError::bad_request("missing_file", "the form has no `file` part"))?;
    let (record, replayed) = store_detached(
        &state,
        &caller,
        key,
        file,
        meta,
        internal_bearer(&state.0, &caller)?,
    )
    .await?;
    let mut response = if replayed {
        (StatusCode::OK, Json(record)).into_response()
    } else {
        (StatusCode::CREATED, Json(record)).into_response()
    };
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Serialize, utoipa::ToSchema)]
struct BatchItem {
    index: usize,
    filename: Option<String>,
    /// `stored`, `replayed` or `rejected`.
    status: &'static str,
    http_status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    file_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<artstore_events::FileRecord>)]
    record: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<BatchError>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BatchError {
    code: String,
    message: String,
}

impl BatchItem {
    fn rejected(index: usize, filename: Option<String>, e: ApiError) -> Self {
        BatchItem {
            index,
            filename,
            status: "rejected",
            http_status: e.status.as_u16(),
            file_id: None,
            record: None,
            error: Some(BatchError {
                code: e.code.into_owned(),
                message: e.message,
            }),
        }
    }
}

/// Several `file` parts, each stored or refused on its own: 207 with one result per part.
/// The metadata fields apply to every file; a bad field refuses the whole batch before anything
/// is stored. With an `Idempotency-Key`, item `i` uses the key `<key>:<i>`.
#[utoipa::path(
    post, path = "/api/v1/files/batch", tag = "files", operation_id = "batch_upload",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; item `i` uses the key `<key>:<i>`.", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body(content = BatchForm, content_type = "multipart/form-data"),
    responses(
        (status = 207, description = "One result per `file` part.", body = BatchReport),
        (status = 400, description = "Bad form, key or metadata field, or no `file` part; nothing stored.", body = artstore_common::error::ErrorBody),
        (status = 413, description = "Over a limit, nothing stored: the files together (`batch_too_large`; one file over the limit is a rejected item, `file_too_large`), one text field as sent (`field_too_large`), description and tags together (`metadata_too_large`), parts in the form (`too_many_parts`), or part headers and preamble (`multipart_overhead_too_large`).", body = artstore_common::error::ErrorBody),
        (status = 429, description = "Over the rate limit (`rate_limited`).", body = artstore_common::error::ErrorBody, headers(("Retry-After" = u64, description = "Seconds."))),
    )
)]
async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Role::Writer)?;
    let key = idempotency_key(&headers)?;
    let mut multipart = FormReader::new(&headers, body, FormLimits::BATCH)?;
    // The whole form is read before anything is stored, so a bad form or metadata field refuses
    // the batch with nothing stored, and the metadata applies to every file. The files share one
    // in-memory budget and, together, the single upload's size limit: a batch never holds more
    // than one upload's worth in memory, nor (while its last file is checked) twice on disk.
    let max_bytes = state.0.config.max_upload_bytes;
    let mut meta = UploadMeta::default();
    let mut parts = Vec::new();
    let mut memory_left = state.0.config.memory_spool_bytes;
    let mut bytes_left = max_bytes;
    while let Some(field) = multipart.next_part().await? {
        let name = field.name().to_string();
        if name != "file" {
            read_meta_field(&name, field, &mut meta).await?;
            continue;
        }
        let filename = field.file_name().map(clip);
        let file = spool(field, max_bytes, memory_left, &state.0.spool_dir).await;
        if let Ok(spooled) = &file {
            if spooled.size > bytes_left {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "batch_too_large",
                    format!(
                        "the files of a batch are together larger than the limit of {max_bytes} bytes"
                    ),
                ));
            }
            bytes_left -= spooled.size;
            if let Content::Memory(bytes) = &spooled.content {
                memory_left = memory_left.saturating_sub(bytes.len());
            }
        }
        parts.push((filename, file));
    }
    if parts.is_empty() {
        return Err(ApiError::bad_request(
            "missing_file",
            "the form has no `file` part",
        ));
    }
    let mut items: Vec<BatchItem> = Vec::with_capacity(parts.len());
    for (index, (filename, file)) in parts.into_iter().enumerate() {
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                count(&state.0, &Err(e.clone()));
                items.push(BatchItem::rejected(index, filename, e));
                continue;
            }
        };
        let item_key = key.as_ref().map(|k| format!("{k}:{index}"));
        // Signed per item: a long batch may outlast one token.
        let result = match internal_bearer(&state.0, &caller) {
            Ok(auth) => store_detached(&state, &caller, item_key, file, meta.clone(), auth).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result
            && METADATA_CODES.contains(&e.code.as_ref())
            && items.iter().all(|i| i.status == "rejected")
        {
            // Every file carries the same metadata, so the element would refuse them all: the
            // request is bad, and nothing has been stored yet.
            return Err(e.clone());
        }
        items.push(match result {
            Ok((record, replayed)) => BatchItem {
                index,
                filename,
                status: if replayed { "replayed" } else { "stored" },
                http_status: if replayed { 200 } else { 201 },
                file_id: record.get("file_id").cloned(),
                record: Some(record),
                error: None,
            },
            Err(e) => BatchItem::rejected(index, filename, e),
        });
    }
    let stored = items.iter().filter(|i| i.status != "rejected").count();
    let body = serde_json::json!({
        "total": items.len(),
        "stored": stored,
        "rejected": items.len() - stored,
        "results": items,
    });
    Ok((StatusCode::MULTI_STATUS, Json(body)).into_response())
}

async fn registry(state: &Inner) -> Result<Arc<artstore_contract::Registry>, ApiError> {
    state.registry.current().await.map_err(|e| {
        ApiError::unavailable("registry_unavailable", e.to_string()).with_retry_after(5)
    })
}

fn parse_file_id(id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::bad_request("invalid_file_id", format!("{id:?} is not a file id")))
}

fn relayed(status: StatusCode, body: Option<serde_json::Value>) -> Response {
    match body {
        Some(json) => (status, Json(json)).into_response(),
        None => status.into_response(),
    }
}

/// Changes description and/or tags on the storage element that holds the file (its answer is
/// relayed as it is).
#[utoipa::path(
    patch, path = "/api/v1/files/{id}", tag = "files", operation_id = "update_file",
    params(("id" = uuid::Uuid, Path, description = "The file id.")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The changed record.", body = artstore_events::FileRecord),
        (status = 400, description = "Bad id or body.", body = artstore_common::error::ErrorBody),
        (status = 404, description = "No storage element holds the file (`file_not_found`).", body = artstore_common::error::ErrorBody),
        (status = 409, description = "The element is not in mode `edit` (`element_not_editable`).", body = artstore_common::error::ErrorBody),
        (status = 429, description = "Over the rate limit (`rate_limited`).", body = artstore_common::error::ErrorBody, headers(("Retry-After" = u64, description = "Seconds."))),
        (status = 503, description = "The registry (`registry_unavailable`) or the element that holds the file (`storage_unavailable`, `database_unavailable`) is unavailable.", body = artstore_common::error::ErrorBody, headers(("Retry-After" = u64, description = "Seconds."))),
    )
)]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Writer)?;
    parse_file_id(&id)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("invalid_json", e.body_text()))?;
    let auth = internal_bearer(&state.0, &caller)?;
    let owner = state
        .0
        .elements
        .find_owner(&*registry(&state.0).await?, &id, &auth)
        .await?;
    let (status, json) = state
        .0
        .elements
        .relay(reqwest::Method::PATCH, &owner, &id, &auth, Some(&body))
        .await?;
    Ok(relayed(status, json))
}

/// Deletes the file on the storage element that holds it.
#[utoipa::path(
    delete, path = "/api/v1/files/{id}", tag = "files", operation_id = "delete_file",
    params(("id" = uuid::Uuid, Path, description = "The file id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "Not a file id (`invalid_file_id`).", body = artstore_common::error::ErrorBody),
        (status = 404, description = "No storage element holds the file (`file_not_found`).", body = artstore_common::error::ErrorBody),
        (status = 409, description = "The element is not in mode `edit` (`element_not_editable`).", body = artstore_common::error::ErrorBody),
        (status = 429, description = "Over the rate limit (`rate_limited`).", body = artstore_common::error::ErrorBody, headers(("Retry-After" = u64, description = "Seconds."))),
        (status = 503, description = "The registry (`registry_unavailable`) or the element that holds the file (`storage_unavailable`, `database_unavailable`) is unavailable.", body = artstore_common::error::ErrorBody, headers(("Retry-After" = u64, description = "Seconds."))),
    )
)]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Writer)?;
    parse_file_id(&id)?;
    let auth = internal_bearer(&state.0, &caller)?;
    let owner = state
        .0
        .elements
        .find_owner(&*registry(&state.0).await?, &id, &auth)
        .await?;
    let (status, json) = state
        .0
        .elements
        .relay(reqwest::Method::DELETE, &owner, &id, &auth, None)
        .await?;
    Ok(relayed(status, json))
}

// The forms and bodies below exist for the OpenAPI document: the handlers read multipart fields
// and relay JSON one piece at a time, and these describe what they accept.

/// `multipart/form-data` of one upload.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// The file; its part's `filename` is the stored name (no `/` or `\\`, no control characters).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    #[schema(
        max_length = 4000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )]
    description: Option<String>,
    /// Repeatable, or comma-separated.
    #[schema(value_type = Option<Vec<Tag>>, max_items = 50)]
    tags: Option<Vec<String>>,
    retention: Option<artstore_events::Retention>,
    /// Only with `retention=temporary` (default 30).
    #[schema(minimum = 1, maximum = 36500)]
    retention_days: Option<u32>,
}

/// `multipart/form-data` of a batch: the metadata fields apply to every `file` part.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct BatchForm {
    #[schema(value_type = Vec<String>, format = Binary, content_media_type = "application/octet-stream", min_items = 1)]
    file: Vec<Vec<u8>>,
    #[schema(
        max_length = 4000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )]
    description: Option<String>,
    /// Repeatable, or comma-separated.
    #[schema(value_type = Option<Vec<Tag>>, max_items = 50)]
    tags: Option<Vec<String>>,
    retention: Option<artstore_events::Retention>,
    /// Only with `retention=temporary` (default 30).
    #[schema(minimum = 1, maximum = 36500)]
    retention_days: Option<u32>,
}

/// The answer of a batch.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct BatchReport {
    total: usize,
    stored: usize,
    rejected: usize,
    results: Vec<BatchItem>,
}

/// A change of metadata: at least one field; `description: null` clears the description.
#[derive(utoipa::ToSchema)]
#[schema(min_properties = 1)]
#[allow(dead_code)]
struct PatchBody {
    #[schema(value_type = Option<String>, max_length = 4000, pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$")]
    description: Option<Option<String>>,
    /// Replaces every tag.
    #[schema(value_type = Option<Vec<Tag>>, max_items = 50)]
    tags: Option<Vec<String>>,
}

/// A tag: 1 to 100 characters (after trimming), no control characters, no comma in a form.
#[derive(utoipa::ToSchema)]
#[schema(
    min_length = 1,
    max_length = 100,
    pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s,\u0000-\u001f\u007f-\u009f][^,\u0000-\u001f\u007f-\u009f]*$"
)]
#[allow(dead_code)]
struct Tag(String);

/// Codes the element refuses the form's metadata with (the same for every file of a batch).
const METADATA_CODES: &[&str] = &[
    "invalid_description",
    "invalid_retention",
    "invalid_retention_days",
    "invalid_tag",
];

/// Error codes this API answers with, besides the ones every role has; PATCH and DELETE relay
/// the storage element's answer, so its codes are here too.
const ERROR_CODES: &[&str] = &[
    "earlier_attempt_unresolved",
    "element_not_editable",
    "element_not_writable",
    "file_not_found",
    "file_too_large",
    "idempotency_claim_lost",
    "idempotency_in_progress",
    "idempotency_key_reused",
    "insufficient_storage",
    "batch_too_large",
    "database_unavailable",
    "description_too_long",
    "field_too_large",
    "filename_too_long",
    "invalid_body",
    "invalid_description",
    "invalid_file_id",
    "invalid_filename",
    "invalid_idempotency_key",
    "invalid_json",
    "invalid_mime_type",
    "invalid_multipart",
    "invalid_retention",
    "invalid_retention_days",
    "invalid_tag",
    "metadata_too_large",
    "missing_file",
    "missing_filename",
    "multipart_overhead_too_large",
    "no_storage_available",
    "rate_limited",
    "redis_unavailable",
    "registry_unavailable",
    "rejected_by_storage",
    "storage_unavailable",
    "tag_too_long",
    "too_many_files",
    "too_many_parts",
    "too_many_tags",
    "unknown_field",
    "upload_interrupted",
];

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ArtStore ingester",
        description = "The upload gateway: authenticates, rate-limits, honours Idempotency-Key and stores each file in the first storage element that can take it."
    ),
    paths(upload, batch, update, remove),
    components(schemas(artstore_common::error::ErrorBody))
)]
struct ApiDoc;

/// The ingester's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    artstore_common::openapi::finish(<ApiDoc as utoipa::OpenApi>::openapi(), ERROR_CODES)
}
