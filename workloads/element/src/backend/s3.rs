//! An S3 bucket (any S3 server: path-style addressing, custom endpoint, optional key prefix).
//! Fully async. A body of one part goes up in one PutObject once it has arrived; a larger body
//! of a declared length up to `STREAMED_PUT_MAX` goes up in one PutObject while it arrives;
//! any other goes up as a multipart upload with a few parts in flight. Memory stays at a few
//! parts whatever the file size.

use std::time::Duration;

use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered};
use tokio::sync::oneshot;

use super::streamed::StreamedBody;
use super::{
    BackendError, BlobBackend, ByteChunks, ByteRange, IncompleteUpload, LIST_PAGE, MakeSidecar,
    ObjectInfo,
};

/// Part size of multipart uploads: S3's minimum. What is still in flight when the body ends is
/// the upload's tail after its last byte, so small parts, few at once (docs/performance.md:
/// 64 MiB took 25-36 ms after the body's end with 5 MiB × 2, 118-140 ms with 8 or 5 MiB × 3).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploaded concurrently; memory is about `(PARTS_IN_FLIGHT + 1) * part_size(n)`.
const PARTS_IN_FLIGHT: usize = 2;
/// A body of a declared length above one part and up to this goes up as one PutObject while it
/// arrives: no parts still in flight after its last byte, no completion request, so its pace is
/// one raw PutObject's (docs/performance.md). Above it, multipart: a failed PutObject costs the
/// whole body, a failed part only the part (the SDK retries it).
const STREAMED_PUT_MAX: u64 = 256 * 1024 * 1024;
/// S3 takes at most this many parts per upload.
const MAX_PARTS: usize = 10_000;
/// Parts of each size before the next size.
const PARTS_PER_SIZE: usize = 1_000;

/// The size of part `number` (from 1): 5 MiB for the first thousand parts (5 GiB), one more
/// 5 MiB for each thousand after, so the 10,000 parts S3 allows hold 268 GiB while a body of a
/// few GiB keeps small parts (and ~15 MiB of memory).
fn part_size(number: usize) -> usize {
    PART_SIZE * (1 + number.saturating_sub(1) / PARTS_PER_SIZE)
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    /// Keys are stored under `<prefix>/`; empty for the bucket's root.
    pub prefix: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

/// How long the element waits on S3. Defaults and why: `docs/faults.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S3Timeouts {
    pub connect: Duration,
    /// From sending a request to the first byte of its answer (includes sending a part).
    pub first_byte: Duration,
    /// One attempt of an operation, retries not included.
    pub attempt: Duration,
}

impl Default for S3Timeouts {
    fn default() -> Self {
        S3Timeouts {
            connect: Duration::from_secs(3),
            first_byte: Duration::from_secs(10),
            attempt: Duration::from_secs(60),
        }
    }
}

pub struct S3Backend {
    client: Client,
    timeouts: S3Timeouts,
    bucket: String,
    prefix: String,
}

/// Builds an S3 client on the ring TLS provider (see DESIGN's note on crypto providers).
pub async fn client(settings: &S3Settings, timeouts: S3Timeouts) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let creds = aws_credential_types::Credentials::from_keys(
        settings.access_key.clone(),
        settings.secret_key.clone(),
        None,
    );
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(settings.region.clone()))
        .credentials_provider(creds)
        .endpoint_url(settings.endpoint.clone())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.first_byte)
                .operation_attempt_timeout(timeouts.attempt)
                .build(),
        )
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

/// The smallest body signed with the hash the element already has. Below it the SDK hashes the
/// body itself: for a small body that costs less than the interceptor, whose extra config layer
/// every later lookup in the request's config bag walks through (element-bench, interleaved:
/// 4 KiB uploads +1.2 points against their raw ceiling without it).
const PRECOMPUTED_HASH_FROM: usize = 64 * 1024;

/// Has a request signed with a payload hash known beforehand (`PayloadSigningOverride`, which
/// the SDK's signer reads from the request's config bag).
#[derive(Debug)]
struct KnownPayloadSha256(String);

