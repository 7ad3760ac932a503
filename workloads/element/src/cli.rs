//! `artstore storage-element ...`: the role's subcommands and their flags/environment
//! (names from `artstore_contract::env`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use artstore_common::auth::{self, Verifier};
use artstore_contract::{ElementMode, env};

use crate::backend::S3Settings;
use crate::maintenance::{self, MaintenanceKind};
use crate::{BackendConfig, ElementConfig};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the role's HTTP API (and run the outbox relay).
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Run one cache maintenance operation and exit (the operator's Jobs and CronJobs).
    Rebuild(Box<RebuildArgs>),
}

#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    #[arg(long, env = env::DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    S3,
    Volume,
}

#[derive(Debug, clap::Args)]
pub struct ElementArgs {
    #[arg(long, env = env::ELEMENT_ID)]
    pub element_id: String,
    /// `edit`, `rw`, `ro` or `ar` (`--mode` belongs to `rebuild`).
    #[arg(long, env = env::ELEMENT_MODE, default_value = "edit")]
    pub element_mode: ElementMode,
    #[arg(long, env = env::ELEMENT_PRIORITY, default_value_t = 100)]
    pub priority: i32,
    #[arg(long, env = env::CAPACITY_BYTES)]
    pub capacity_bytes: u64,
    #[arg(long, env = env::MAX_FILE_BYTES, default_value_t = 10 << 30)]
    pub max_file_bytes: u64,
    #[arg(long, env = env::CACHE_TTL_HOURS, default_value_t = 24)]
    pub cache_ttl_hours: u32,
    #[arg(long, env = env::BACKEND, value_enum)]
    pub backend: BackendKind,
    #[arg(long, env = env::VOLUME_PATH)]
    pub volume_path: Option<PathBuf>,
    #[arg(long, env = env::S3_ENDPOINT)]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = env::S3_BUCKET)]
    pub s3_bucket: Option<String>,
    #[arg(long, env = env::S3_PREFIX, default_value = "")]
    pub s3_prefix: String,
    #[arg(long, env = env::S3_REGION, default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = env::S3_ACCESS_KEY, hide_env_values = true)]
    pub s3_access_key: Option<String>,
    #[arg(long, env = env::S3_SECRET_KEY, hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = env::REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,
    #[arg(long, env = env::STREAM, default_value = artstore_contract::DEFAULT_STREAM)]
    pub stream: String,
    /// Approximate maximum length of the stream (XADD MAXLEN ~); 0 = no trimming.
    #[arg(long, env = env::STREAM_MAXLEN, default_value_t = 1_000_000)]
    pub stream_maxlen: u64,
    /// Seconds to open a connection to S3.
    #[arg(long, env = env::S3_CONNECT_TIMEOUT_SECONDS, default_value_t = 3)]
    pub s3_connect_timeout_seconds: u64,
    /// Seconds from sending an S3 request (a part included) to the first byte of its answer.
    #[arg(long, env = env::S3_READ_TIMEOUT_SECONDS, default_value_t = 10)]
    pub s3_read_timeout_seconds: u64,
    /// Seconds one attempt of an S3 operation may take.
    #[arg(long, env = env::S3_ATTEMPT_TIMEOUT_SECONDS, default_value_t = 60)]
    pub s3_attempt_timeout_seconds: u64,
    /// Seconds to get a database connection from the pool.
    #[arg(long, env = env::DB_ACQUIRE_TIMEOUT_SECONDS, default_value_t = 5)]
    pub db_acquire_timeout_seconds: u64,
    /// Seconds PostgreSQL lets one statement run (`statement_timeout`).
    #[arg(long, env = env::DB_STATEMENT_TIMEOUT_SECONDS, default_value_t = 30)]
    pub db_statement_timeout_seconds: u64,
    /// Seconds a blob without sidecar, an unfinished S3 multipart upload or a temporary file is
    /// treated as an upload in flight before the consistency check reports it and a rebuild
    /// removes it.
    #[arg(long, env = env::ORPHAN_GRACE_SECONDS, default_value_t = 3600)]
    pub orphan_grace_seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub element: ElementArgs,
    #[arg(long, env = env::LISTEN, default_value = "0.0.0.0:8080")]
    pub listen: String,
    #[arg(long, env = env::JWT_SECRET_FILE)]
    pub jwt_secret_file: Option<PathBuf>,
    #[arg(long, env = env::JWT_PUBLIC_KEY_FILE)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Clock skew tolerated on a token's `exp` and `nbf`.
    #[arg(long, env = env::JWT_LEEWAY_SECONDS, default_value_t = auth::DEFAULT_LEEWAY_SECONDS)]
    pub jwt_leeway_seconds: u64,
    #[command(flatten)]
    pub server: artstore_common::serve::ServerTimeoutArgs,
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub element: ElementArgs,
    /// full, incremental, consistency, cleanup-expired or retention.
    #[arg(long, value_enum)]
    pub mode: MaintenanceKind,
}

