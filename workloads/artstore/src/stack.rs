//! `artstore dev-stack`: the whole archive as local processes, for development and the
//! end-to-end test. Two storage elements (one on S3, one on a local directory, different
//! priorities), a query node and an ingester, each a child process running this same binary
//! with the role's real command line and environment — the contract the operator uses.
//!
//! It needs PostgreSQL, Redis and S3 (the env file `scripts/services.sh` writes), creates its own
//! databases, bucket and stream (named after `--name`), writes the registry file, waits until
//! every process is ready, writes `stack.json` and runs until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use artstore_common::auth::{Role, mint};
use artstore_contract::{ElementMode, Registry, RegistryEntry, command, env};
use serde::Serialize;
use tokio::process::{Child, Command};

#[derive(Debug, clap::Args)]
pub struct StackArgs {
    /// The services env file written by `scripts/services.sh start`.
    #[arg(long)]
    pub services_env: PathBuf,
    /// Where the stack keeps its files (registry, secret, volume, logs, `stack.json`).
    #[arg(long, default_value = "target/artstore-dev")]
    pub dir: PathBuf,
    /// Prefix of the databases, bucket and stream this stack creates (lower case, digits, `_`).
    #[arg(long, default_value = "artstore_dev")]
    pub name: String,
    /// Capacity of each storage element, bytes.
    #[arg(long, default_value_t = 10 << 30)]
    pub capacity_bytes: u64,
    /// The ingester's per-client limit; generous, since one developer token does everything.
    #[arg(long, default_value_t = 60_000)]
    pub rate_limit_per_minute: u32,
}

#[derive(Serialize)]
struct StackElement {
    id: String,
    url: String,
    mode: ElementMode,
    priority: i32,
    backend: &'static str,
}

#[derive(Serialize)]
struct Tokens {
    admin: String,
    writer: String,
    reader: String,
}

/// `target/artstore-dev/stack.json`, as the contract fixes it.
#[derive(Serialize)]
struct StackFile {
    ingester_url: String,
    query_url: String,
    /// The web console (served by the query node).
    console_url: String,
    storage_elements: Vec<StackElement>,
    redis_url: String,
    stream: String,
    tokens: Tokens,
}

struct Process {
    name: String,
    child: Child,
}

fn read_env_file(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn database_url(admin_url: &str, name: &str) -> String {
    match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin_url}/{name}"),
    }
}

