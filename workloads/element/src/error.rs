//! Errors of the element's operations and their HTTP form (a stable `code` each).

use artstore_common::ApiError;
use axum::http::StatusCode;

use crate::backend::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum ElementError {
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("not enough free capacity on this storage element")]
    InsufficientStorage,
    #[error("storage element is in mode {0} and does not accept writes")]
    NotWritable(&'static str),
    #[error("storage element is in mode {0}; files can be changed or deleted only in mode edit")]
    NotEditable(&'static str),
    #[error("file {0} does not exist")]
    NotFound(uuid::Uuid),
    #[error("{0}")]
    Forbidden(String),
    #[error("range not satisfiable for a file of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("the upload body ended early: {0}")]
    BodyInterrupted(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("sidecar {key} is unreadable: {reason}")]
    BadSidecar { key: String, reason: String },
    /// The caller (an ingester) stopped waiting before the upload committed; it was rolled back.
    #[error("the caller gave up before the upload committed; nothing was stored")]
    Abandoned,
    /// A fault injected by a test to stop an operation dead between two steps.
    #[error("simulated crash after {0:?}")]
    SimulatedCrash(crate::CrashPoint),
}

impl ElementError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ElementError::Invalid {
            code,
            message: message.into(),
        }
    }
}

impl From<ElementError> for ApiError {
    fn from(e: ElementError) -> Self {
        let message = e.to_string();
        match e {
            ElementError::Invalid { code, .. } => ApiError::bad_request(code, message),
            ElementError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large", message)
            }
            ElementError::InsufficientStorage => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                message,
            ),
            ElementError::NotWritable(_) => ApiError::conflict("element_not_writable", message),
            ElementError::NotEditable(_) => ApiError::conflict("element_not_editable", message),
            ElementError::NotFound(_) => ApiError::not_found("file_not_found", message),
            ElementError::Forbidden(_) => ApiError::forbidden(message),
            ElementError::RangeNotSatisfiable { .. } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                message,
            ),
            ElementError::Abandoned => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "upload_abandoned", message)
            }
            ElementError::BodyInterrupted(_) => {
                ApiError::bad_request("upload_interrupted", message)
            }
            ElementError::Backend(BackendError::Storage(_)) => {
                tracing::error!(error = %message, "storage backend failed");
                ApiError::unavailable("storage_unavailable", "the storage backend failed")
                    .with_retry_after(5)
            }
            ElementError::Database(ref db) if database_unavailable(db) => {
                tracing::warn!(error = %message, "database unavailable");
                ApiError::unavailable("database_unavailable", "the cache database is unavailable")
                    .with_retry_after(1)
            }
            _ => ApiError::internal(message),
        }
    }
}

/// Errors that mean PostgreSQL cannot be used right now (down, refusing, restarting, out of
/// connections, cancelled by `statement_timeout`), as opposed to a bug. The same rule as the
/// query node's (`artstore_query::store::is_unavailable`; the element does not import the query
/// crate).
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // 08 connection, 53 resources, 55 state (e.g. not accepting connections), 57 operator
        // intervention (shutdown, statement timeout), 3D database missing.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "53", "55", "57", "3D"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}
