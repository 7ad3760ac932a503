//! `artstore query-node ...`: the role's subcommands and their flags/environment
//! (names from `artstore_contract::env`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use artstore_common::auth::Verifier;
use artstore_contract::env;

use crate::backfill::backfill_all;
use crate::elements::{ElementClient, RegistryWatcher};
use crate::node::{NodeConfig, QueryNode, lazy_pool_with};
use crate::timeouts::TimeoutArgs;

pub const DEFAULT_STREAM: &str = artstore_contract::DEFAULT_STREAM;
pub const DEFAULT_GROUP: &str = artstore_contract::DEFAULT_CONSUMER_GROUP;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Consume events into the search cache and serve search and download.
    Serve(Box<ServeArgs>),
    /// Apply migrations/query-node and exit.
    Migrate(DatabaseArgs),
    /// Create the stream and this node's consumer group (idempotent). Run before any consumer.
    EnsureGroup(GroupArgs),
    /// Page through every storage element's files and upsert them (safe while serving).
    Backfill(BackfillArgs),
}

#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    #[arg(long, env = env::DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    #[arg(long, env = env::REDIS_URL)]
    pub redis_url: String,
    #[arg(long, env = env::STREAM, default_value = DEFAULT_STREAM)]
    pub stream: String,
    #[arg(long, env = env::CONSUMER_GROUP, default_value = DEFAULT_GROUP)]
    pub consumer_group: String,
}

#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Where a new group starts: `$` (new entries only; backfill covers the past) or `0`.
    #[arg(long, default_value = "$")]
    pub start_id: String,
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long, env = env::REGISTRY_FILE)]
    pub registry_file: PathBuf,
    /// Shared secret to mint the token the node calls storage elements with.
    #[arg(long, env = env::JWT_SECRET_FILE)]
    pub jwt_secret_file: PathBuf,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[arg(long, env = env::LISTEN, default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Stable per replica; defaults to POD_NAME, then the host name.
    #[arg(long, env = env::CONSUMER_NAME)]
    pub consumer_name: Option<String>,
    #[arg(long, env = env::BATCH_SIZE, default_value_t = 256)]
    pub batch_size: usize,
    #[arg(long, env = env::MAX_DELIVERIES, default_value_t = 5)]
    pub max_deliveries: u64,
    /// Defaults to `<stream>:dead-letter`.
    #[arg(long, env = env::DEAD_LETTER_STREAM)]
    pub dead_letter_stream: Option<String>,
    #[arg(long, env = env::CLAIM_MIN_IDLE_MS, default_value_t = 60_000)]
    pub claim_min_idle_ms: u64,
    #[arg(long, env = env::REGISTRY_FILE)]
    pub registry_file: Option<PathBuf>,
    /// HS256 shared secret: verifies callers and signs the node's token for storage elements.
    #[arg(long, env = env::JWT_SECRET_FILE)]
    pub jwt_secret_file: Option<PathBuf>,
    /// RS256 public key to verify callers with (instead of the shared secret).
    #[arg(long, env = env::JWT_PUBLIC_KEY_FILE)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Serve the web console at `/console/` (`false` turns it off).
    #[arg(long, env = env::CONSOLE, default_value_t = true, action = clap::ArgAction::Set)]
    pub console: bool,
    /// The ingester's base URL as browsers reach it; the console uploads and edits through it.
    #[arg(long, env = env::CONSOLE_INGESTER_URL, default_value = "")]
    pub console_ingester_url: String,
    /// Clock skew tolerated on a token's `exp` and `nbf`.
    #[arg(long, env = env::JWT_LEEWAY_SECONDS, default_value_t = artstore_common::auth::DEFAULT_LEEWAY_SECONDS)]
    pub jwt_leeway_seconds: u64,
    #[command(flatten)]
    pub server: artstore_common::serve::ServerTimeoutArgs,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

async fn consumer_name(explicit: Option<String>) -> String {
    let non_empty = |s: String| Some(s.trim().to_string()).filter(|n| !n.is_empty());
    if let Some(name) = explicit.and_then(non_empty) {
        return name;
    }
    if let Some(name) = std::env::var(env::POD_NAME).ok().and_then(non_empty) {
        return name;
    }
    if let Some(name) = tokio::fs::read_to_string("/etc/hostname")
        .await
        .ok()
        .and_then(non_empty)
    {
        return name;
    }
    std::env::var("HOSTNAME")
        .ok()
        .and_then(non_empty)
        .unwrap_or_else(|| "query-node".to_string())
}

/// The shared secret file (trailing newline ignored), read without blocking the runtime.
async fn read_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.trim_ascii_end().to_vec())
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate(args) => {
            let pool = sqlx::PgPool::connect(&args.database_url)
                .await
                .context("connecting to the database")?;
            crate::MIGRATOR.run(&pool).await.context("migrating")?;
            tracing::info!("query-node migrations applied");
            Ok(())
        }
        Command::EnsureGroup(args) => {
            let client = redis::Client::open(args.stream.redis_url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let created = artstore_events::groups::ensure_group(
                &mut conn,
                &args.stream.stream,
                &args.stream.consumer_group,
                &args.start_id,
            )
            .await?;
            tracing::info!(
                stream = %args.stream.stream,
                group = %args.stream.consumer_group,
                created,
                "consumer group ensured"
            );
            Ok(())
        }
        Command::Backfill(args) => {
            let timeouts = args.timeouts.timeouts();
            let pool = lazy_pool_with(&args.database.database_url, 4, &timeouts)?;
            let secret = read_secret(&args.jwt_secret_file).await?;
            let registry = RegistryWatcher::new(Some(args.registry_file));
            let client =
                ElementClient::with_timeouts(Some(secret), "query-node:backfill", &timeouts);
            let report = backfill_all(&pool, &registry, &client).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            anyhow::ensure!(report.ok(), "backfill of some storage elements failed");
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let secret = match &args.jwt_secret_file {
        Some(path) => Some(read_secret(path).await?),
        None => None,
    };
    let verifier = match (&args.jwt_public_key_file, &secret) {
        (Some(path), _) => {
            let pem = tokio::fs::read(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            Verifier::rs256(&pem)?
        }
        (None, Some(secret)) => Verifier::hs256(secret),
        (None, None) => anyhow::bail!(
            "set {} or {} to verify callers",
            env::JWT_SECRET_FILE,
            env::JWT_PUBLIC_KEY_FILE
        ),
    };
    let stream = args.stream.stream.clone();
    let mut config = NodeConfig::new(
        &args.database.database_url,
        &args.stream.redis_url,
        &stream,
        &args.stream.consumer_group,
        &consumer_name(args.consumer_name).await,
        b"",
    );
    config.verifier = verifier.with_leeway(args.jwt_leeway_seconds);
    config.server_timeouts = args.server.timeouts();
    config.timeouts = args.timeouts.timeouts();
    config.element_secret = secret;
    config.batch_size = args.batch_size.max(1);
    config.max_deliveries = args.max_deliveries.max(1);
    config.dead_letter_stream = args
        .dead_letter_stream
        .unwrap_or_else(|| artstore_contract::default_dead_letter_stream(&stream));
    config.claim_min_idle = Duration::from_millis(args.claim_min_idle_ms);
    config.registry_file = args.registry_file;
    config.console = args.console.then(|| crate::console::ConsoleConfig {
        ingester_url: args.console_ingester_url.clone(),
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let node = QueryNode::start(config, listener).await?;
    shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
