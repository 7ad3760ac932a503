//! Talking to storage elements: the internal upload (`POST /api/v1/files`, raw body, metadata
//! as query parameters), and relaying metadata changes to the element that owns a file. Each
//! call carries a token the ingester signs for its caller (internal audience), so the element
//! sees who acts, and a client's own token cannot write to an element directly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use artstore_contract::{Registry, RegistryEntry};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::spool::{BodyStream, Spooled};
use artstore_common::ApiError;

#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub retention: Option<String>,
    pub retention_days: Option<String>,
}

/// What one storage element did with one upload.
pub enum Attempt {
    Stored(serde_json::Value),
    /// Full (507), not writable (mode changed), or failing: try the next element.
    Skip(String),
    /// No answer (unreachable, no progress, answer cut off): try the next element, and cancel
    /// the upload on this one, which may still commit it or may have already.
    GaveUp(String),
    /// The element refused the file itself (bad name, too large): no other element will differ.
    Rejected(ApiError),
    /// The upload id was cancelled (410): another request with the same `Idempotency-Key` took
    /// over from this one.
    Superseded(String),
}

/// The ingester's identity for one client upload, sent with every attempt; an element that
/// sees it rolls the upload back if we stop waiting before it commits.
const UPLOAD_ID_HEADER: &str = "x-artstore-upload-id";

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// An element's error message, clipped: it is relayed to the client and must stay small.
fn clip_message(message: &str) -> String {
    const MAX: usize = 512;
    if message.len() <= MAX {
        return message.to_string();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

enum CancelError {
    /// No answer, or one that may change: try again.
    Retry(String),
    /// Refused for good (our token, an element without the route): stop.
    Final(String),
}

impl std::fmt::Display for CancelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CancelError::Retry(why) => write!(f, "no answer yet: {why}"),
            CancelError::Final(why) => write!(f, "refused: {why}"),
        }
    }
}

/// Backoff of an upload's cancel: 1 s doubling to one try a minute, for up to a day. The element
/// remembers a cancelled upload id for 48 h, longer than this.
fn cancel_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(Duration::from_secs(24 * 3600)))
}

/// How long the ingester waits on a storage element.
#[derive(Debug, Clone, Copy)]
pub struct ElementTimeouts {
    /// To open a TCP connection.
    pub connect: Duration,
    /// Without progress: no part of the upload taken, no answer after the last byte, no byte of
    /// the answer's body; and the whole of a small request (lookup, PATCH, DELETE).
    pub idle: Duration,
}

#[derive(Clone)]
pub struct ElementClient {
    http: reqwest::Client,
    timeouts: ElementTimeouts,
}

