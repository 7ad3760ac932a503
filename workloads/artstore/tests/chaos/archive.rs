//! The archive under test: two storage elements (se-a on S3, se-b on a volume), a query node and
//! an ingester, each the real `artstore` binary with the role's command line and environment (the
//! same contract `artstore dev-stack` and the operator use), as processes this run owns. The
//! registry points at proxies in front of the elements, and clients reach the ingester and the
//! query node through proxies too, so connections can be cut on every hop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use artstore_common::auth::{Role, mint};
use artstore_contract::{ElementMode, Registry, RegistryEntry, command, env};

use crate::procs::{Proc, Recipe};
use crate::proxy::Proxy;
use crate::services::Services;

pub const ELEMENTS: [&str; 2] = ["se-a", "se-b"];
pub const STREAM: &str = "chaos:file-events";
pub const GROUP: &str = artstore_contract::DEFAULT_CONSUMER_GROUP;
/// What the elements treat as an upload in flight before reporting or removing its leftovers;
/// short, so that the repair at the end of a run sees everything a crash left.
pub const ORPHAN_GRACE_SECONDS: u64 = 10;

pub struct Element {
    pub id: &'static str,
    pub url: String,
    pub database_url: String,
    pub proxy: Proxy,
    pub proc: Proc,
}

pub struct Archive {
    pub elements: Vec<Element>,
    pub query: Proc,
    pub query_url: String,
    pub query_proxy: Proxy,
    pub ingester: Proc,
    pub ingester_url: String,
    pub ingester_proxy: Proxy,
    pub secret: Vec<u8>,
    pub bucket: String,
    pub volume: PathBuf,
    pub spool: PathBuf,
    pub s3: artstore_element::backend::S3Settings,
}

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_artstore"))
}

async fn create_database(admin_url: &str, name: &str) -> Result<()> {
    let admin = sqlx::PgPool::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(())
}

