//! Consistency check, rebuilds, crash repair, lazy refresh, priority locking, retention.

use std::time::Duration;

use artstore_contract::ConsistencyReport;
use artstore_element::{CrashPoint, MaintenanceKind};
use artstore_events::EventType;
use artstore_testsupport as ts;
use serde_json::Value;

use crate::harness::*;

async fn consistency(h: &Harness) -> ConsistencyReport {
    let (status, body) = h.get_json(&reader(), "/api/v1/cache/consistency").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).expect("report")
}

async fn incremental(h: &Harness) -> Value {
    let (status, body) = h
        .post_json(&admin(), "/api/v1/cache/rebuild/incremental")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["errors"].as_array().is_some_and(|e| e.is_empty()),
        "{body}"
    );
    body
}

/// A crash at each step of upload, change and delete leaves state the consistency check finds
/// and incremental rebuild repairs, announcing the change.
async fn crash_at_each_step_is_repaired(kind: Kind) {
    let h = Harness::start_with(kind, None, |c| c.orphan_blob_grace = Duration::ZERO).await;
    let core = &h.element.core;
    assert!(consistency(&h).await.is_consistent);

    // Upload dies after the blob: an orphan blob, invisible, cleaned by the rebuild.
    core.set_crash_point(Some(CrashPoint::AfterBlob));
    let response = h
        .upload_query(&writer(), &[("filename", "a.bin")], b"aaa".to_vec())
        .await;
    assert_eq!(response.status(), 500);
    assert_eq!(h.object_keys().await.len(), 1);
    let report = consistency(&h).await;
    assert!(!report.is_consistent);
    assert_eq!(report.details["orphan_blob_count"], 1);
    assert_eq!(report.total_attr_files, 0);
    let run = incremental(&h).await;
    assert_eq!(run["orphan_blobs_deleted"], 1);
    assert!(h.object_keys().await.is_empty());
    assert!(consistency(&h).await.is_consistent);

    // Upload dies after the sidecar: an orphan sidecar, added back and announced.
    core.set_crash_point(Some(CrashPoint::AfterSidecar));
    let response = h
        .upload_query(&writer(), &[("filename", "b.bin")], b"bbb".to_vec())
        .await;
    assert_eq!(response.status(), 500);
    assert_eq!(h.row_count().await, 0);
    core.set_crash_point(None);
    let report = consistency(&h).await;
    assert_eq!(
        (
            report.total_attr_files,
            report.total_cache_entries,
            report.orphan_attr_count
        ),
        (1, 0, 1)
    );
    assert!(!report.is_consistent);
    assert_eq!(report.inconsistency_percentage, 100.0);
    let orphan_id = report.details["orphan_attr_files"][0]
        .as_str()
        .expect("id")
        .to_string();
    let run = incremental(&h).await;
    assert_eq!(run["added"], 1);
    assert!(consistency(&h).await.is_consistent);
    let events = h.wait_events(1).await;
    assert_eq!(events[0].event_type, EventType::Created);
    assert_eq!(events[0].file_id.to_string(), orphan_id);
    let (status, meta) = h
        .get_json(&reader(), &format!("/api/v1/files/{orphan_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(meta["original_filename"], "b.bin");

    // A change dies after the sidecar: the row is stale, found and refreshed.
    core.set_crash_point(Some(CrashPoint::AfterSidecar));
    let response = h
        .http
        .patch(h.url(&format!("/api/v1/files/{orphan_id}")))
        .bearer_auth(writer())
        .json(&serde_json::json!({"description": "changed"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 500);
    core.set_crash_point(None);
    let report = consistency(&h).await;
    assert!(!report.is_consistent);
    assert_eq!(report.details["stale_cache_count"], 1);
    let run = incremental(&h).await;
    assert_eq!(run["updated"], 1);
    let (_, meta) = h
        .get_json(&reader(), &format!("/api/v1/files/{orphan_id}"))
        .await;
    assert_eq!(meta["description"], "changed");
    assert_eq!(meta["version"], 2);
    let events = h.wait_events(2).await;
    assert_eq!(
        (events[1].event_type, events[1].version),
        (EventType::Updated, 2)
    );

    // A delete dies after the sidecar (and again after the blob): orphan rows, removed.
    let second = h.upload("c.bin", b"ccc".to_vec()).await;
    let second_id = second["file_id"].as_str().expect("id").to_string();
    for (point, id) in [
        (CrashPoint::AfterSidecar, &orphan_id),
        (CrashPoint::AfterBlob, &second_id),
    ] {
        core.set_crash_point(Some(point));
        let response = h
            .http
            .delete(h.url(&format!("/api/v1/files/{id}")))
            .bearer_auth(writer())
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status(), 500);
    }
    core.set_crash_point(None);
    let report = consistency(&h).await;
    assert_eq!(report.orphan_cache_count, 2);
    assert_eq!(report.details["orphan_blob_count"], 1, "{}", report.details);
    let run = incremental(&h).await;
    assert_eq!(run["removed"], 2);
    assert_eq!(run["orphan_blobs_deleted"], 1);
    assert!(consistency(&h).await.is_consistent);
    assert!(h.object_keys().await.is_empty());
    let events = h.wait_events(5).await;
    let tail: Vec<(EventType, i64)> = events[3..]
        .iter()
        .map(|e| (e.event_type, e.version))
        .collect();
    assert!(tail.contains(&(EventType::Deleted, 3)), "{tail:?}");
    assert!(tail.contains(&(EventType::Deleted, 2)), "{tail:?}");
    h.finish().await;
}

#[tokio::test]
async fn crash_at_each_step_is_repaired_s3() {
    crash_at_each_step_is_repaired(Kind::S3).await;
}

#[tokio::test]
async fn crash_at_each_step_is_repaired_volume() {
    crash_at_each_step_is_repaired(Kind::Volume).await;
}

#[tokio::test]
async fn full_rebuild_restores_a_lost_cache_and_announces_it() {
    let h = Harness::start(Kind::S3).await;
    for i in 0..3 {
        h.upload(&format!("f{i}.txt"), content(100, i)).await;
    }
    h.wait_events(3).await;
    sqlx::query("TRUNCATE files")
        .execute(&h.db.pool)
        .await
        .expect("truncate");
    let report = consistency(&h).await;
    assert_eq!(
        (report.orphan_attr_count, report.total_cache_entries),
        (3, 0)
    );
    let (status, run) = h.post_json(&admin(), "/api/v1/cache/rebuild").await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["added"], 3);
    assert_eq!(run["scanned"], 3);
    assert!(run["duration_ms"].is_u64());
    assert!(consistency(&h).await.is_consistent);
    let events = h.wait_events(6).await;
    assert!(
        events[3..]
            .iter()
            .all(|e| e.event_type == EventType::Created)
    );
    // A second full rebuild changes nothing and announces nothing.
    let (_, run) = h.post_json(&admin(), "/api/v1/cache/rebuild").await;
    assert_eq!(
        (run["added"].as_u64(), run["refreshed"].as_u64()),
        (Some(0), Some(3))
    );
    let (_, list) = h.get_json(&reader(), "/api/v1/files").await;
    assert_eq!(list["total"], 3);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&h.db.pool)
        .await
        .expect("outbox");
    assert_eq!(queued, 6, "the second rebuild queued no event");
    h.finish().await;
}

async fn age_rows(h: &Harness, hours: i64) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE files SET cache_updated_at = now() - interval '{hours} hours'"
    )))
    .execute(&h.db.pool)
    .await
    .expect("age rows");
}

