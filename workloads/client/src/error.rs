//! What can go wrong talking to the archive, with the server's stable `code` when it answered.

use std::time::Duration;

/// Which of the archive's APIs a call went to; named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ingester,
    QueryNode,
    StorageElement,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Ingester => "ingester",
            Service::QueryNode => "query node",
            Service::StorageElement => "storage element",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (refused, DNS, connect timeout).
    #[error("cannot reach the {service} at {url}: {source}")]
    Unreachable {
        service: Service,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke or timed out after the request started.
    #[error("the {service} at {url} did not answer completely: {source}")]
    Transport {
        service: Service,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status and (usually) a JSON `{code, message}` body.
    #[error("the {service} refused: {message} (HTTP {status})")]
    Api {
        service: Service,
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server answered 2xx with a body that is not what the contract says.
    #[error("unexpected answer from the {service}: {detail}")]
    Protocol { service: Service, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Downloaded bytes do not hash to the record's SHA-256.
    #[error("downloaded bytes hash to {actual}, the record says {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

impl ClientError {
    /// A stable code for scripts: the server's `code`, or one of ours for local failures.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Transport { .. } => "connection_lost",
            ClientError::Api { code, .. } => code,
            ClientError::Protocol { .. } => "unexpected_response",
            ClientError::Io { .. } => "io_error",
            ClientError::ChecksumMismatch { .. } => "checksum_mismatch",
            ClientError::InvalidUrl { .. } => "invalid_url",
        }
    }

    /// HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth another attempt: the server asked us to slow down or is briefly unavailable, or
    /// the network failed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The wait the server asked for (`Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        ClientError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
