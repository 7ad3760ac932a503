//! A local directory (a PersistentVolume in a cluster). Writes go to a temporary file that is
//! fsynced and then renamed into place, so a blob or sidecar is either whole or absent.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{
    BackendError, BlobBackend, ByteChunks, ByteRange, IncompleteUpload, LIST_PAGE, ObjectInfo,
};

const TMP_DIR: &str = ".tmp";
/// Temporary files older than this at start-up are left by a crashed process (an upload in
/// flight in another process is younger) and are removed.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes regular files in `dir` not modified for `age`; returns how many.
async fn sweep_stale_temp_files(dir: &Path, age: std::time::Duration) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry.metadata().await.ok().is_some_and(|m| {
            m.is_file()
                && m.modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|e| e >= age)
        });
        if stale && tokio::fs::remove_file(entry.path()).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

pub struct VolumeBackend {
    root: PathBuf,
}

impl VolumeBackend {
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let root = root.into();
        tokio::fs::create_dir_all(root.join(TMP_DIR))
            .await
            .map_err(|e| BackendError::Storage(format!("{}: {e}", root.display())))?;
        let removed = sweep_stale_temp_files(&root.join(TMP_DIR), STALE_TEMP_AGE).await;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed temporary files a crashed process left behind"
            );
        }
        Ok(VolumeBackend { root })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, BackendError> {
        let relative = Path::new(key);
        let plain = !key.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain || key.starts_with(TMP_DIR) {
            return Err(BackendError::Storage(format!(
                "refusing unsafe key {key:?}"
            )));
        }
        Ok(self.root.join(relative))
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Renames a finished temporary file into place and makes the rename durable.
    async fn publish(&self, temp: &Path, target: &Path) -> Result<(), BackendError> {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(BackendError::storage)?;
        }
        tokio::fs::rename(temp, target)
            .await
            .map_err(BackendError::storage)?;
        if let Some(parent) = target.parent() {
            let dir = tokio::fs::File::open(parent)
                .await
                .map_err(BackendError::storage)?;
            dir.sync_all().await.map_err(BackendError::storage)?;
        }
        Ok(())
    }

    async fn write_temp(&self, mut body: ByteChunks) -> Result<(PathBuf, u64), BackendError> {
        let temp = self.temp_path();
        let mut file = tokio::fs::File::create(&temp)
            .await
            .map_err(BackendError::storage)?;
        let mut written = 0u64;
        let outcome: Result<(), BackendError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(BackendError::Body)?;
                file.write_all(&chunk)
                    .await
                    .map_err(BackendError::storage)?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(BackendError::storage)?;
            file.sync_all().await.map_err(BackendError::storage)?;
            Ok(())
        }
        .await;
        drop(file);
        match outcome {
            Ok(()) => Ok((temp, written)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }
}

/// A depth-first walk of the volume: directories still to read and the one being read.
struct Walk {
    pending: Vec<PathBuf>,
    current: Option<tokio::fs::ReadDir>,
}

impl VolumeBackend {
    /// Up to [`LIST_PAGE`] files of the walk; empty when it has ended.
    async fn next_page(&self, walk: &mut Walk) -> Result<Vec<ObjectInfo>, BackendError> {
        let mut found = Vec::new();
        while found.len() < LIST_PAGE {
            let entries = match &mut walk.current {
                Some(entries) => entries,
                None => {
                    let Some(dir) = walk.pending.pop() else {
                        break;
                    };
                    match tokio::fs::read_dir(&dir).await {
                        Ok(entries) => walk.current.insert(entries),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(BackendError::storage(e)),
                    }
                }
            };
            let Some(entry) = entries.next_entry().await.map_err(BackendError::storage)? else {
                walk.current = None;
                continue;
            };
            let path = entry.path();
            let meta = match entry.metadata().await {
                Ok(meta) => meta,
                // Deleted while listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BackendError::storage(e)),
            };
            if meta.is_dir() {
                if path != self.root.join(TMP_DIR) {
                    walk.pending.push(path);
                }
                continue;
            }
            let Ok(relative) = path.strip_prefix(&self.root) else {
                continue;
            };
            let key = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            found.push(ObjectInfo {
                key,
                size: meta.len(),
                modified: meta.modified().ok().map(chrono::DateTime::from),
                content_md5: None,
            });
        }
        Ok(found)
    }
}

fn not_found_or(key: &str, e: std::io::Error) -> BackendError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BackendError::NotFound(key.to_string())
    } else {
        BackendError::storage(e)
    }
}

