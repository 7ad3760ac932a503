//! The contract between the operator and the `artstore` binary, written down in one place:
//! subcommands, environment variables, the storage-element registry file, stream entry fields
//! and the JSON the operator reads from a storage element. No workload code lives here and this
//! crate depends on nothing but serde, so the operator can use it without importing workloads;
//! with feature `redis` it also holds the stream primitives both sides share ([`stream`]).
//!
//! `docs/CONTRACT.md` is the human-readable version of this file.

use serde::{Deserialize, Serialize};

#[cfg(feature = "redis")]
pub mod stream;

/// The binary every workload container runs.
pub const BINARY: &str = "artstore";

/// Subcommands (`artstore <role> <action>`).
pub mod command {
    pub const STORAGE_ELEMENT: &str = "storage-element";
    pub const QUERY_NODE: &str = "query-node";
    pub const INGESTER: &str = "ingester";
    pub const TOKEN: &str = "token";

    pub const SERVE: &str = "serve";
    pub const MIGRATE: &str = "migrate";
    /// `artstore storage-element rebuild --mode <RebuildMode>`
    pub const REBUILD: &str = "rebuild";
    /// `artstore query-node backfill`
    pub const BACKFILL: &str = "backfill";
    /// `artstore query-node ensure-group` — creates the stream and group (idempotent).
    pub const ENSURE_GROUP: &str = "ensure-group";
}

/// Modes of `artstore storage-element rebuild --mode`.
pub const REBUILD_MODES: [&str; 5] = [
    "full",
    "incremental",
    "consistency",
    "cleanup-expired",
    "retention",
];

/// Environment variables read by the `artstore` binary (each also a `--flag`).
pub mod env {
    // Every role
    pub const LISTEN: &str = "ARTSTORE_LISTEN";
    pub const LOG_FORMAT: &str = "ARTSTORE_LOG_FORMAT";
    pub const JWT_SECRET_FILE: &str = "ARTSTORE_JWT_SECRET_FILE";
    pub const JWT_PUBLIC_KEY_FILE: &str = "ARTSTORE_JWT_PUBLIC_KEY_FILE";
    pub const DATABASE_URL: &str = "ARTSTORE_DATABASE_URL";
    pub const REDIS_URL: &str = "ARTSTORE_REDIS_URL";
    pub const STREAM: &str = "ARTSTORE_STREAM";
    pub const REGISTRY_FILE: &str = "ARTSTORE_REGISTRY_FILE";
    /// Clock skew tolerated on a token's `exp` and `nbf`, in seconds (default 5).
    pub const JWT_LEEWAY_SECONDS: &str = "ARTSTORE_JWT_LEEWAY_SECONDS";
    /// Seconds a client has to send a request head (default 10).
    pub const HEADER_READ_TIMEOUT_SECONDS: &str = "ARTSTORE_HEADER_READ_TIMEOUT_SECONDS";
    /// Seconds a request body or response may stall (default 30).
    pub const IDLE_TIMEOUT_SECONDS: &str = "ARTSTORE_IDLE_TIMEOUT_SECONDS";

    // Storage element
    pub const ELEMENT_ID: &str = "ARTSTORE_ELEMENT_ID";
    pub const ELEMENT_MODE: &str = "ARTSTORE_ELEMENT_MODE";
    pub const ELEMENT_PRIORITY: &str = "ARTSTORE_ELEMENT_PRIORITY";
    pub const CAPACITY_BYTES: &str = "ARTSTORE_CAPACITY_BYTES";
    pub const MAX_FILE_BYTES: &str = "ARTSTORE_MAX_FILE_BYTES";
    pub const CACHE_TTL_HOURS: &str = "ARTSTORE_CACHE_TTL_HOURS";
    pub const STREAM_MAXLEN: &str = "ARTSTORE_STREAM_MAXLEN";
    pub const BACKEND: &str = "ARTSTORE_BACKEND";
    pub const VOLUME_PATH: &str = "ARTSTORE_VOLUME_PATH";
    pub const S3_ENDPOINT: &str = "ARTSTORE_S3_ENDPOINT";
    pub const S3_BUCKET: &str = "ARTSTORE_S3_BUCKET";
    pub const S3_PREFIX: &str = "ARTSTORE_S3_PREFIX";
    pub const S3_REGION: &str = "ARTSTORE_S3_REGION";
    pub const S3_ACCESS_KEY: &str = "AWS_ACCESS_KEY_ID";
    pub const S3_SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    /// S3 client timeouts in seconds: connect (3), request to first byte of the answer (10),
    /// one attempt of an operation (60).
    pub const S3_CONNECT_TIMEOUT_SECONDS: &str = "ARTSTORE_S3_CONNECT_TIMEOUT_SECONDS";
    pub const S3_READ_TIMEOUT_SECONDS: &str = "ARTSTORE_S3_READ_TIMEOUT_SECONDS";
    pub const S3_ATTEMPT_TIMEOUT_SECONDS: &str = "ARTSTORE_S3_ATTEMPT_TIMEOUT_SECONDS";
    /// PostgreSQL: seconds to get a pooled connection (5) and `statement_timeout` (30).
    pub const DB_ACQUIRE_TIMEOUT_SECONDS: &str = "ARTSTORE_DB_ACQUIRE_TIMEOUT_SECONDS";
    pub const DB_STATEMENT_TIMEOUT_SECONDS: &str = "ARTSTORE_DB_STATEMENT_TIMEOUT_SECONDS";
    /// Seconds a blob without sidecar or an unfinished upload is left alone before the
    /// consistency check reports it and a rebuild removes it (default 3600).
    pub const ORPHAN_GRACE_SECONDS: &str = "ARTSTORE_ORPHAN_GRACE_SECONDS";

