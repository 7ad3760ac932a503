//! The chaos run's own PostgreSQL, Redis and SeaweedFS: the same programs `scripts/services.sh`
//! runs, started here as child processes on fixed loopback ports so that each can be killed,
//! frozen and started again on the same port and data directory by the run itself, without
//! touching the services other tests share.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs::{Proc, Recipe};

pub struct Services {
    pub postgres: Proc,
    pub redis: Proc,
    pub seaweedfs: Proc,
    pub pg_port: u16,
    pub redis_port: u16,
    pub s3_port: u16,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

/// Where the programs are: the shared services' env file names them.
pub struct Programs {
    pub pg_bin_dir: PathBuf,
    pub redis_server: PathBuf,
    pub weed: PathBuf,
}

impl Programs {
    /// From `ARTSTORE_TEST_*` (environment or the services' env file), else where
    /// `scripts/install.sh` puts them.
    pub fn find() -> Programs {
        let setting = |key: &str| std::env::var(key).ok().or_else(|| env_file_value(key));
        let pg_bin_dir = setting("ARTSTORE_TEST_PG_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                ["15", "16", "17"]
                    .iter()
                    .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
                    .find(|d| d.join("initdb").exists())
                    .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
            });
        let redis_server = setting("ARTSTORE_TEST_REDIS_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let weed = setting("ARTSTORE_TEST_WEED_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                let cache = std::env::var("ARTSTORE_CACHE_DIR")
                    .unwrap_or_else(|_| format!("{home}/.cache/artstore"));
                PathBuf::from(cache).join("seaweedfs-venv/bin/weed")
            });
        Programs {
            pg_bin_dir,
            redis_server,
            weed,
        }
    }
}

fn env_file_value(key: &str) -> Option<String> {
    let file = std::env::var("ARTSTORE_SERVICES_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            artstore_testsupport::workspace_root().join("target/artstore-services/services.env")
        });
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        l.split_once('=')
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    })
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user
/// (`setpriv` replaces itself with the program, so the pid is PostgreSQL's own).
fn as_postgres(program: PathBuf, args: Vec<String>) -> (PathBuf, Vec<String>) {
    if !is_root() {
        return (program, args);
    }
    let mut all = vec![
        "--reuid=postgres".to_string(),
        "--regid=postgres".to_string(),
        "--init-groups".to_string(),
        "--".to_string(),
        program.display().to_string(),
    ];
    all.extend(args);
    (PathBuf::from("setpriv"), all)
}

fn run(program: &Path, args: &[String], cwd: &Path) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Services {
    pub fn start(dir: &Path, programs: &Programs) -> Result<Services> {
        let free = crate::ports::fixed_port;
        // PostgreSQL: a fresh cluster in a directory its user owns.
        let pg_dir = dir.join("pg");
        std::fs::create_dir_all(&pg_dir)?;
        if is_root() {
            run(
                Path::new("chown"),
                &["postgres:postgres".into(), pg_dir.display().to_string()],
                dir,
            )?;
        }
        let data = pg_dir.join("data");
        let (prog, args) = as_postgres(
            programs.pg_bin_dir.join("initdb"),
            vec![
                "-D".into(),
                data.display().to_string(),
                "--auth=trust".into(),
                "-U".into(),
                "postgres".into(),
                "-E".into(),
                "UTF8".into(),
                "--locale=C.UTF-8".into(),
                "--no-sync".into(),
            ],
        );
        run(&prog, &args, &pg_dir)?;
        let pg_port = free();
        let (prog, args) = as_postgres(
            programs.pg_bin_dir.join("postgres"),
            [
                "-D",
                &data.display().to_string(),
                "-h",
                "127.0.0.1",
                "-p",
                &pg_port.to_string(),
                "-k",
                &pg_dir.display().to_string(),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=on",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ]
            .map(String::from)
            .to_vec(),
        );
        let postgres = Proc::start(
            "postgres",
            Recipe {
                program: prog,
                args,
                envs: vec![],
                log: dir.join("logs/postgres.log"),
            },
        )?;

        // Redis with an append-only file synced on every write: the stream, its groups and the
        // idempotency keys survive a kill -9, as they would on a Redis run for this job.
        let redis_dir = dir.join("redis");
        std::fs::create_dir_all(&redis_dir)?;
        let redis_port = free();
        let redis = Proc::start(
            "redis",
            Recipe {
                program: programs.redis_server.clone(),
                args: [
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &redis_port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--daemonize",
                    "no",
                    "--dir",
                    &redis_dir.display().to_string(),
                ]
                .map(String::from)
                .to_vec(),
                envs: vec![],
                log: dir.join("logs/redis.log"),
            },
        )?;

        // SeaweedFS: every port explicit and on loopback, credentials enforced.
        let s3_dir = dir.join("s3");
        std::fs::create_dir_all(s3_dir.join("data"))?;
        let s3_port = free();
        let access_key = "chaos".to_string();
        let secret_key = uuid_like();
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", s3_dir.join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{flag}={}", free()));
        }
        args.push(format!("-s3.port={s3_port}"));
        args.extend(
            [
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                "-volume.max=5000",
                "-master.volumeSizeLimitMB=64",
            ]
            .map(String::from),
        );
        let seaweedfs = Proc::start(
            "seaweedfs",
            Recipe {
                program: programs.weed.clone(),
                args,
                envs: vec![
                    ("AWS_ACCESS_KEY_ID".into(), access_key.clone()),
                    ("AWS_SECRET_ACCESS_KEY".into(), secret_key.clone()),
                ],
                log: dir.join("logs/seaweedfs.log"),
            },
        )?;
        Ok(Services {
            postgres,
            redis,
            seaweedfs,
            pg_port,
            redis_port,
            s3_port,
            s3_access_key: access_key,
            s3_secret_key: secret_key,
        })
    }

    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.pg_port)
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    pub fn s3_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }
}

fn uuid_like() -> String {
    (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Waits until PostgreSQL answers a query.
pub async fn postgres_ready(url: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let ok = async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2))
                .connect(url)
                .await?;
            sqlx::query("SELECT 1").execute(&pool).await?;
            pool.close().await;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(3), ok).await {
            Ok(Ok(())) => return Ok(()),
            _ if Instant::now() > deadline => bail!("PostgreSQL not ready within {within:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until Redis answers PING.
pub async fn redis_ready(url: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let ok = async {
            let client = redis::Client::open(url)?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(2), ok).await {
            Ok(Ok(())) => return Ok(()),
            _ if Instant::now() > deadline => bail!("Redis not ready within {within:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until the S3 port gives an S3 answer (the port opens before the filer is up).
pub async fn s3_ready(endpoint: &str, within: Duration) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let ok = http
            .get(format!("{endpoint}/"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| matches!(r.status().as_u16(), 200 | 403));
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("SeaweedFS not ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
