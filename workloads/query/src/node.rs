//! A query node in one process: the consumer, the resync task and the HTTP API, startable from
//! a config struct (the CLI, tests and the local stack all use this).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use artstore_common::auth::Verifier;
use artstore_common::ops::{Ops, ReadyCheck};
use artstore_events::consumer::{Consumer, ConsumerConfig};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apply::CacheApplier;
use crate::elements::{ElementClient, RegistryWatcher};
use crate::http::{AppState, api_router};
use crate::metrics::Metrics;
use crate::resync::Resyncer;
use crate::timeouts::Timeouts;

/// Everything a node needs. [`NodeConfig::new`] fills sensible defaults.
#[derive(Clone)]
pub struct NodeConfig {
    pub database_url: String,
    pub redis_url: String,
    pub stream: String,
    pub group: String,
    pub consumer_name: String,
    pub batch_size: usize,
    pub block: Duration,
    pub max_deliveries: u64,
    pub dead_letter_stream: String,
    pub claim_min_idle: Duration,
    pub claim_interval: Duration,
    pub info_interval: Duration,
    pub registry_file: Option<PathBuf>,
    /// Verifies callers' tokens.
    pub verifier: Verifier,
    /// The shared secret, to mint the node's own token for calling storage elements.
    pub element_secret: Option<Vec<u8>>,
    pub max_db_connections: u32,
    /// Run the consumer (false: HTTP only).
    pub consume: bool,
    /// Serve the web console at `/console/` (None: off).
    pub console: Option<crate::console::ConsoleConfig>,
    pub server_timeouts: artstore_common::serve::ServerTimeouts,
    /// How long the node waits on PostgreSQL, Redis and storage elements.
    pub timeouts: Timeouts,
}

impl NodeConfig {
    pub fn new(
        database_url: &str,
        redis_url: &str,
        stream: &str,
        group: &str,
        consumer_name: &str,
        jwt_secret: &[u8],
    ) -> Self {
        NodeConfig {
            database_url: database_url.into(),
            redis_url: redis_url.into(),
            stream: stream.into(),
            group: group.into(),
            consumer_name: consumer_name.into(),
            batch_size: 256,
            block: Duration::from_millis(2000),
            max_deliveries: 5,
            dead_letter_stream: artstore_contract::default_dead_letter_stream(stream),
            claim_min_idle: Duration::from_secs(60),
            claim_interval: Duration::from_secs(10),
            info_interval: Duration::from_secs(15),
            registry_file: None,
            verifier: Verifier::hs256(jwt_secret),
            element_secret: Some(jwt_secret.to_vec()),
            max_db_connections: 10,
            consume: true,
            console: None,
            server_timeouts: Default::default(),
            timeouts: Timeouts::default(),
        }
    }

