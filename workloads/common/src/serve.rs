//! Serving a role's router until SIGTERM or Ctrl-C, finishing requests in flight, with a
//! header-read timeout, a request-body idle timeout and a response write-stall timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutBody};

use crate::idle_io::WriteStallTimeoutIo;

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
pub async fn serve(
    addr: SocketAddr,
    router: axum::Router,
    timeouts: ServerTimeouts,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "listening");
    serve_listener(listener, router, timeouts, shutdown_signal()).await
}

/// How long the server waits on a client. Defaults: see `docs/faults.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// From the first wait for a request head (a new or kept-alive connection) to its last byte.
    pub header_read: Duration,
    /// Between two pieces of a request body while a handler waits for it, and for a write the
    /// client does not take (a response or download it stopped reading).
    pub idle: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        ServerTimeouts {
            header_read: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECONDS),
            idle: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECONDS),
        }
    }
}

pub const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 30;

/// The server timeouts as every role's `serve` flags and environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerTimeoutArgs {
    /// Seconds a client has to send a whole request head (and that a kept-alive connection may
    /// sit idle).
    #[arg(long, env = artstore_contract::env::HEADER_READ_TIMEOUT_SECONDS, default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECONDS)]
    pub header_read_timeout_seconds: u64,
    /// Seconds a request body or a response may stall before the connection is closed.
    #[arg(long, env = artstore_contract::env::IDLE_TIMEOUT_SECONDS, default_value_t = DEFAULT_IDLE_TIMEOUT_SECONDS)]
    pub idle_timeout_seconds: u64,
}

impl ServerTimeoutArgs {
    pub fn timeouts(&self) -> ServerTimeouts {
        ServerTimeouts {
            header_read: Duration::from_secs(self.header_read_timeout_seconds.max(1)),
            idle: Duration::from_secs(self.idle_timeout_seconds.max(1)),
        }
    }
}

/// Header fields hyper itself accepts; above the API's own limit (100, answered 431 in JSON by
/// [`crate::harden`]) so the JSON answer comes first.
const HYPER_MAX_HEADERS: usize = 256;

/// Serves `router` on `listener` over HTTP/1.1 with [`ServerTimeouts`], until `shutdown`
/// resolves; then stops accepting and lets requests in flight finish.
///
/// Not `axum::serve`: it offers no header-read timeout and no way to wrap connections in one.
pub async fn serve_listener(
    listener: TcpListener,
    router: axum::Router,
    timeouts: ServerTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small responses go out at once instead of waiting on Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let io = TokioIo::new(WriteStallTimeoutIo::new(tcp, timeouts.idle));
        let service = tower::ServiceBuilder::new()
            .layer(RequestBodyTimeoutLayer::new(timeouts.idle))
            .map_request(|request: Request<TimeoutBody<Incoming>>| request.map(Body::new))
            .service(router.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read)
            .max_headers(HYPER_MAX_HEADERS)
            .serve_connection(io, TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server with one-second timeouts; returns its address.
    async fn start() -> SocketAddr {
        let router = axum::Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route("/echo", post(|body: axum::body::Bytes| async move { body }))
            .route("/big", get(|| async { vec![b'x'; BIG] }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let timeouts = ServerTimeouts {
            header_read: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        };
        tokio::spawn(serve_listener(
            listener,
            router,
            timeouts,
            std::future::pending(),
        ));
        addr
    }

    /// Everything the server sends until it closes the connection. The outer bound only keeps a
    /// broken server from hanging the test; the server's own timeout is what closes it.
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut out))
            .await
            .expect("the server closed the connection")
            .expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn half_a_request_line_is_closed_by_the_server() {
        let addr = start().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /o").await.expect("write");
        let answer = read_until_closed(&mut stream).await;
        assert!(!answer.contains("200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn a_stalled_body_ends_the_request() {
        let addr = start().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
            .await
            .expect("write");
        let answer = read_until_closed(&mut stream).await;
        assert!(
            answer.starts_with("HTTP/1.1 4")
                || answer.starts_with("HTTP/1.1 5")
                || answer.is_empty(),
            "{answer}"
        );
        assert!(!answer.contains("0123456789"), "{answer}");
    }

    const BIG: usize = 64 << 20;

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off() {
        let addr = start().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        // Not reading for longer than the idle timeout: the server's writes stall.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut received = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => received += n,
                Err(_) => panic!("the server neither sent nor closed"),
            }
        }
        assert!(
            received < BIG,
            "the server gave up on the stalled response ({received} bytes arrived)"
        );
    }

    #[tokio::test]
    async fn a_whole_request_is_served_and_kept_alive() {
        let addr = start().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for _ in 0..2 {
            stream
                .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .expect("write");
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).await.expect("read");
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(text.ends_with("fine"), "{text}");
        }
        // An idle kept-alive connection is closed too.
        let rest = read_until_closed(&mut stream).await;
        assert!(rest.is_empty(), "{rest}");
    }
}