fn backend_config(args: &ElementArgs) -> anyhow::Result<BackendConfig> {
    Ok(match args.backend {
        BackendKind::Volume => BackendConfig::Volume {
            path: args.volume_path.clone().with_context(|| {
                format!("{} is required for the volume backend", env::VOLUME_PATH)
            })?,
        },
        BackendKind::S3 => {
            let need = |value: &Option<String>, name: &str| {
                value
                    .clone()
                    .with_context(|| format!("{name} is required for the s3 backend"))
            };
            BackendConfig::S3(S3Settings {
                endpoint: need(&args.s3_endpoint, env::S3_ENDPOINT)?,
                bucket: need(&args.s3_bucket, env::S3_BUCKET)?,
                prefix: args.s3_prefix.clone(),
                region: args.s3_region.clone(),
                access_key: need(&args.s3_access_key, env::S3_ACCESS_KEY)?,
                secret_key: need(&args.s3_secret_key, env::S3_SECRET_KEY)?,
            })
        }
    })
}

fn element_config(args: &ElementArgs, verifier: Verifier) -> anyhow::Result<ElementConfig> {
    let mut config = ElementConfig::new(
        args.element_id.clone(),
        backend_config(args)?,
        args.database_url.clone(),
        args.redis_url.clone().unwrap_or_default(),
        args.stream.clone(),
        verifier,
    );
    config.mode = args.element_mode;
    config.priority = args.priority;
    config.capacity_bytes = args.capacity_bytes;
    config.max_file_bytes = args.max_file_bytes;
    config.cache_ttl_hours = args.cache_ttl_hours;
    config.stream_max_len = (args.stream_maxlen > 0).then_some(args.stream_maxlen);
    config.run_migrations = false;
    config.orphan_blob_grace = Duration::from_secs(args.orphan_grace_seconds);
    let seconds = |n: u64| Duration::from_secs(n.max(1));
    config.s3_timeouts = crate::backend::S3Timeouts {
        connect: seconds(args.s3_connect_timeout_seconds),
        first_byte: seconds(args.s3_read_timeout_seconds),
        attempt: seconds(args.s3_attempt_timeout_seconds),
    };
    config.database_timeouts = crate::DatabaseTimeouts {
        acquire: seconds(args.db_acquire_timeout_seconds),
        statement: seconds(args.db_statement_timeout_seconds),
    };
    Ok(config)
}

fn verifier(args: &ServeArgs) -> anyhow::Result<Verifier> {
    match (&args.jwt_secret_file, &args.jwt_public_key_file) {
        (_, Some(path)) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Verifier::rs256(&pem)?)
        }
        (Some(path), None) => Ok(Verifier::hs256(
            &auth::read_secret_file(path).with_context(|| format!("reading {}", path.display()))?,
        )),
        (None, None) => bail!(
            "{} or {} is required",
            env::JWT_SECRET_FILE,
            env::JWT_PUBLIC_KEY_FILE
        ),
    }
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate(args) => {
            let pool = crate::connect_database(&args.database_url).await?;
            crate::MIGRATOR.run(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(args) => {
            if args.element.redis_url.is_none() {
                bail!("{} is required to serve", env::REDIS_URL);
            }
            let verifier = verifier(&args)?.with_leeway(args.jwt_leeway_seconds);
            let mut config = element_config(&args.element, verifier)?;
            config.server_timeouts = args.server.timeouts();
            let element = crate::build(config).await?;
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .with_context(|| format!("binding {}", args.listen))?;
            let running = element.start(listener)?;
            tracing::info!(addr = %running.addr, "storage element serving");
            shutdown_signal().await?;
            tracing::info!("shutting down");
            running.shutdown().await;
            Ok(())
        }
        Command::Rebuild(args) => {
            // The job never serves HTTP: any verifier will do.
            let config = element_config(&args.element, Verifier::hs256(b"unused"))?;
            let has_redis = args.element.redis_url.is_some();
            let element = crate::build(config).await?;
            let report = maintenance::run(element.core(), args.mode).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if has_redis {
                // Publish what the run queued; the serving element's relay would do it too.
                let drained =
                    tokio::time::timeout(Duration::from_secs(30), element.relay().drain()).await;
                match drained {
                    Ok(Ok(n)) => tracing::info!(events = n, "outbox drained"),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "outbox not drained; the element's relay will publish it")
                    }
                    Err(_) => tracing::warn!(
                        "outbox drain timed out; the element's relay will publish it"
                    ),
                }
            }
            Ok(())
        }
    }
}

/// SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