impl Intercept for KnownPayloadSha256 {
    fn name(&self) -> &'static str {
        "KnownPayloadSha256"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

/// The MD5 an ETag stands for: S3 quotes it, and an object stored in parts (`<hex>-<parts>`) or
/// encrypted with a managed key has an ETag that is no MD5 of its bytes (the caller then sees
/// a mismatch and reads the object itself).
fn etag_md5(etag: &str) -> Option<String> {
    let hex = etag.trim_matches('"');
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn is_not_found<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    err.raw_response()
        .is_some_and(|response| response.status().as_u16() == 404)
}

/// Fills `buf` from `body` up to `size`; returns whether the body has ended.
async fn fill(
    body: &mut ByteChunks,
    buf: &mut BytesMut,
    size: usize,
) -> Result<bool, BackendError> {
    while buf.len() < size {
        match body.next().await {
            Some(chunk) => buf.extend_from_slice(&chunk.map_err(BackendError::Body)?),
            None => return Ok(true),
        }
    }
    Ok(false)
}

impl S3Backend {
    pub async fn connect(settings: &S3Settings, timeouts: S3Timeouts) -> Self {
        S3Backend {
            client: client(settings, timeouts).await,
            timeouts,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.trim_matches('/').to_string(),
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    async fn put_bytes(&self, key: &str, body: Bytes) -> Result<(), BackendError> {
        self.put_bytes_signed(key, body, None).await
    }

    /// A PutObject of `body`. With `sha256` (the body's, known already) and a body of at least
    /// [`PRECOMPUTED_HASH_FROM`], SigV4 signs that hash instead of the SDK hashing the body again
    /// (docs/performance.md); a server that checks payload hashes (AWS S3 does; SeaweedFS does
    /// not) then checks the body against it.
    async fn put_bytes_signed(
        &self,
        key: &str,
        body: Bytes,
        sha256: Option<String>,
    ) -> Result<(), BackendError> {
        let sha256 = sha256.filter(|_| body.len() >= PRECOMPUTED_HASH_FROM);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(body))
            .customize();
        if let Some(sha256) = sha256 {
            request = request.interceptor(KnownPayloadSha256(sha256));
        }
        request
            .send()
            .await
            .map_err(|e| BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Stores the blob with `blob`, and its sidecar as soon as `blob_ended` tells the body's
    /// size: beside the blob's last bytes and its completion.
    async fn put_beside_blob_end(
        &self,
        blob: impl Future<Output = Result<u64, BackendError>>,
        blob_ended: oneshot::Receiver<u64>,
        sidecar_key: &str,
        make_sidecar: MakeSidecar,
    ) -> Result<u64, BackendError> {
        let sidecar = async move {
            // A closed channel: the blob failed before its end; its error is the answer.
            let Ok(size) = blob_ended.await else {
                return Ok(());
            };
            self.put_bytes(sidecar_key, make_sidecar(size)?.sidecar)
                .await
        };
        // Not `try_join`: a failed sidecar must not cut the blob's upload off before it
        // completes or aborts itself (the caller then deletes both).
        let (blob, sidecar) = tokio::join!(blob, sidecar);
        let size = blob?;
        sidecar?;
        Ok(size)
    }

    /// One PutObject of a body of a declared `length`, sent while the body arrives.
    async fn put_streamed(
        &self,
        key: &str,
        body: ByteChunks,
        length: u64,
        body_ended: oneshot::Sender<u64>,
    ) -> Result<u64, BackendError> {
        let (streamed, outbound) = StreamedBody::new(body, length, body_ended);
        // The watch below stands in for the first-byte and attempt timeouts, which would bound
        // the transfer by the client's pace (see `streamed`). A body sent while it arrives
        // cannot be sent twice, so the SDK does not retry this request.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.timeouts.connect)
            .disable_read_timeout()
            .disable_operation_attempt_timeout()
            .build();
        let send = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(length as i64)
            .body(ByteStream::new(SdkBody::from_body_1_x(streamed)))
            .customize()
            .config_override(aws_sdk_s3::config::Builder::new().timeout_config(timeouts))
            .send();
        let sent = tokio::select! {
            sent = send => sent
                .map(|_| ())
                .map_err(|e| BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e))),
            stalled = outbound.stalled(self.timeouts.first_byte) => {
                Err(BackendError::storage(stalled))
            }
        };
        if sent.is_ok() {
            return Ok(length);
        }
        outbound.abandon();
        // A failure of the incoming body is the body's (a 4xx), whatever the SDK made of it.
        match (sent, outbound.body_failure()) {
            (_, Some(body_failure)) => Err(BackendError::Body(body_failure)),
            (sent, None) => sent.map(|()| length),
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        mut body: ByteChunks,
        mut buf: BytesMut,
        mut total: u64,
        body_ended: Option<tokio::sync::oneshot::Sender<u64>>,
    ) -> Result<u64, BackendError> {
        let mut body_ended = body_ended;
        let full_key = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BackendError::storage("CreateMultipartUpload returned no upload id"))?
            .to_string();
        let uploaded: Result<Vec<CompletedPart>, BackendError> = async {
            let mut parts = Vec::new();
            let mut in_flight = FuturesUnordered::new();
            let mut part_number = 0i32;
            let mut ended = false;
            loop {
                if !buf.is_empty() {
                    part_number += 1;
                    let chunk = buf.split().freeze();
                    let request = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(&full_key)
                        .upload_id(&upload_id)
                        .part_number(part_number)
                        .body(ByteStream::from(chunk))
                        .send();
                    in_flight.push(async move { (part_number, request.await) });
                }
                while in_flight.len() >= PARTS_IN_FLIGHT || (ended && !in_flight.is_empty()) {
                    let Some((number, result)) = in_flight.next().await else {
                        break;
                    };
                    let output = result.map_err(|e| {
                        BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e))
                    })?;
                    parts.push(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(output.e_tag().map(str::to_string))
                            .build(),
                    );
                }
                if ended {
                    break;
                }
                if part_number as usize >= MAX_PARTS {
                    return Err(BackendError::Body(std::io::Error::other(format!(
                        "a body over {MAX_PARTS} parts is larger than S3 takes in one object"
                    ))));
                }
                let size = part_size(part_number as usize + 1);
                buf.reserve(size);
                ended = fill(&mut body, &mut buf, size).await?;
                total += buf.len() as u64;
                if ended && let Some(signal) = body_ended.take() {
                    let _ = signal.send(total);
                }
            }
            parts.sort_by_key(|p| p.part_number());
            Ok(parts)
        }
        .await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&full_key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e))),
            Err(e) => Err(e),
        };
        if let Err(e) = completed {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full_key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(e);
        }
        Ok(total)
    }
}