#[tokio::test]
async fn expired_rows_are_refreshed_on_read_and_by_cleanup() {
    let h = Harness::start(Kind::Volume).await;
    let a = h.upload("a.txt", b"a".to_vec()).await;
    let b = h.upload("b.txt", b"b".to_vec()).await;
    let a_id = a["file_id"].as_str().expect("id").to_string();
    let b_id = b["file_id"].as_str().expect("id").to_string();
    age_rows(&h, 100).await;
    assert_eq!(consistency(&h).await.expired_cache_count, 2);
    let (_, list) = h.get_json(&reader(), "/api/v1/files").await;
    assert_eq!(list["files"][0]["cache_expired"], true);

    // Lazy refresh on read.
    let (status, meta) = h
        .get_json(&reader(), &format!("/api/v1/files/{a_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(meta["cache_expired"], false);
    let refreshed: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(meta["cache_updated_at"].clone()).expect("time");
    assert!(chrono::Utc::now() - refreshed < chrono::Duration::minutes(1));
    assert_eq!(consistency(&h).await.expired_cache_count, 1);

    // A file whose sidecar vanished behind our back: the expired row goes, announced.
    h.element
        .core
        .backend
        .delete(&format!(
            "{}.attr.json",
            b["storage_key"].as_str().expect("key")
        ))
        .await
        .expect("delete sidecar");
    let (status, _) = h
        .get_json(&reader(), &format!("/api/v1/files/{b_id}"))
        .await;
    assert_eq!(status, 404);
    let events = h.wait_events(3).await;
    assert_eq!(
        (events[2].event_type, events[2].version),
        (EventType::Deleted, 2)
    );

    // A newer sidecar (a change that died before its commit) is picked up by the lazy refresh.
    h.element
        .core
        .set_crash_point(Some(CrashPoint::AfterSidecar));
    let response = h
        .http
        .patch(h.url(&format!("/api/v1/files/{a_id}")))
        .bearer_auth(writer())
        .json(&serde_json::json!({"tags": ["late"]}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 500);
    h.element.core.set_crash_point(None);
    let (_, meta) = h
        .get_json(&reader(), &format!("/api/v1/files/{a_id}"))
        .await;
    assert_eq!(
        meta["tags"],
        serde_json::json!([]),
        "fresh rows are served from the cache"
    );
    age_rows(&h, 100).await;
    let (_, meta) = h
        .get_json(&reader(), &format!("/api/v1/files/{a_id}"))
        .await;
    assert_eq!(meta["tags"], serde_json::json!(["late"]));
    assert_eq!(meta["version"], 2);
    let events = h.wait_events(4).await;
    assert_eq!(
        (events[3].event_type, events[3].version),
        (EventType::Updated, 2)
    );

    // cleanup-expired re-reads expired rows and keeps them.
    age_rows(&h, 100).await;
    let (status, run) = h.post_json(&admin(), "/api/v1/cache/cleanup-expired").await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["refreshed"], 1);
    let report = consistency(&h).await;
    assert_eq!(report.expired_cache_count, 0);
    assert!(report.is_consistent);
    h.finish().await;
}

async fn waiting_advisory_locks(h: &Harness) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&h.db.pool)
    .await
    .expect("pg_locks")
}

