//! Leader election against the real API server's Lease: a leader cut off from the API server
//! stops leading before any other replica may take the lease.

use std::net::SocketAddr;

use artstore_operator::lease::{self, LeaseConfig, Lost};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{Cluster, PATIENCE};
use artstore_testsupport::eventually;

/// A TCP proxy in front of the API server that the test can cut: every open connection is
/// dropped and new ones are refused, as when a node loses its network.
struct CuttableProxy {
    addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl CuttableProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, tasks }
    }

    /// Drops the listener and every connection (the accept task owns both).
    fn cut(&mut self) {
        self.tasks.abort_all();
    }
}

/// An admin client of the cluster that connects through `proxy` (same host, so the server's
/// certificate still matches).
async fn client_via(cluster: &Cluster, proxy: SocketAddr) -> Client {
    let kubeconfig = Kubeconfig::read_from(&cluster.plane.kubeconfig).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("client config");
    config.cluster_url = format!("https://{proxy}").parse().expect("proxy url");
    Client::try_from(config).expect("client")
}

async fn api_server_addr(cluster: &Cluster) -> SocketAddr {
    let kubeconfig = Kubeconfig::read_from(&cluster.plane.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    let host = config.cluster_url.host().expect("host").to_string();
    let port = config.cluster_url.port_u16().expect("port");
    format!("{host}:{port}")
        .parse()
        .expect("API server address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_lease_can_be_taken() {
    let cluster = Cluster::start(false).await;
    let ns = cluster.namespace("lease").await;
    let mut proxy = CuttableProxy::start(api_server_addr(&cluster).await).await;
    let a = LeaseConfig::new(&ns, "operator-a");
    let b = LeaseConfig::new(&ns, "operator-b");
    a.check().expect("default settings");
    let a_client = client_via(&cluster, proxy.addr).await;
    let b_api: Api<Lease> = Api::namespaced(cluster.client.clone(), &ns);

    let acquired = lease::acquire(a_client.clone(), &a).await;
    let holder = tokio::spawn({
        let a = a.clone();
        async move { lease::hold(a_client, &a, acquired).await }
    });
    assert!(
        !lease::try_acquire(&b_api, &b).await.expect("b's round"),
        "b must wait while a renews"
    );

    // a loses the API server: it must give up on its own, without learning who holds what.
    proxy.cut();
    let lost = tokio::time::timeout(PATIENCE, holder)
        .await
        .expect("a gives up")
        .expect("join");
    assert_eq!(lost, Lost::DeadlinePassed);

    // At the moment a stopped leading, the stored lease is still a's and not yet expired: no
    // other replica could have started reconciling while a still did.
    let stored = b_api
        .get("artstore-operator")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(stored.holder_identity.as_deref(), Some("operator-a"));
    assert!(
        !lease::expired(&stored, Timestamp::now()),
        "a stopped only after its lease ran out: {stored:?}"
    );
    assert!(
        !lease::try_acquire(&b_api, &b).await.expect("b's round"),
        "b cannot take an unexpired lease"
    );

    // Once it expires, b takes over.
    eventually(PATIENCE, "b takes the expired lease", || {
        let (api, b) = (b_api.clone(), b.clone());
        async move { lease::try_acquire(&api, &b).await.ok()?.then_some(()) }
    })
    .await;
    let lease = b_api.get("artstore-operator").await.expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(spec.lease_transitions, Some(1));
}
