//! Talking to storage elements: the internal upload (`POST /api/v1/files`, raw body, metadata
//! as query parameters), and relaying metadata changes to the element that owns a file. The
//! caller's own bearer token is forwarded, so the element sees who acts.

use std::time::Duration;

use artstore_contract::{Registry, RegistryEntry};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::spool::Spooled;
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
    /// The element refused the file itself (bad name, too large): no other element will differ.
    Rejected(ApiError),
}

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

#[derive(Clone)]
pub struct ElementClient {
    http: reqwest::Client,
}

impl ElementClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(32)
            .build()
            .unwrap_or_default();
        ElementClient { http }
    }

    pub async fn upload(
        &self,
        element: &RegistryEntry,
        file: &Spooled,
        meta: &UploadMeta,
        auth: &str,
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
        let sent = self
            .http
            .post(format!(
                "{}/api/v1/files",
                element.url.trim_end_matches('/')
            ))
            .query(&query)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::CONTENT_LENGTH, file.size)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // Without the URL: it carries the metadata, which must not be echoed back.
            Err(e) => {
                return Attempt::Skip(format!("{}: unreachable ({})", element.id, e.without_url()));
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::CREATED || status == reqwest::StatusCode::OK {
            return match response.json::<serde_json::Value>().await {
                Ok(record) => Attempt::Stored(record),
                Err(e) => Attempt::Skip(format!(
                    "{}: unreadable answer ({})",
                    element.id,
                    e.without_url()
                )),
            };
        }
        let error = response.json::<ErrorBody>().await.ok();
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

    /// The element that holds `file_id`, asked of every element in the registry.
    pub async fn find_owner(
        &self,
        registry: &Registry,
        file_id: &str,
        auth: &str,
    ) -> Result<RegistryEntry, ApiError> {
        for element in &registry.elements {
            let url = format!(
                "{}/api/v1/files/{file_id}",
                element.url.trim_end_matches('/')
            );
            let found = self
                .http
                .get(url)
                .header(reqwest::header::AUTHORIZATION, auth)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(r) = found
                && r.status() == reqwest::StatusCode::OK
            {
                return Ok(element.clone());
            }
        }
        Err(ApiError::not_found(
            "file_not_found",
            format!("no storage element holds file {file_id}"),
        ))
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
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            ApiError::unavailable(
                "storage_unavailable",
                format!("storage element {} unreachable: {e}", element.id),
            )
        })?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let bytes = response.bytes().await.map_err(ApiError::internal)?;
        let json = serde_json::from_slice(&bytes).ok();
        Ok((status, json))
    }
}