impl BlobBackend for S3Backend {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn lists_content_md5(&self) -> bool {
        true
    }

    fn put_stream(
        &self,
        key: &str,
        mut body: ByteChunks,
    ) -> BoxFuture<'_, Result<u64, BackendError>> {
        let key = key.to_string();
        Box::pin(async move {
            let mut buf = BytesMut::with_capacity(PART_SIZE);
            let ended = fill(&mut body, &mut buf, PART_SIZE).await?;
            let total = buf.len() as u64;
            if ended {
                self.put_bytes(&key, buf.freeze()).await?;
                return Ok(total);
            }
            self.put_multipart(&key, body, buf, total, None).await
        })
    }

    fn put_with_sidecar<'a>(
        &'a self,
        key: &'a str,
        mut body: ByteChunks,
        length: Option<u64>,
        sidecar_key: &'a str,
        make_sidecar: MakeSidecar,
    ) -> BoxFuture<'a, Result<u64, BackendError>> {
        Box::pin(async move {
            let (ended_tx, ended_rx) = oneshot::channel();
            if let Some(length) =
                length.filter(|n| (PART_SIZE as u64 + 1..=STREAMED_PUT_MAX).contains(n))
            {
                let blob = self.put_streamed(key, body, length, ended_tx);
                return self
                    .put_beside_blob_end(blob, ended_rx, sidecar_key, make_sidecar)
                    .await;
            }
            let mut buf = BytesMut::with_capacity(PART_SIZE);
            let ended = fill(&mut body, &mut buf, PART_SIZE).await?;
            let total = buf.len() as u64;
            if ended {
                // One part: both PUTs at once, no copy of the body (`freeze` shares it).
                let described = make_sidecar(total)?;
                tokio::try_join!(
                    self.put_bytes_signed(key, buf.freeze(), Some(described.blob_sha256)),
                    self.put_bytes(sidecar_key, described.sidecar)
                )?;
                return Ok(total);
            }
            let blob = self.put_multipart(key, body, buf, total, Some(ended_tx));
            self.put_beside_blob_end(blob, ended_rx, sidecar_key, make_sidecar)
                .await
        })
    }

    fn put_small(&self, key: &str, body: Bytes) -> BoxFuture<'_, Result<(), BackendError>> {
        let key = key.to_string();
        Box::pin(async move { self.put_bytes(&key, body).await })
    }

    fn get_small(&self, key: &str) -> BoxFuture<'_, Result<Bytes, BackendError>> {
        let key = key.to_string();
        Box::pin(async move {
            let output = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full_key(&key))
                .send()
                .await
                .map_err(|e| {
                    if is_not_found(&e) {
                        BackendError::NotFound(key.clone())
                    } else {
                        BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e))
                    }
                })?;
            let data = output.body.collect().await.map_err(BackendError::storage)?;
            Ok(data.into_bytes())
        })
    }

    fn get_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<ByteChunks, BackendError>> {
        let key = key.to_string();
        Box::pin(async move {
            let output = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full_key(&key))
                .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end)))
                .send()
                .await
                .map_err(|e| {
                    if is_not_found(&e) {
                        BackendError::NotFound(key.clone())
                    } else {
                        BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e))
                    }
                })?;
            // The SDK's timeouts end at the first byte; a body that stalls after it fails here.
            let idle = self.timeouts.first_byte;
            let stream = futures::stream::unfold(Some(output.body), move |body| async move {
                let mut body = body?;
                match tokio::time::timeout(idle, body.next()).await {
                    Ok(next) => {
                        next.map(|chunk| (chunk.map_err(std::io::Error::other), Some(body)))
                    }
                    Err(_) => Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("S3 sent nothing for {idle:?}"),
                        )),
                        None,
                    )),
                }
            });
            Ok(stream.boxed())
        })
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), BackendError>> {
        let key = key.to_string();
        Box::pin(async move {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.full_key(&key))
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(BackendError::storage(
                    aws_sdk_s3::error::DisplayErrorContext(e),
                )),
            }
        })
    }

    fn list_pages(&self) -> BoxStream<'_, Result<Vec<ObjectInfo>, BackendError>> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .max_keys(LIST_PAGE as i32)
            .into_paginator()
            .send();
        futures::stream::unfold(Some((pages, prefix)), |state| async move {
            let (mut pages, prefix) = state?;
            let page = match pages.next().await? {
                Ok(page) => page,
                Err(e) => {
                    return Some((
                        Err(BackendError::storage(
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )),
                        None,
                    ));
                }
            };
            let found = page
                .contents()
                .iter()
                .filter_map(|object| {
                    let key = object.key()?.strip_prefix(&prefix)?;
                    Some(ObjectInfo {
                        key: key.to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        modified: object.last_modified().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                        content_md5: object.e_tag().and_then(etag_md5),
                    })
                })
                .collect();
            Some((Ok(found), Some((pages, prefix))))
        })
        .boxed()
    }

    fn incomplete_uploads(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Result<Vec<IncompleteUpload>, BackendError>> {
        Box::pin(async move {
            let prefix = if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            };
            let mut found = Vec::new();
            let mut key_marker: Option<String> = None;
            let mut upload_id_marker: Option<String> = None;
            loop {
                let page = self
                    .client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .set_key_marker(key_marker.take())
                    .set_upload_id_marker(upload_id_marker.take())
                    .send()
                    .await
                    .map_err(|e| {
                        BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e))
                    })?;
                for upload in page.uploads() {
                    let Some(key) = upload.key().and_then(|k| k.strip_prefix(&prefix)) else {
                        continue;
                    };
                    let started = upload
                        .initiated()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                    if started.is_some_and(|s| s >= before) {
                        continue;
                    }
                    found.push(IncompleteUpload {
                        key: key.to_string(),
                        upload_id: upload.upload_id().map(str::to_string),
                        started,
                    });
                }
                if page.is_truncated() != Some(true) {
                    break;
                }
                key_marker = page.next_key_marker().map(str::to_string);
                upload_id_marker = page.next_upload_id_marker().map(str::to_string);
                if key_marker.is_none() && upload_id_marker.is_none() {
                    break;
                }
            }
            Ok(found)
        })
    }

    fn remove_incomplete<'a>(
        &'a self,
        upload: &'a IncompleteUpload,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let Some(upload_id) = &upload.upload_id else {
                return Err(BackendError::storage("an S3 multipart upload needs its id"));
            };
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(self.full_key(&upload.key))
                .upload_id(upload_id)
                .send()
                .await;
            match aborted {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(BackendError::storage(
                    aws_sdk_s3::error::DisplayErrorContext(e),
                )),
            }
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.client
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| BackendError::storage(aws_sdk_s3::error::DisplayErrorContext(e)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::etag_md5;

    #[test]
    fn parts_grow_so_the_largest_object_fits_in_the_parts_s3_allows() {
        use super::{MAX_PARTS, PART_SIZE, part_size};
        assert_eq!(part_size(1), PART_SIZE);
        assert_eq!(part_size(1_000), PART_SIZE);
        assert_eq!(part_size(1_001), 2 * PART_SIZE);
        let largest: usize = (1..=MAX_PARTS).map(part_size).sum();
        assert!(largest >= 250 << 30, "{largest}");
        assert_eq!(part_size(MAX_PARTS), 10 * PART_SIZE, "memory stays bounded");
    }

    #[test]
    fn only_a_one_part_etag_is_an_md5() {
        assert_eq!(
            etag_md5("\"D41D8CD98F00B204E9800998ECF8427E\"").as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(etag_md5("\"d41d8cd98f00b204e9800998ecf8427e-3\""), None);
        assert_eq!(etag_md5("\"not-an-md5\""), None);
    }
}
