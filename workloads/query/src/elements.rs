//! The storage elements, as the registry file lists them: listing their files (backfill and
//! resync) and streaming downloads from them.

use std::path::PathBuf;
use std::sync::Arc;

use crate::timeouts::Timeouts;
use artstore_common::auth::{Role, mint};
use artstore_common::registry::{RegistryError, RegistryHandle};
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

/// The registry file (shared reader in `artstore_common::registry`: re-read when it changes,
/// last good copy kept), or none when the node serves without storage elements.
pub struct RegistryWatcher {
    handle: Option<RegistryHandle>,
}

impl RegistryWatcher {
    pub fn new(path: Option<PathBuf>) -> Self {
        RegistryWatcher {
            handle: path.map(RegistryHandle::file),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.handle.is_some()
    }

    pub async fn current(&self) -> Result<Arc<Registry>, ElementError> {
        let handle = self.handle.as_ref().ok_or(ElementError::NoRegistry)?;
        handle.current().await.map_err(|e| match e {
            RegistryError::Unreadable { path, reason } => ElementError::Registry { path, reason },
        })
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
    /// One whole page of a listing.
    listing_timeout: std::time::Duration,
}

impl ElementClient {
    /// With the default timeouts.
    pub fn new(secret: Option<Vec<u8>>, subject: &str) -> Self {
        Self::with_timeouts(secret, subject, &Timeouts::default())
    }

    pub fn with_timeouts(secret: Option<Vec<u8>>, subject: &str, timeouts: &Timeouts) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.element_connect)
            // Until the answer's head, then between two pieces of its body: a frozen element
            // fails a listing or a download within this instead of holding it open.
            .read_timeout(timeouts.element_idle)
            .build()
            .unwrap_or_default();
        ElementClient {
            http,
            secret: secret.map(Arc::new),
            subject: subject.to_string(),
            listing_timeout: timeouts.element_listing,
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
            .timeout(self.listing_timeout)
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

    /// `GET <path>` of an element as JSON (its status or consistency report), within 30 s.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        element: &RegistryEntry,
        path: &str,
    ) -> Result<T, ElementError> {
        self.get_json_if_any(element, path)
            .await?
            .ok_or_else(|| ElementError::Http {
                element: element.id.clone(),
                reason: format!("GET {path}: 404 Not Found"),
            })
    }

    /// [`Self::get_json`], with `None` for a 404 (nothing of the kind there yet).
    pub async fn get_json_if_any<T: serde::de::DeserializeOwned>(
        &self,
        element: &RegistryEntry,
        path: &str,
    ) -> Result<Option<T>, ElementError> {
        let err = |reason: String| ElementError::Http {
            element: element.id.clone(),
            reason,
        };
        let url = format!("{}{path}", element.url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, self.bearer()?)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(err(format!("GET {path}: {status}")));
        }
        response
            .json::<T>()
            .await
            .map(Some)
            .map_err(|e| err(format!("GET {path}: {e}")))
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
