//! Blob backends: where blobs and their `.attr.json` sidecars live. Keys are relative to the
//! backend's root (an S3 bucket and prefix, or a directory) and always use `/`.

mod s3;
mod streamed;
mod volume;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use s3::{S3Backend, S3Settings, S3Timeouts, client as s3_client};
pub use volume::VolumeBackend;

/// Objects per listing page (S3's own page size).
pub const LIST_PAGE: usize = 1000;

/// Makes a sidecar's bytes from the size of the blob it describes.
pub type MakeSidecar = Box<dyn FnOnce(u64) -> Result<Described, BackendError> + Send>;

/// A sidecar made at its blob's end, and the blob's SHA-256 (lowercase hex) it records.
pub struct Described {
    pub sidecar: Bytes,
    pub blob_sha256: String,
}

/// A stream of body chunks.
pub type ByteChunks = BoxStream<'static, Result<Bytes, std::io::Error>>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("object {0} does not exist")]
    NotFound(String),
    /// The input stream failed (client went away, size limit hit); nothing was stored.
    #[error("the upload body failed: {0}")]
    Body(std::io::Error),
    #[error("storage backend: {0}")]
    Storage(String),
}

impl BackendError {
    pub fn storage(e: impl std::fmt::Display) -> Self {
        BackendError::Storage(e.to_string())
    }
}

/// One entry of a listing.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
    /// The MD5 of the object's bytes, in lowercase hex, when the backend's listing gives it
    /// (an S3 ETag of an object stored in one PUT).
    pub content_md5: Option<String>,
}

/// An upload that was started and never finished: an S3 multipart upload never completed or
/// aborted, or a volume's temporary file. Left by a process killed mid-upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    /// The key it was meant for (S3), or the temporary file's name (volume).
    pub key: String,
    /// The S3 multipart upload id.
    pub upload_id: Option<String>,
    pub started: Option<DateTime<Utc>>,
}

/// A byte range `start..=end` (inclusive), already checked against the object's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

pub trait BlobBackend: Send + Sync {
    /// `s3` or `volume`.
    fn kind(&self) -> &'static str;

    /// Stores a stream under `key`, visible only once complete. Returns the bytes written.
    /// On any error nothing is left visible under `key`.
    fn put_stream(&self, key: &str, body: ByteChunks) -> BoxFuture<'_, Result<u64, BackendError>>;

    /// Stores a blob and its sidecar. `make_sidecar` is called with the blob's size once the
    /// whole body has been read (the sidecar describes it: size, hash) and what it returns is
    /// stored under `sidecar_key`. A backend may store the sidecar while the blob's last bytes
    /// are still on their way (S3 does: the two PUTs overlap), so a failure — or a crash — can
    /// leave either one without the other; the caller deletes both on error, and maintenance
    /// treats a sidecar without its blob as an orphan. The third argument is the body's declared
    /// length, when it has one (a body that turns out longer or shorter fails). Returns the blob's size.
    fn put_with_sidecar<'a>(
        &'a self,
        key: &'a str,
        body: ByteChunks,
        _length: Option<u64>,
        sidecar_key: &'a str,
        make_sidecar: MakeSidecar,
    ) -> BoxFuture<'a, Result<u64, BackendError>> {
        Box::pin(async move {
            let size = self.put_stream(key, body).await?;
            self.put_small(sidecar_key, make_sidecar(size)?.sidecar)
                .await?;
            Ok(size)
        })
    }

    /// Stores a small object (a sidecar) atomically.
    fn put_small(&self, key: &str, body: Bytes) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Reads a small object (a sidecar) whole.
    fn get_small(&self, key: &str) -> BoxFuture<'_, Result<Bytes, BackendError>>;

    /// Streams an object, or a range of it.
    fn get_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<ByteChunks, BackendError>>;

    /// Deletes an object; a missing object is success.
    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Every object under the root (blobs and sidecars), in no particular order, a page at a
    /// time (at most [`LIST_PAGE`] objects each) so a caller's memory does not grow with the
    /// number of files.
    fn list_pages(&self) -> BoxStream<'_, Result<Vec<ObjectInfo>, BackendError>>;

    /// The whole listing at once; for small backends and tests (maintenance streams pages).
    fn list(&self) -> BoxFuture<'_, Result<Vec<ObjectInfo>, BackendError>> {
        Box::pin(async move {
            let mut found = Vec::new();
            let mut pages = self.list_pages();
            while let Some(page) = futures::StreamExt::next(&mut pages).await {
                found.extend(page?);
            }
            Ok(found)
        })
    }

    /// Whether the listing gives each object's MD5 ([`ObjectInfo::content_md5`]); only then can
    /// a rebuild tell that a packed sidecar is the stored one, so only then are packs kept.
    fn lists_content_md5(&self) -> bool {
        false
    }

    /// Whether the backend answers (readiness).
    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Unfinished uploads started before `before` (younger ones may still be in flight).
    fn incomplete_uploads(
        &self,
        before: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<IncompleteUpload>, BackendError>>;

    /// Removes an unfinished upload (aborts it, deletes its temporary file); gone is success.
    fn remove_incomplete<'a>(
        &'a self,
        upload: &'a IncompleteUpload,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
}
