use crate::build::BuildError;
use crate::stream::StreamError;

/// Why a reconcile failed; `reason` is the metric label and the condition reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid spec: {0}")]
    Build(#[from] BuildError),
    #[error("redis stream: {0}")]
    Stream(#[from] StreamError),
    #[error("secret {0}")]
    Secret(String),
    #[error("redis connection: {0}")]
    RedisConnect(String),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApiError",
            Error::Build(_) => "InvalidSpec",
            Error::Stream(_) => "RedisError",
            Error::Secret(_) => "SecretUnavailable",
            Error::RedisConnect(_) => "RedisUnavailable",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
