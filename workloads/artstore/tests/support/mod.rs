//! The local stack (`artstore dev-stack`) for the API-conformance and browser tests: the real
//! binary runs two storage elements, a query node and an ingester against the real services.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use artstore_testsupport as ts;
use serde_json::Value;

pub struct Stack {
    child: Child,
    pub info: Value,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub fn start() -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = ts::services();
        let services_env = dir.path().join("services.env");
        std::fs::write(
            &services_env,
            format!(
                "ARTSTORE_TEST_DATABASE_URL={}\nARTSTORE_TEST_REDIS_URL={}\nARTSTORE_TEST_S3_ENDPOINT={}\n\
                 ARTSTORE_TEST_S3_REGION={}\nARTSTORE_TEST_S3_ACCESS_KEY={}\nARTSTORE_TEST_S3_SECRET_KEY={}\n",
                env.database_url, env.redis_url, env.s3_endpoint, env.s3_region, env.s3_access_key, env.s3_secret_key
            ),
        )
        .expect("services env");
        let name = ts::unique_name("stack").replace('-', "_");
        let stack_dir = dir.path().join("stack");
        let child = Command::new(env!("CARGO_BIN_EXE_artstore"))
            .arg("dev-stack")
            .arg("--services-env")
            .arg(&services_env)
            .arg("--dir")
            .arg(&stack_dir)
            .args(["--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("artstore dev-stack starts");
        let mut stack = Stack {
            child,
            info: Value::Null,
            dir,
        };
        let file = stack_dir.join("stack.json");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !file.exists() {
            if let Ok(Some(status)) = stack.child.try_wait() {
                panic!("dev-stack exited with {status}: {}", logs(&stack_dir));
            }
            assert!(
                Instant::now() < deadline,
                "stack not up after 120 s: {}",
                logs(&stack_dir)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        stack.info =
            serde_json::from_slice(&std::fs::read(&file).expect("stack.json")).expect("json");
        stack
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

    pub fn logs(&self) -> String {
        logs(&self.dir.path().join("stack"))
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

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["se-a", "se-b", "query-node", "ingester"] {
        let text = std::fs::read_to_string(dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        out.push_str(&format!(
            "\n--- {name}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    out
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
