//! The storage-element registry file (`artstore_contract::Registry`, JSON): read at start and
//! re-read whenever its content changes (the operator's mounted ConfigMap, or the local stack's file).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use artstore_contract::Registry;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read registry file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registry file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub async fn load(path: &std::path::Path) -> Result<Registry, RegistryError> {
    let text = tokio::fs::read(path)
        .await
        .map_err(|source| RegistryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::from_slice(&text).map_err(|source| RegistryError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// The current registry, kept fresh by a background task.
#[derive(Clone)]
pub struct RegistryHandle {
    rx: watch::Receiver<Arc<Registry>>,
    /// Present on registries set in code rather than read from a file.
    manual: Option<Arc<watch::Sender<Arc<Registry>>>>,
}

impl RegistryHandle {
    /// A registry set in code (tests, embedded set-ups); change it with [`RegistryHandle::set`].
    pub fn fixed(registry: Registry) -> Self {
        let (tx, rx) = watch::channel(Arc::new(registry));
        RegistryHandle {
            rx,
            manual: Some(Arc::new(tx)),
        }
    }

    /// Replaces a registry made with [`RegistryHandle::fixed`]; file-backed ones ignore this.
    pub fn set(&self, registry: Registry) {
        if let Some(tx) = &self.manual {
            let _ = tx.send(Arc::new(registry));
        }
    }

    /// Loads `path` now and re-reads it every `interval`; a broken file keeps the last good
    /// registry (and is logged) rather than emptying it.
    pub async fn watch(path: PathBuf, interval: Duration) -> Result<Self, RegistryError> {
        let first = load(&path).await?;
        let (tx, rx) = watch::channel(Arc::new(first));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                if tx.is_closed() {
                    break;
                }
                match load(&path).await {
                    Ok(next) if *tx.borrow().as_ref() != next => {
                        tracing::info!(elements = next.elements.len(), "registry reloaded");
                        let _ = tx.send(Arc::new(next));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "registry reload failed; keeping the last good one")
                    }
                }
            }
        });
        Ok(RegistryHandle { rx, manual: None })
    }

    pub fn current(&self) -> Arc<Registry> {
        self.rx.borrow().clone()
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
    async fn reloads_on_change_and_keeps_last_good_on_garbage() {
        let dir = std::env::temp_dir().join(format!("registry-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("registry.json");
        let write = |reg: &Registry| {
            std::fs::write(&path, serde_json::to_vec(reg).expect("json")).expect("write")
        };
        write(&Registry {
            elements: vec![entry("a")],
        });
        let handle = RegistryHandle::watch(path.clone(), Duration::from_millis(20))
            .await
            .expect("loads");
        assert_eq!(handle.current().elements.len(), 1);
        write(&Registry {
            elements: vec![entry("a"), entry("b")],
        });
        let mut seen = 0;
        for _ in 0..100 {
            seen = handle.current().elements.len();
            if seen == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, 2);
        std::fs::write(&path, b"{ not json").expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(handle.current().elements.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
