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

#[tokio::test]
async fn the_running_operator_opens_the_gate_on_watch_events_and_stops_gracefully() {
    use artstore_operator::build::BuildConfig;
    use artstore_operator::controller::Config;
    use artstore_operator::crd::QueryNode;
    use artstore_operator::process::OperatorConfig;

    let (client, server) = ApiServer::start();
    let url = &artstore_testsupport::services().redis_url;
    server.insert(
        "v1",
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "redis", "namespace": "archive"},
            "stringData": {"url": url},
        }),
    );
    let stream = artstore_testsupport::unique_prefix("run");
    let mut es = crate::fixture_json("eventstream.yaml");
    es["spec"]["stream"] = json!(stream);
    // Paused, so the node must wait for it.
    es["metadata"]["annotations"] = json!({"artstore.io/reconcile": "paused"});
    server.insert("artstore.io/v1alpha1", "eventstreams", es);
    server.insert(
        "artstore.io/v1alpha1",
        "querynodes",
        crate::fixture_json("querynode.yaml"),
    );
    let qn_path = path("artstore.io/v1alpha1", "querynodes", "archive", "search");
    let es_path = path("artstore.io/v1alpha1", "eventstreams", "archive", "files");

    // Re-checks are an hour apart: anything that happens within the test came from a watch.
    let hour = Duration::from_secs(3600);
    let mut config = OperatorConfig::new(Config {
        build: BuildConfig {
            image: "artstore:test".into(),
            ..Default::default()
        },
        namespace: Some("archive".into()),
        probe_elements: false,
        resync: hour,
        stream_interval: hour,
        wait_interval: hour,
        ..Default::default()
    });
    config.leader_election = Some(LeaseConfig::new("archive", "operator-under-test"));
    let state = config.state.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(artstore_operator::run(client, config, async move {
        let _ = stopped.await;
    }));

    let s = server.clone();
    let qp = qn_path.clone();
    artstore_testsupport::eventually(
        Duration::from_secs(20),
        "QueryNode waiting for its stream",
        || {
            let (s, qp) = (s.clone(), qp.clone());
            async move {
                let qn: QueryNode = serde_json::from_value(s.get(&qp)?).ok()?;
                let reason = qn
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?
                    .reason;
                (reason == "WaitingForStream").then_some(())
            }
        },
    )
    .await;
    assert!(state.leading.load(Ordering::SeqCst));

    // Unpausing the stream lets its reconciler run; its new status reaches the node by watch.
    server.update(&es_path, |o| o["metadata"]["annotations"] = json!({}));
    let job_name = {
        let qn: QueryNode = server.typed(&path(
            "artstore.io/v1alpha1",
            "querynodes",
            "archive",
            "search",
        ));
        artstore_operator::build::query_node::backfill_job_name(&qn).unwrap()
    };
    let job_path = path("batch/v1", "jobs", "archive", &job_name);
    let s = server.clone();
    let jp = job_path.clone();
    artstore_testsupport::eventually(
        Duration::from_secs(20),
        "backfill Job after the stream became ready",
        || {
            let s = s.clone();
            let jp = jp.clone();
            async move { s.get(&jp) }
        },
    )
    .await;
    assert!(
        server
            .get(&path("apps/v1", "deployments", "archive", "search"))
            .is_none()
    );

    // The Job succeeds; the owned-Job watch brings the node back, and the consumers start.
    server.update(&job_path, |j| j["status"] = json!({"succeeded": 1}));
    let s = server.clone();
    artstore_testsupport::eventually(
        Duration::from_secs(20),
        "Deployment after the backfill",
        || {
            let s = s.clone();
            async move { s.get(&path("apps/v1", "deployments", "archive", "search")) }
        },
    )
    .await;

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), operator)
        .await
        .expect("operator stops")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    let lease = server
        .get(&path(
            "coordination.k8s.io/v1",
            "leases",
            "archive",
            "artstore-operator",
        ))
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "lease released on shutdown: {lease}"
    );
    let mut redis = artstore_testsupport::redis_connection().await.unwrap();
    let _: () = redis::AsyncCommands::del(&mut redis, &stream)
        .await
        .unwrap();
}