    // Query node (also `DB_ACQUIRE_TIMEOUT_SECONDS`, `DB_STATEMENT_TIMEOUT_SECONDS`,
    // `ELEMENT_CONNECT_TIMEOUT_SECONDS` (3) and `ELEMENT_IDLE_TIMEOUT_SECONDS` (10))
    /// Redis: seconds to connect (2) and for a reply on top of a blocking read's block time (10).
    pub const REDIS_CONNECT_TIMEOUT_SECONDS: &str = "ARTSTORE_REDIS_CONNECT_TIMEOUT_SECONDS";
    pub const REDIS_RESPONSE_TIMEOUT_SECONDS: &str = "ARTSTORE_REDIS_RESPONSE_TIMEOUT_SECONDS";
    /// Seconds for one whole page of a storage element's listing (default 60).
    pub const ELEMENT_LISTING_TIMEOUT_SECONDS: &str = "ARTSTORE_ELEMENT_LISTING_TIMEOUT_SECONDS";
    pub const CONSUMER_GROUP: &str = "ARTSTORE_CONSUMER_GROUP";
    /// Stable per replica; defaults to `POD_NAME`, then the host name.
    pub const CONSUMER_NAME: &str = "ARTSTORE_CONSUMER_NAME";
    pub const POD_NAME: &str = "POD_NAME";
    pub const BATCH_SIZE: &str = "ARTSTORE_BATCH_SIZE";
    pub const MAX_DELIVERIES: &str = "ARTSTORE_MAX_DELIVERIES";
    pub const DEAD_LETTER_STREAM: &str = "ARTSTORE_DEAD_LETTER_STREAM";
    pub const CLAIM_MIN_IDLE_MS: &str = "ARTSTORE_CLAIM_MIN_IDLE_MS";
    /// `true` (default) or `false`: the web console at `/console/`.
    pub const CONSOLE: &str = "ARTSTORE_CONSOLE";
    /// The ingester's base URL as browsers reach it (the console's writes).
    pub const CONSOLE_INGESTER_URL: &str = "ARTSTORE_CONSOLE_INGESTER_URL";

    // Ingester
    pub const MAX_UPLOAD_BYTES: &str = "ARTSTORE_MAX_UPLOAD_BYTES";
    pub const RATE_LIMIT_PER_MINUTE: &str = "ARTSTORE_RATE_LIMIT_PER_MINUTE";
    pub const IDEMPOTENCY_TTL_SECONDS: &str = "ARTSTORE_IDEMPOTENCY_TTL_SECONDS";
    /// Comma-separated origins (`https://archive.example.org`) whose pages may call the
    /// ingester (CORS); empty: none.
    pub const CORS_ALLOWED_ORIGINS: &str = "ARTSTORE_CORS_ALLOWED_ORIGINS";
    /// Seconds to open a connection to a storage element (default 3).
    pub const ELEMENT_CONNECT_TIMEOUT_SECONDS: &str = "ARTSTORE_ELEMENT_CONNECT_TIMEOUT_SECONDS";
    /// Seconds a storage element may make no progress before the ingester moves on (default 10).
    pub const ELEMENT_IDLE_TIMEOUT_SECONDS: &str = "ARTSTORE_ELEMENT_IDLE_TIMEOUT_SECONDS";
    /// Directory large uploads are spooled to (default: in the system's temporary directory).
    pub const SPOOL_DIR: &str = "ARTSTORE_SPOOL_DIR";
}

/// Bearer tokens on `/api/` routes: HS256 JWTs over the shared secret
/// (`ARTSTORE_JWT_SECRET_FILE`) with these claims. The operator signs a short-lived `admin` token
/// to read a storage element's status and consistency report.
pub mod token {
    use serde::{Deserialize, Serialize};

    pub const ALGORITHM: &str = "HS256";
    pub const ROLE_ADMIN: &str = "admin";
    pub const ROLE_WRITER: &str = "writer";
    pub const ROLE_READER: &str = "reader";
    /// `aud` of the tokens a role signs for its own calls to storage elements (the ingester on
    /// behalf of its caller). A storage element takes writes only with it, or from an admin;
    /// the ingester and the query node refuse tokens that carry any `aud`.
    pub const AUDIENCE_INTERNAL: &str = "artstore-internal";

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Claims {
        pub sub: String,
        /// `admin`, `writer` or `reader`.
        pub role: String,
        /// Expiry, seconds since the epoch.
        pub exp: u64,
        #[serde(default)]
        pub iat: u64,
    }
}

