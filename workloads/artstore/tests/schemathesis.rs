//! Every role's API fuzzed against its own OpenAPI document with Schemathesis, on the real local
//! stack, with each role's token, with generated ids and then on a stored file: no 5xx, and
//! status codes, content types, headers and bodies as documented (every 4xx the JSON error with
//! a documented `code`). Fixed seed and a
//! bounded number of cases per operation, so the run is repeatable and takes a few minutes.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Stack, cache_dir, target_dir};

/// Cases per operation and phase; with three roles this keeps the whole run to a few minutes.
const MAX_EXAMPLES: &str = "25";
const SEED: &str = "20261128";
/// Seconds one request may take before Schemathesis reports it.
const REQUEST_TIMEOUT: &str = "30";

fn schemathesis() -> std::path::PathBuf {
    let bin = cache_dir().join("schemathesis-venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/install.sh (it installs PyPI schemathesis)",
        bin.display()
    );
    bin
}

/// Stores a file through the ingester and waits until the query node has indexed it, so the
/// operations that take a file id are fuzzed against a real file (a fresh one per run: the
/// admin's and writer's runs may delete it).
fn stored_file(stack: &Stack) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(b"fuzz target\n".repeat(100))
                    .file_name("target.txt"),
            )
            .text("tags", "fuzz");
        let record: serde_json::Value = client
            .post(format!("{}/api/v1/files/upload", stack.get("ingester_url")))
            .bearer_auth(stack.token("writer"))
            .multipart(form)
            .send()
            .await
            .expect("upload")
            .error_for_status()
            .expect("upload stored")
            .json()
            .await
            .expect("record");
        let id = record["file_id"].as_str().expect("file_id").to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = client
                .get(format!("{}/api/v1/files/{id}", stack.get("query_url")))
                .bearer_auth(stack.token("reader"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if found {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "the query node did not index {id}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Runs Schemathesis on one API with one token, twice: every operation with generated ids
/// (mostly 404s, and the refusal of ids that are not file ids), then the operations that take
/// a file id (but DELETE) with `file_id`, a file stored for this run (reads, Range, ETag and
/// edits checked on a real file). Returns the number of test cases both ran.
fn fuzz(api: &str, base: &str, role: &str, token: &str, file_id: &str) -> u64 {
    let reports = target_dir()
        .join("schemathesis")
        .join(format!("{api}-{role}"));
    std::fs::create_dir_all(&reports).expect("report dir");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let base_config = std::fs::read_to_string(config).expect("schemathesis.toml");
    let stored_config = reports.join("stored-file.toml");
    std::fs::write(
        &stored_config,
        format!("{base_config}\n[parameters]\n\"path.id\" = \"{file_id}\"\n"),
    )
    .expect("config with the stored file");
    let generated = run(
        api,
        base,
        role,
        token,
        &reports,
        Path::new(config),
        &[],
        "generated-ids",
    );
    let stored = run(
        api,
        base,
        role,
        token,
        &reports,
        &stored_config,
        // DELETE stays with generated ids: deleting the file would leave the rest 404s.
        &[
            "--include-path-regex",
            r"\{id\}",
            "--exclude-method",
            "DELETE",
        ],
        "stored-file",
    );
    generated + stored
}

#[allow(clippy::too_many_arguments)]
fn run(
    api: &str,
    base: &str,
    role: &str,
    token: &str,
    reports: &Path,
    config: &Path,
    extra: &[&str],
    pass: &str,
) -> u64 {
    let output = Command::new(schemathesis())
        // Schemathesis keeps a cache (`.schemathesis/`) in its working directory.
        .current_dir(reports)
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(format!("{base}/api/openapi.json"))
        .args(["--url", base])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--generation-database", "none", "--no-color"])
        // One worker: Python 3.11's `ast` is not thread-safe ("AST constructor recursion depth
        // mismatch" inside Hypothesis), and one worker keeps the order of cases fixed.
        .args(["--workers", "1"])
        // A request that hangs is a failure, not a stuck run.
        .args(["--request-timeout", REQUEST_TIMEOUT])
        .args(extra)
        .args(["--report", "junit", "--report-junit-path"])
        .arg(reports.join(format!("{pass}.xml")))
        .output()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    std::fs::write(
        reports.join(format!("{pass}.txt")),
        format!("{stdout}\n{stderr}"),
    )
    .ok();
    assert!(
        output.status.success(),
        "Schemathesis found problems in the {api} API with the {role} token ({pass}):\n{stdout}\n{stderr}"
    );
    cases(&stdout)
        .unwrap_or_else(|| panic!("no test case count in Schemathesis' summary:\n{stdout}"))
}

/// "Test cases: N generated, …" from the summary.
fn cases(summary: &str) -> Option<u64> {
    let at = summary.find("Test cases:")?;
    summary[at..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|part| !part.is_empty())
        .and_then(|n| n.parse().ok())
}

#[test]
fn every_api_conforms_to_its_openapi_document() {
    let stack = Stack::start(&[]);
    let apis = [
        ("ingester", stack.get("ingester_url")),
        ("storage-element", stack.element_url("se-a")),
        ("query-node", stack.get("query_url")),
    ];
    let mut summary = String::new();
    for (api, base) in &apis {
        let mut total = 0;
        for role in ["admin", "writer", "reader"] {
            let file_id = stored_file(&stack);
            let n = fuzz(api, base, role, &stack.token(role), &file_id);
            assert!(n > 0, "Schemathesis ran no case on the {api} API as {role}");
            summary.push_str(&format!("{api} as {role}: {n} cases\n"));
            total += n;
        }
        summary.push_str(&format!("{api}: {total} cases in all\n"));
    }
    println!("{summary}");
    std::fs::write(target_dir().join("schemathesis/summary.txt"), &summary).ok();
}
