//! The local stack (`artstore dev-stack`: the real binary runs two storage elements, a query
//! node and an ingester against the real services) as a test fixture, and a TCP proxy that
//! breaks connections on purpose.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use artstore_testsupport as ts;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `artstore dev-stack` as a child process, stopped on drop.
pub struct Stack {
    child: Child,
    pub info: Value,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Stack {
    pub fn start(extra_args: &[&str]) -> Stack {
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = ts::services();
        let services_env = tmp.path().join("services.env");
        std::fs::write(
            &services_env,
            format!(
                "ARTSTORE_TEST_DATABASE_URL={}\nARTSTORE_TEST_REDIS_URL={}\nARTSTORE_TEST_S3_ENDPOINT={}\n\
                 ARTSTORE_TEST_S3_REGION={}\nARTSTORE_TEST_S3_ACCESS_KEY={}\nARTSTORE_TEST_S3_SECRET_KEY={}\n",
                env.database_url, env.redis_url, env.s3_endpoint, env.s3_region, env.s3_access_key, env.s3_secret_key
            ),
        )
        .expect("services env");
        let name = ts::unique_name("client").replace('-', "_");
        let dir = tmp.path().join("stack");
        let child = Command::new(env!("CARGO_BIN_EXE_artstore"))
            .arg("dev-stack")
            .arg("--services-env")
            .arg(&services_env)
            .arg("--dir")
            .arg(&dir)
            .args(["--name", &name])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("artstore dev-stack starts");
        let mut stack = Stack {
            child,
            info: Value::Null,
            dir: dir.clone(),
            _tmp: tmp,
        };
        let file = dir.join("stack.json");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !file.exists() {
            if let Ok(Some(status)) = stack.child.try_wait() {
                panic!("dev-stack exited with {status}: {}", stack.logs());
            }
            assert!(
                Instant::now() < deadline,
                "stack not up after 120 s: {}",
                stack.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        stack.info =
            serde_json::from_slice(&std::fs::read(&file).expect("stack.json")).expect("json");
        stack
    }

    pub fn stack_json(&self) -> PathBuf {
        self.dir.join("stack.json")
    }

    pub fn get(&self, key: &str) -> String {
        self.info[key]
            .as_str()
            .unwrap_or_else(|| panic!("stack.json lacks {key}"))
            .to_string()
    }

    pub fn token(&self, role: &str) -> String {
        self.info["tokens"][role]
            .as_str()
            .expect("token")
            .to_string()
    }

    pub fn element_urls(&self) -> Vec<String> {
        self.info["storage_elements"]
            .as_array()
            .expect("elements")
            .iter()
            .filter_map(|e| e["url"].as_str().map(String::from))
            .collect()
    }

    pub fn element_url(&self, id: &str) -> String {
        self.info["storage_elements"]
            .as_array()
            .expect("storage_elements")
            .iter()
            .find(|e| e["id"] == id)
            .and_then(|e| e["url"].as_str())
            .unwrap_or_else(|| panic!("no element {id}"))
            .to_string()
    }

    pub fn secret(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("jwt-secret")).expect("jwt secret")
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["se-a", "se-b", "query-node", "ingester"] {
            let text = std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!(
                "\n--- {name}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

/// What a proxy does to the first connection it accepts; later connections pass untouched.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Forward the request, wait for the first byte of the answer, then drop the connection:
    /// the server did the work, the client never hears of it.
    LoseFirstAnswer,
    /// Forward this many bytes of the answer, then drop the connection.
    CutFirstAnswerAfter(u64),
}

/// A loopback TCP proxy in front of `upstream` (`http://host:port`).
pub struct Proxy {
    pub url: String,
    /// Answer bytes passed to clients over all connections.
    pub answered: Arc<AtomicU64>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str, fault: Fault) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let answered = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (a, c) = (answered.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let index = c.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let a = a.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let limit = match (index, fault) {
                        (0, Fault::LoseFirstAnswer) => Some(0),
                        (0, Fault::CutFirstAnswerAfter(n)) => Some(n),
                        _ => None,
                    };
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let allowed = match limit {
                            Some(l) => (l.saturating_sub(sent) as usize).min(n),
                            None => n,
                        };
                        if allowed > 0 && cw.write_all(&buf[..allowed]).await.is_err() {
                            break;
                        }
                        sent += allowed as u64;
                        a.fetch_add(allowed as u64, Ordering::SeqCst);
                        if limit.is_some_and(|l| sent >= l) {
                            break;
                        }
                    }
                    up.abort();
                    // Dropping both halves closes the client's connection mid-answer.
                });
            }
        });
        Proxy {
            url,
            answered,
            connections,
            task,
        }
    }
}

/// Writes `size` bytes of deterministic, incompressible-looking content.
pub fn write_content(path: &Path, size: usize, seed: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(path, &data).expect("write content");
    data
}

/// The workspace's `target/` directory (screenshots and reports go there).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The cache directory the project's scripts install tools into.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ARTSTORE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/artstore")
        })
}
