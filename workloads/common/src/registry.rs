//! The storage-element registry file (`artstore_contract::Registry`, JSON) that ingesters and
//! query nodes read: the operator's mounted ConfigMap, or the local stack's file. It is re-read
//! whenever its modification time or size changes; a missing or broken file keeps the last good
//! registry (a ConfigMap update swaps a symlink, and a half-written file must not empty it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use artstore_contract::Registry;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry file {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

type Stamped = (SystemTime, u64, Arc<Registry>);

enum Source {
    File {
        path: PathBuf,
        cached: Mutex<Option<Stamped>>,
    },
    /// Set in code (tests, embedded set-ups).
    Fixed(RwLock<Arc<Registry>>),
}

/// The current registry. Cheap to clone.
#[derive(Clone)]
pub struct RegistryHandle(Arc<Source>);

impl RegistryHandle {
    pub fn file(path: PathBuf) -> Self {
        RegistryHandle(Arc::new(Source::File {
            path,
            cached: Mutex::new(None),
        }))
    }

    pub fn fixed(registry: Registry) -> Self {
        RegistryHandle(Arc::new(Source::Fixed(RwLock::new(Arc::new(registry)))))
    }

    /// Replaces a registry made with [`RegistryHandle::fixed`]; file-backed ones ignore this.
    pub fn set(&self, registry: Registry) {
        if let Source::Fixed(lock) = self.0.as_ref()
            && let Ok(mut current) = lock.write()
        {
            *current = Arc::new(registry);
        }
    }

    pub async fn current(&self) -> Result<Arc<Registry>, RegistryError> {
        let (path, cached) = match self.0.as_ref() {
            Source::Fixed(lock) => {
                return Ok(lock.read().map(|r| r.clone()).unwrap_or_default());
            }
            Source::File { path, cached } => (path, cached),
        };
        let shown = path.display().to_string();
        let error = |reason: String| RegistryError::Unreadable {
            path: shown.clone(),
            reason,
        };
        let previous = cached.lock().ok().and_then(|c| c.clone());
        // A plain stat on this thread: the file is a mounted ConfigMap or a local file, and this
        // runs for every upload; tokio::fs would hand it to the blocking pool and back, which
        // cost more than the stat itself (docs/performance.md).
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => {
                return previous
                    .map(|(_, _, r)| r)
                    .ok_or_else(|| error(e.to_string()));
            }
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if let Some((modified, len, registry)) = &previous
            && (*modified, *len) == stamp
        {
            return Ok(registry.clone());
        }
        let text = tokio::fs::read(path)
            .await
            .map_err(|e| error(e.to_string()))?;
        match serde_json::from_slice::<Registry>(&text) {
            Ok(registry) => {
                let registry = Arc::new(registry);
                if let Ok(mut slot) = cached.lock() {
                    *slot = Some((stamp.0, stamp.1, registry.clone()));
                }
                tracing::debug!(elements = registry.elements.len(), "registry loaded");
                Ok(registry)
            }
            Err(e) => {
                tracing::warn!(path = %shown, error = %e, "registry file is not valid; keeping the previous one");
                previous
                    .map(|(_, _, r)| r)
                    .ok_or_else(|| error(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artstore_contract::{ElementMode, RegistryEntry};

    fn entry(id: &str) -> RegistryEntry {
        RegistryEntry {
            id: id.into(),
            url: format!("http://{id}"),
            mode: ElementMode::Rw,
            priority: 1,
            capacity_bytes: 10,
            used_bytes: 0,
        }
    }

    #[tokio::test]
    async fn reloads_on_change_and_keeps_last_good_on_garbage_or_absence() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("registry.json");
        let handle = RegistryHandle::file(path.clone());
        assert!(
            handle.current().await.is_err(),
            "no file and nothing cached yet"
        );
        let write = |reg: &Registry| {
            std::fs::write(&path, serde_json::to_vec(reg).expect("json")).expect("write")
        };
        write(&Registry {
            elements: vec![entry("a")],
        });
        assert_eq!(handle.current().await.expect("loads").elements.len(), 1);
        write(&Registry {
            elements: vec![entry("a"), entry("bb")],
        });
        assert_eq!(handle.current().await.expect("reloads").elements.len(), 2);
        std::fs::write(&path, b"{ not json at all").expect("write");
        assert_eq!(handle.current().await.expect("last good").elements.len(), 2);
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(handle.current().await.expect("last good").elements.len(), 2);

        let fixed = RegistryHandle::fixed(Registry::default());
        fixed.set(Registry {
            elements: vec![entry("c")],
        });
        assert_eq!(fixed.current().await.expect("fixed").elements[0].id, "c");
    }
}
