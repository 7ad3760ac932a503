//! The operator process around the controllers: crypto provider, leader election, the health
//! and metrics endpoints, graceful shutdown. `run` is the library entry point (the binary and
//! integration tests against a real API server both call it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::FutureExt;
use kube::Client;

use crate::controller::{self, Config, Context};
use crate::lease::{self, LeaseConfig};
use crate::metrics::Metrics;

/// Installs ring as the process's rustls provider. With both ring and aws-lc-rs compiled in (a
/// workspace build can unify them), rustls cannot pick one and `kube::Client` would panic; an
/// explicit choice removes the ambiguity. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether this process is healthy and ready, shared with the HTTP endpoints.
#[derive(Default)]
pub struct ProcessState {
    /// Controllers are running (leader), or the replica is standing by.
    pub ready: AtomicBool,
    pub leading: AtomicBool,
}

pub struct OperatorConfig {
    pub controllers: Config,
    /// `None` runs without election (a single replica, or tests).
    pub leader_election: Option<LeaseConfig>,
    pub metrics: Arc<Metrics>,
    pub state: Arc<ProcessState>,
}

impl OperatorConfig {
    pub fn new(controllers: Config) -> Self {
        Self {
            controllers,
            leader_election: None,
            metrics: Arc::new(Metrics::default()),
            state: Arc::new(ProcessState::default()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("leadership lost: another replica holds the lease")]
    LeadershipLost,
}

/// Runs the operator until `shutdown` resolves (Ok) or leadership is lost (Err; the process
/// should exit so that it restarts as a standby).
pub async fn run<F>(client: Client, config: OperatorConfig, shutdown: F) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
    }
    let stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
        .boxed()
        .shared()
    };
    let state = config.state.clone();
    let lost = Arc::new(AtomicBool::new(false));
    if let Some(lease_cfg) = &config.leader_election {
        state.ready.store(true, Ordering::SeqCst);
        let acquired = tokio::select! {
            at = lease::acquire(client.clone(), lease_cfg) => at,
            () = stop.clone() => return Ok(()),
        };
        state.leading.store(true, Ordering::SeqCst);
        config.metrics.leader.set(1);
        let (client, cfg, tx, lost, metrics) = (
            client.clone(),
            lease_cfg.clone(),
            stop_tx.clone(),
            lost.clone(),
            config.metrics.clone(),
        );
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = lease::hold(client, &cfg, acquired) => {
                    lost.store(true, Ordering::SeqCst);
                    metrics.leader.set(0);
                    let _ = tx.send(true);
                }
                _ = rx.wait_for(|v| *v) => {}
            }
        });
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.controllers.clone(),
        config.metrics.clone(),
    ));
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!(namespace = ?config.controllers.namespace, "controllers starting");
    controller::run_controllers(ctx, stop).await;
    tracing::info!("controllers stopped");
    state.leading.store(false, Ordering::SeqCst);
    if let Some(lease_cfg) = &config.leader_election {
        config.metrics.leader.set(0);
        if !lost.load(Ordering::SeqCst) {
            lease::release(client, lease_cfg).await;
        }
    }
    if lost.load(Ordering::SeqCst) {
        return Err(RunError::LeadershipLost);
    }
    Ok(())
}

#[derive(Clone)]
struct Http {
    metrics: Arc<Metrics>,
    state: Arc<ProcessState>,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(metrics: Arc<Metrics>, state: Arc<ProcessState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Http>| async move {
                if h.state.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<Http>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    h.metrics.encode(),
                )
                    .into_response()
            }),
        )
        .with_state(Http { metrics, state })
}

/// Serves the router until `shutdown` resolves.
pub async fn serve<F>(addr: SocketAddr, router: Router, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
