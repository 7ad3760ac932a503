//! Backfill, trimmed-past resync and download, against stand-in storage elements: tiny HTTP
//! servers that serve the element's listing and download paths from fixtures (they stand in
//! for another of the archive's own processes).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use artstore_common::auth::{Role, Verifier};
use artstore_contract::{ElementMode, Registry, RegistryEntry};
use artstore_events::{EventType, FileRecord};
use artstore_query::backfill::backfill_all;
use artstore_query::elements::{ElementClient, RegistryWatcher};
use artstore_query::store::{CacheRow, upsert_committed};
use artstore_testsupport::eventually;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use uuid::Uuid;

use crate::support::*;

#[derive(Clone, Default)]
struct FakeElement {
    files: Arc<Mutex<Vec<FileRecord>>>,
    contents: Arc<Mutex<HashMap<Uuid, Vec<u8>>>>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| Verifier::hs256(SECRET).verify(t).is_ok())
}

async fn list(
    State(el): State<FakeElement>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let offset: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let files = el.files.lock().map(|f| f.clone()).unwrap_or_default();
    let page: Vec<_> = files.iter().skip(offset).take(limit).cloned().collect();
    let next = (offset + page.len() < files.len()).then(|| (offset + page.len()).to_string());
    axum::Json(serde_json::json!({"total": files.len(), "files": page, "next_cursor": next}))
        .into_response()
}

