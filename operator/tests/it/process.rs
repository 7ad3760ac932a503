//! The process: the crypto provider for kube's TLS, leader election over a Lease, and the
//! health/metrics endpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use artstore_operator::lease::{self, LeaseConfig};
use artstore_operator::metrics::Metrics;
use artstore_operator::process::{self, ProcessState};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

use crate::apiserver::{ApiServer, path};

#[test]
fn kube_client_with_tls_builds_once_the_ring_provider_is_installed() {
    // This binary is also built as part of the whole workspace's tests, where rustls may see
    // more than one provider; building a TLS client is where the panic would happen.
    process::install_crypto_provider();
    process::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = kube::Config::new("https://127.0.0.1:6443".parse().expect("uri"));
        let client = kube::Client::try_from(config);
        assert!(client.is_ok(), "{:?}", client.err());
    });
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over_only_after_expiry() {
    let (client, server) = ApiServer::start();
    let api: Api<Lease> = Api::namespaced(client.clone(), "archive");
    let a = LeaseConfig::new("archive", "operator-a");
    let b = LeaseConfig::new("archive", "operator-b");
    assert!(
        lease::try_acquire(&api, &a).await.expect("a"),
        "a creates the lease"
    );
    assert!(
        !lease::try_acquire(&api, &b).await.expect("b"),
        "b must wait while a renews"
    );
    assert!(lease::try_acquire(&api, &a).await.expect("a renews"));
    let p = path(
        "coordination.k8s.io/v1",
        "leases",
        "archive",
        "artstore-operator",
    );
    assert_eq!(
        server.get(&p).unwrap()["spec"]["holderIdentity"],
        "operator-a"
    );
    // a stops renewing: its last renewal is now older than the lease duration.
    server.update(&p, |l| {
        l["spec"]["renewTime"] = json!("2026-01-01T00:00:00.000000Z")
    });
    assert!(lease::try_acquire(&api, &b).await.expect("b takes over"));
    let lease = server.get(&p).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "operator-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(
        !lease::try_acquire(&api, &a).await.expect("a"),
        "a is now the standby"
    );
    // Releasing on shutdown hands over at once.
    lease::release(client, &b).await;
    assert!(lease::try_acquire(&api, &a).await.expect("a after release"));
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(ProcessState::default());
    let port = artstore_testsupport::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(process::serve(
        addr,
        process::router(metrics.clone(), state.clone()),
        async move {
            let _ = rx.wait_for(|v| *v).await;
        },
    ));
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let status = |path: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            for _ in 0..100 {
                if let Ok(r) = http.get(format!("{base}{path}")).send().await {
                    return (r.status().as_u16(), r.text().await.unwrap_or_default());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("server did not start");
        }
    };
    assert_eq!(status("/healthz").await.0, 200);
    assert_eq!(
        status("/readyz").await.0,
        503,
        "not ready before the controllers run"
    );
    state.ready.store(true, Ordering::SeqCst);
    assert_eq!(status("/readyz").await.0, 200);

    metrics.start("StorageElement").finish(None);
    metrics.start("StorageElement").finish(Some("KubeApiError"));
    metrics.set_ready("StorageElement", "archive", "se-a", true);
    let (code, body) = status("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains(r#"artstore_operator_reconciles_total{kind="StorageElement",result="ok"} 1"#),
        "{body}"
    );
    assert!(body.contains(r#"artstore_operator_reconcile_errors_total{kind="StorageElement",reason="KubeApiError"} 1"#), "{body}");
    assert!(body.contains(r#"artstore_operator_resource_ready{kind="StorageElement",namespace="archive",name="se-a"} 1"#), "{body}");
    assert!(
        body.contains(
            "artstore_operator_reconcile_duration_seconds_count{kind=\"StorageElement\"} 2"
        ),
        "{body}"
    );
    tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}
