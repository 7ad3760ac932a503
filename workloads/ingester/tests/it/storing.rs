//! The ingester in front of real storage elements (PostgreSQL + a local directory each).

use std::sync::Arc;
use std::time::Duration;

use artstore_common::auth::{Role, Verifier};
use artstore_common::registry::RegistryHandle;
use artstore_contract::{ElementMode, Registry, RegistryEntry};
use artstore_element::{BackendConfig, ElementConfig, RunningElement};
use artstore_testsupport as ts;
use serde_json::Value;

use crate::support::*;

struct TestElement {
    running: RunningElement,
    db: ts::TestDatabase,
    _dir: tempfile::TempDir,
}

impl TestElement {
    async fn start(id: &str, capacity_bytes: u64, mode: ElementMode) -> TestElement {
        let db = ts::fresh_database("storage-element")
            .await
            .expect("database");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ElementConfig::new(
            id,
            BackendConfig::Volume {
                path: dir.path().join("volume"),
            },
            db.url.clone(),
            ts::services().redis_url.clone(),
            ts::unique_prefix("ingester-element"),
            Verifier::hs256(SECRET),
        );
        config.capacity_bytes = capacity_bytes;
        config.mode = mode;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = artstore_element::build(config)
            .await
            .expect("element builds")
            .start(listener)
            .expect("element starts");
        TestElement {
            running,
            db,
            _dir: dir,
        }
    }

    fn entry(
        &self,
        id: &str,
        priority: i32,
        mode: ElementMode,
        capacity_bytes: u64,
    ) -> RegistryEntry {
        RegistryEntry {
            id: id.into(),
            url: self.running.url(),
            mode,
            priority,
            capacity_bytes,
            used_bytes: 0,
        }
    }

    async fn file_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM files")
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }

    async fn stop(self) {
        self.running.shutdown().await;
        self.db.pool.close().await;
    }
}

async fn upload(
    url: &str,
    auth: &str,
    name: &str,
    bytes: Vec<u8>,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", auth)
        .multipart(file_form(name, bytes));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("upload request")
}

