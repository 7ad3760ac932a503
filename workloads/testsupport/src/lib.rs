//! Test support: every integration test gets its own database, stream/key prefix and bucket on the
//! real PostgreSQL, Redis and SeaweedFS that `scripts/services.sh` started.
//!
//! Connection details come from the environment (`ARTSTORE_TEST_*`), or else from the env file
//! the services script wrote (`$ARTSTORE_SERVICES_ENV`, default
//! `target/artstore-services/services.env`). A missing service is a test failure, never a skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod kube;

use anyhow::{Context, Result, bail};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// Connection details of the shared test services.
#[derive(Debug, Clone)]
pub struct ServicesEnv {
    pub database_url: String,
    pub pg_bin_dir: PathBuf,
    pub redis_url: String,
    pub redis_server_bin: PathBuf,
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// Path of a migrations folder, by database role (`storage-element`, `query-node`).
pub fn migrations_dir(role: &str) -> PathBuf {
    workspace_root().join("migrations").join(role)
}

fn read_env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The services' connection details; panics with instructions when they are not there.
pub fn services() -> &'static ServicesEnv {
    static ENV: OnceLock<ServicesEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let file = std::env::var("ARTSTORE_SERVICES_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join("target/artstore-services/services.env"));
        let from_file = read_env_file(&file);
        let get = |key: &str| -> String {
            std::env::var(key)
                .ok()
                .or_else(|| from_file.get(key).cloned())
                .unwrap_or_else(|| {
                    panic!(
                        "test service setting {key} is missing: run the tests with scripts/test.sh, \
                         or start the services with `scripts/services.sh start` (env file looked for at {})",
                        file.display()
                    )
                })
        };
        ServicesEnv {
            database_url: get("ARTSTORE_TEST_DATABASE_URL"),
            pg_bin_dir: get("ARTSTORE_TEST_PG_BIN_DIR").into(),
            redis_url: get("ARTSTORE_TEST_REDIS_URL"),
            redis_server_bin: get("ARTSTORE_TEST_REDIS_SERVER_BIN").into(),
            s3_endpoint: get("ARTSTORE_TEST_S3_ENDPOINT"),
            s3_region: get("ARTSTORE_TEST_S3_REGION"),
            s3_access_key: get("ARTSTORE_TEST_S3_ACCESS_KEY"),
            s3_secret_key: get("ARTSTORE_TEST_S3_SECRET_KEY"),
        }
    })
}

/// A short unique name for one test's resources: `<tag>_<12 hex digits>`, safe as a database,
/// bucket or key prefix (lower case, no dots).
pub fn unique_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{tag}-{}", &id[..12])
}

/// A stream name / key prefix owned by one test.
pub fn unique_prefix(tag: &str) -> String {
    format!("test:{}", unique_name(tag))
}

/// A database created for one test, with a role's migrations applied.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

/// Creates a fresh, empty database (no migrations).
pub async fn empty_database(tag: &str) -> Result<TestDatabase> {
    let admin_url = &services().database_url;
    let name = unique_name(tag).replace('-', "_");
    let admin = PgConnectOptions::from_url(&admin_url.parse()?)?;
    let mut conn = admin
        .connect()
        .await
        .with_context(|| format!("PostgreSQL at {admin_url} is not reachable"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await?;
    let url = replace_database(admin_url, &name);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await?;
    Ok(TestDatabase { name, url, pool })
}

/// Creates a fresh database and applies the migrations of `role` (a folder under `migrations/`).
pub async fn fresh_database(role: &str) -> Result<TestDatabase> {
    let db = empty_database(role).await?;
    let migrator = sqlx::migrate::Migrator::new(migrations_dir(role)).await?;
    migrator.run(&db.pool).await?;
    Ok(db)
}

fn replace_database(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{url}/{name}"),
    }
}

/// A multiplexed connection to the shared Redis.
pub async fn redis_connection() -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(services().redis_url.as_str())?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("Redis at {} is not reachable", services().redis_url))
}

/// An S3 client for the shared SeaweedFS (path-style, static credentials, ring TLS provider).
pub async fn s3_client() -> aws_sdk_s3::Client {
    let env = services();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let creds = aws_credential_types::Credentials::from_keys(
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
        None,
    );
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(env.s3_region.clone()))
        .credentials_provider(creds)
        .endpoint_url(env.s3_endpoint.clone())
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates a bucket owned by one test and returns its name.
pub async fn fresh_bucket(tag: &str) -> Result<String> {
    let name = unique_name(tag);
    s3_client()
        .await
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .with_context(|| format!("S3 at {} refused CreateBucket", services().s3_endpoint))?;
    Ok(name)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A Redis server owned by one test, for tests that stop and restart Redis.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new(&services().redis_server_bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server on port {} did not start", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills the server (data is lost: no persistence), as a crash would.
    pub fn stop(&mut self) {
        let _ = self.thaw();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP, as a hung process: connections are still accepted by
    /// the kernel, nothing answers.
    pub fn freeze(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let child = self.child.as_ref().context("redis-server is not running")?;
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill {signal} {} failed", child.id());
        }
        Ok(())
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
