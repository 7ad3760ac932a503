//! The storage-element role of the `artstore` binary: stores blobs and their `.attr.json`
//! sidecars on S3 or a local volume, caches the metadata in PostgreSQL, and publishes every
//! change to the Redis Stream through an outbox.
//!
//! In-process use (tests, the local stack): [`ElementConfig`] → [`build`] → [`Element::start`].

pub mod backend;
pub mod cli;
mod commits;
pub mod core;
pub mod error;
pub mod http;
pub mod layout;
pub mod maintenance;
pub mod metrics;
pub mod packs;
pub mod relay;
pub mod sidecar;
pub mod store;
pub mod used_bytes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use artstore_common::auth::Verifier;
use artstore_common::ops::Ops;
use artstore_contract::ElementMode;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{BlobBackend, S3Backend, S3Settings, S3Timeouts, VolumeBackend};
use crate::core::{Core, Settings};
use crate::metrics::Metrics;
use crate::relay::{Relay, RelayConfig};

pub use crate::error::ElementError;
pub use crate::maintenance::MaintenanceKind;

/// The migrations of the element's database, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/storage-element");

/// Points where a test can stop an operation dead, as a crash would (no clean-up runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Upload: blob stored, no sidecar. Delete: sidecar and blob gone, row still there.
    AfterBlob,
    /// Upload: blob and sidecar stored, no cache row. Patch: new sidecar, old row.
    /// Delete: sidecar gone, blob and row still there.
    AfterSidecar,
}

#[derive(Debug, Clone)]
pub enum BackendConfig {
    S3(S3Settings),
    Volume { path: std::path::PathBuf },
}

/// Everything an element needs to run.
#[derive(Clone)]
pub struct ElementConfig {
    pub id: String,
    pub mode: ElementMode,
    pub priority: i32,
    pub capacity_bytes: u64,
    pub max_file_bytes: u64,
    pub cache_ttl_hours: u32,
    pub backend: BackendConfig,
    pub database_url: String,
    pub redis_url: String,
    pub stream: String,
    pub stream_max_len: Option<u64>,
    pub verifier: Verifier,
    /// Apply the embedded migrations when building.
    pub run_migrations: bool,
    /// Blobs without a sidecar younger than this are uploads in flight, not orphans.
    pub orphan_blob_grace: Duration,
    /// How often the relay looks for outbox rows written by other processes.
    pub relay_poll_interval: Duration,
    pub server_timeouts: artstore_common::serve::ServerTimeouts,
    pub s3_timeouts: S3Timeouts,
    pub database_timeouts: DatabaseTimeouts,
}

/// How long the element waits on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseTimeouts {
    /// To get a connection from the pool (or open one).
    pub acquire: Duration,
    /// The server cancels a statement running longer (`statement_timeout`).
    pub statement: Duration,
}

impl Default for DatabaseTimeouts {
    fn default() -> Self {
        DatabaseTimeouts {
            acquire: Duration::from_secs(5),
            statement: Duration::from_secs(30),
        }
    }
}

impl ElementConfig {
    /// A writable (`edit`) element with defaults: 100 GiB capacity, 10 GiB max file, 24 h TTL.
    pub fn new(
        id: impl Into<String>,
        backend: BackendConfig,
        database_url: impl Into<String>,
        redis_url: impl Into<String>,
        stream: impl Into<String>,
        verifier: Verifier,
    ) -> Self {
        ElementConfig {
            id: id.into(),
            mode: ElementMode::Edit,
            priority: 100,
            capacity_bytes: 100 << 30,
            max_file_bytes: 10 << 30,
            cache_ttl_hours: 24,
            backend,
            database_url: database_url.into(),
            redis_url: redis_url.into(),
            stream: stream.into(),
            stream_max_len: Some(1_000_000),
            verifier,
            run_migrations: true,
            orphan_blob_grace: Duration::from_secs(3600),
            relay_poll_interval: Duration::from_secs(1),
            server_timeouts: Default::default(),
            s3_timeouts: Default::default(),
            database_timeouts: Default::default(),
        }
    }
}

/// A built element: its router and the relay it runs beside it.
pub struct Element {
    core: Arc<Core>,
    router: Router,
    relay: RelayConfig,
    server_timeouts: artstore_common::serve::ServerTimeouts,
}

