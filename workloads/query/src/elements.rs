//! The storage elements, as the registry file lists them: listing their files (backfill and
//! resync) and streaming downloads from them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use artstore_common::auth::{Role, mint};
use artstore_contract::{Registry, RegistryEntry};
use artstore_events::FileRecord;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ElementError {
    #[error("no registry file is configured")]
    NoRegistry,
    #[error("registry file {path}: {reason}")]
    Registry { path: String, reason: String },
    #[error("storage element {0:?} is not in the registry")]
    UnknownElement(String),
    #[error("no JWT secret to call storage elements with")]
    NoCredentials,
    #[error("storage element {element}: {reason}")]
    Http { element: String, reason: String },
}

/// The registry file, re-read whenever its modification time or size changes.
pub struct RegistryWatcher {
    path: Option<PathBuf>,
    cached: Mutex<Option<(SystemTime, u64, Arc<Registry>)>>,
}

impl RegistryWatcher {
    pub fn new(path: Option<PathBuf>) -> Self {
        RegistryWatcher {
            path,
            cached: Mutex::new(None),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.path.is_some()
    }

    pub async fn current(&self) -> Result<Arc<Registry>, ElementError> {
        let path = self.path.as_ref().ok_or(ElementError::NoRegistry)?;
        let shown = path.display().to_string();
        let registry_error = |reason: String| ElementError::Registry {
            path: shown.clone(),
            reason,
        };
        let previous = self.cached.lock().ok().and_then(|c| c.clone());
        let meta = match tokio::fs::metadata(path).await {
            Ok(meta) => meta,
            // A mounted ConfigMap is swapped by symlink: keep the last good copy meanwhile.
            Err(e) => {
                return previous
                    .map(|(_, _, r)| r)
                    .ok_or_else(|| registry_error(e.to_string()));
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
            .map_err(|e| registry_error(e.to_string()))?;
        match serde_json::from_slice::<Registry>(&text) {
            Ok(registry) => {
                let registry = Arc::new(registry);
                if let Ok(mut cached) = self.cached.lock() {
                    *cached = Some((stamp.0, stamp.1, registry.clone()));
                }
                tracing::debug!(elements = registry.elements.len(), "registry loaded");
                Ok(registry)
            }
            Err(e) => {
                tracing::warn!(path = %shown, error = %e, "registry file is not valid; keeping the previous one");
                previous
                    .map(|(_, _, r)| r)
                    .ok_or_else(|| registry_error(e.to_string()))
            }
        }
    }

    pub async fn element(&self, id: &str) -> Result<RegistryEntry, ElementError> {
        self.current()
            .await?
            .elements
            .iter()
            .find(|e| e.id == id)
            .cloned()
            .ok_or_else(|| ElementError::UnknownElement(id.to_string()))
    }
}

/// `GET /api/v1/files` of a storage element.
#[derive(Debug, Deserialize)]
pub struct FilePage {
    #[serde(default)]
    pub total: Option<u64>,
    pub files: Vec<FileRecord>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Calls storage elements with a reader service token minted from the shared secret.
#[derive(Clone)]
pub struct ElementClient {
    http: reqwest::Client,
    secret: Option<Arc<Vec<u8>>>,
    subject: String,
}

impl ElementClient {
    pub fn new(secret: Option<Vec<u8>>, subject: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        ElementClient {
            http,
            secret: secret.map(Arc::new),
            subject: subject.to_string(),
        }
    }

    fn bearer(&self) -> Result<String, ElementError> {
        let secret = self.secret.as_ref().ok_or(ElementError::NoCredentials)?;
        mint(secret, &self.subject, Role::Reader, 600)
            .map(|t| format!("Bearer {t}"))
            .map_err(|_| ElementError::NoCredentials)
    }

    pub async fn list_page(
        &self,
        element: &RegistryEntry,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<FilePage, ElementError> {
        let err = |reason: String| ElementError::Http {
            element: element.id.clone(),
            reason,
        };
        let url = format!("{}/api/v1/files", element.url.trim_end_matches('/'));
        let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_string()));
        }
        let response = self
            .http
            .get(&url)
            .query(&query)
            .header(reqwest::header::AUTHORIZATION, self.bearer()?)
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(err(format!("GET {url}: {status}: {body}")));
        }
        response
            .json::<FilePage>()
            .await
            .map_err(|e| err(format!("GET {url}: bad listing: {e}")))
    }

    /// Starts a download; the caller streams the response.
    pub async fn download(
        &self,
        element: &RegistryEntry,
        file_id: uuid::Uuid,
        forward: &http::HeaderMap,
    ) -> Result<reqwest::Response, ElementError> {
        let url = format!(
            "{}/api/v1/files/{file_id}/download",
            element.url.trim_end_matches('/')
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, self.bearer()?);
        for name in [
            http::header::RANGE,
            http::header::IF_RANGE,
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
        ] {
            if let Some(value) = forward.get(&name) {
                request = request.header(name, value.clone());
            }
        }
        request.send().await.map_err(|e| ElementError::Http {
            element: element.id.clone(),
            reason: e.to_string(),
        })
    }
}
