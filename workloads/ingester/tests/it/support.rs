use std::path::PathBuf;

use artstore_common::auth::{Role, Verifier, mint};
use artstore_common::registry::RegistryHandle;
use artstore_contract::Registry;
use artstore_ingester::IngesterConfig;

pub const SECRET: &[u8] = b"ingester-test-secret-0123456789";

pub fn token(role: Role, sub: &str) -> String {
    format!("Bearer {}", mint(SECRET, sub, role, 600).expect("mint"))
}

/// The shared secret as a file, as a deployment mounts it (the ingester signs its own calls to
/// storage elements with it).
pub fn secret_file() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("ingester-test-secret-{}", std::process::id()));
        std::fs::write(&path, SECRET).expect("write the secret file");
        path
    })
    .clone()
}

pub fn config(rate_limit_per_minute: u32, max_upload_bytes: u64) -> IngesterConfig {
    IngesterConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        registry_file: PathBuf::from("unused"),
        redis_url: artstore_testsupport::services().redis_url.clone(),
        jwt_secret_file: secret_file(),
        jwt_public_key_file: None,
        jwt_leeway_seconds: 5,
        server: artstore_common::serve::ServerTimeoutArgs {
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 30,
        },
        max_upload_bytes,
        rate_limit_per_minute,
        idempotency_ttl_seconds: 60,
        redis_key_prefix: artstore_testsupport::unique_prefix("ingester"),
        memory_spool_bytes: 64 * 1024,
        cors_allowed_origins: Vec::new(),
        element_connect_timeout_seconds: 3,
        element_idle_timeout_seconds: 10,
        spool_dir: None,
    }
}

/// Serves an ingester on a free port; returns its base URL.
pub async fn start(config: IngesterConfig, registry: RegistryHandle) -> String {
    let ingester = artstore_ingester::build(config, registry, Verifier::hs256(SECRET))
        .await
        .expect("ingester builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(artstore_common::serve::serve_listener(
        listener,
        ingester.router,
        Default::default(),
        std::future::pending(),
    ));
    url
}

pub async fn start_without_elements(rate_limit: u32, max_upload: u64) -> String {
    start(
        config(rate_limit, max_upload),
        RegistryHandle::fixed(Registry::default()),
    )
    .await
}

pub fn file_form(name: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
    )
}

pub async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    (
        status,
        body["code"].as_str().unwrap_or_default().to_string(),
    )
}