impl ElementClient {
    pub fn new(timeouts: ElementTimeouts) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_max_idle_per_host(32)
            .build()
            .unwrap_or_default();
        ElementClient { http, timeouts }
    }

    /// Sends `request` with `body`, failing when the element takes no part of the body, or sends
    /// no answer after the last byte, for the idle timeout. A whole-request timeout would not
    /// do: a large upload to a healthy element may take minutes.
    async fn send_watched(
        &self,
        request: reqwest::RequestBuilder,
        body: BodyStream,
    ) -> Result<reqwest::Response, String> {
        let progress = Arc::new(Mutex::new(Instant::now()));
        let seen = progress.clone();
        let watched = body.map(move |chunk| {
            if let Ok(mut last) = seen.lock() {
                *last = Instant::now();
            }
            chunk
        });
        let send = request.body(reqwest::Body::wrap_stream(watched)).send();
        let idle = self.timeouts.idle;
        let watchdog = async {
            loop {
                let last = progress
                    .lock()
                    .map(|last| *last)
                    .unwrap_or_else(|_| Instant::now());
                let deadline = last + idle;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline.into()).await;
            }
        };
        tokio::select! {
            sent = send => sent.map_err(|e| format!("unreachable ({})", e.without_url())),
            () = watchdog => Err(format!("no progress for {idle:?}; gave up")),
        }
    }

    pub async fn upload(
        &self,
        element: &RegistryEntry,
        file: &Spooled,
        meta: &UploadMeta,
        auth: &str,
        upload_id: &str,
    ) -> Attempt {
        let mut query: Vec<(&str, String)> = vec![("filename", file.filename.clone())];
        if let Some(d) = &meta.description {
            query.push(("description", d.clone()));
        }
        query.extend(meta.tags.iter().map(|t| ("tag", t.clone())));
        if let Some(r) = &meta.retention {
            query.push(("retention", r.clone()));
        }
        if let Some(days) = &meta.retention_days {
            query.push(("retention_days", days.clone()));
        }
        // `application/octet-stream` is what clients send when they do not know; let the element
        // guess from the name instead.
        if let Some(ct) = file
            .content_type
            .as_ref()
            .filter(|ct| !ct.starts_with("application/octet-stream"))
        {
            query.push(("mime_type", ct.clone()));
        }
        let body = match file.body().await {
            Ok(body) => body,
            Err(e) => return Attempt::Rejected(e),
        };
        let request = self
            .http
            .post(format!(
                "{}/api/v1/files",
                element.url.trim_end_matches('/')
            ))
            .query(&query)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::CONTENT_LENGTH, file.size)
            // The element commits only while we still wait for its answer (docs/faults.md).
            .header(UPLOAD_ID_HEADER, upload_id);
        // Errors without the URL: it carries the metadata, which must not be echoed back.
        let response = match self.send_watched(request, body).await {
            Ok(r) => r,
            Err(why) => return Attempt::GaveUp(format!("{}: {why}", element.id)),
        };
        let status = response.status();
        let idle = self.timeouts.idle;
        if status == reqwest::StatusCode::CREATED || status == reqwest::StatusCode::OK {
            return match tokio::time::timeout(idle, response.json::<serde_json::Value>()).await {
                Ok(Ok(record)) => Attempt::Stored(record),
                Ok(Err(e)) => Attempt::GaveUp(format!(
                    "{}: unreadable answer ({})",
                    element.id,
                    e.without_url()
                )),
                Err(_) => Attempt::GaveUp(format!("{}: answer stalled for {idle:?}", element.id)),
            };
        }
        let error = tokio::time::timeout(idle, response.json::<ErrorBody>())
            .await
            .ok()
            .and_then(Result::ok);
        let describe = |e: &Option<ErrorBody>| {
            e.as_ref()
                .map(|b| format!("{} {}", b.code, clip_message(&b.message)))
                .unwrap_or_default()
        };
        match status.as_u16() {
            // Full, its mode no longer takes writes, busy or timed out: the next element may.
            507 | 409 | 408 | 429 => Attempt::Skip(format!(
                "{}: {} {}",
                element.id,
                status.as_u16(),
                describe(&error)
            )),
            410 => Attempt::Superseded(format!("{}: {}", element.id, describe(&error))),
            // Our token or the request itself is refused: the same anywhere, and retrying it
            // would not help, so it is never turned into a 503.
            400..=499 => {
                let (code, message) = error
                    .map(|b| (b.code, clip_message(&b.message)))
                    .unwrap_or_else(|| {
                        (
                            "rejected_by_storage".into(),
                            format!("storage element answered {status}"),
                        )
                    });
                Attempt::Rejected(ApiError::new(
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
                    code,
                    message,
                ))
            }
            _ => Attempt::Skip(format!(
                "{}: {} {}",
                element.id,
                status.as_u16(),
                describe(&error)
            )),
        }
    }

    /// Cancels upload `upload_id` on `element` (`DELETE /api/v1/uploads/{id}`) in the
    /// background, retrying with backoff until the element answers: a copy it committed after
    /// we gave up is deleted, a commit still to come is refused. `bearer` signs each attempt
    /// afresh (the retries may outlive any one token).
    pub fn cancel_upload(
        &self,
        element: RegistryEntry,
        upload_id: String,
        bearer: impl Fn() -> Result<String, ApiError> + Send + Sync + 'static,
    ) {
        use backon::Retryable;
        let client = self.clone();
        tokio::spawn(async move {
            let attempt = || async {
                let auth = bearer().map_err(|e| CancelError::Final(e.message))?;
                client.cancel_once(&element, &upload_id, &auth).await
            };
            let cancelled = attempt
                .retry(cancel_backoff())
                .when(|e| matches!(e, CancelError::Retry(_)))
                .notify(|e, after| {
                    tracing::info!(element = %element.id, %upload_id, error = %e, ?after, "cancelling an upload given up on: no answer yet; retrying");
                })
                .await;
            match cancelled {
                Ok(Some(file_id)) => {
                    tracing::warn!(element = %element.id, %upload_id, %file_id, "an upload given up on had committed; its copy was deleted")
                }
                Ok(None) => {
                    tracing::info!(element = %element.id, %upload_id, "upload given up on cancelled; nothing was stored there")
                }
                Err(e) => {
                    tracing::error!(element = %element.id, %upload_id, error = %e, "could not cancel an upload given up on; the element may keep a second copy")
                }
            }
        });
    }

    /// Cancels uploads earlier requests with the same `Idempotency-Key` sent, each on the
    /// element it went to, once each. Errors name the element that could not answer; the
    /// caller must not store then, or the earlier copy could stay beside the new one. An
    /// element gone from the registry is passed over: nothing there is served.
    pub async fn cancel_attempts(
        &self,
        registry: &Registry,
        attempts: &[crate::idempotency::EarlierAttempt],
        auth: &str,
    ) -> Result<(), String> {
        for attempt in attempts {
            let upload_id = &attempt.upload_id;
            let Some(element) = registry
                .elements
                .iter()
                .find(|e| e.id == attempt.element_id)
            else {
                tracing::warn!(element = %attempt.element_id, %upload_id, "an earlier attempt's element is no longer in the registry; not cancelled");
                continue;
            };
            match self.cancel_once(element, upload_id, auth).await {
                Ok(Some(file_id)) => {
                    tracing::warn!(element = %element.id, %upload_id, %file_id, "an earlier attempt under the same key had committed; its copy was deleted")
                }
                Ok(None) => {}
                Err(e) => return Err(format!("{}: {e}", element.id)),
            }
        }
        Ok(())
    }

    /// One `DELETE /api/v1/uploads/{id}`: the id of the file deleted, if the upload had
    /// committed one.
    async fn cancel_once(
        &self,
        element: &RegistryEntry,
        upload_id: &str,
        auth: &str,
    ) -> Result<Option<String>, CancelError> {
        let idle = self.timeouts.idle;
        let url = format!(
            "{}/api/v1/uploads/{upload_id}",
            element.url.trim_end_matches('/')
        );
        let response = self
            .http
            .delete(&url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .timeout(idle)
            .send()
            .await
            .map_err(|e| CancelError::Retry(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let answer = tokio::time::timeout(idle, response.json::<serde_json::Value>())
            .await
            .ok()
            .and_then(Result::ok);
        match status {
            200..=299 => Ok(answer
                .as_ref()
                .and_then(|a| a.get("deleted_file_id"))
                .and_then(|id| id.as_str())
                .map(str::to_string)),
            // Busy or timed out: again later. Any other refusal will not change.
            408 | 429 => Err(CancelError::Retry(format!("{status}"))),
            400..=499 => Err(CancelError::Final(format!("{status} {answer:?}"))),
            _ => Err(CancelError::Retry(format!("{status}"))),
        }
    }

    /// The element that holds `file_id`, asked of every element in the registry. 404 only when
    /// every element answered that it does not have it; when some could not answer, the file may
    /// be on one of them: 503 with `Retry-After`, never a false 404.
    pub async fn find_owner(
        &self,
        registry: &Registry,
        file_id: &str,
        auth: &str,
    ) -> Result<RegistryEntry, ApiError> {
        let mut unanswered = Vec::new();
        for element in &registry.elements {
            let url = format!(
                "{}/api/v1/files/{file_id}",
                element.url.trim_end_matches('/')
            );
            let found = self
                .http
                .get(url)
                .header(reqwest::header::AUTHORIZATION, auth)
                .timeout(self.timeouts.idle)
                .send()
                .await;
            match found {
                Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(element.clone()),
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {}
                // The caller's own token refused: the same answer from every element.
                Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                    let status =
                        StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::FORBIDDEN);
                    let error = r.json::<ErrorBody>().await.ok();
                    return Err(match error {
                        Some(b) => ApiError::new(status, b.code, clip_message(&b.message)),
                        None => ApiError::new(status, "forbidden", "refused by storage element"),
                    });
                }
                Ok(r) => unanswered.push(format!("{}: {}", element.id, r.status().as_u16())),
                Err(e) => unanswered.push(format!("{}: {}", element.id, e.without_url())),
            }
        }
        if unanswered.is_empty() {
            Err(ApiError::not_found(
                "file_not_found",
                format!("no storage element holds file {file_id}"),
            ))
        } else {
            Err(ApiError::unavailable(
                "storage_unavailable",
                format!(
                    "file {file_id} was not found on the storage elements that answered; these did not: {}",
                    unanswered.join("; ")
                ),
            )
            .with_retry_after(5))
        }
    }

    /// Sends a PATCH or DELETE to the owning element and relays its answer as it is.
    pub async fn relay(
        &self,
        method: reqwest::Method,
        element: &RegistryEntry,
        file_id: &str,
        auth: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Option<serde_json::Value>), ApiError> {
        let url = format!(
            "{}/api/v1/files/{file_id}",
            element.url.trim_end_matches('/')
        );
        let mut request = self
            .http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .timeout(self.timeouts.idle);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            ApiError::unavailable(
                "storage_unavailable",
                format!(
                    "storage element {} unreachable: {}",
                    element.id,
                    e.without_url()
                ),
            )
            .with_retry_after(5)
        })?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let bytes = response.bytes().await.map_err(|e| {
            ApiError::unavailable(
                "storage_unavailable",
                format!(
                    "storage element {} stopped answering: {}",
                    element.id,
                    e.without_url()
                ),
            )
            .with_retry_after(5)
        })?;
        let json = serde_json::from_slice(&bytes).ok();
        Ok((status, json))
    }
}
