//! `/healthz` (the process runs), `/readyz` (its dependencies answer) and `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use artstore_contract::paths;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// A readiness check: `Ok` when the process can serve.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct Ops {
    pub registry: Arc<Mutex<Registry>>,
    pub ready: ReadyCheck,
}

impl Ops {
    pub fn new(registry: Registry, ready: ReadyCheck) -> Self {
        Ops {
            registry: Arc::new(Mutex::new(registry)),
            ready,
        }
    }

    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route(paths::HEALTHZ, get(|| async { "ok" }))
            .route(paths::READYZ, get(readyz))
            .route(paths::METRICS, get(metrics))
            .with_state(self)
    }
}

/// How long a readiness check may take: a hung dependency makes the process unready within
/// this, instead of hanging the probe (whose own timeout is often 1 s) until it gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(paths::READY_BUDGET_SECONDS);

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    match tokio::time::timeout(READY_TIMEOUT, (ops.ready)()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready".to_string()),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, why),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("a dependency did not answer within {READY_TIMEOUT:?}"),
        ),
    }
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let mut text = String::new();
    let encoded = match ops.registry.lock() {
        Ok(registry) => prometheus_client::encoding::text::encode(&mut text, &registry),
        Err(_) => Err(std::fmt::Error),
    };
    match encoded {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