    pub fn consumer_config(&self) -> ConsumerConfig {
        let mut c = ConsumerConfig::new(
            &self.redis_url,
            &self.stream,
            &self.group,
            &self.consumer_name,
        );
        c.batch_size = self.batch_size;
        c.block = self.block;
        c.max_deliveries = self.max_deliveries;
        c.dead_letter_stream = self.dead_letter_stream.clone();
        c.claim_min_idle = self.claim_min_idle;
        c.claim_interval = self.claim_interval;
        c.info_interval = self.info_interval;
        c.redis_connect_timeout = self.timeouts.redis_connect;
        c.redis_response_timeout = self.timeouts.redis_response;
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("database url: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// A lazily connecting pool with the default timeouts (see [`lazy_pool_with`]).
pub fn lazy_pool(database_url: &str, max_connections: u32) -> Result<PgPool, NodeError> {
    lazy_pool_with(database_url, max_connections, &Timeouts::default())
}

/// A lazily connecting pool: the node starts (and answers /healthz) while PostgreSQL is down.
/// Getting a connection waits at most `db_acquire`; the server cancels a statement running
/// longer than `db_statement`, so a runaway query does not hold a connection.
pub fn lazy_pool_with(
    database_url: &str,
    max_connections: u32,
    timeouts: &Timeouts,
) -> Result<PgPool, NodeError> {
    let options: PgConnectOptions = database_url.parse().map_err(NodeError::DatabaseUrl)?;
    let statement_ms = timeouts.db_statement.as_millis().to_string();
    let options = options.options([("statement_timeout", statement_ms.as_str())]);
    Ok(artstore_common::pg::pool_options()
        .max_connections(max_connections)
        .acquire_timeout(timeouts.db_acquire)
        .connect_lazy_with(options))
}

/// A running node.
pub struct QueryNode {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    consumer: Option<JoinHandle<()>>,
    resync: JoinHandle<()>,
    pub pool: PgPool,
    pub resyncer: Arc<Resyncer>,
    pub metrics: Metrics,
}

impl QueryNode {
    /// Starts the consumer, the resync task and the HTTP server on `listener`.
    pub async fn start(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<QueryNode, NodeError> {
        let addr = listener.local_addr()?;
        let pool = lazy_pool_with(
            &config.database_url,
            config.max_db_connections,
            &config.timeouts,
        )?;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (shutdown, shutdown_rx) = watch::channel(false);

        let registry_watcher = Arc::new(RegistryWatcher::new(config.registry_file.clone()));
        let elements = ElementClient::with_timeouts(
            config.element_secret.clone(),
            &format!("query-node:{}", config.consumer_name),
            &config.timeouts,
        );
        let resyncer = Resyncer::new();
        let resync = tokio::spawn(resyncer.clone().run(
            pool.clone(),
            registry_watcher.clone(),
            elements.clone(),
            shutdown_rx.clone(),
        ));

        let consumer = config.consume.then(|| {
            let applier = Arc::new(CacheApplier::new(
                pool.clone(),
                registry_watcher.is_configured().then(|| resyncer.clone()),
            ));
            let consumer = Consumer::new(config.consumer_config(), applier)
                .with_observer(Arc::new(metrics.clone()));
            let rx = shutdown_rx.clone();
            tokio::spawn(async move {
                if let Err(e) = consumer.run(rx).await {
                    tracing::error!(error = %e, "consumer stopped with an error");
                }
            })
        });

        let ready = ready_check(pool.clone(), config.redis_url.clone(), &config.timeouts);
        let state = AppState {
            pool: pool.clone(),
            registry: registry_watcher,
            elements,
            metrics: metrics.clone(),
        };
        let app = artstore_common::harden::harden(
            api_router(state, config.verifier.clone())
                .merge(Ops::new(registry, ready).router())
                .merge(artstore_common::openapi::router(&crate::http::openapi()))
                .merge(match &config.console {
                    Some(console) => crate::console::router(console.clone()),
                    None => axum::Router::new(),
                }),
            artstore_common::harden::HeadLimits::PUBLIC,
        );
        let mut server_shutdown = shutdown_rx;
        let server = tokio::spawn(async move {
            let served = artstore_common::serve::serve_listener(
                listener,
                app,
                config.server_timeouts,
                async move {
                    let _ = server_shutdown.wait_for(|stop| *stop).await;
                },
            )
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%addr, consumer = %config.consumer_name, "query node started");
        Ok(QueryNode {
            addr,
            shutdown,
            server,
            consumer,
            resync,
            pool,
            resyncer,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: the batch in hand is finished (or left pending), then everything ends.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(consumer) = self.consumer {
            let _ = consumer.await;
        }
        let _ = self.resync.await;
        let _ = self.server.await;
    }

    /// Stops everything at once, wherever it is, as a crash would.
    pub fn abort(self) {
        if let Some(consumer) = &self.consumer {
            consumer.abort();
        }
        self.resync.abort();
        self.server.abort();
    }

    /// Waits until the serving tasks end (after a shutdown signal or a failure).
    pub async fn wait(self) {
        let _ = self.server.await;
        let _ = self.shutdown.send(true);
        if let Some(consumer) = self.consumer {
            let _ = consumer.await;
        }
        let _ = self.resync.await;
    }
}

fn ready_check(pool: PgPool, redis_url: String, timeouts: &Timeouts) -> ReadyCheck {
    let client = redis::Client::open(redis_url.as_str()).ok();
    let redis_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeouts.redis_connect))
        .set_response_timeout(Some(timeouts.redis_response));
    Arc::new(move || {
        let pool = pool.clone();
        let client = client.clone();
        let redis_config = redis_config.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map_err(|e| format!("database: {e}"))?;
            let client = client.ok_or_else(|| "redis: bad url".to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&redis_config)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            Ok(())
        })
    })
}