/// HTTP paths every process serves besides its API.
pub mod paths {
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
    pub const STATUS: &str = "/api/v1/status";
    pub const CONSISTENCY: &str = "/api/v1/cache/consistency";
    /// The last consistency report recorded (by a check run on demand or on schedule).
    pub const LAST_CONSISTENCY: &str = "/api/v1/cache/consistency/last";
    /// How long `/readyz` waits for a process's dependencies before answering 503. A probe must
    /// wait longer than this, or a slow but healthy check reads as a failure.
    pub const READY_BUDGET_SECONDS: u64 = 2;
}

/// The stream every role uses unless told otherwise (`ARTSTORE_STREAM`).
pub const DEFAULT_STREAM: &str = "artstore:file-events";
/// The query nodes' consumer group unless told otherwise (`ARTSTORE_CONSUMER_GROUP`).
pub const DEFAULT_CONSUMER_GROUP: &str = "query-node";

/// The dead-letter stream of `stream` unless told otherwise (`ARTSTORE_DEAD_LETTER_STREAM`).
pub fn default_dead_letter_stream(stream: &str) -> String {
    format!("{stream}:dead-letter")
}

/// Default port of every workload's HTTP listener.
pub const DEFAULT_PORT: u16 = 8080;

/// Fields of a stream entry.
pub mod stream_fields {
    pub const TYPE: &str = "type";
    pub const EVENT_ID: &str = "event_id";
    pub const FILE_ID: &str = "file_id";
    pub const VERSION: &str = "version";
    pub const STORAGE_ELEMENT_ID: &str = "storage_element_id";
    pub const OCCURRED_AT: &str = "occurred_at";
    pub const PAYLOAD: &str = "payload";
}

/// Event types on the stream.
pub mod event_types {
    pub const FILE_CREATED: &str = "file.created";
    pub const FILE_UPDATED: &str = "file.updated";
    pub const FILE_DELETED: &str = "file.deleted";
}

/// Storage element modes: `edit` (read, write, change, delete), `rw` (read, write),
/// `ro` (read only), `ar` (archive: read only, cold).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementMode {
    Edit,
    Rw,
    Ro,
    Ar,
}

impl ElementMode {
    pub fn accepts_writes(self) -> bool {
        matches!(self, ElementMode::Edit | ElementMode::Rw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ElementMode::Edit => "edit",
            ElementMode::Rw => "rw",
            ElementMode::Ro => "ro",
            ElementMode::Ar => "ar",
        }
    }
}

impl std::str::FromStr for ElementMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "edit" => Ok(ElementMode::Edit),
            "rw" => Ok(ElementMode::Rw),
            "ro" => Ok(ElementMode::Ro),
            "ar" => Ok(ElementMode::Ar),
            other => Err(format!(
                "unknown mode {other:?}: expected edit, rw, ro or ar"
            )),
        }
    }
}

/// The storage-element registry file the operator publishes (a ConfigMap key, mounted) and the
/// local stack writes; ingesters and query nodes reload it when it changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub elements: Vec<RegistryEntry>,
}

/// Key of the registry file in its ConfigMap, and its file name when mounted.
pub const REGISTRY_FILE_NAME: &str = "registry.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryEntry {
    pub id: String,
    /// Base URL of the element's HTTP API, e.g. `http://se-a.archive.svc:8080`.
    pub url: String,
    pub mode: ElementMode,
    pub priority: i32,
    pub capacity_bytes: u64,
    #[serde(default)]
    pub used_bytes: u64,
}

/// `GET /api/v1/status` of a storage element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ElementStatus {
    pub id: String,
    pub mode: ElementMode,
    pub priority: i32,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub file_count: u64,
    pub backend: String,
}

/// `GET /api/v1/status` of a query node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryNodeStatus {
    /// Live files in the node's search cache.
    pub indexed_files: u64,
    /// Deleted files remembered as tombstones (they reject late, older events).
    pub tombstones: u64,
}

/// `GET /api/v1/cache/consistency` of a storage element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsistencyReport {
    pub total_attr_files: u64,
    pub total_cache_entries: u64,
    pub orphan_cache_count: u64,
    pub orphan_attr_count: u64,
    pub expired_cache_count: u64,
    pub is_consistent: bool,
    pub inconsistency_percentage: f64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_round_trips_and_modes_are_lowercase() {
        let reg = Registry {
            elements: vec![RegistryEntry {
                id: "se-a".into(),
                url: "http://127.0.0.1:1".into(),
                mode: ElementMode::Rw,
                priority: 10,
                capacity_bytes: 1 << 30,
                used_bytes: 5,
            }],
        };
        let text = serde_json::to_string(&reg).expect("serialise");
        assert!(text.contains("\"mode\":\"rw\""), "{text}");
        let back: Registry = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, reg);
        assert!(
            "ar".parse::<ElementMode>()
                .is_ok_and(|m| !m.accepts_writes())
        );
        assert!("RW".parse::<ElementMode>().is_err());
    }
}
