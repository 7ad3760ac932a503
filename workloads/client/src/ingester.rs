//! The write path: upload (streamed from disk, idempotent, retried), change and delete.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use tokio_util::io::ReaderStream;

use crate::error::{ClientError, Service};
use crate::retry::RetryPolicy;
use crate::transport::{Endpoint, Timeouts};
use crate::types::{FileRecord, MetadataPatch, UploadMeta};

/// Told how far a transfer got. `set` restarts the count (a retry from the start, or a resume).
pub trait Progress: Send + Sync {
    fn set(&self, done: u64);
    fn advance(&self, bytes: u64);
}

/// Progress nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn set(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// Hears of every retry and the wait before it.
pub type RetryNotice = Arc<dyn Fn(&ClientError, Duration) + Send + Sync>;

/// Per-upload choices.
#[derive(Clone)]
pub struct UploadOptions {
    /// Sent as `Idempotency-Key` on every attempt: a retry after a lost answer gets the stored
    /// record back (`Idempotent-Replayed`) instead of storing the file twice.
    pub idempotency_key: Option<String>,
    pub progress: Arc<dyn Progress>,
    pub on_retry: RetryNotice,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            idempotency_key: Some(new_idempotency_key()),
            progress: Arc::new(NoProgress),
            on_retry: Arc::new(|_, _| {}),
        }
    }
}

/// A fresh key: one per file per run.
pub fn new_idempotency_key() -> String {
    format!("artstore-client-{}", uuid::Uuid::new_v4().simple())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    pub record: FileRecord,
    /// The server already had this key and answered with the earlier record.
    pub replayed: bool,
}

#[derive(Clone)]
pub struct IngesterClient {
    endpoint: Endpoint,
    retry: RetryPolicy,
}

const READ_CHUNK: usize = 256 * 1024;

impl IngesterClient {
    pub fn new(
        base_url: &str,
        token: &str,
        timeouts: Timeouts,
        retry: RetryPolicy,
    ) -> Result<Self, ClientError> {
        Ok(IngesterClient {
            endpoint: Endpoint::new(Service::Ingester, base_url, token, timeouts)?,
            retry,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.endpoint.base
    }

    /// Uploads the file at `path` under `file_name`, streaming it from disk on each attempt.
    pub async fn upload(
        &self,
        path: &Path,
        file_name: &str,
        meta: &UploadMeta,
        options: &UploadOptions,
    ) -> Result<Uploaded, ClientError> {
        let on_retry = options.on_retry.clone();
        self.retry
            .run(
                || self.upload_once(path, file_name, meta, options),
                &move |e, wait| on_retry(e, wait),
            )
            .await
    }

    async fn upload_once(
        &self,
        path: &Path,
        file_name: &str,
        meta: &UploadMeta,
        options: &UploadOptions,
    ) -> Result<Uploaded, ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::io(path, e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| ClientError::io(path, e))?
            .len();
        options.progress.set(0);
        let progress = options.progress.clone();
        let body = ReaderStream::with_capacity(file, READ_CHUNK).inspect_ok(move |chunk| {
            progress.advance(chunk.len() as u64);
        });
        let mut form = Form::new();
        if let Some(d) = &meta.description {
            form = form.text("description", d.clone());
        }
        for tag in &meta.tags {
            form = form.text("tags", tag.clone());
        }
        if let Some(r) = &meta.retention {
            form = form.text("retention", r.clone());
        }
        if let Some(days) = meta.retention_days {
            form = form.text("retention_days", days.to_string());
        }
        let part = Part::stream_with_length(reqwest::Body::wrap_stream(body), len)
            .file_name(file_name.to_string());
        form = form.part("file", part);
        let mut request = self
            .endpoint
            .streaming(Method::POST, "/api/v1/files/upload")
            .multipart(form);
        if let Some(key) = &options.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = self.endpoint.send(request).await?;
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let record = self.endpoint.json(response).await?;
        Ok(Uploaded { record, replayed })
    }

    /// Changes description and/or tags; answers the updated record.
    pub async fn update(
        &self,
        file_id: &str,
        patch: &MetadataPatch,
    ) -> Result<FileRecord, ClientError> {
        let path = format!("/api/v1/files/{}", encode(file_id));
        self.retry
            .run(
                || async {
                    let request = self.endpoint.request(Method::PATCH, &path).json(patch);
                    let response = self.endpoint.send(request).await?;
                    self.endpoint.json(response).await
                },
                &|_, _| {},
            )
            .await
    }

    /// Deletes a file. A retry whose earlier attempt lost its answer and that then finds no
    /// file reports success: the lost attempt deleted it.
    pub async fn delete(&self, file_id: &str) -> Result<(), ClientError> {
        let path = format!("/api/v1/files/{}", encode(file_id));
        let answer_lost = std::sync::atomic::AtomicBool::new(false);
        let out = self
            .retry
            .run(
                || async {
                    let request = self.endpoint.request(Method::DELETE, &path);
                    let result = self.endpoint.send(request).await;
                    if matches!(result, Err(ClientError::Transport { .. })) {
                        answer_lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    result
                },
                &|_, _| {},
            )
            .await;
        match out {
            Err(ClientError::Api { status: 404, .. })
                if answer_lost.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

/// Path segments come from users; only a file id's own characters pass unescaped.
pub(crate) fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
