//! One base URL with its bearer token: builds requests and turns failures into [`ClientError`].

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{ClientError, Service};

/// Timeouts of every call. JSON calls are bounded as a whole; streaming calls (upload,
/// download) by connect time and by the longest silence between two reads, since a large file
/// legitimately takes long.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub idle_read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
            idle_read: Duration::from_secs(120),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Endpoint {
    pub service: Service,
    pub base: String,
    token: String,
    pub http: reqwest::Client,
    pub timeouts: Timeouts,
}

impl Endpoint {
    pub fn new(
        service: Service,
        base_url: &str,
        token: &str,
        timeouts: Timeouts,
    ) -> Result<Self, ClientError> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        // The workspace builds reqwest without a TLS stack (one crypto provider per process, see
        // docs/operator.md), so an https URL would fail on every call; say so up front.
        if base.starts_with("https://") {
            return Err(invalid(
                "https is not supported by this build; reach the archive over http (a port-forward or an internal Service)",
            ));
        }
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(invalid("expected http://HOST[:PORT]"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.idle_read)
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Endpoint {
            service,
            base,
            token: token.trim().to_string(),
            http,
            timeouts,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the bearer token and the whole-call timeout (for JSON calls).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.streaming(method, path).timeout(self.timeouts.request)
    }

    /// A request with the bearer token and only the connect and idle-read timeouts.
    pub fn streaming(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// Sends; a non-2xx answer becomes [`ClientError::Api`] with the server's code.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.api_error(response).await)
        }
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            service: self.service,
            detail: format!("the body is not the JSON the contract describes: {e}"),
        })
    }

    pub fn transport(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::Unreachable {
                service: self.service,
                url: self.base.clone(),
                source: e,
            }
        } else {
            ClientError::Transport {
                service: self.service,
                url: self.base.clone(),
                source: e,
            }
        }
    }

    pub async fn api_error(&self, response: reqwest::Response) -> ClientError {
        #[derive(serde::Deserialize)]
        struct Body {
            code: String,
            message: String,
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // Error bodies are small; a bounded read keeps a misbehaving proxy from flooding memory.
        let text = read_bounded(response, 64 * 1024).await;
        let (code, message) = match serde_json::from_slice::<Body>(&text) {
            Ok(body) => (body.code, body.message),
            Err(_) => (
                format!("http_{status}"),
                String::from_utf8_lossy(&text)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            ),
        };
        ClientError::Api {
            service: self.service,
            status,
            code,
            message,
            retry_after,
        }
    }
}

/// `Retry-After` in seconds (the form the archive sends). The HTTP-date form is not used by
/// the archive and is ignored; the back-off applies then.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_normalised() {
        let ok = Endpoint::new(
            Service::QueryNode,
            "http://127.0.0.1:8080/",
            "t",
            Timeouts::default(),
        )
        .map(|e| e.url("/api/v1/search"));
        assert_eq!(
            ok.ok().as_deref(),
            Some("http://127.0.0.1:8080/api/v1/search")
        );
        for bad in ["https://archive.example", "archive:8080", "http://", ""] {
            let e = Endpoint::new(Service::Ingester, bad, "t", Timeouts::default());
            assert!(
                matches!(e, Err(ClientError::InvalidUrl { .. })),
                "{bad} accepted"
            );
        }
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