/// T9: a rebuild waits for the lock another rebuild holds, a lazy refresh gives way to a
/// rebuild instead of blocking, and concurrent rebuilds never interleave.
#[tokio::test]
async fn rebuilds_are_serialised_and_lazy_refresh_gives_way() {
    let h = Harness::start(Kind::Volume).await;
    let record = h.upload("a.txt", b"a".to_vec()).await;
    let id = record["file_id"].as_str().expect("id").to_string();
    age_rows(&h, 100).await;

    // Hold the maintenance lock as a running rebuild would.
    let mut holder = h.db.pool.begin().await.expect("tx");
    artstore_element::store::lock_for_maintenance(&mut holder)
        .await
        .expect("lock");
    let core = h.element.core.clone();
    let blocked = tokio::spawn(async move {
        artstore_element::maintenance::run(&core, MaintenanceKind::Incremental).await
    });
    ts::eventually(
        Duration::from_secs(10),
        "the rebuild waits on the lock",
        || async { (waiting_advisory_locks(&h).await == 1).then_some(()) },
    )
    .await;
    assert!(!blocked.is_finished());
    let started: i64 = sqlx::query_scalar("SELECT count(*) FROM maintenance_runs")
        .fetch_one(&h.db.pool)
        .await
        .expect("runs");
    assert_eq!(started, 0, "nothing ran while the lock was held");
    // The lazy refresh does not wait: it serves the stale row.
    let (status, meta) = h.get_json(&reader(), &format!("/api/v1/files/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["cache_expired"], true);
    // Writes wait for the rebuild (they take the lock shared).
    let writer_task = {
        let url = h.url(&format!("/api/v1/files/{id}"));
        let http = h.http.clone();
        tokio::spawn(async move {
            http.patch(url)
                .bearer_auth(writer())
                .json(&serde_json::json!({"tags": ["x"]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    ts::eventually(Duration::from_secs(10), "the write waits too", || async {
        (waiting_advisory_locks(&h).await == 2).then_some(())
    })
    .await;
    holder.rollback().await.expect("release");
    let report = blocked.await.expect("join").expect("rebuild");
    assert_eq!(report["kind"], "incremental");
    assert_eq!(writer_task.await.expect("join").expect("patch"), 200);
    let (_, meta) = h.get_json(&reader(), &format!("/api/v1/files/{id}")).await;
    assert_eq!(meta["cache_expired"], false);

    // Many rebuilds at once: their runs never overlap.
    let kinds = [
        "/api/v1/cache/rebuild",
        "/api/v1/cache/rebuild/incremental",
        "/api/v1/cache/cleanup-expired",
        "/api/v1/cache/rebuild",
        "/api/v1/cache/rebuild/incremental",
        "/api/v1/cache/retention",
    ];
    let calls = kinds.iter().map(|path| h.post_json_owned(admin(), path));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    let runs: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT started_at, finished_at FROM maintenance_runs
         WHERE kind <> 'consistency' ORDER BY started_at",
    )
    .fetch_all(&h.db.pool)
    .await
    .expect("runs");
    assert_eq!(runs.len(), 7);
    for pair in runs.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlap: {pair:?}");
    }
    h.finish().await;
}

#[tokio::test]
async fn retention_sweep_deletes_expired_temporary_files() {
    let h = Harness::start(Kind::S3).await;
    let response = h
        .upload_query(
            &writer(),
            &[
                ("filename", "tmp.log"),
                ("retention", "temporary"),
                ("retention_days", "1"),
            ],
            b"temporary".to_vec(),
        )
        .await;
    assert_eq!(response.status(), 201);
    let temp: Value = response.json().await.expect("json");
    let keep = h.upload("keep.txt", b"permanent".to_vec()).await;
    // Nothing is due yet.
    let run = artstore_element::maintenance::run(&h.element.core, MaintenanceKind::Retention)
        .await
        .expect("sweep");
    assert_eq!(run["removed"], 0);
    sqlx::query(
        "UPDATE files SET retention_expires_at = now() - interval '1 minute' WHERE file_id = $1",
    )
    .bind(
        temp["file_id"]
            .as_str()
            .expect("id")
            .parse::<uuid::Uuid>()
            .expect("uuid"),
    )
    .execute(&h.db.pool)
    .await
    .expect("expire");
    let (status, run) = h.post_json(&admin(), "/api/v1/cache/retention").await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["removed"], 1);
    let (_, list) = h.get_json(&reader(), "/api/v1/files").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["files"][0]["file_id"], keep["file_id"]);
    assert_eq!(h.object_keys().await.len(), 2);
    let events = h.wait_events(3).await;
    assert_eq!(events[2].event_type, EventType::Deleted);
    assert_eq!(
        events[2].file_id.to_string(),
        temp["file_id"].as_str().expect("id")
    );
    assert!(consistency(&h).await.is_consistent);
    h.finish().await;
}

#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    command: artstore_element::cli::Command,
}

/// `artstore storage-element rebuild --mode incremental` as a Job runs it: flags from the
/// command line, the same code as the HTTP API, and the events it queued published.
#[tokio::test]
async fn rebuild_subcommand_repairs_and_publishes() {
    use clap::Parser;
    let h = Harness::start(Kind::Volume).await;
    h.element
        .core
        .set_crash_point(Some(CrashPoint::AfterSidecar));
    let response = h
        .upload_query(&writer(), &[("filename", "job.txt")], b"job".to_vec())
        .await;
    assert_eq!(response.status(), 500);
    h.element.core.set_crash_point(None);
    let volume = h.volume_path().expect("volume");
    let (db_url, redis_url, stream) = (h.db.url.clone(), h.redis_url.clone(), h.stream.clone());
    let args = |mode: &str| {
        vec![
            "storage-element".to_string(),
            "rebuild".into(),
            "--mode".into(),
            mode.into(),
            "--element-id".into(),
            "se-test".into(),
            "--capacity-bytes".into(),
            "1000000".into(),
            "--backend".into(),
            "volume".into(),
            "--volume-path".into(),
            volume.clone(),
            "--database-url".into(),
            db_url.clone(),
            "--redis-url".into(),
            redis_url.clone(),
            "--stream".into(),
            stream.clone(),
        ]
    };
    let migrate = Cli::try_parse_from(["storage-element", "migrate", "--database-url", &db_url])
        .expect("migrate parses");
    artstore_element::cli::run(migrate.command)
        .await
        .expect("migrate is idempotent");
    let cli = Cli::try_parse_from(args("incremental")).expect("rebuild parses");
    artstore_element::cli::run(cli.command)
        .await
        .expect("rebuild runs");
    let events = h.wait_events(1).await;
    assert_eq!(events[0].event_type, EventType::Created);
    assert_eq!(events[0].payload.original_filename, "job.txt");
    let consistency_args = Cli::try_parse_from(args("consistency")).expect("parses");
    artstore_element::cli::run(consistency_args.command)
        .await
        .expect("consistency runs");
    assert!(
        Cli::try_parse_from(args("sideways")).is_err(),
        "unknown modes are refused"
    );
    h.finish().await;
}

/// What a process killed mid-upload leaves in the backend: an S3 multipart upload never
/// completed, or a volume's temporary file. The check reports it past the grace period and the
/// incremental rebuild removes it.
async fn incomplete_uploads_are_reported_and_removed(kind: Kind) {
    let h = Harness::start_with(kind, None, |c| c.orphan_blob_grace = Duration::ZERO).await;
    h.upload("kept.txt", b"kept".to_vec()).await;
    assert!(consistency(&h).await.is_consistent);

    // The leftover, made the way a killed upload leaves it.
    match &h.bucket {
        Some(bucket) => {
            let s3 = ts::s3_client().await;
            let created = s3
                .create_multipart_upload()
                .bucket(bucket)
                .key("se-test/ab/cd/killed-upload.bin")
                .send()
                .await
                .expect("create multipart upload");
            s3.upload_part()
                .bucket(bucket)
                .key("se-test/ab/cd/killed-upload.bin")
                .upload_id(created.upload_id().expect("id"))
                .part_number(1)
                .body(b"half a file".to_vec().into())
                .send()
                .await
                .expect("upload part");
        }
        None => {
            let tmp = std::path::Path::new(&h.volume_path().expect("volume")).join(".tmp");
            std::fs::write(tmp.join("killed-upload"), b"half a file").expect("temp file");
        }
    }
    // The grace is zero, but "older than" is strict: let a second pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = consistency(&h).await;
    assert!(!report.is_consistent, "{report:?}");
    assert_eq!(report.details["incomplete_upload_count"], 1, "{report:?}");

    let run = incremental(&h).await;
    assert_eq!(run["incomplete_uploads_removed"], 1, "{run}");
    let report = consistency(&h).await;
    assert!(report.is_consistent, "{report:?}");
    assert_eq!(report.details["incomplete_upload_count"], 0);
    if let Some(bucket) = &h.bucket {
        let left = ts::s3_client()
            .await
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .expect("list uploads");
        assert!(left.uploads().is_empty(), "{left:?}");
    } else {
        assert_eq!(h.temp_files(), 0);
    }
    h.finish().await;
}

#[tokio::test]
async fn incomplete_uploads_are_reported_and_removed_s3() {
    incomplete_uploads_are_reported_and_removed(Kind::S3).await;
}

#[tokio::test]
async fn incomplete_uploads_are_reported_and_removed_volume() {
    incomplete_uploads_are_reported_and_removed(Kind::Volume).await;
}

/// Writes `n` files straight to the backend (blob + sidecar, no cache row), as a lost cache
/// or a restored bucket would leave them; returns their records.
async fn seed_backend(h: &Harness, n: usize) -> Vec<artstore_events::FileRecord> {
    use futures::StreamExt;
    let core = h.element.core.clone();
    let records: Vec<_> = (0..n)
        .map(|i| {
            let now = chrono::Utc::now();
            let file_id = uuid::Uuid::now_v7();
            let name = format!("seed-{i}.bin");
            artstore_events::FileRecord {
                file_id,
                storage_key: artstore_element::layout::blob_key(&name, "seeder", now, file_id),
                original_filename: name,
                size: 4,
                sha256: sha256_hex(b"seed"),
                mime_type: "application/octet-stream".into(),
                description: None,
                tags: vec![],
                storage_element_id: "se-test".into(),
                created_at: now,
                created_by: "seeder".into(),
                updated_at: now,
                retention: artstore_events::Retention::Permanent,
                retention_expires_at: None,
                version: 1,
            }
        })
        .collect();
    futures::stream::iter(records.clone())
        .map(|record| {
            let core = core.clone();
            async move {
                let key = record.storage_key.clone();
                core.backend
                    .put_small(&key, bytes::Bytes::from_static(b"seed"))
                    .await
                    .expect("blob");
                let sidecar = artstore_element::core::sidecar_bytes(&record).expect("sidecar");
                core.backend
                    .put_small(&artstore_element::layout::sidecar_key(&key), sidecar)
                    .await
                    .expect("sidecar");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    records
}

/// Rebuilds and the consistency check walk the listing page by page (1,000 objects a page);
/// every file of every page is found, repaired and counted.
async fn maintenance_spans_many_listing_pages(kind: Kind) {
    let h = Harness::start(kind).await;
    let records = seed_backend(&h, 1_100).await;
    let report = consistency(&h).await;
    assert_eq!(
        (report.total_attr_files, report.orphan_attr_count),
        (1_100, 1_100)
    );
    let (status, run) = h.post_json(&admin(), "/api/v1/cache/rebuild").await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        (run["added"].as_u64(), run["scanned"].as_u64()),
        (Some(1_100), Some(1_100))
    );
    assert_eq!(h.row_count().await, 1_100);
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'file.created'")
            .fetch_one(&h.db.pool)
            .await
            .expect("outbox");
    assert_eq!(queued, 1_100, "every added row is announced");
    assert!(consistency(&h).await.is_consistent);

    // Sidecars lost from the start, middle and end of the listing; rows lost likewise.
    let core = &h.element.core;
    for record in [&records[0], &records[550], &records[1_099]] {
        core.backend
            .delete(&artstore_element::layout::sidecar_key(&record.storage_key))
            .await
            .expect("delete sidecar");
    }
    for record in [&records[1], &records[999], &records[1_000], &records[1_098]] {
        sqlx::query("DELETE FROM files WHERE file_id = $1")
            .bind(record.file_id)
            .execute(&h.db.pool)
            .await
            .expect("delete row");
    }
    let report = consistency(&h).await;
    assert_eq!(
        (
            report.total_attr_files,
            report.total_cache_entries,
            report.orphan_cache_count,
            report.orphan_attr_count
        ),
        (1_097, 1_096, 3, 4)
    );
    let run = incremental(&h).await;
    assert_eq!(
        (run["added"].as_u64(), run["removed"].as_u64()),
        (Some(4), Some(3))
    );
    let report = consistency(&h).await;
    assert_eq!(report.total_cache_entries, 1_097);
    // The three blobs left without sidecars are younger than the grace period: in flight.
    assert!(report.is_consistent, "{:?}", report.details);
    h.finish().await;
}

#[tokio::test]
async fn maintenance_spans_many_listing_pages_s3() {
    maintenance_spans_many_listing_pages(Kind::S3).await;
}

#[tokio::test]
async fn maintenance_spans_many_listing_pages_volume() {
    maintenance_spans_many_listing_pages(Kind::Volume).await;
}

/// The sidecar and blob are written at once, so a crash can leave a sidecar without its blob:
/// the check reports it and the rebuild deletes it (and any row it had), never caching it.
async fn sidecar_without_blob_is_an_orphan_to_repair(kind: Kind) {
    let h = Harness::start_with(kind, None, |c| c.orphan_blob_grace = Duration::ZERO).await;
    let core = &h.element.core;
    // A stored file whose blob went missing, and a sidecar that landed alone.
    let stored = h.upload("kept-sidecar.txt", b"hello".to_vec()).await;
    let key = stored["storage_key"].as_str().expect("key").to_string();
    core.backend.delete(&key).await.expect("delete blob");
    let lone = seed_backend(&h, 1).await.remove(0);
    core.backend
        .delete(&lone.storage_key)
        .await
        .expect("delete the seeded blob");
    h.wait_events(1).await;

    let report = consistency(&h).await;
    assert!(!report.is_consistent);
    assert_eq!(
        report.details["orphan_sidecar_count"], 2,
        "{:?}",
        report.details
    );
    assert_eq!(
        report.orphan_attr_count, 0,
        "an orphan sidecar is not a file to add"
    );
    assert_eq!(
        report.orphan_cache_count, 1,
        "the row of the file whose blob is gone"
    );

    let run = incremental(&h).await;
    assert_eq!(run["orphan_sidecars_deleted"], 2, "{run}");
    assert_eq!(
        (run["added"].as_u64(), run["removed"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(h.object_keys().await.is_empty());
    assert_eq!(h.row_count().await, 0);
    let events = h.wait_events(2).await;
    assert_eq!(events[1].event_type, EventType::Deleted);
    assert_eq!(
        events[1].file_id.to_string(),
        stored["file_id"].as_str().expect("id")
    );
    assert!(consistency(&h).await.is_consistent);
    h.finish().await;
}

#[tokio::test]
async fn sidecar_without_blob_is_an_orphan_to_repair_s3() {
    sidecar_without_blob_is_an_orphan_to_repair(Kind::S3).await;
}

#[tokio::test]
async fn sidecar_without_blob_is_an_orphan_to_repair_volume() {
    sidecar_without_blob_is_an_orphan_to_repair(Kind::Volume).await;
}

/// The last consistency report is kept: 404 with a code before any check, then the report of
/// the newest check, without running one.
#[tokio::test]
async fn the_last_consistency_report_is_kept() {
    let h = Harness::start(Kind::Volume).await;
    let (status, error) = h
        .get_json(&reader(), "/api/v1/cache/consistency/last")
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("no_consistency_report")),
        "{error}"
    );
    h.upload("kept.txt", b"kept".to_vec()).await;
    let (status, checked) = h.get_json(&reader(), "/api/v1/cache/consistency").await;
    assert_eq!(status, 200, "{checked}");
    let (status, last) = h
        .get_json(&reader(), "/api/v1/cache/consistency/last")
        .await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(last, checked, "the same report, not a new check");
    assert_eq!(last["total_attr_files"], 1);
    h.finish().await;
}

/// Empties the cache and runs a full rebuild, which must report no error; returns its report.
async fn lose_cache_and_rebuild(h: &Harness) -> Value {
    sqlx::query("TRUNCATE files")
        .execute(&h.db.pool)
        .await
        .expect("truncate");
    let (status, run) = h.post_json(&admin(), "/api/v1/cache/rebuild").await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["errors"], serde_json::json!([]), "{run}");
    run
}

/// The sidecars in every pack, by key.
async fn packed_sidecars(h: &Harness) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for key in h.pack_keys().await {
        let bytes = h.element.core.backend.get_small(&key).await.expect("pack");
        let (entries, bad) = artstore_element::packs::decode(&bytes);
        assert_eq!(bad, 0, "{key}");
        found.extend(entries.into_iter().map(|e| {
            let sidecar = serde_json::from_str(&e.sidecar).expect("sidecar json");
            (e.key, sidecar)
        }));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// A full rebuild takes a sidecar from the packs only when the packed copy is byte for byte the
/// stored sidecar (its MD5 is the listing's): an edited file's stale copy, a forged copy and a
/// deleted file's copy are never restored; what it had to read one by one it packs, and packs
/// mostly dead are rewritten without the dead entries.
#[tokio::test]
async fn full_rebuild_takes_sidecars_from_packs_only_when_they_match() {
    let h = Harness::start(Kind::S3).await;
    let core = &h.element.core;
    let mut files = Vec::new();
    for name in ["kept.txt", "edited.txt", "deleted.txt"] {
        let record = h.upload(name, content(64, files.len() as u8)).await;
        files.push((
            record["file_id"].as_str().expect("id").to_string(),
            format!("{}.attr.json", record["storage_key"].as_str().expect("key")),
        ));
    }
    assert_eq!(
        core.packs.flush().await,
        3,
        "the element packs what it wrote"
    );
    assert_eq!(h.pack_keys().await.len(), 1);
    let (kept, edited, deleted) = (&files[0], &files[1], &files[2]);

    let response = h
        .http
        .patch(h.url(&format!("/api/v1/files/{}", edited.0)))
        .bearer_auth(writer())
        .json(&serde_json::json!({"description": "after the pack"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 200);
    let response = h
        .http
        .delete(h.url(&format!("/api/v1/files/{}", deleted.0)))
        .bearer_auth(writer())
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    // A forged copy of the kept file's sidecar under its key.
    let mut forged: Value =
        serde_json::from_slice(&core.backend.get_small(&kept.1).await.expect("sidecar"))
            .expect("json");
    forged["description"] = "forged".into();
    artstore_element::packs::write(
        core.backend.as_ref(),
        &[artstore_element::packs::PackEntry {
            key: kept.1.clone(),
            sidecar: forged.to_string(),
        }],
    )
    .await
    .expect("forged pack");

    let run = lose_cache_and_rebuild(&h).await;
    assert_eq!(
        (
            run["added"].as_u64(),
            run["scanned"].as_u64(),
            run["sidecars_from_packs"].as_u64()
        ),
        (Some(2), Some(2), Some(1)),
        "the kept file from its pack, the edited one read itself, the deleted one not at all: {run}"
    );
    let (_, view) = h
        .get_json(&reader(), &format!("/api/v1/files/{}", kept.0))
        .await;
    assert!(view["description"].is_null(), "{view}");
    let (_, view) = h
        .get_json(&reader(), &format!("/api/v1/files/{}", edited.0))
        .await;
    assert_eq!(view["description"], "after the pack");
    let (status, _) = h
        .get_json(&reader(), &format!("/api/v1/files/{}", deleted.0))
        .await;
    assert_eq!(status, 404);

    // Four packed entries, one of them current: the packs were rewritten with the two live
    // sidecars as stored, the deleted file's metadata gone with the old packs.
    assert_eq!(
        (run["packs_written"].as_u64(), run["packs_removed"].as_u64()),
        (Some(1), Some(2)),
        "{run}"
    );
    let packed = packed_sidecars(&h).await;
    let mut expected = vec![kept.1.clone(), edited.1.clone()];
    expected.sort();
    assert_eq!(
        packed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        packed
            .iter()
            .any(|(_, s)| s["description"] == "after the pack")
    );

    // The next full rebuild takes both from the pack and rewrites nothing; packs are no orphans.
    let (_, run) = h.post_json(&admin(), "/api/v1/cache/rebuild").await;
    assert_eq!(
        (
            run["refreshed"].as_u64(),
            run["sidecars_from_packs"].as_u64(),
            run["packs_written"].as_u64(),
            run["packs_removed"].as_u64()
        ),
        (Some(2), Some(2), Some(0), Some(0)),
        "{run}"
    );
    assert!(consistency(&h).await.is_consistent);
    assert_eq!(h.object_keys().await.len(), 4);
    assert_eq!(h.pack_keys().await.len(), 1);
    h.finish().await;
}

/// A volume's listing gives no MD5 to check a packed copy against: it keeps no packs.
#[tokio::test]
async fn a_volume_keeps_no_sidecar_packs() {
    let h = Harness::start(Kind::Volume).await;
    h.upload("a.txt", content(64, 1)).await;
    assert_eq!(h.element.core.packs.flush().await, 0);
    let run = lose_cache_and_rebuild(&h).await;
    assert_eq!(
        (run["added"].as_u64(), run["packs_written"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(h.pack_keys().await.is_empty());
    h.finish().await;
}

/// A pack that cannot be read back or loaded (garbage, an entry PostgreSQL refuses) is skipped:
/// the rebuild reads those sidecars one by one, succeeds, and its rewrite replaces the pack.
#[tokio::test]
async fn a_damaged_pack_costs_reads_never_the_rebuild() {
    let h = Harness::start(Kind::S3).await;
    let core = &h.element.core;
    let record = h.upload("a.txt", content(64, 1)).await;
    let sidecar_key = format!("{}.attr.json", record["storage_key"].as_str().expect("key"));
    let sidecar = core.backend.get_small(&sidecar_key).await.expect("sidecar");
    // A true copy beside an entry whose key is too long for the packed table's index: the
    // pack's load fails as a whole.
    let huge_key: String = (0..250)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect::<String>()
        + ".attr.json";
    artstore_element::packs::write(
        core.backend.as_ref(),
        &[
            artstore_element::packs::PackEntry::new(&sidecar_key, &sidecar).expect("packable"),
            artstore_element::packs::PackEntry {
                key: huge_key,
                sidecar: "{}".into(),
            },
        ],
    )
    .await
    .expect("pack");
    core.backend
        .put_small(
            &artstore_element::layout::pack_key(chrono::Utc::now(), uuid::Uuid::now_v7()),
            bytes::Bytes::from_static(b"\x00\x01 not a pack"),
        )
        .await
        .expect("garbage pack");
    let run = lose_cache_and_rebuild(&h).await;
    assert_eq!(
        (
            run["added"].as_u64(),
            run["sidecars_from_packs"].as_u64(),
            run["packs_written"].as_u64(),
            run["packs_removed"].as_u64()
        ),
        (Some(1), Some(0), Some(1), Some(2)),
        "{run}"
    );
    let packed = packed_sidecars(&h).await;
    assert_eq!(packed.len(), 1);
    assert_eq!(packed[0].0, sidecar_key);
    h.finish().await;
}