/// An element serving on a listener; [`RunningElement::shutdown`] stops it.
pub struct RunningElement {
    pub addr: SocketAddr,
    pub core: Arc<Core>,
    cancel: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    relay: JoinHandle<()>,
}

impl RunningElement {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.server.await;
        let _ = self.relay.await;
        // The sidecars written since the last full pack (a crash loses only this shortcut).
        self.core.packs.flush().await;
    }
}

pub async fn connect_database(url: &str) -> Result<PgPool, sqlx::Error> {
    connect_database_with(url, DatabaseTimeouts::default()).await
}

pub async fn connect_database_with(
    url: &str,
    timeouts: DatabaseTimeouts,
) -> Result<PgPool, sqlx::Error> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let statement_ms = timeouts.statement.as_millis().to_string();
    artstore_common::pg::pool_options()
        .max_connections(16)
        .acquire_timeout(timeouts.acquire)
        .connect_with(options.options([("statement_timeout", statement_ms.as_str())]))
        .await
}

pub async fn open_backend(
    config: &BackendConfig,
    s3_timeouts: S3Timeouts,
) -> Result<Arc<dyn BlobBackend>, ElementError> {
    Ok(match config {
        BackendConfig::S3(settings) => Arc::new(S3Backend::connect(settings, s3_timeouts).await),
        BackendConfig::Volume { path } => Arc::new(VolumeBackend::open(path.clone()).await?),
    })
}

/// Connects to the database and the backend and builds the router.
pub async fn build(config: ElementConfig) -> Result<Element, ElementError> {
    let pool = connect_database_with(&config.database_url, config.database_timeouts).await?;
    if config.run_migrations {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| ElementError::Database(e.into()))?;
    }
    let backend = open_backend(&config.backend, config.s3_timeouts).await?;
    let metrics = Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let core = Arc::new(Core::new(
        Settings {
            id: config.id.clone(),
            mode: config.mode,
            priority: config.priority,
            capacity_bytes: config.capacity_bytes,
            max_file_bytes: config.max_file_bytes,
            cache_ttl_hours: config.cache_ttl_hours,
            orphan_blob_grace: config.orphan_blob_grace,
        },
        pool,
        backend,
        metrics,
    ));
    let ready_core = core.clone();
    let ops = Ops::new(
        registry,
        Arc::new(move || {
            let core = ready_core.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(&core.pool)
                    .await
                    .map_err(|e| format!("database: {e}"))?;
                core.backend
                    .check()
                    .await
                    .map_err(|e| format!("backend: {e}"))
            })
        }),
    );
    let router = artstore_common::harden::harden(
        http::api_router(core.clone(), config.verifier.clone().accepting_internal())
            .merge(ops.router())
            .merge(artstore_common::openapi::router(&http::openapi())),
        artstore_common::harden::HeadLimits::ELEMENT,
    )
    .layer(tower_http::trace::TraceLayer::new_for_http());
    Ok(Element {
        core,
        router,
        server_timeouts: config.server_timeouts,
        relay: RelayConfig {
            redis_url: config.redis_url,
            stream: config.stream,
            max_len: config.stream_max_len,
            poll_interval: config.relay_poll_interval,
        },
    })
}

impl Element {
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// A relay for this element's outbox (run it with [`Relay::run`] or [`Relay::drain`]).
    pub fn relay(&self) -> Relay {
        Relay::new(
            self.relay.clone(),
            self.core.pool.clone(),
            self.core.metrics.clone(),
        )
    }

    /// Serves on `listener` with the relay beside it, until [`RunningElement::shutdown`].
    pub fn start(self, listener: TcpListener) -> std::io::Result<RunningElement> {
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let relay = tokio::spawn(
            self.relay()
                .run(self.core.relay_wake.clone(), cancel.clone()),
        );
        let server_cancel = cancel.clone();
        let server = tokio::spawn(artstore_common::serve::serve_listener(
            listener,
            self.router,
            self.server_timeouts,
            async move { server_cancel.cancelled().await },
        ));
        Ok(RunningElement {
            addr,
            core: self.core,
            cancel,
            server,
            relay,
        })
    }
}