async fn download(
    State(el): State<FakeElement>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(body) = el.contents.lock().ok().and_then(|c| c.get(&id).cloned()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = body.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    match range {
        Some((start, end)) if start <= end && end < len => (
            StatusCode::PARTIAL_CONTENT,
            [
                (header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")),
                (header::ETAG, "\"etag-1\"".to_string()),
                (header::CONTENT_TYPE, "text/plain".to_string()),
            ],
            body[start..=end].to_vec(),
        )
            .into_response(),
        Some(_) => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        None => (
            StatusCode::OK,
            [
                (header::ETAG, "\"etag-1\"".to_string()),
                (header::CONTENT_TYPE, "text/plain".to_string()),
            ],
            body,
        )
            .into_response(),
    }
}

async fn serve_element(el: FakeElement) -> String {
    let app = axum::Router::new()
        .route("/api/v1/files", get(list))
        .route("/api/v1/files/{id}/download", get(download))
        .with_state(el);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn entry(id: &str, url: &str) -> RegistryEntry {
    RegistryEntry {
        id: id.into(),
        url: url.into(),
        mode: ElementMode::Rw,
        priority: 1,
        capacity_bytes: 1 << 30,
        used_bytes: 0,
    }
}

fn write_registry(path: &PathBuf, elements: Vec<RegistryEntry>) {
    let text = serde_json::to_string(&Registry { elements }).expect("json");
    // Replace atomically, as a ConfigMap update does.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write registry");
    std::fs::rename(&tmp, path).expect("rename registry");
}

fn on(element: &str, name: &str) -> FileRecord {
    let mut r = record(name);
    r.storage_element_id = element.into();
    r
}

#[tokio::test]
async fn backfill_pages_every_element_and_keeps_the_newest_version() {
    let env = Env::new("backfill").await;
    let a = FakeElement::default();
    let b = FakeElement::default();
    let mut a_files: Vec<_> = (0..1203)
        .map(|i| on("se-a", &format!("a-{i}.txt")))
        .collect();
    let b_files: Vec<_> = (0..7).map(|i| on("se-b", &format!("b-{i}.txt"))).collect();
    // The cache already holds a newer version of one file (an event got there first).
    let mut newer = a_files[0].clone();
    newer.version = 5;
    newer.original_filename = "renamed.txt".into();
    upsert_committed(
        &env.db.pool,
        &[CacheRow::from_record(&newer, 5, false, None).expect("row")],
    )
    .await
    .expect("seed");
    a_files[0].version = 3;
    // And a row of se-b the element no longer has: its delete event was lost.
    let gone = on("se-b", "gone.txt");
    upsert_committed(
        &env.db.pool,
        &[CacheRow::from_record(&gone, 1, false, None).expect("row")],
    )
    .await
    .expect("seed");
    *a.files.lock().expect("lock") = a_files.clone();
    *b.files.lock().expect("lock") = b_files.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.json");
    write_registry(
        &path,
        vec![
            entry("se-a", &serve_element(a).await),
            entry("se-b", &serve_element(b).await),
        ],
    );
    let registry = RegistryWatcher::new(Some(path));
    let client = ElementClient::new(Some(SECRET.to_vec()), "test");
    let report = backfill_all(&env.db.pool, &registry, &client)
        .await
        .expect("backfill");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.elements[0].files_listed, 1203);
    assert_eq!(report.elements[0].rows_changed, 1202);
    assert_eq!(report.elements[1].rows_pruned, 1);
    assert_eq!(env.version_of(a_files[0].file_id).await, Some((5, false)));
    assert_eq!(env.version_of(gone.file_id).await, Some((1, true)));
    let live: i64 = artstore_query::store::live_count(&env.db.pool)
        .await
        .expect("count");
    assert_eq!(live, 1210);
    // Idempotent: a second pass changes nothing.
    let again = backfill_all(&env.db.pool, &registry, &client)
        .await
        .expect("again");
    assert_eq!(
        again.elements.iter().map(|e| e.rows_changed).sum::<u64>(),
        0
    );
    // Without a valid token an element refuses, and the report says which.
    let anonymous = ElementClient::new(Some(b"wrong".to_vec()), "test");
    let refused = backfill_all(&env.db.pool, &registry, &anonymous)
        .await
        .expect("report");
    assert!(!refused.ok());
    assert!(
        refused.elements[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("401")),
        "{refused:?}"
    );
}

/// Events were trimmed from the stream before this node's group read them: the node notices
/// (XINFO: deleted entries newer than the group's last delivered id) and resyncs from the
/// storage elements.
#[tokio::test]
async fn a_node_trimmed_past_resyncs_from_the_storage_elements() {
    let mut env = Env::new("trimmed").await;
    env.ensure_group("$").await;
    let el = FakeElement::default();
    let files: Vec<_> = (0..5)
        .map(|i| on("se-a", &format!("trimmed-{i}.txt")))
        .collect();
    *el.files.lock().expect("lock") = files.clone();
    for f in &files {
        env.publish(&event(EventType::Created, f)).await;
    }
    let _: i64 = redis::cmd("XTRIM")
        .arg(&env.stream)
        .arg("MAXLEN")
        .arg("=")
        .arg(0)
        .query_async(&mut env.redis)
        .await
        .expect("XTRIM");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.json");
    write_registry(&path, vec![entry("se-a", &serve_element(el).await)]);
    let mut config = env.config("pod-0");
    config.registry_file = Some(path);
    let node = start(config).await;
    for f in &files {
        env.wait_version(f.file_id, 1, false).await;
    }
    wait_resync_completed(&node).await;
    // Events after the resync flow as usual.
    let next = on("se-a", "after-resync.txt");
    env.publish(&event(EventType::Created, &next)).await;
    env.wait_version(next.file_id, 1, false).await;
    node.shutdown().await;
}

#[tokio::test]
async fn download_streams_from_the_owning_element_with_range() {
    let env = Env::new("download").await;
    let el = FakeElement::default();
    let rec = on("se-a", "hello world.txt");
    el.contents
        .lock()
        .expect("lock")
        .insert(rec.file_id, b"hello, archive".to_vec());
    upsert_committed(
        &env.db.pool,
        &[CacheRow::from_record(&rec, 1, false, None).expect("row")],
    )
    .await
    .expect("seed");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.json");
    // First the registry points at nothing listening.
    let dead = format!("http://127.0.0.1:{}", artstore_testsupport::free_port());
    write_registry(&path, vec![entry("se-a", &dead)]);
    let mut config = env.config("pod-0");
    config.registry_file = Some(path.clone());
    config.consume = false;
    let node = start(config).await;
    let url = format!("{}/api/v1/files/{}/download", node.url(), rec.file_id);
    let get = |range: Option<&'static str>| {
        let url = url.clone();
        async move {
            let mut request = http().get(&url).bearer_auth(token(Role::Reader));
            if let Some(r) = range {
                request = request.header("range", r);
            }
            request.send().await.expect("download")
        }
    };
    let r = get(None).await;
    assert_eq!(r.status().as_u16(), 502);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["code"], "element_unreachable");

    // The registry file changes; the node picks it up without a restart.
    let live = serve_element(el).await;
    write_registry(&path, vec![entry("se-a", &live)]);
    let r = eventually(WAIT, "registry reloaded", || async {
        let r = get(None).await;
        (r.status().as_u16() == 200).then_some(r)
    })
    .await;
    assert_eq!(r.headers()["etag"], "\"etag-1\"");
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        disposition.contains("attachment") && disposition.contains("hello%20world.txt"),
        "{disposition}"
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"hello, archive");

    let r = get(Some("bytes=7-13")).await;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 7-13/14");
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"archive");
    assert_eq!(get(Some("bytes=50-60")).await.status().as_u16(), 416);

    // Unknown and deleted files are 404 here, without asking the element.
    let unknown = format!("{}/api/v1/files/{}/download", node.url(), Uuid::new_v4());
    let r = http()
        .get(unknown)
        .bearer_auth(token(Role::Reader))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let mut gone = rec.clone();
    gone.version = 2;
    upsert_committed(
        &env.db.pool,
        &[CacheRow::from_record(&gone, 2, true, None).expect("row")],
    )
    .await
    .expect("tombstone");
    assert_eq!(get(None).await.status().as_u16(), 404);
    // A file on an element the registry does not list.
    let orphan = on("se-unknown", "orphan.txt");
    upsert_committed(
        &env.db.pool,
        &[CacheRow::from_record(&orphan, 1, false, None).expect("row")],
    )
    .await
    .expect("seed");
    let r = http()
        .get(format!(
            "{}/api/v1/files/{}/download",
            node.url(),
            orphan.file_id
        ))
        .bearer_auth(token(Role::Reader))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 503);
    node.shutdown().await;
}