async fn recreate_database(admin_url: &str, name: &str) -> Result<String> {
    let admin = sqlx::PgPool::connect(admin_url)
        .await
        .with_context(|| format!("PostgreSQL at {admin_url}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(database_url(admin_url, name))
}

impl Process {
    fn spawn(
        name: &str,
        exe: &Path,
        args: &[&str],
        envs: &[(&str, String)],
        logs: &Path,
    ) -> Result<Process> {
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = Command::new(exe)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env(env::LOG_FORMAT, "text")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process {
            name: name.to_string(),
            child,
        })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM first: every role finishes in-flight work on it.
            let _ = Command::new("kill").arg(pid.to_string()).status().await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Runs a one-shot subcommand to completion.
async fn run_once(exe: &Path, args: &[&str], envs: &[(&str, String)]) -> Result<()> {
    let output = Command::new(exe)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "`artstore {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn wait_ready(processes: &mut [Process], urls: &[(String, String)]) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    for (name, url) in urls {
        loop {
            for p in processes.iter_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    bail!(
                        "{} exited with {status} during start-up (see its log)",
                        p.name
                    );
                }
            }
            let ok = http
                .get(format!("{url}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} at {url} was not ready within 90 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

pub async fn run(args: StackArgs) -> Result<()> {
    if args.name.is_empty()
        || !args
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!("--name must be lower-case letters, digits and `_`");
    }
    let services = read_env_file(&args.services_env)?;
    let get = |key: &str| {
        services
            .get(key)
            .cloned()
            .with_context(|| format!("{key} is missing in {}", args.services_env.display()))
    };
    let admin_url = get("ARTSTORE_TEST_DATABASE_URL")?;
    let redis_url = get("ARTSTORE_TEST_REDIS_URL")?;
    let s3 = artstore_element::backend::S3Settings {
        endpoint: get("ARTSTORE_TEST_S3_ENDPOINT")?,
        bucket: format!("{}-se-a", args.name.replace('_', "-")),
        prefix: "archive".into(),
        region: get("ARTSTORE_TEST_S3_REGION")?,
        access_key: get("ARTSTORE_TEST_S3_ACCESS_KEY")?,
        secret_key: get("ARTSTORE_TEST_S3_SECRET_KEY")?,
    };
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;

    // Fresh state for this stack: its databases, its bucket, its stream.
    let se_a_db = recreate_database(&admin_url, &format!("{}_se_a", args.name)).await?;
    let se_b_db = recreate_database(&admin_url, &format!("{}_se_b", args.name)).await?;
    let query_db = recreate_database(&admin_url, &format!("{}_query", args.name)).await?;
    let s3_client = artstore_element::backend::s3_client(&s3, Default::default()).await;
    if s3_client
        .head_bucket()
        .bucket(&s3.bucket)
        .send()
        .await
        .is_err()
    {
        s3_client
            .create_bucket()
            .bucket(&s3.bucket)
            .send()
            .await
            .with_context(|| format!("creating bucket {}", s3.bucket))?;
    }
    let stream = format!("{}:file-events", args.name);
    let redis = redis::Client::open(redis_url.as_str())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await?;

    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let secret_file = dir.join("jwt-secret");
    std::fs::write(&secret_file, &secret)?;
    let volume = dir.join("volume-se-b");
    let _ = std::fs::remove_dir_all(&volume);

    let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let elements = [
        StackElement {
            id: "se-a".into(),
            url: url(ports[0]),
            mode: ElementMode::Edit,
            priority: 20,
            backend: "s3",
        },
        StackElement {
            id: "se-b".into(),
            url: url(ports[1]),
            mode: ElementMode::Edit,
            priority: 10,
            backend: "volume",
        },
    ];
    let registry = Registry {
        elements: elements
            .iter()
            .map(|e| RegistryEntry {
                id: e.id.clone(),
                url: e.url.clone(),
                mode: e.mode,
                priority: e.priority,
                capacity_bytes: args.capacity_bytes,
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
            (env::REDIS_URL, redis_url.clone()),
            (env::STREAM, stream.clone()),
            (
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ]
    };
    let element_env = |port: u16, e: &StackElement, db: &str| {
        let mut v = common(port);
        v.extend([
            (env::ELEMENT_ID, e.id.clone()),
            (env::ELEMENT_MODE, e.mode.as_str().to_string()),
            (env::ELEMENT_PRIORITY, e.priority.to_string()),
            (env::CAPACITY_BYTES, args.capacity_bytes.to_string()),
            (env::DATABASE_URL, db.to_string()),
        ]);
        v
    };
    let mut se_a_env = element_env(ports[0], &elements[0], &se_a_db);
    se_a_env.extend([
        (env::BACKEND, "s3".to_string()),
        (env::S3_ENDPOINT, s3.endpoint.clone()),
        (env::S3_BUCKET, s3.bucket.clone()),
        (env::S3_PREFIX, s3.prefix.clone()),
        (env::S3_REGION, s3.region.clone()),
        (env::S3_ACCESS_KEY, s3.access_key.clone()),
        (env::S3_SECRET_KEY, s3.secret_key.clone()),
    ]);
    let mut se_b_env = element_env(ports[1], &elements[1], &se_b_db);
    se_b_env.extend([
        (env::BACKEND, "volume".to_string()),
        (env::VOLUME_PATH, volume.display().to_string()),
    ]);
    let mut query_env = common(ports[2]);
    query_env.extend([
        (env::DATABASE_URL, query_db.clone()),
        (env::REGISTRY_FILE, registry_file.display().to_string()),
        (env::CONSUMER_NAME, "query-1".to_string()),
        // A local stack has no slow batches; reclaim quickly after a crash.
        (env::CLAIM_MIN_IDLE_MS, "5000".to_string()),
        (env::CONSOLE_INGESTER_URL, url(ports[3])),
    ]);
    let mut ingester_env = common(ports[3]);
    ingester_env.extend([
        (env::REGISTRY_FILE, registry_file.display().to_string()),
        (
            env::RATE_LIMIT_PER_MINUTE,
            args.rate_limit_per_minute.to_string(),
        ),
        // The query node's console uploads and edits through the ingester.
        (env::CORS_ALLOWED_ORIGINS, url(ports[2])),
    ]);

    // The same order the operator enforces: migrations, then stream and group, then consumers.
    let se = command::STORAGE_ELEMENT;
    let qn = command::QUERY_NODE;
    run_once(&exe, &[se, command::MIGRATE], &se_a_env).await?;
    run_once(&exe, &[se, command::MIGRATE], &se_b_env).await?;
    run_once(&exe, &[qn, command::MIGRATE], &query_env).await?;
    run_once(&exe, &[qn, command::ENSURE_GROUP], &query_env).await?;

    let mut processes = vec![
        Process::spawn("se-a", &exe, &[se, command::SERVE], &se_a_env, &logs)?,
        Process::spawn("se-b", &exe, &[se, command::SERVE], &se_b_env, &logs)?,
        Process::spawn("query-node", &exe, &[qn, command::SERVE], &query_env, &logs)?,
        Process::spawn(
            "ingester",
            &exe,
            &[command::INGESTER, command::SERVE],
            &ingester_env,
            &logs,
        )?,
    ];
    let ready = wait_ready(
        &mut processes,
        &[
            ("se-a".into(), url(ports[0])),
            ("se-b".into(), url(ports[1])),
            ("query-node".into(), url(ports[2])),
            ("ingester".into(), url(ports[3])),
        ],
    )
    .await;
    if let Err(e) = ready {
        for p in processes {
            p.stop().await;
        }
        return Err(e.context(format!("logs are in {}", logs.display())));
    }

    let token = |role: Role, sub: &str| mint(secret.as_bytes(), sub, role, 30 * 86_400);
    let stack = StackFile {
        ingester_url: url(ports[3]),
        query_url: url(ports[2]),
        console_url: format!("{}/console/", url(ports[2])),
        storage_elements: elements.into_iter().collect(),
        redis_url: redis_url.clone(),
        stream: stream.clone(),
        tokens: Tokens {
            admin: token(Role::Admin, "dev-admin")?,
            writer: token(Role::Writer, "dev-writer")?,
            reader: token(Role::Reader, "dev-reader")?,
        },
    };
    let stack_file = dir.join("stack.json");
    let tmp = dir.join("stack.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&stack)?)?;
    std::fs::rename(&tmp, &stack_file)?;
    print_summary(&stack, &stack_file, &logs);

    // Run until asked to stop, or until a process dies (then stop the rest and say so).
    let outcome = tokio::select! {
        _ = artstore_common::serve::shutdown_signal() => Ok(()),
        dead = watch_children(&mut processes) => Err(anyhow::anyhow!("{dead} exited; stopping the stack (see {})", logs.display())),
    };
    let _ = std::fs::remove_file(&stack_file);
    for p in processes {
        p.stop().await;
    }
    outcome
}

async fn watch_children(processes: &mut [Process]) -> String {
    loop {
        for p in processes.iter_mut() {
            if let Ok(Some(_)) = p.child.try_wait() {
                return p.name.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_summary(stack: &StackFile, stack_file: &Path, logs: &Path) {
    println!("ArtStore is running:");
    println!("  ingester    {}", stack.ingester_url);
    println!("  query node  {}", stack.query_url);
    println!("  console     {}", stack.console_url);
    for e in &stack.storage_elements {
        println!(
            "  {:<11} {}  ({}, priority {})",
            e.id, e.url, e.backend, e.priority
        );
    }
    println!("  stream      {} on {}", stack.stream, stack.redis_url);
    println!("  details     {}", stack_file.display());
    println!("  logs        {}", logs.display());
    println!();
    println!("Try it:");
    println!("  TOKEN=$(jq -r .tokens.writer {})", stack_file.display());
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -F file=@README.md -F description='first file' -F tags=docs {}/api/v1/files/upload",
        stack.ingester_url
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{{\"query\":\"first\"}}' {}/api/v1/search",
        stack.query_url
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -o copy.md {}/api/v1/files/<file_id>/download",
        stack.query_url
    );
    println!();
    println!("Ctrl-C stops everything.");
}
