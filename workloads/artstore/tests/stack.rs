//! End to end over the local stack: the real `artstore` binary runs two storage elements, a
//! query node and an ingester as processes against real PostgreSQL, Redis and SeaweedFS.
//! Upload through the ingester → searchable on the query node → download byte for byte →
//! update and delete propagate.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use artstore_testsupport as ts;
use serde_json::{Value, json};

struct Stack {
    child: Child,
    info: Value,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
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
            _dir: dir,
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

    fn get(&self, key: &str) -> String {
        self.info[key]
            .as_str()
            .unwrap_or_else(|| panic!("stack.json lacks {key}"))
            .to_string()
    }

    fn token(&self, role: &str) -> String {
        self.info["tokens"][role]
            .as_str()
            .expect("token")
            .to_string()
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
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!(
            "\n--- {name}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    out
}

async fn search(http: &reqwest::Client, stack: &Stack, body: Value) -> Value {
    http.post(format!("{}/api/v1/search", stack.get("query_url")))
        .bearer_auth(stack.token("reader"))
        .json(&body)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("search json")
}

fn ids(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["file_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_search_download_update_delete_across_the_stack() {
    let stack = Stack::start();
    let http = reqwest::Client::new();
    let ingester = stack.get("ingester_url");
    let query = stack.get("query_url");
    assert_eq!(
        stack.info["storage_elements"].as_array().map(Vec::len),
        Some(2)
    );

    // A binary body large enough to be spooled to disk and sent in several chunks.
    let content: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let form = reqwest::multipart::Form::new()
        .text("description", "annual kestrel survey")
        .text("tags", "birds")
        .text("tags", "survey")
        .part(
            "file",
            reqwest::multipart::Part::bytes(content.clone()).file_name("kestrel-survey-2026.csv"),
        );
    let response = http
        .post(format!("{ingester}/api/v1/files/upload"))
        .bearer_auth(stack.token("writer"))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status().as_u16(), 201);
    let record: Value = response.json().await.expect("record");
    let file_id = record["file_id"].as_str().expect("file_id").to_string();
    // Sequential fill: the highest-priority element (S3) takes it.
    assert_eq!(record["storage_element_id"], "se-a");
    assert_eq!(record["size"], 3_000_000);
    assert_eq!(record["created_by"], "dev-writer");

    let found = ts::eventually(
        Duration::from_secs(30),
        "the upload becomes searchable",
        || {
            let http = http.clone();
            let stack = &stack;
            let file_id = file_id.clone();
            async move {
                let r = search(&http, stack, json!({"query": "kestrel"})).await;
                ids(&r).contains(&file_id).then_some(r)
            }
        },
    )
    .await;
    assert_eq!(found["results"][0]["description"], "annual kestrel survey");

    let download = http
        .get(format!("{query}/api/v1/files/{file_id}/download"))
        .bearer_auth(stack.token("reader"))
        .send()
        .await
        .expect("download");
    assert_eq!(download.status().as_u16(), 200);
    let bytes = download.bytes().await.expect("body");
    assert!(
        bytes.as_ref() == content.as_slice(),
        "downloaded bytes differ"
    );

    let ranged = http
        .get(format!("{query}/api/v1/files/{file_id}/download"))
        .bearer_auth(stack.token("reader"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.status().as_u16(), 206);
    assert_eq!(
        ranged.bytes().await.expect("body").as_ref(),
        &content[100..200]
    );

    // Update through the ingester: the query node sees the new description.
    let patched = http
        .patch(format!("{ingester}/api/v1/files/{file_id}"))
        .bearer_auth(stack.token("writer"))
        .json(&json!({"description": "falcon census", "tags": ["birds"]}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status().as_u16(), 200);
    ts::eventually(
        Duration::from_secs(30),
        "the update reaches the query node",
        || {
            let http = http.clone();
            let stack = &stack;
            let file_id = file_id.clone();
            async move {
                let r = search(&http, stack, json!({"query": "falcon"})).await;
                ids(&r).contains(&file_id).then_some(())
            }
        },
    )
    .await;
    let old = search(&http, &stack, json!({"query": "kestrel survey annual"})).await;
    assert!(!ids(&old).contains(&file_id) || old["results"][0]["description"] == "falcon census");

    // Delete through the ingester: gone from search and from the query node.
    let deleted = http
        .delete(format!("{ingester}/api/v1/files/{file_id}"))
        .bearer_auth(stack.token("writer"))
        .send()
        .await
        .expect("delete");
    assert!(
        deleted.status().is_success(),
        "delete: {}",
        deleted.status()
    );
    ts::eventually(
        Duration::from_secs(30),
        "the delete reaches the query node",
        || {
            let http = http.clone();
            let query = query.clone();
            let token = stack.token("reader");
            let file_id = file_id.clone();
            async move {
                let r = http
                    .get(format!("{query}/api/v1/files/{file_id}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?;
                (r.status().as_u16() == 404).then_some(())
            }
        },
    )
    .await;
    let after = search(&http, &stack, json!({"query": "falcon"})).await;
    assert!(!ids(&after).contains(&file_id));

    // A reader may search but not upload.
    let refused = http
        .post(format!("{ingester}/api/v1/files/upload"))
        .bearer_auth(stack.token("reader"))
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(vec![1]).file_name("x.bin"),
        ))
        .send()
        .await
        .expect("upload");
    assert_eq!(refused.status().as_u16(), 403);
}