#[tokio::test]
async fn sequential_fill_moves_to_the_next_element_when_the_first_is_full() {
    let first = TestElement::start("se-first", 10_000, ElementMode::Edit).await;
    let second = TestElement::start("se-second", 1 << 30, ElementMode::Edit).await;
    // The registry does not know `se-first` is filling up: the element's own 507 decides.
    let registry = Registry {
        elements: vec![
            second.entry("se-second", 1, ElementMode::Edit, 1 << 30),
            first.entry("se-first", 10, ElementMode::Edit, 10_000),
        ],
    };
    let url = start(config(1000, 1 << 20), RegistryHandle::fixed(registry)).await;
    let auth = token(Role::Writer, "filler");

    let a: Value = upload(&url, &auth, "a.bin", vec![1; 6000], None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(a["storage_element_id"], "se-first", "{a}");
    let b = upload(&url, &auth, "b.bin", vec![2; 6000], None).await;
    assert_eq!(b.status().as_u16(), 201);
    let b: Value = b.json().await.expect("json");
    assert_eq!(b["storage_element_id"], "se-second", "{b}");
    assert_eq!(first.file_count().await, 1);
    assert_eq!(second.file_count().await, 1);

    // Bigger than anything has room for: refused with a reason, nothing stored anywhere.
    let registry_small = start(
        config(1000, 1 << 30),
        RegistryHandle::fixed(Registry {
            elements: vec![first.entry("se-first", 10, ElementMode::Edit, 10_000)],
        }),
    )
    .await;
    let c = upload(&registry_small, &auth, "c.bin", vec![3; 6000], None).await;
    assert_eq!(error_code(c).await, (503, "no_storage_available".into()));
    assert_eq!(first.file_count().await, 1);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_read_only_or_failing_element_is_passed_over() {
    let readonly = TestElement::start("se-ro", 1 << 30, ElementMode::Ro).await;
    let writable = TestElement::start("se-rw", 1 << 30, ElementMode::Rw).await;
    let registry = RegistryHandle::fixed(Registry {
        elements: vec![
            // The registry still says `rw`: the element's 409 makes the ingester move on.
            readonly.entry("se-ro", 30, ElementMode::Rw, 1 << 30),
            // Nothing listens here.
            RegistryEntry {
                id: "se-gone".into(),
                url: format!("http://127.0.0.1:{}", ts::free_port()),
                mode: ElementMode::Edit,
                priority: 20,
                capacity_bytes: 1 << 30,
                used_bytes: 0,
            },
            writable.entry("se-rw", 10, ElementMode::Rw, 1 << 30),
        ],
    });
    let url = start(config(1000, 1 << 20), registry.clone()).await;
    let auth = token(Role::Writer, "w");
    let r: Value = upload(&url, &auth, "x.txt", b"hello".to_vec(), None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(r["storage_element_id"], "se-rw", "{r}");
    assert_eq!(readonly.file_count().await, 0);

    // A registry change is taken at once: with only the read-only element left, 503.
    registry.set(Registry {
        elements: vec![readonly.entry("se-ro", 30, ElementMode::Ro, 1 << 30)],
    });
    let refused = upload(&url, &auth, "y.txt", b"hello".to_vec(), None).await;
    assert_eq!(
        error_code(refused).await,
        (503, "no_storage_available".into())
    );
    readonly.stop().await;
    writable.stop().await;
}

#[tokio::test]
async fn idempotency_key_replays_refuses_other_content_and_stores_once_under_concurrency() {
    let element = TestElement::start("se-idem", 1 << 30, ElementMode::Edit).await;
    let registry = RegistryHandle::fixed(Registry {
        elements: vec![element.entry("se-idem", 1, ElementMode::Edit, 1 << 30)],
    });
    let url = start(config(1000, 1 << 20), registry).await;
    let auth = token(Role::Writer, "retrier");

    let first = upload(
        &url,
        &auth,
        "invoice.pdf",
        b"%PDF-1 invoice".to_vec(),
        Some("key-1"),
    )
    .await;
    assert_eq!(first.status().as_u16(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");

    let again = upload(
        &url,
        &auth,
        "invoice.pdf",
        b"%PDF-1 invoice".to_vec(),
        Some("key-1"),
    )
    .await;
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["file_id"], first["file_id"]);

    let other = upload(
        &url,
        &auth,
        "invoice.pdf",
        b"%PDF-1 different".to_vec(),
        Some("key-1"),
    )
    .await;
    assert_eq!(
        error_code(other).await,
        (422, "idempotency_key_reused".into())
    );
    assert_eq!(element.file_count().await, 1);

    // The same key from another client is another key.
    let other_client = upload(
        &url,
        &token(Role::Writer, "someone-else"),
        "invoice.pdf",
        b"%PDF-1 invoice".to_vec(),
        Some("key-1"),
    )
    .await;
    assert_eq!(other_client.status().as_u16(), 201);
    assert_eq!(element.file_count().await, 2);

    // Eight concurrent requests with one new key: one file, one id for all.
    let body = Arc::new(vec![9u8; 200_000]);
    let requests = (0..8).map(|_| {
        let url = url.clone();
        let auth = auth.clone();
        let body = body.clone();
        async move {
            let r = upload(&url, &auth, "race.bin", body.to_vec(), Some("key-race")).await;
            let status = r.status().as_u16();
            let json: Value = r.json().await.expect("json");
            (status, json["file_id"].clone())
        }
    });
    let results = futures::future::join_all(requests).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let replayed = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, replayed), (1, 7), "{results:?}");
    assert!(results.iter().all(|(_, id)| *id == results[0].1));
    assert_eq!(element.file_count().await, 3);

    // A failed upload releases its key: the retry stores the file.
    let tiny = start(
        config(1000, 10),
        RegistryHandle::fixed(Registry {
            elements: vec![element.entry("se-idem", 1, ElementMode::Edit, 1 << 30)],
        }),
    )
    .await;
    let too_big = upload(&tiny, &auth, "big.bin", vec![0; 100], Some("key-retry")).await;
    assert_eq!(too_big.status().as_u16(), 413);
    let retry = upload(&url, &auth, "big.bin", vec![0; 100], Some("key-retry")).await;
    assert_eq!(retry.status().as_u16(), 201);
    element.stop().await;
}

#[tokio::test]
async fn batch_stores_each_part_on_its_own() {
    let element = TestElement::start("se-batch", 1 << 30, ElementMode::Edit).await;
    let registry = RegistryHandle::fixed(Registry {
        elements: vec![element.entry("se-batch", 1, ElementMode::Edit, 1 << 30)],
    });
    let url = start(config(1000, 50_000), registry).await;
    let part = |name: &str, bytes: Vec<u8>| {
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_string())
    };
    let form = reqwest::multipart::Form::new()
        .text("description", "batch of three")
        .part("file", part("one.txt", b"first".to_vec()))
        .part("file", part("../../etc/passwd", b"sneaky".to_vec()))
        .part("file", part("huge.bin", vec![0; 60_000]))
        .part("file", part("four.txt", b"fourth".to_vec()));
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v1/files/batch"))
        .header("authorization", token(Role::Writer, "batcher"))
        .multipart(form)
        .send()
        .await
        .expect("batch");
    assert_eq!(response.status().as_u16(), 207);
    let body: Value = response.json().await.expect("json");
    let results = body["results"].as_array().expect("results");
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        vec!["stored", "rejected", "rejected", "stored"],
        "{body}"
    );
    assert_eq!(results[1]["error"]["code"], "invalid_filename");
    assert_eq!(results[2]["error"]["code"], "file_too_large");
    assert_eq!(results[3]["index"], 3);
    assert_eq!(results[0]["record"]["description"], "batch of three");
    assert!(results[0]["file_id"].is_string());
    assert_eq!(element.file_count().await, 2);
    element.stop().await;
}

