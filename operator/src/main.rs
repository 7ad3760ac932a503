//! `artstore-operator`: reconciles the ArtStore custom resources.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use artstore_operator::build::BuildConfig;
use artstore_operator::controller::Config;
use artstore_operator::lease::LeaseConfig;
use artstore_operator::process::{self, OperatorConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Reconciles EventStream, StorageElement, QueryNode and Ingester resources"
)]
struct Args {
    /// Image of the `artstore` binary for workloads whose spec names none.
    #[arg(
        long,
        env = "ARTSTORE_OPERATOR_IMAGE",
        default_value = "ghcr.io/artstore/artstore:latest"
    )]
    image: String,
    #[arg(long, env = "ARTSTORE_OPERATOR_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// Watch one namespace only; all namespaces when empty.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "ARTSTORE_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Elect a leader with a Lease (turn off only for a single replica).
    #[arg(long, env = "ARTSTORE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The operator's own namespace: of the Lease, and the one whose operator pods storage
    /// elements' NetworkPolicies let in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME", default_value = "artstore-operator")]
    pod_name: String,
    /// Read each storage element's /api/v1/status and consistency report, and each query
    /// node's /api/v1/status (indexed files).
    #[arg(long, env = "ARTSTORE_OPERATOR_PROBE_ELEMENTS", default_value_t = true, action = clap::ArgAction::Set)]
    probe_elements: bool,
    /// `json` (default, for clusters) or `text`.
    #[arg(long, env = "ARTSTORE_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

async fn shutdown_signal() {
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
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    process::install_crypto_provider();
    let args = Args::parse();
    init_logs(&args.log_format);

    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API")?;
    let controllers = Config {
        build: BuildConfig {
            image: args.image,
            image_pull_policy: args.image_pull_policy,
            operator_namespace: Some(args.lease_namespace.clone()),
            ..Default::default()
        },
        namespace: args.namespace.filter(|n| !n.is_empty()),
        probe_elements: args.probe_elements,
        instance: args.pod_name.clone(),
        ..Default::default()
    };
    let mut config = OperatorConfig::new(controllers);
    if args.leader_election {
        config.leader_election = Some(LeaseConfig::new(args.lease_namespace, args.pod_name));
    }
    let router = process::router(config.metrics.clone(), config.state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn({
        let mut rx = stop_rx.clone();
        async move {
            process::serve(args.listen, router, async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
        }
    });
    let result = process::run(client, config, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    result.context("operator stopped")?;
    Ok(())
}