async fn xtrim(env: &mut Env, keep: usize) {
    let _: i64 = redis::cmd("XTRIM")
        .arg(&env.stream)
        .arg("MAXLEN")
        .arg("=")
        .arg(keep)
        .query_async(&mut env.redis)
        .await
        .expect("XTRIM");
}

/// Partly trimmed past: the group had read some entries, the unread ones that were trimmed come
/// back through the resync, the retained ones through the stream. Trimming only what the group
/// already read triggers no resync.
#[tokio::test]
async fn only_a_real_loss_triggers_a_resync() {
    let mut env = Env::new("trim-partial").await;
    env.ensure_group("$").await;
    let el = FakeElement::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.json");
    write_registry(&path, vec![entry("se-a", &serve_element(el.clone()).await)]);
    let mut config = env.config("pod-0");
    config.registry_file = Some(path);

    let node = start(config.clone()).await;
    let read: Vec<_> = (0..3)
        .map(|i| on("se-a", &format!("read-{i}.txt")))
        .collect();
    for f in &read {
        env.publish(&event(EventType::Created, f)).await;
    }
    for f in &read {
        env.wait_version(f.file_id, 1, false).await;
    }
    xtrim(&mut env, 0).await;
    let after_trim = on("se-a", "after-harmless-trim.txt");
    env.publish(&event(EventType::Created, &after_trim)).await;
    env.wait_version(after_trim.file_id, 1, false).await;
    // Several XINFO checks have run by now.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        node.resyncer.requested(),
        0,
        "trimming read entries is no loss"
    );
    node.shutdown().await;

    // While the node is down: 5 more events, the oldest 3 trimmed before anyone read them.
    let unread: Vec<_> = (0..5)
        .map(|i| on("se-a", &format!("unread-{i}.txt")))
        .collect();
    *el.files.lock().expect("lock") = read.iter().chain(unread.iter()).cloned().collect();
    for f in &unread {
        env.publish(&event(EventType::Created, f)).await;
    }
    xtrim(&mut env, 2).await;
    let node = start(config).await;
    for f in &unread {
        env.wait_version(f.file_id, 1, false).await;
    }
    wait_resync_completed(&node).await;
    node.shutdown().await;
}

