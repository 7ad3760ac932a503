//! End to end on a real cluster (`e2e/kind.sh` sets it up): a file uploaded through the
//! ingester is found by search on the query node once its event went through the stream, and
//! downloads byte for byte. Ignored by default; `e2e/kind.sh` runs it with
//! `cargo test -p artstore-e2e --test kind -- --ignored` and these variables:
//!
//! - `ARTSTORE_E2E_INGESTER_URL`, `ARTSTORE_E2E_QUERY_URL` — the port-forwarded Services
//! - `ARTSTORE_E2E_JWT_SECRET` — the shared HS256 secret (examples' `artstore-jwt` Secret)

use std::time::{Duration, Instant};

use artstore_common::auth::{Role, mint};
use serde_json::{Value, json};

struct Cluster {
    ingester: String,
    query: String,
    secret: Vec<u8>,
}

fn cluster() -> Option<Cluster> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("ARTSTORE_E2E_INGESTER_URL"),
        var("ARTSTORE_E2E_QUERY_URL"),
        var("ARTSTORE_E2E_JWT_SECRET"),
    ) {
        (Some(ingester), Some(query), Some(secret)) => Some(Cluster {
            ingester: ingester.trim_end_matches('/').to_string(),
            query: query.trim_end_matches('/').to_string(),
            secret: secret.into_bytes(),
        }),
        _ => None,
    }
}

/// Bytes that compress badly and differ per run, so a stale file cannot pass for this one.
fn content(len: usize, seed: u128) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs a cluster: run e2e/kind.sh"]
async fn upload_search_and_download_through_the_cluster() {
    let Some(cluster) = cluster() else {
        eprintln!(
            "skipped: set ARTSTORE_E2E_INGESTER_URL, ARTSTORE_E2E_QUERY_URL and \
             ARTSTORE_E2E_JWT_SECRET (e2e/kind.sh does) to run the kind end-to-end test"
        );
        return;
    };
    let writer = mint(&cluster.secret, "e2e-writer", Role::Writer, 3600).unwrap();
    let reader = mint(&cluster.secret, "e2e-reader", Role::Reader, 3600).unwrap();
    let http = reqwest::Client::new();

    let run = uuid::Uuid::new_v4().simple().to_string();
    let filename = format!("e2e-report-{run}.bin");
    // Above the ingester's 8 MiB memory spool, so the temporary-file path runs in the image too.
    let body = content(9 * 1024 * 1024 + 17, uuid::Uuid::new_v4().as_u128());

    // Upload through the ingester.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(body.clone())
                .file_name(filename.clone())
                .mime_str("application/octet-stream")
                .unwrap(),
        )
        .text("description", format!("kind end-to-end run {run}"))
        .text("tags", "e2e");
    let response = http
        .post(format!("{}/api/v1/files/upload", cluster.ingester))
        .bearer_auth(&writer)
        .header("Idempotency-Key", format!("e2e-{run}"))
        .multipart(form)
        .send()
        .await
        .expect("the ingester answers");
    let status = response.status();
    let record: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status.as_u16(), 201, "upload: {record}");
    let file_id = record["file_id"].as_str().expect("file_id").to_string();
    assert_eq!(record["size"], json!(body.len()));
    assert_eq!(record["original_filename"], json!(filename));
    let element = record["storage_element_id"].as_str().unwrap().to_string();
    eprintln!("stored {file_id} on {element}");

    // The event reaches the query node through the stream; search finds the file.
    let deadline = Instant::now() + Duration::from_secs(180);
    let found = loop {
        let response = http
            .post(format!("{}/api/v1/search", cluster.query))
            .bearer_auth(&reader)
            .json(&json!({"query": filename, "limit": 10}))
            .send()
            .await;
        if let Ok(response) = response
            && response.status().is_success()
            && let Ok(answer) = response.json::<Value>().await
            && let Some(hit) = answer["results"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["file_id"] == json!(file_id)))
        {
            break hit.clone();
        }
        assert!(
            Instant::now() < deadline,
            "search on the query node did not find {file_id} within 180 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(found["storage_element_id"], json!(element));
    assert_eq!(found["sha256"], record["sha256"]);

    // Download through the query node (it streams from the storage element): byte for byte.
    let response = http
        .get(format!("{}/api/v1/files/{file_id}/download", cluster.query))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let downloaded = response.bytes().await.unwrap();
    assert_eq!(downloaded.len(), body.len());
    assert!(downloaded[..] == body[..], "downloaded bytes differ");

    // A range of it, as a resumed download would ask.
    let response = http
        .get(format!("{}/api/v1/files/{file_id}/download", cluster.query))
        .bearer_auth(&reader)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 206);
    assert_eq!(response.bytes().await.unwrap()[..], body[1000..2000]);
}
