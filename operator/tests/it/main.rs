//! The operator's one integration test binary (linking is slow; modules keep it to one).

mod apiserver;
mod builders;
mod crds;
mod network_policy;
mod process;
mod real_apiserver;
mod scenarios;
mod trim;

use std::path::PathBuf;

use serde::de::DeserializeOwned;

/// A fixture from `operator/tests/fixtures/` as a typed object.
pub fn fixture<T: DeserializeOwned>(file: &str) -> T {
    let text = fixture_text(file);
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse fixture {file}: {e}"))
}

/// A fixture as JSON, for CEL checks on raw (possibly invalid) objects.
pub fn fixture_json(file: &str) -> serde_json::Value {
    fixture(file)
}

fn fixture_text(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
