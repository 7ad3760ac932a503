//! Serving a role's router until SIGTERM or Ctrl-C, finishing requests in flight.

use std::net::SocketAddr;

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C (a person).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Binds `addr` and serves `router` until a shutdown signal.
pub async fn serve(addr: SocketAddr, router: axum::Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

/// The token verifier from the role's flags: RS256 when a public key is given, else HS256.
pub fn verifier(
    secret_file: &std::path::Path,
    public_key_file: Option<&std::path::Path>,
) -> Result<crate::auth::Verifier, String> {
    match public_key_file {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            crate::auth::Verifier::rs256(&pem)
                .map_err(|e| format!("public key {}: {e}", path.display()))
        }
        None => {
            let secret = crate::auth::read_secret_file(secret_file)
                .map_err(|e| format!("reading {}: {e}", secret_file.display()))?;
            if secret.len() < 16 {
                return Err(format!(
                    "the JWT secret in {} is shorter than 16 bytes",
                    secret_file.display()
                ));
            }
            Ok(crate::auth::Verifier::hs256(&secret))
        }
    }
}
