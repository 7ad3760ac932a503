//! Why a reconcile failed: one variant per step, each naming the object it was working on.

use super::conditions::Reason;
use crate::build::BuildError;
use crate::stream::StreamError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the resource itself, or an object it refers to.
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("listing {kind}: {source}")]
    List { kind: String, source: kube::Error },
    /// Server-side apply (or create) of a child.
    #[error("applying {kind} {name}: {source}")]
    ApplyChild {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    DeleteChild {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing the status of {kind} {name}: {source}")]
    WriteStatus {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing the finalizers of {name}: {source}")]
    Finalizer { name: String, source: kube::Error },
    #[error("invalid spec: {0}")]
    Build(#[from] BuildError),
    #[error("redis stream {stream}: {source}")]
    Stream { stream: String, source: StreamError },
    #[error("secret {0}")]
    Secret(String),
    #[error("redis connection: {0}")]
    RedisConnect(String),
}

impl Error {
    /// The metric label and, where a failure is reported on the resource, the condition reason.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Read { .. }
            | Error::List { .. }
            | Error::ApplyChild { .. }
            | Error::DeleteChild { .. }
            | Error::WriteStatus { .. }
            | Error::Finalizer { .. } => Reason::KubeApiError,
            Error::Build(_) => Reason::InvalidSpec,
            Error::Stream { .. } => Reason::RedisError,
            Error::Secret(_) => Reason::SecretUnavailable,
            Error::RedisConnect(_) => Reason::RedisUnavailable,
        }
    }

    /// The API server's refusal of a child the spec asks for (400/422: an immutable field, a
    /// value its own validation rejects): the spec asks for something that cannot happen.
    pub fn rejected_child(&self) -> Option<&kube::core::Status> {
        match self {
            Error::ApplyChild {
                source: kube::Error::Api(status),
                ..
            } if matches!(status.code, 400 | 422) => Some(status),
            _ => None,
        }
    }

    pub fn stream(stream: &str) -> impl FnOnce(StreamError) -> Error + '_ {
        move |source| Error::Stream {
            stream: stream.to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