/// An owning element that has frozen (as a SIGSTOPped process looks from outside: connections
/// complete into the backlog, nothing answers) fails the download with a 502 instead of holding
/// the reader's request open.
#[tokio::test]
async fn a_frozen_element_fails_a_download_instead_of_hanging_it() {
    let env = Env::new("frozen-download").await;
    let rec = on("se-frozen", "stuck.txt");
    upsert_committed(
        &env.db.pool,
        &[CacheRow::from_record(&rec, 1, false, None).expect("row")],
    )
    .await
    .expect("seed");
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.json");
    write_registry(
        &path,
        vec![entry(
            "se-frozen",
            &format!("http://{}", frozen.local_addr().expect("addr")),
        )],
    );
    let mut config = env.config("pod-0");
    config.registry_file = Some(path);
    config.consume = false;
    let node = start(config).await;
    let request = http()
        .get(format!(
            "{}/api/v1/files/{}/download",
            node.url(),
            rec.file_id
        ))
        .bearer_auth(token(Role::Reader))
        .send();
    // The outer bound only keeps a hang from stalling the suite; the node's own timeout answers.
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), request)
        .await
        .expect("the node answered")
        .expect("download");
    assert_eq!(r.status().as_u16(), 502);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["code"], "element_unreachable");
    drop(frozen);
    node.shutdown().await;
}

/// The configured timeouts reach the calls: PostgreSQL cancels a statement past the configured
/// `statement_timeout` (an "unavailable" error, answered 503), and a storage element that
/// accepts the connection but never answers fails a listing after the idle timeout, not the
/// (here much longer) whole-listing timeout.
#[tokio::test]
async fn configured_timeouts_bound_database_and_element_calls() {
    use artstore_query::timeouts::TimeoutArgs;
    let env = Env::new("timeouts").await;
    let timeouts = TimeoutArgs {
        db_statement_timeout_seconds: 1,
        element_idle_timeout_seconds: 1,
        element_listing_timeout_seconds: 3600,
        ..TimeoutArgs::default()
    }
    .timeouts();
    let pool = artstore_query::node::lazy_pool_with(&env.db.url, 2, &timeouts).expect("pool");
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .expect("show");
    assert_eq!(shown, "1s");
    let slow = sqlx::query("SELECT pg_sleep(30)").execute(&pool).await;
    let error = slow.expect_err("cancelled by statement_timeout");
    assert!(
        artstore_query::store::is_unavailable(&error),
        "a cancelled statement counts as unavailable: {error}"
    );

    // Accepts connections (the kernel's backlog) and never answers: a frozen element.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", frozen.local_addr().expect("addr"));
    let client = ElementClient::with_timeouts(Some(SECRET.to_vec()), "test", &timeouts);
    let listing = client.list_page(&entry("se-frozen", &url), 10, None).await;
    assert!(listing.is_err(), "a frozen element fails the listing");
    drop(frozen);
}

/// Waits until a resync has counted itself done (it writes its rows first, so seeing them is
/// not enough).
async fn wait_resync_completed(node: &artstore_query::QueryNode) {
    eventually(WAIT, "a resync completed", || async {
        (node.resyncer.completed() >= 1).then_some(())
    })
    .await;
}