#[tokio::test]
async fn metadata_changes_reach_the_owning_element() {
    let a = TestElement::start("se-a", 1 << 30, ElementMode::Edit).await;
    let b = TestElement::start("se-b", 1 << 30, ElementMode::Edit).await;
    let registry = RegistryHandle::fixed(Registry {
        elements: vec![
            a.entry("se-a", 2, ElementMode::Edit, 1 << 30),
            b.entry("se-b", 1, ElementMode::Edit, 1 << 30),
        ],
    });
    let url = start(config(1000, 1 << 20), registry.clone()).await;
    let auth = token(Role::Writer, "editor");
    let record: Value = upload(&url, &auth, "notes.txt", b"v1".to_vec(), None)
        .await
        .json()
        .await
        .expect("json");
    let id = record["file_id"].as_str().expect("id").to_string();
    // Put the owner last in the registry, so the lookup really searches.
    registry.set(Registry {
        elements: vec![
            b.entry("se-b", 1, ElementMode::Edit, 1 << 30),
            a.entry("se-a", 2, ElementMode::Edit, 1 << 30),
        ],
    });
    let http = reqwest::Client::new();
    let patched = http
        .patch(format!("{url}/api/v1/files/{id}"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"description": "edited", "tags": ["x"]}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status().as_u16(), 200);
    let patched: Value = patched.json().await.expect("json");
    assert_eq!(patched["description"], "edited");
    assert_eq!(patched["version"], 2);

    let other_user = http
        .delete(format!("{url}/api/v1/files/{id}"))
        .header("authorization", token(Role::Writer, "stranger"))
        .send()
        .await
        .expect("delete");
    assert_eq!(
        other_user.status().as_u16(),
        403,
        "only the owner or an admin deletes"
    );

    let deleted = http
        .delete(format!("{url}/api/v1/files/{id}"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    assert_eq!(a.file_count().await, 0);
    let again = http
        .delete(format!("{url}/api/v1/files/{id}"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("delete");
    assert_eq!(error_code(again).await, (404, "file_not_found".into()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn idempotency_keys_expire_after_their_ttl() {
    let element = TestElement::start("se-ttl", 1 << 30, ElementMode::Edit).await;
    let mut short = config(1000, 1 << 20);
    short.idempotency_ttl_seconds = 1;
    let url = start(
        short,
        RegistryHandle::fixed(Registry {
            elements: vec![element.entry("se-ttl", 1, ElementMode::Edit, 1 << 30)],
        }),
    )
    .await;
    let auth = token(Role::Writer, "forgetful");
    let first: Value = upload(&url, &auth, "a.txt", b"same".to_vec(), Some("ttl-key"))
        .await
        .json()
        .await
        .expect("json");
    let replay = upload(&url, &auth, "a.txt", b"same".to_vec(), Some("ttl-key")).await;
    assert_eq!(replay.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = upload(&url, &auth, "a.txt", b"same".to_vec(), Some("ttl-key")).await;
    assert_eq!(
        later.status().as_u16(),
        201,
        "an expired key is a new request"
    );
    let later: Value = later.json().await.expect("json");
    assert_ne!(later["file_id"], first["file_id"]);
    assert_eq!(element.file_count().await, 2);
    element.stop().await;
}

/// The files of a batch share the single upload's limit: over it, nothing is stored (the form
/// is read whole before anything is), so a batch never costs more spool space than an upload.
#[tokio::test]
async fn a_batch_over_the_upload_limit_in_all_stores_nothing() {
    let element = TestElement::start("se-batch-total", 1 << 30, ElementMode::Edit).await;
    let registry = RegistryHandle::fixed(Registry {
        elements: vec![element.entry("se-batch-total", 1, ElementMode::Edit, 1 << 30)],
    });
    let url = start(config(1000, 50_000), registry).await;
    let part =
        |name: &str| reqwest::multipart::Part::bytes(vec![1u8; 30_000]).file_name(name.to_string());
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v1/files/batch"))
        .header("authorization", token(Role::Writer, "batcher"))
        .multipart(
            reqwest::multipart::Form::new()
                .part("file", part("a.bin"))
                .part("file", part("b.bin")),
        )
        .send()
        .await
        .expect("batch");
    assert_eq!(error_code(response).await, (413, "batch_too_large".into()));
    assert_eq!(element.file_count().await, 0);
    element.stop().await;
}

#[tokio::test]
async fn a_batch_with_a_bad_metadata_field_stores_nothing() {
    let element = TestElement::start("se-batch-meta", 1 << 30, ElementMode::Edit).await;
    let registry = RegistryHandle::fixed(Registry {
        elements: vec![element.entry("se-batch-meta", 1, ElementMode::Edit, 1 << 30)],
    });
    let url = start(config(1000, 50_000), registry).await;
    let part =
        |name: &str| reqwest::multipart::Part::bytes(b"bytes".to_vec()).file_name(name.to_string());
    // The fields come after the file: the whole form is read before anything is stored.
    let forms = [
        (
            "invalid_retention",
            reqwest::multipart::Form::new()
                .part("file", part("a.txt"))
                .text("retention", "forever"),
        ),
        (
            "invalid_tag",
            reqwest::multipart::Form::new()
                .part("file", part("b.txt"))
                .text("tags", "a\u{1}b"),
        ),
        (
            "missing_file",
            reqwest::multipart::Form::new().text("description", "no file"),
        ),
    ];
    for (code, form) in forms {
        let response = reqwest::Client::new()
            .post(format!("{url}/api/v1/files/batch"))
            .header("authorization", token(Role::Writer, "batcher"))
            .multipart(form)
            .send()
            .await
            .expect("batch");
        assert_eq!(response.status().as_u16(), 400, "{code}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], code, "{body}");
    }
    assert_eq!(element.file_count().await, 0);
    element.stop().await;
}

/// A storage element that has frozen (as a process stopped by SIGSTOP looks from outside: the
/// kernel still completes connections into the listen backlog and buffers what fits, nothing
/// answers) costs an upload one idle timeout, then the next element takes it.
#[tokio::test]
async fn a_frozen_element_is_given_up_after_the_idle_timeout() {
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let frozen_url = format!("http://{}", frozen.local_addr().expect("addr"));
    let healthy = TestElement::start("se-healthy", 1 << 30, ElementMode::Edit).await;
    let registry = Registry {
        elements: vec![
            RegistryEntry {
                id: "se-frozen".into(),
                url: frozen_url,
                mode: ElementMode::Edit,
                priority: 100,
                capacity_bytes: 1 << 30,
                used_bytes: 0,
            },
            healthy.entry("se-healthy", 1, ElementMode::Edit, 1 << 30),
        ],
    };
    let mut config = config(1000, 16 << 20);
    config.element_idle_timeout_seconds = 1;
    let url = start(config, RegistryHandle::fixed(registry)).await;
    let auth = token(Role::Writer, "frozen-client");

    // Larger than the socket buffers, so the frozen element stops taking data mid-body.
    let big = (0..8 << 20)
        .map(|i: u32| (i % 251) as u8)
        .collect::<Vec<_>>();
    for (name, bytes) in [("small.bin", vec![7u8; 1000]), ("big.bin", big)] {
        let response = upload(&url, &auth, name, bytes, None).await;
        assert_eq!(response.status().as_u16(), 201, "{name}");
        let record: Value = response.json().await.expect("json");
        assert_eq!(record["storage_element_id"], "se-healthy", "{record}");
    }
    assert_eq!(healthy.file_count().await, 2);
    drop(frozen);
    healthy.stop().await;
}

/// While the element that holds a file is down, PATCH and DELETE say so (503, Retry-After)
/// instead of claiming the file does not exist; once it is back they reach it.
#[tokio::test]
async fn changes_while_the_owner_is_down_are_503_not_404() {
    let owner = TestElement::start("se-owner", 1 << 30, ElementMode::Edit).await;
    let other = TestElement::start("se-other", 1 << 30, ElementMode::Edit).await;
    let registry = RegistryHandle::fixed(Registry {
        elements: vec![
            owner.entry("se-owner", 2, ElementMode::Edit, 1 << 30),
            other.entry("se-other", 1, ElementMode::Edit, 1 << 30),
        ],
    });
    let url = start(config(1000, 1 << 20), registry.clone()).await;
    let auth = token(Role::Writer, "editor");
    let record: Value = upload(&url, &auth, "kept.txt", b"v1".to_vec(), None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(record["storage_element_id"], "se-owner");
    let id = record["file_id"].as_str().expect("id").to_string();

    // The owner goes away: its address now refuses connections.
    owner.stop().await;
    let http = reqwest::Client::new();
    let patched = http
        .patch(format!("{url}/api/v1/files/{id}"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"description": "edited"}))
        .send()
        .await
        .expect("patch");
    assert!(patched.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(patched).await,
        (503, "storage_unavailable".into())
    );
    let deleted = http
        .delete(format!("{url}/api/v1/files/{id}"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("delete");
    assert_eq!(
        error_code(deleted).await,
        (503, "storage_unavailable".into())
    );

    // When every element answers and none has it, it is a 404.
    registry.set(Registry {
        elements: vec![other.entry("se-other", 1, ElementMode::Edit, 1 << 30)],
    });
    let missing = http
        .delete(format!("{url}/api/v1/files/{id}"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("delete");
    assert_eq!(error_code(missing).await, (404, "file_not_found".into()));
    other.stop().await;
}

/// A keyed upload whose client gives up while the ingester is still storing: the store finishes
/// anyway and the retry with the same key replays its record — no 409 loop, one copy.
#[tokio::test]
async fn a_cut_off_keyed_upload_is_replayed_not_409_and_stored_once() {
    // The frozen first element guarantees the store outlives the client's patience.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let healthy = TestElement::start("se-after", 1 << 30, ElementMode::Edit).await;
    let registry = Registry {
        elements: vec![
            RegistryEntry {
                id: "se-frozen".into(),
                url: format!("http://{}", frozen.local_addr().expect("addr")),
                mode: ElementMode::Edit,
                priority: 100,
                capacity_bytes: 1 << 30,
                used_bytes: 0,
            },
            healthy.entry("se-after", 1, ElementMode::Edit, 1 << 30),
        ],
    };
    let mut config = config(1000, 1 << 20);
    config.element_idle_timeout_seconds = 1;
    let url = start(config, RegistryHandle::fixed(registry)).await;
    let auth = token(Role::Writer, "impatient");

    let cut = reqwest::Client::new()
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", &auth)
        .header("idempotency-key", "cut-1")
        .multipart(file_form("cut.txt", b"cut off".to_vec()))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        cut.as_ref().is_err_and(|e| e.is_timeout()),
        "the first attempt is cut off by the client"
    );

    let retry = upload(&url, &auth, "cut.txt", b"cut off".to_vec(), Some("cut-1")).await;
    assert_eq!(retry.status().as_u16(), 200, "replayed, not 409");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let record: Value = retry.json().await.expect("json");
    assert_eq!(record["storage_element_id"], "se-after");
    assert_eq!(healthy.file_count().await, 1, "one copy");
    drop(frozen);
    healthy.stop().await;
}

/// Forwards connections to `target`. The first connection's answer is withheld (never passed
/// on, the connection to the element kept open): an element that commits an upload and then
/// freezes before its answer leaves. Later connections pass through both ways.
async fn withholding_proxy(target: std::net::SocketAddr) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut element) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            if std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let (mut from_client, _to_client) = client.split();
                    let (_from_element, mut to_element) = element.split();
                    let _ = tokio::io::copy(&mut from_client, &mut to_element).await;
                    // Both connections stay open: the element sees a caller still waiting.
                    std::future::pending::<()>().await;
                });
            } else {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut element).await;
                });
            }
        }
    });
    url
}

/// An element that takes an upload and commits it, but whose answer arrives only after the
/// ingester gave up on it: the ingester stores the file on the next element and cancels the
/// upload on the first (`DELETE /api/v1/uploads/{id}`), which deletes its copy and announces
/// that. Exactly one copy stays, on the fallback element.
#[tokio::test]
async fn a_commit_whose_answer_came_too_late_is_removed() {
    let late = TestElement::start("se-late", 1 << 30, ElementMode::Edit).await;
    let fallback = TestElement::start("se-fallback", 1 << 30, ElementMode::Edit).await;
    let late_addr = late
        .running
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("element address");
    let mut late_entry = late.entry("se-late", 100, ElementMode::Edit, 1 << 30);
    late_entry.url = withholding_proxy(late_addr).await;
    let registry = Registry {
        elements: vec![
            late_entry,
            fallback.entry("se-fallback", 1, ElementMode::Edit, 1 << 30),
        ],
    };
    let mut config = config(1000, 16 << 20);
    config.element_idle_timeout_seconds = 1;
    let url = start(config, RegistryHandle::fixed(registry)).await;
    let auth = token(Role::Writer, "late-client");

    let response = upload(&url, &auth, "once.bin", vec![5u8; 4000], None).await;
    assert_eq!(response.status().as_u16(), 201);
    let record: Value = response.json().await.expect("json");
    assert_eq!(record["storage_element_id"], "se-fallback", "{record}");

    // The late element did commit a copy, then deleted it when the cancel arrived.
    let kinds = ts::eventually(
        Duration::from_secs(30),
        "the late element's copy is deleted",
        || async {
            let kinds: Vec<String> =
                sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
                    .fetch_all(&late.db.pool)
                    .await
                    .expect("outbox");
            (kinds.len() == 2).then_some(kinds)
        },
    )
    .await;
    assert_eq!(kinds, vec!["file.created", "file.deleted"]);
    assert_eq!(late.file_count().await, 0);
    let leftovers = walk(late._dir.path());
    assert!(leftovers.is_empty(), "blob or sidecar left: {leftovers:?}");
    assert_eq!(fallback.file_count().await, 1);
    late.stop().await;
    fallback.stop().await;
}

/// Every file under `dir` (the volume's objects and temporary files).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// What an ingester that died during a keyed upload leaves: the attempt (element and upload id)
/// among the key's attempts in Redis, and, if `element` is given, the file that element
/// committed under the upload id; nobody answered the client or cancelled, and the key's claim
/// expired.
async fn dead_ingesters_attempt(
    element: Option<&TestElement>,
    element_id: &str,
    prefix: &str,
    client: &str,
    key: &str,
    bytes: &[u8],
) -> String {
    let upload_id = uuid::Uuid::new_v4().to_string();
    if let Some(element) = element {
        let committed = reqwest::Client::new()
            .post(format!("{}/api/v1/files", element.running.url()))
            .header("authorization", token(Role::Admin, "ingester-that-died"))
            .header("x-artstore-upload-id", &upload_id)
            .query(&[("filename", "twice.bin")])
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload to the element");
        assert_eq!(committed.status().as_u16(), 201);
    }
    let redis = redis::Client::open(ts::services().redis_url.as_str()).expect("redis client");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let () = redis::cmd("SADD")
        .arg(format!("{prefix}:idempotency:{client}:{key}:attempts"))
        .arg(format!("{element_id} {upload_id}"))
        .query_async(&mut conn)
        .await
        .expect("SADD");
    upload_id
}

/// The retry of a keyed upload whose ingester died after an element committed it: the earlier
/// attempt is cancelled (its copy deleted and announced) before the file is stored again, so
/// one copy stays.
#[tokio::test]
async fn a_retry_after_a_dead_ingester_leaves_one_copy() {
    let element = TestElement::start("se-one", 1 << 30, ElementMode::Edit).await;
    let registry = Registry {
        elements: vec![element.entry("se-one", 1, ElementMode::Edit, 1 << 30)],
    };
    let config = config(1000, 1 << 20);
    let prefix = config.redis_key_prefix.clone();
    let url = start(config, RegistryHandle::fixed(registry)).await;
    let bytes = b"stored by an ingester that died".to_vec();
    dead_ingesters_attempt(
        Some(&element),
        "se-one",
        &prefix,
        "survivor",
        "key-1",
        &bytes,
    )
    .await;
    assert_eq!(element.file_count().await, 1);

    let auth = token(Role::Writer, "survivor");
    let retry = upload(&url, &auth, "twice.bin", bytes.clone(), Some("key-1")).await;
    assert_eq!(retry.status().as_u16(), 201);
    assert_eq!(element.file_count().await, 1, "one copy");
    let kinds: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
        .fetch_all(&element.db.pool)
        .await
        .expect("outbox");
    assert_eq!(kinds, vec!["file.created", "file.deleted", "file.created"]);
    // The result now replays; the attempts are forgotten.
    let again = upload(&url, &auth, "twice.bin", bytes, Some("key-1")).await;
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(element.file_count().await, 1);
    element.stop().await;
}

/// While an element cannot be asked whether it holds an earlier attempt's copy, a keyed retry
/// stores nothing: 503 with a code and `Retry-After`.
#[tokio::test]
async fn a_retry_waits_while_an_earlier_attempt_cannot_be_resolved() {
    let element = TestElement::start("se-one", 1 << 30, ElementMode::Edit).await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let gone_url = format!("http://{}", gone.local_addr().expect("addr"));
    drop(gone);
    let registry = Registry {
        elements: vec![
            element.entry("se-one", 1, ElementMode::Edit, 1 << 30),
            RegistryEntry {
                id: "se-down".into(),
                url: gone_url,
                mode: ElementMode::Edit,
                priority: 100,
                capacity_bytes: 1 << 30,
                used_bytes: 0,
            },
        ],
    };
    let config = config(1000, 1 << 20);
    let prefix = config.redis_key_prefix.clone();
    let url = start(config, RegistryHandle::fixed(registry)).await;
    let bytes = b"stored by an ingester that died".to_vec();
    // The dead ingester's attempt went to the element that is down now.
    dead_ingesters_attempt(None, "se-down", &prefix, "waiter", "key-2", &bytes).await;

    let auth = token(Role::Writer, "waiter");
    let retry = upload(&url, &auth, "twice.bin", bytes, Some("key-2")).await;
    assert!(retry.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(retry).await,
        (503, "earlier_attempt_unresolved".into())
    );
    let kinds: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
        .fetch_all(&element.db.pool)
        .await
        .expect("outbox");
    assert!(kinds.is_empty(), "nothing stored by the retry: {kinds:?}");
    element.stop().await;
}
