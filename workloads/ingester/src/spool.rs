//! One uploaded file, read once from the request: hashed and counted on the way, kept in memory
//! when small and in a temporary file otherwise, so it can be offered to several storage elements
//! in turn without ever holding a large file in memory.

use crate::form::{Part, clip};
use crate::limits::MAX_FILENAME_BYTES;
use crate::spool_dir::SpoolDir;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use artstore_common::ApiError;

/// Size of the pieces a spooled file is sent in.
const CHUNK: usize = 256 * 1024;

pub type BodyStream = futures::stream::BoxStream<'static, std::io::Result<Bytes>>;

pub enum Content {
    Memory(Bytes),
    File(tempfile::TempPath),
}

pub struct Spooled {
    pub filename: String,
    pub content_type: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub content: Content,
}

impl Spooled {
    /// The body to send to a storage element (re-readable for every attempt), in pieces of
    /// at most [`CHUNK`] bytes so a stalled receiver shows as no progress.
    pub async fn body(&self) -> Result<BodyStream, ApiError> {
        match &self.content {
            Content::Memory(bytes) => {
                let bytes = bytes.clone();
                let pieces = (0..bytes.len().div_ceil(CHUNK))
                    .map(move |i| Ok(bytes.slice(i * CHUNK..((i + 1) * CHUNK).min(bytes.len()))));
                Ok(futures::stream::iter(pieces.collect::<Vec<_>>()).boxed())
            }
            Content::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(ApiError::internal)?;
                Ok(tokio_util::io::ReaderStream::with_capacity(file, CHUNK).boxed())
            }
        }
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "file_too_large",
        format!("the file is larger than the limit of {max} bytes"),
    )
}

/// Reads a multipart `file` field to its end.
pub async fn spool(
    mut field: Part,
    max_bytes: u64,
    memory_limit: usize,
    dir: &SpoolDir,
) -> Result<Spooled, ApiError> {
    let filename = field
        .file_name()
        .map(str::to_string)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("missing_filename", "the file part has no filename")
        })?;
    // Checked before a byte of the file is read.
    if filename.len() > MAX_FILENAME_BYTES {
        return Err(ApiError::bad_request(
            "filename_too_long",
            format!(
                "the file name {:?} is longer than {MAX_FILENAME_BYTES} bytes",
                clip(&filename)
            ),
        ));
    }
    let content_type = field.content_type();
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut memory = BytesMut::new();
    let mut file: Option<(tokio::fs::File, tempfile::TempPath)> = None;

    while let Some(chunk) = field.chunk().await? {
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(too_large(max_bytes));
        }
        hasher.update(&chunk);
        if file.is_none() && memory.len() + chunk.len() > memory_limit {
            let dir = dir.path().to_path_buf();
            let path = tokio::task::spawn_blocking(move || {
                tempfile::NamedTempFile::new_in(dir).map(|f| f.into_temp_path())
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
            let mut handle = tokio::fs::File::create(&path)
                .await
                .map_err(ApiError::internal)?;
            handle
                .write_all(&memory)
                .await
                .map_err(ApiError::internal)?;
            memory = BytesMut::new();
            file = Some((handle, path));
        }
        match &mut file {
            Some((handle, _)) => handle.write_all(&chunk).await.map_err(ApiError::internal)?,
            None => memory.extend_from_slice(&chunk),
        }
    }
    let content = match file {
        Some((mut handle, path)) => {
            handle.flush().await.map_err(ApiError::internal)?;
            Content::File(path)
        }
        None => Content::Memory(memory.freeze()),
    };
    Ok(Spooled {
        filename,
        content_type,
        size,
        sha256: hex::encode(hasher.finalize()),
        content,
    })
}