impl BlobBackend for VolumeBackend {
    fn kind(&self) -> &'static str {
        "volume"
    }

    fn put_stream(&self, key: &str, body: ByteChunks) -> BoxFuture<'_, Result<u64, BackendError>> {
        let key = key.to_string();
        Box::pin(async move {
            let target = self.path_of(&key)?;
            let (temp, written) = self.write_temp(body).await?;
            if let Err(e) = self.publish(&temp, &target).await {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(e);
            }
            Ok(written)
        })
    }

    fn put_small(&self, key: &str, body: Bytes) -> BoxFuture<'_, Result<(), BackendError>> {
        let one = futures::stream::once(async move { Ok(body) }).boxed();
        let put = self.put_stream(key, one);
        Box::pin(async move { put.await.map(|_| ()) })
    }

    fn get_small(&self, key: &str) -> BoxFuture<'_, Result<Bytes, BackendError>> {
        let key = key.to_string();
        Box::pin(async move {
            let path = self.path_of(&key)?;
            tokio::fs::read(&path)
                .await
                .map(Bytes::from)
                .map_err(|e| not_found_or(&key, e))
        })
    }

    fn get_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<ByteChunks, BackendError>> {
        let key = key.to_string();
        Box::pin(async move {
            let path = self.path_of(&key)?;
            let mut file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| not_found_or(&key, e))?;
            let stream: ByteChunks = match range {
                None => ReaderStream::with_capacity(file, 256 * 1024).boxed(),
                Some(r) => {
                    file.seek(std::io::SeekFrom::Start(r.start))
                        .await
                        .map_err(BackendError::storage)?;
                    ReaderStream::with_capacity(file.take(r.end - r.start + 1), 256 * 1024).boxed()
                }
            };
            Ok(stream)
        })
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), BackendError>> {
        let key = key.to_string();
        Box::pin(async move {
            let path = self.path_of(&key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(BackendError::storage(e)),
            }
        })
    }

    fn incomplete_uploads(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Result<Vec<IncompleteUpload>, BackendError>> {
        Box::pin(async move {
            let mut entries = match tokio::fs::read_dir(self.root.join(TMP_DIR)).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(BackendError::storage(e)),
            };
            let mut found = Vec::new();
            while let Some(entry) = entries.next_entry().await.map_err(BackendError::storage)? {
                let Ok(meta) = entry.metadata().await else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let modified = meta
                    .modified()
                    .ok()
                    .map(chrono::DateTime::<chrono::Utc>::from);
                if modified.is_some_and(|m| m >= before) {
                    continue;
                }
                found.push(IncompleteUpload {
                    key: entry.file_name().to_string_lossy().into_owned(),
                    upload_id: None,
                    started: modified,
                });
            }
            Ok(found)
        })
    }

    fn remove_incomplete<'a>(
        &'a self,
        upload: &'a IncompleteUpload,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            // Only a plain name inside the temporary directory.
            if upload.key.is_empty()
                || upload.key.contains(['/', '\\'])
                || upload.key.starts_with('.')
            {
                return Err(BackendError::Storage(format!(
                    "refusing temporary file name {:?}",
                    upload.key
                )));
            }
            match tokio::fs::remove_file(self.root.join(TMP_DIR).join(&upload.key)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(BackendError::storage(e)),
            }
        })
    }

    fn list_pages(&self) -> BoxStream<'_, Result<Vec<ObjectInfo>, BackendError>> {
        let walk = Walk {
            pending: vec![self.root.clone()],
            current: None,
        };
        futures::stream::unfold(Some(walk), move |state| async move {
            let mut walk = state?;
            match self.next_page(&mut walk).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => Some((Ok(page), Some(walk))),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            tokio::fs::metadata(&self.root)
                .await
                .map(|_| ())
                .map_err(BackendError::storage)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opening_removes_only_stale_temporary_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join(TMP_DIR);
        std::fs::create_dir_all(&tmp).expect("mkdir");
        let stale = tmp.join("crashed-upload");
        let fresh = tmp.join("upload-in-flight");
        std::fs::write(&stale, b"partial").expect("write");
        std::fs::write(&fresh, b"partial").expect("write");
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("age the file");
        VolumeBackend::open(dir.path()).await.expect("opens");
        assert!(!stale.exists(), "a crash's leftover is removed");
        assert!(fresh.exists(), "an upload in flight is kept");
    }
}