fn run_once(args: &[&str], envs: &[(String, String)]) -> Result<()> {
    let out = std::process::Command::new(exe())
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()?;
    if !out.status.success() {
        bail!(
            "artstore {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn pairs(v: &[(&str, String)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, val)| (k.to_string(), val.clone()))
        .collect()
}

impl Archive {
    pub async fn start(dir: &Path, services: &Services) -> Result<Archive> {
        let free = crate::ports::fixed_port;
        let admin_url = services.database_url("postgres");
        for db in ["chaos_se_a", "chaos_se_b", "chaos_query"] {
            create_database(&admin_url, db).await?;
        }
        let s3 = artstore_element::backend::S3Settings {
            endpoint: services.s3_endpoint(),
            bucket: "chaos-se-a".into(),
            prefix: "archive".into(),
            region: "us-east-1".into(),
            access_key: services.s3_access_key.clone(),
            secret_key: services.s3_secret_key.clone(),
        };
        let s3_client = artstore_element::backend::s3_client(&s3, Default::default()).await;
        s3_client
            .create_bucket()
            .bucket(&s3.bucket)
            .send()
            .await
            .context("creating the bucket")?;

        // The processes use the file's text as the key, as `artstore dev-stack` writes it.
        let secret_hex: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let secret_file = dir.join("jwt-secret");
        std::fs::write(&secret_file, &secret_hex)?;
        let secret = secret_hex.into_bytes();
        let volume = dir.join("volume-se-b");
        let spool = dir.join("spool");
        std::fs::create_dir_all(&spool)?;
        let logs = dir.join("logs");

        let ports: Vec<u16> = (0..4).map(|_| free()).collect();
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let mut element_proxies = Vec::new();
        for port in &ports[..2] {
            element_proxies.push(Proxy::start(format!("127.0.0.1:{port}")).await);
        }
        let registry = Registry {
            elements: ELEMENTS
                .iter()
                .zip(&element_proxies)
                .enumerate()
                .map(|(i, (id, proxy))| RegistryEntry {
                    id: id.to_string(),
                    url: proxy.url.clone(),
                    mode: ElementMode::Edit,
                    priority: if i == 0 { 20 } else { 10 },
                    capacity_bytes: 10 << 30,
                    used_bytes: 0,
                })
                .collect(),
        };
        let registry_file = dir.join(artstore_contract::REGISTRY_FILE_NAME);
        std::fs::write(&registry_file, serde_json::to_vec_pretty(&registry)?)?;

        let common = |listen: u16| {
            vec![
                (env::LISTEN, format!("127.0.0.1:{listen}")),
                (env::JWT_SECRET_FILE, secret_file.display().to_string()),
                (env::REDIS_URL, services.redis_url()),
                (env::STREAM, STREAM.to_string()),
                (env::LOG_FORMAT, "text".to_string()),
                (
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                ),
            ]
        };
        let element_env = |i: usize, db: &str| {
            let mut v = common(ports[i]);
            v.extend([
                (env::ELEMENT_ID, ELEMENTS[i].to_string()),
                (env::ELEMENT_MODE, "edit".to_string()),
                (
                    env::ELEMENT_PRIORITY,
                    registry.elements[i].priority.to_string(),
                ),
                (env::CAPACITY_BYTES, (10u64 << 30).to_string()),
                (env::DATABASE_URL, services.database_url(db)),
                (env::ORPHAN_GRACE_SECONDS, ORPHAN_GRACE_SECONDS.to_string()),
            ]);
            v
        };
        let mut se_a_env = element_env(0, "chaos_se_a");
        se_a_env.extend([
            (env::BACKEND, "s3".to_string()),
            (env::S3_ENDPOINT, s3.endpoint.clone()),
            (env::S3_BUCKET, s3.bucket.clone()),
            (env::S3_PREFIX, s3.prefix.clone()),
            (env::S3_REGION, s3.region.clone()),
            (env::S3_ACCESS_KEY, s3.access_key.clone()),
            (env::S3_SECRET_KEY, s3.secret_key.clone()),
        ]);
        let mut se_b_env = element_env(1, "chaos_se_b");
        se_b_env.extend([
            (env::BACKEND, "volume".to_string()),
            (env::VOLUME_PATH, volume.display().to_string()),
        ]);
        let mut query_env = common(ports[2]);
        query_env.extend([
            (env::DATABASE_URL, services.database_url("chaos_query")),
            (env::REGISTRY_FILE, registry_file.display().to_string()),
            (env::CONSUMER_NAME, "query-1".to_string()),
            (env::CLAIM_MIN_IDLE_MS, "5000".to_string()),
        ]);
        let mut ingester_env = common(ports[3]);
        ingester_env.extend([
            (env::REGISTRY_FILE, registry_file.display().to_string()),
            (env::RATE_LIMIT_PER_MINUTE, "1000000".to_string()),
            (env::SPOOL_DIR, spool.display().to_string()),
        ]);
        let (se_a_env, se_b_env, query_env, ingester_env) = (
            pairs(&se_a_env),
            pairs(&se_b_env),
            pairs(&query_env),
            pairs(&ingester_env),
        );

        let (se, qn) = (command::STORAGE_ELEMENT, command::QUERY_NODE);
        run_once(&[se, command::MIGRATE], &se_a_env)?;
        run_once(&[se, command::MIGRATE], &se_b_env)?;
        run_once(&[qn, command::MIGRATE], &query_env)?;
        run_once(&[qn, command::ENSURE_GROUP], &query_env)?;

        let recipe = |args: &[&str], envs: &[(String, String)], name: &str| Recipe {
            program: exe(),
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs.to_vec(),
            log: logs.join(format!("{name}.log")),
        };
        let mut elements = Vec::new();
        for (i, (envs, proxy)) in [se_a_env, se_b_env]
            .into_iter()
            .zip(element_proxies)
            .enumerate()
        {
            let id = ELEMENTS[i];
            elements.push(Element {
                id,
                url: url(ports[i]),
                database_url: services.database_url(if i == 0 {
                    "chaos_se_a"
                } else {
                    "chaos_se_b"
                }),
                proxy,
                proc: Proc::start(id, recipe(&[se, command::SERVE], &envs, id))?,
            });
        }
        let query = Proc::start(
            "query-node",
            recipe(&[qn, command::SERVE], &query_env, "query-node"),
        )?;
        let ingester = Proc::start(
            "ingester",
            recipe(
                &[command::INGESTER, command::SERVE],
                &ingester_env,
                "ingester",
            ),
        )?;
        let archive = Archive {
            elements,
            query,
            query_url: url(ports[2]),
            query_proxy: Proxy::start(format!("127.0.0.1:{}", ports[2])).await,
            ingester,
            ingester_url: url(ports[3]),
            ingester_proxy: Proxy::start(format!("127.0.0.1:{}", ports[3])).await,
            secret,
            bucket: s3.bucket.clone(),
            volume,
            spool,
            s3,
        };
        for url in archive.direct_urls() {
            ready(&url, Duration::from_secs(90)).await?;
        }
        Ok(archive)
    }

    /// Every process's own address (no proxy), for readiness and the final checks.
    pub fn direct_urls(&self) -> Vec<String> {
        let mut v: Vec<String> = self.elements.iter().map(|e| e.url.clone()).collect();
        v.push(self.query_url.clone());
        v.push(self.ingester_url.clone());
        v
    }

    pub fn token(&self, role: Role, sub: &str) -> String {
        mint(&self.secret, sub, role, 7 * 86_400).expect("token")
    }
}

/// Waits until `url/readyz` answers 200.
pub async fn ready(url: &str, within: Duration) -> Result<()> {
    answers(url, "/readyz", within, Duration::from_millis(200)).await
}

/// Waits until `url/healthz` answers 200 (the process serves, whatever its dependencies do).
pub async fn healthy(url: &str, within: Duration) -> Result<()> {
    answers(url, "/healthz", within, Duration::from_millis(100)).await
}

/// Polls `url` + `path` every `poll` until it answers 2xx, for at most `within`.
async fn answers(url: &str, path: &str, within: Duration, poll: Duration) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let ok = http
            .get(format!("{url}{path}"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url}{path} did not answer 2xx within {within:?}");
        }
        tokio::time::sleep(poll).await;
    }
}
