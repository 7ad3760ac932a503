//! A loopback TCP proxy whose open connections can all be cut at once: the "connection
//! dropped" fault, between a client and the ingester or query node, and between the ingester
//! (or query node) and a storage element.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub url: String,
    cut: watch::Sender<u64>,
    pub cuts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy on a free port in front of `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (cut, watcher) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let mut watcher = watcher.clone();
                watcher.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(Ok(server)) = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        TcpStream::connect(&upstream),
                    )
                    .await
                    else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watcher.changed() => {
                            // Cut: both sides see the connection end mid-exchange.
                            let _ = client.shutdown().await;
                            let _ = server.shutdown().await;
                        }
                    }
                });
            }
        });
        Proxy {
            url,
            cut,
            cuts: Arc::new(AtomicU64::new(0)),
            task,
        }
    }

    /// Cuts every connection open now; later connections pass.
    pub fn cut_all(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }
}
