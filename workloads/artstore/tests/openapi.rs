//! The committed OpenAPI documents (`docs/openapi/`) match what the handlers describe, as the
//! CRDs in `crds/` are checked; `cargo run -p artstore -- openapi` rewrites them.

mod support;

use std::process::Command;

#[test]
fn committed_openapi_documents_are_current() {
    let output = Command::new(env!("CARGO_BIN_EXE_artstore"))
        .args(["openapi", "--check"])
        .output()
        .expect("artstore openapi --check runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn documents_are_openapi_3_1_with_the_bearer_scheme_and_error_codes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi");
    for file in ["ingester.json", "storage-element.json", "query-node.json"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).expect("document");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0", "{file}");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
            "{file}"
        );
        let codes = doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: ErrorBody.code lists its values"));
        assert!(codes.iter().any(|c| c == "unauthorized"), "{file}");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{file}: {method} {path} documents 401"
                );
            }
        }
    }
}

#[test]
fn documents_validate_against_the_openapi_3_1_schema() {
    let validator = support::cache_dir().join("schemathesis-venv/bin/openapi-spec-validator");
    assert!(
        validator.exists(),
        "{} is missing: run scripts/install.sh (it installs PyPI openapi-spec-validator)",
        validator.display()
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi");
    for file in ["ingester.json", "storage-element.json", "query-node.json"] {
        let output = Command::new(&validator)
            .args(["--schema", "3.1.0"])
            .arg(format!("{dir}/{file}"))
            .output()
            .expect("openapi-spec-validator runs");
        assert!(
            output.status.success(),
            "{file} is not valid OpenAPI 3.1:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
