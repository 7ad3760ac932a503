//! The ingester's flags and environment (names from `artstore_contract::env`).

use std::net::SocketAddr;
use std::path::PathBuf;

use artstore_contract::env;

#[derive(Debug, Clone, clap::Args)]
pub struct IngesterConfig {
    #[arg(long, env = env::LISTEN, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The storage-element registry file (JSON), re-read when it changes.
    #[arg(long, env = env::REGISTRY_FILE)]
    pub registry_file: PathBuf,
    /// Redis for rate-limit counters and idempotency keys (shared by all replicas).
    #[arg(long, env = env::REDIS_URL)]
    pub redis_url: String,
    #[arg(long, env = env::JWT_SECRET_FILE)]
    pub jwt_secret_file: PathBuf,
    /// RS256 public key (PEM); when set, tokens are verified with it instead of the secret.
    #[arg(long, env = env::JWT_PUBLIC_KEY_FILE)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Clock skew tolerated on a token's `exp` and `nbf`.
    #[arg(long, env = env::JWT_LEEWAY_SECONDS, default_value_t = artstore_common::auth::DEFAULT_LEEWAY_SECONDS)]
    pub jwt_leeway_seconds: u64,
    #[command(flatten)]
    pub server: artstore_common::serve::ServerTimeoutArgs,
    /// Largest accepted file (413 above).
    #[arg(long, env = env::MAX_UPLOAD_BYTES, default_value_t = 1 << 30)]
    pub max_upload_bytes: u64,
    /// Requests per client per sliding minute (429 above).
    #[arg(long, env = env::RATE_LIMIT_PER_MINUTE, default_value_t = 600)]
    pub rate_limit_per_minute: u32,
    /// How long an `Idempotency-Key` is remembered.
    #[arg(long, env = env::IDEMPOTENCY_TTL_SECONDS, default_value_t = 86_400)]
    pub idempotency_ttl_seconds: u64,
    /// Prefix of every Redis key this ingester writes.
    #[arg(long, default_value = "artstore:ingester")]
    pub redis_key_prefix: String,
    /// Origins whose pages may call this API from a browser (CORS), comma-separated, e.g. the
    /// query node's console at `https://archive.example.org`; `*` allows any. Empty: none.
    #[arg(long, env = env::CORS_ALLOWED_ORIGINS, value_delimiter = ',', default_value = "")]
    pub cors_allowed_origins: Vec<String>,
    /// Seconds to open a connection to a storage element.
    #[arg(long, env = env::ELEMENT_CONNECT_TIMEOUT_SECONDS, default_value_t = 3)]
    pub element_connect_timeout_seconds: u64,
    /// Seconds a storage element may make no progress on an upload (take no data, send no
    /// answer) before the ingester gives up on it and tries the next one; also the whole budget
    /// of a lookup, PATCH or DELETE.
    #[arg(long, env = env::ELEMENT_IDLE_TIMEOUT_SECONDS, default_value_t = 10)]
    pub element_idle_timeout_seconds: u64,
    /// Where larger uploads are spooled (default: `artstore-ingester-spool` in the system's
    /// temporary directory). Cleaned at start of what dead ingesters left there.
    #[arg(long, env = env::SPOOL_DIR)]
    pub spool_dir: Option<PathBuf>,
    /// Files up to this size are spooled in memory, larger ones to a temporary file.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub memory_spool_bytes: usize,
}
