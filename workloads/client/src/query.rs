//! The read path: search, file records, and downloads that resume and verify.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ClientError, Service};
use crate::ingester::{Progress, encode};
use crate::retry::RetryPolicy;
use crate::transport::{Endpoint, Timeouts};
use crate::types::{FileRecord, SearchPage, SearchRequest};

#[derive(Clone)]
pub struct QueryClient {
    endpoint: Endpoint,
    retry: RetryPolicy,
}

/// What a finished download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub path: PathBuf,
    pub size: u64,
    /// Bytes already on disk from an earlier, interrupted download when this one began.
    pub resumed_from: u64,
    /// Bytes received over the network by this call (all attempts).
    pub fetched: u64,
}

impl QueryClient {
    pub fn new(
        base_url: &str,
        token: &str,
        timeouts: Timeouts,
        retry: RetryPolicy,
    ) -> Result<Self, ClientError> {
        Ok(QueryClient {
            endpoint: Endpoint::new(Service::QueryNode, base_url, token, timeouts)?,
            retry,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.endpoint.base
    }

    pub async fn search(&self, request: &SearchRequest) -> Result<SearchPage, ClientError> {
        self.retry
            .run(
                || async {
                    let r = self
                        .endpoint
                        .request(Method::POST, "/api/v1/search")
                        .json(request);
                    let response = self.endpoint.send(r).await?;
                    self.endpoint.json(response).await
                },
                &|_, _| {},
            )
            .await
    }

    pub async fn file(&self, file_id: &str) -> Result<FileRecord, ClientError> {
        let path = format!("/api/v1/files/{}", encode(file_id));
        self.retry
            .run(
                || async {
                    let response = self
                        .endpoint
                        .send(self.endpoint.request(Method::GET, &path))
                        .await?;
                    self.endpoint.json(response).await
                },
                &|_, _| {},
            )
            .await
    }

    /// `GET /api/v1/status`: what the node has indexed. Cheap; a good token check.
    pub async fn status(&self) -> Result<artstore_contract::QueryNodeStatus, ClientError> {
        let response = self
            .endpoint
            .send(
                self.endpoint
                    .request(Method::GET, artstore_contract::paths::STATUS),
            )
            .await?;
        self.endpoint.json(response).await
    }

    /// Downloads `record` to `dest`. Bytes go to a partial file next to `dest`
    /// ([`partial_path`]); an existing partial file of the same file id is resumed with `Range`,
    /// and a broken connection resumes the same way. The SHA-256 of the whole is checked against
    /// the record before the partial file becomes `dest`; on a mismatch the partial file is
    /// removed, so a corrupt file is never left behind.
    pub async fn download_to(
        &self,
        record: &FileRecord,
        dest: &Path,
        progress: Arc<dyn Progress>,
        on_retry: &(dyn Fn(&ClientError, Duration) + Send + Sync),
    ) -> Result<Download, ClientError> {
        let part = partial_path(dest, &record.file_id);
        let resumed_from = tokio::fs::metadata(&part)
            .await
            .map(|m| m.len().min(record.size))
            .unwrap_or(0);
        let fetched = std::sync::atomic::AtomicU64::new(0);
        let digest = self
            .retry
            .run(
                || self.fetch_rest(record, &part, progress.as_ref(), &fetched),
                on_retry,
            )
            .await?;
        if !digest.eq_ignore_ascii_case(&record.sha256) {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(ClientError::ChecksumMismatch {
                expected: record.sha256.clone(),
                actual: digest,
            });
        }
        tokio::fs::rename(&part, dest)
            .await
            .map_err(|e| ClientError::io(dest, e))?;
        Ok(Download {
            path: dest.to_path_buf(),
            size: record.size,
            resumed_from,
            fetched: fetched.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    /// One attempt: hashes what the partial file holds, fetches the rest, returns the SHA-256 of
    /// the whole.
    async fn fetch_rest(
        &self,
        record: &FileRecord,
        part: &Path,
        progress: &dyn Progress,
        fetched: &std::sync::atomic::AtomicU64,
    ) -> Result<String, ClientError> {
        let io = |e| ClientError::io(part, e);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(part)
            .await
            .map_err(io)?;
        let mut have = file.metadata().await.map_err(io)?.len();
        if have > record.size {
            file.set_len(0).await.map_err(io)?;
            have = 0;
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut hashed = 0;
        while hashed < have {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            hashed += n as u64;
        }
        progress.set(have);
        if have < record.size {
            let path = format!("/api/v1/files/{}/download", encode(&record.file_id));
            let mut request = self.endpoint.streaming(Method::GET, &path);
            if have > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let response = self.endpoint.send(request).await?;
            if response.status() != reqwest::StatusCode::PARTIAL_CONTENT && have > 0 {
                // The server sent the whole file: start over.
                file.set_len(0).await.map_err(io)?;
                hasher = Sha256::new();
                have = 0;
                progress.set(0);
            }
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(have))
                .await
                .map_err(io)?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.endpoint.transport(e))?;
                if have + chunk.len() as u64 > record.size {
                    return Err(ClientError::Protocol {
                        service: Service::QueryNode,
                        detail: format!(
                            "the download is longer than the record's {} bytes",
                            record.size
                        ),
                    });
                }
                file.write_all(&chunk).await.map_err(io)?;
                hasher.update(&chunk);
                have += chunk.len() as u64;
                fetched.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::SeqCst);
                progress.advance(chunk.len() as u64);
            }
            file.flush().await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
            if have < record.size {
                // The body ended early without an error: treat as a broken connection.
                return Err(ClientError::Protocol {
                    service: Service::QueryNode,
                    detail: format!("the download ended after {have} of {} bytes", record.size),
                });
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Where an unfinished download of `file_id` to `dest` is kept: hidden, next to `dest`, named
/// after the file id so a partial file is only ever resumed by the same file.
pub fn partial_path(dest: &Path, file_id: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let dir = dest.parent().unwrap_or(Path::new(""));
    dir.join(format!(".{name}.{file_id}.part"))
}
