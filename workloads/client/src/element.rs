//! A storage element's own API: status, consistency report, listing, maintenance.

use reqwest::Method;

use crate::error::{ClientError, Service};
use crate::ingester::encode;
use crate::retry::RetryPolicy;
use crate::transport::{Endpoint, Timeouts};
use crate::types::{FileList, FileRecord};

#[derive(Clone)]
pub struct ElementClient {
    endpoint: Endpoint,
    retry: RetryPolicy,
}

impl ElementClient {
    pub fn new(
        base_url: &str,
        token: &str,
        timeouts: Timeouts,
        retry: RetryPolicy,
    ) -> Result<Self, ClientError> {
        Ok(ElementClient {
            endpoint: Endpoint::new(Service::StorageElement, base_url, token, timeouts)?,
            retry,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.retry
            .run(
                || async {
                    let response = self
                        .endpoint
                        .send(self.endpoint.request(Method::GET, path))
                        .await?;
                    self.endpoint.json(response).await
                },
                &|_, _| {},
            )
            .await
    }

    pub async fn status(&self) -> Result<artstore_contract::ElementStatus, ClientError> {
        self.get(artstore_contract::paths::STATUS).await
    }

    pub async fn consistency(&self) -> Result<artstore_contract::ConsistencyReport, ClientError> {
        self.get(artstore_contract::paths::CONSISTENCY).await
    }

    pub async fn file(&self, file_id: &str) -> Result<FileRecord, ClientError> {
        self.get(&format!("/api/v1/files/{}", encode(file_id)))
            .await
    }

    /// One page of the element's files.
    pub async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<FileList, ClientError> {
        let mut path = format!("/api/v1/files?limit={limit}");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={}", encode(c)));
        }
        self.get(&path).await
    }

    /// Every file of the element, page by page.
    pub async fn list_all(&self) -> Result<Vec<FileRecord>, ClientError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list(500, cursor.as_deref()).await?;
            out.extend(page.files);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// `POST /api/v1/cache/rebuild` (`incremental = false`) or `/rebuild/incremental`. Not
    /// retried: a rebuild is long and the element serialises them itself.
    pub async fn rebuild(&self, incremental: bool) -> Result<serde_json::Value, ClientError> {
        let path = if incremental {
            "/api/v1/cache/rebuild/incremental"
        } else {
            "/api/v1/cache/rebuild"
        };
        let response = self
            .endpoint
            .send(self.endpoint.streaming(Method::POST, path))
            .await?;
        self.endpoint.json(response).await
    }
}
