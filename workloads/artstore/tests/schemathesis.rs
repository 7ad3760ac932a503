//! Every role's API fuzzed against its own OpenAPI document with Schemathesis, on the real local
//! stack, once with each role's token: no 5xx, and status codes, content types, headers and
//! bodies as documented (every 4xx the JSON error with a documented `code`). Fixed seed and a
//! bounded number of cases per operation, so the run is repeatable and takes a few minutes.

mod support;

use std::process::Command;

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

/// Runs Schemathesis on one API with one token; returns the number of test cases it ran.
fn fuzz(api: &str, base: &str, role: &str, token: &str) -> u64 {
    let reports = target_dir()
        .join("schemathesis")
        .join(format!("{api}-{role}"));
    std::fs::create_dir_all(&reports).expect("report dir");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let output = Command::new(schemathesis())
        // Schemathesis keeps a cache (`.schemathesis/`) in its working directory.
        .current_dir(&reports)
        .args(["--config-file", config])
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
        .args(["--report", "junit", "--report-dir"])
        .arg(&reports)
        .output()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    std::fs::write(reports.join("output.txt"), format!("{stdout}\n{stderr}")).ok();
    assert!(
        output.status.success(),
        "Schemathesis found problems in the {api} API with the {role} token:\n{stdout}\n{stderr}"
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
    let stack = Stack::start();
    let apis = [
        ("ingester", stack.get("ingester_url")),
        ("storage-element", stack.element_url("se-a")),
        ("query-node", stack.get("query_url")),
    ];
    let mut summary = String::new();
    for (api, base) in &apis {
        let mut total = 0;
        for role in ["admin", "writer", "reader"] {
            let n = fuzz(api, base, role, &stack.token(role));
            assert!(n > 0, "Schemathesis ran no case on the {api} API as {role}");
            summary.push_str(&format!("{api} as {role}: {n} cases\n"));
            total += n;
        }
        summary.push_str(&format!("{api}: {total} cases in all\n"));
    }
    println!("{summary}");
    std::fs::write(target_dir().join("schemathesis/summary.txt"), &summary).ok();
}
