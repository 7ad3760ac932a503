//! Upload, download, metadata, change, delete, list, status; bad input.

use std::collections::HashSet;

use artstore_common::auth::Role;
use artstore_events::EventType;
use futures::StreamExt;
use serde_json::Value;

use crate::harness::*;

async fn upload_download_round_trip(kind: Kind) {
    let h = Harness::start(kind).await;
    // Larger than one multipart part on S3, streamed without a Content-Length.
    let data = content(9 * 1024 * 1024 + 123, 1);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let response = h
        .http
        .post(h.url("/api/v1/files"))
        .bearer_auth(writer())
        .query(&[
            ("filename", "Quarterly report.pdf"),
            ("description", "numbers"),
            ("tag", "finance"),
            ("tag", "q3"),
        ])
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 201);
    let record: Value = response.json().await.expect("json");
    let id = record["file_id"].as_str().expect("file_id").to_string();
    assert_eq!(record["size"], data.len() as u64);
    assert_eq!(record["sha256"], sha256_hex(&data));
    assert_eq!(record["created_by"], "alice");
    assert_eq!(record["storage_element_id"], "se-test");
    assert_eq!(record["mime_type"], "application/pdf");
    assert_eq!(record["version"], 1);
    assert_eq!(record["tags"], serde_json::json!(["finance", "q3"]));
    assert_eq!(record["retention"], "permanent");
    assert!(record["retention_expires_at"].is_null());

    // Blob and sidecar in the backend, laid out by date with the id in the name.
    let key = record["storage_key"].as_str().expect("key").to_string();
    let name = key.rsplit('/').next().expect("name");
    assert!(name.starts_with("Quarterly-report_alice_"), "{key}");
    assert!(name.ends_with(&format!("_{id}.pdf")), "{key}");
    assert_eq!(key.matches('/').count(), 4, "{key}");
    assert_eq!(
        h.object_keys().await,
        vec![key.clone(), format!("{key}.attr.json")]
    );
    let sidecar: Value = serde_json::from_slice(
        &h.element
            .core
            .backend
            .get_small(&format!("{key}.attr.json"))
            .await
            .expect("sidecar"),
    )
    .expect("sidecar json");
    assert_eq!(sidecar, record);

    // Metadata with cache fields.
    let (status, meta) = h.get_json(&reader(), &format!("/api/v1/files/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["cache_expired"], false);
    assert_eq!(meta["cache_ttl_hours"], 24);
    assert!(meta["cache_updated_at"].is_string());
    assert_eq!(meta["sha256"], record["sha256"]);

    // The event.
    let events = h.wait_events(1).await;
    assert_eq!(events[0].event_type, EventType::Created);
    assert_eq!(events[0].file_id.to_string(), id);
    assert_eq!(events[0].version, 1);
    assert_eq!(
        serde_json::to_value(&events[0].payload).expect("json"),
        record
    );

    // Whole download.
    let url = h.url(&format!("/api/v1/files/{id}/download"));
    let response = h
        .http
        .get(&url)
        .bearer_auth(reader())
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    let etag = format!("\"{}\"", sha256_hex(&data));
    assert_eq!(response.headers()["etag"], etag.as_str());
    assert_eq!(response.headers()["content-type"], "application/pdf");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .expect("ascii");
    assert!(
        disposition.starts_with("attachment; filename=\"Quarterly report.pdf\""),
        "{disposition}"
    );
    assert!(
        disposition.contains("filename*=UTF-8''Quarterly%20report.pdf"),
        "{disposition}"
    );
    let body = response.bytes().await.expect("body");
    assert!(
        body.as_ref() == data.as_slice(),
        "downloaded content differs"
    );

    // Ranges.
    let ranged = |range: &'static str| {
        h.http
            .get(&url)
            .bearer_auth(reader())
            .header("range", range)
            .send()
    };
    let response = ranged("bytes=1000-1999").await.expect("range");
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 1000-1999/{}", data.len()).as_str()
    );
    assert_eq!(
        response.bytes().await.expect("body").as_ref(),
        &data[1000..2000]
    );
    let response = ranged("bytes=-10").await.expect("suffix range");
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.bytes().await.expect("body").as_ref(),
        &data[data.len() - 10..]
    );
    for bad in ["bytes=999999999-", "bytes=5-2", "pages=1-2"] {
        let response = ranged(bad).await.expect("bad range");
        assert_eq!(response.status(), 416, "{bad}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes */{}", data.len()).as_str()
        );
        let body: Value = response.json().await.expect("json error");
        assert_eq!(body["code"], "range_not_satisfiable");
    }
    let response = h
        .http
        .get(&url)
        .bearer_auth(reader())
        .header("if-none-match", etag.as_str())
        .send()
        .await
        .expect("conditional");
    assert_eq!(response.status(), 304);
    h.finish().await;
}

#[tokio::test]
async fn upload_download_round_trip_s3() {
    upload_download_round_trip(Kind::S3).await;
}

#[tokio::test]
async fn upload_download_round_trip_volume() {
    upload_download_round_trip(Kind::Volume).await;
}

async fn patch_and_delete_announce_versions(kind: Kind) {
    let h = Harness::start(kind).await;
    let record = h.upload("notes.txt", b"hello".to_vec()).await;
    let id = record["file_id"].as_str().expect("id").to_string();
    let key = record["storage_key"].as_str().expect("key").to_string();
    let path = format!("/api/v1/files/{id}");

    let patch = |token: String, body: Value| {
        h.http
            .patch(h.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let response = patch(
        writer(),
        serde_json::json!({"description": "first", "tags": ["a", "b", "a"]}),
    )
    .await
    .expect("patch");
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["version"], 2);
    assert_eq!(view["description"], "first");
    assert_eq!(view["tags"], serde_json::json!(["a", "b"]));
    let sidecar: Value = serde_json::from_slice(
        &h.element
            .core
            .backend
            .get_small(&format!("{key}.attr.json"))
            .await
            .expect("sidecar"),
    )
    .expect("json");
    assert_eq!(sidecar["version"], 2);
    assert_eq!(sidecar["description"], "first");

    // Another writer may not; an admin may.
    let response = patch(
        token(Role::Writer, "mallory"),
        serde_json::json!({"description": "x"}),
    )
    .await
    .expect("patch");
    assert_eq!(response.status(), 403);
    let response = patch(reader(), serde_json::json!({"description": "x"}))
        .await
        .expect("patch");
    assert_eq!(response.status(), 403);
    let response = patch(admin(), serde_json::json!({"description": null}))
        .await
        .expect("patch");
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["version"], 3);
    assert!(view["description"].is_null());
    // Bad bodies.
    for body in [
        serde_json::json!({"size": 1}),
        serde_json::json!({}),
        serde_json::json!({"tags": [""]}),
    ] {
        let response = patch(writer(), body.clone()).await.expect("patch");
        assert_eq!(response.status(), 400, "{body}");
    }

    let response = h
        .http
        .delete(h.url(&path))
        .bearer_auth(token(Role::Writer, "mallory"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 403);
    let response = h
        .http
        .delete(h.url(&path))
        .bearer_auth(writer())
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    assert!(h.object_keys().await.is_empty());
    assert_eq!(h.row_count().await, 0);
    let (status, body) = h.get_json(&reader(), &path).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "file_not_found");

    let events = h.wait_events(4).await;
    let kinds: Vec<(EventType, i64)> = events.iter().map(|e| (e.event_type, e.version)).collect();
    assert_eq!(
        kinds,
        vec![
            (EventType::Created, 1),
            (EventType::Updated, 2),
            (EventType::Updated, 3),
            (EventType::Deleted, 4)
        ]
    );
    assert_eq!(events[3].payload.version, 4);
    assert_eq!(events[3].payload.original_filename, "notes.txt");
    h.finish().await;
}

#[tokio::test]
async fn patch_and_delete_announce_versions_s3() {
    patch_and_delete_announce_versions(Kind::S3).await;
}

#[tokio::test]
async fn patch_and_delete_announce_versions_volume() {
    patch_and_delete_announce_versions(Kind::Volume).await;
}

#[tokio::test]
async fn list_pages_through_every_file_and_duplicates_are_allowed() {
    let h = Harness::start(Kind::Volume).await;
    let mut ids = HashSet::new();
    for i in 0..7 {
        // The same content every time: no uniqueness on the hash.
        let record = h
            .upload(&format!("same-{i}.bin"), b"identical".to_vec())
            .await;
        ids.insert(record["file_id"].as_str().expect("id").to_string());
    }
    assert_eq!(ids.len(), 7);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/files?limit=3&cursor={c}"),
            None => "/api/v1/files?limit=3".to_string(),
        };
        let (status, page) = h.get_json(&reader(), &path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 7);
        for f in page["files"].as_array().expect("files") {
            seen.push(f["file_id"].as_str().expect("id").to_string());
            assert_eq!(f["cache_expired"], false);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "every file exactly once");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), ids);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "stable order");
    for (path, code) in [
        ("/api/v1/files?limit=0", "invalid_limit"),
        ("/api/v1/files?limit=abc", "invalid_limit"),
        ("/api/v1/files?cursor=nope", "invalid_cursor"),
        ("/api/v1/files?colour=red", "invalid_query"),
    ] {
        let (status, body) = h.get_json(&reader(), path).await;
        assert_eq!((status, body["code"].as_str()), (400, Some(code)), "{path}");
    }
    let (status, st) = h.get_json(&reader(), "/api/v1/status").await;
    assert_eq!(status, 200);
    let st: artstore_contract::ElementStatus = serde_json::from_value(st).expect("status");
    assert_eq!(st.file_count, 7);
    assert_eq!(st.used_bytes, 7 * 9);
    assert_eq!(st.backend, "volume");
    assert_eq!(st.mode, artstore_contract::ElementMode::Edit);
    h.finish().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_leaves_nothing() {
    let h = Harness::start_with(Kind::S3, None, |c| {
        c.max_file_bytes = 1000;
        c.capacity_bytes = 1500;
    })
    .await;
    let w = writer();
    type Query<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Query, usize, u16, &str)> = vec![
        (
            vec![("filename", "../../etc/passwd")],
            10,
            400,
            "invalid_filename",
        ),
        (vec![("filename", "..")], 10, 400, "invalid_filename"),
        (vec![("filename", "a\u{7}b")], 10, 400, "invalid_filename"),
        (vec![("filename", "")], 10, 400, "invalid_filename"),
        (vec![], 10, 400, "invalid_filename"),
        (
            vec![("filename", "a.txt"), ("retention", "forever")],
            10,
            400,
            "invalid_retention",
        ),
        (
            vec![
                ("filename", "a.txt"),
                ("retention", "temporary"),
                ("retention_days", "-1"),
            ],
            10,
            400,
            "invalid_retention_days",
        ),
        (
            vec![("filename", "a.txt"), ("retention_days", "3")],
            10,
            400,
            "invalid_retention_days",
        ),
        (
            vec![("filename", "a.txt"), ("tag", "")],
            10,
            400,
            "invalid_tag",
        ),
        (
            vec![("filename", "a.txt"), ("mime_type", "nonsense")],
            10,
            400,
            "invalid_mime_type",
        ),
        (
            vec![("filename", "a.txt"), ("owner", "x")],
            10,
            400,
            "invalid_query",
        ),
        (vec![("filename", "big.bin")], 1001, 413, "file_too_large"),
    ];
    for (query, len, status, code) in cases {
        let response = h.upload_query(&w, &query, vec![7; len]).await;
        assert_eq!(response.status().as_u16(), status, "{query:?}");
        let body: Value = response.json().await.expect("json error");
        assert_eq!(body["code"], code, "{query:?}");
    }
    // Oversize without a Content-Length is stopped while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![1u8; 100])).collect();
    let response = h.upload_chunked(&w, "chunked.bin", chunks).await;
    assert_eq!(response.status(), 413);
    // Capacity: 900 fits, another 900 does not (known length and streamed).
    h.upload("fits.bin", vec![1; 900]).await;
    let response = h
        .upload_query(&w, &[("filename", "full.bin")], vec![1; 900])
        .await;
    assert_eq!(response.status(), 507);
    assert_eq!(
        response.json::<Value>().await.expect("json")["code"],
        "insufficient_storage"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..9).map(|_| Ok(vec![1u8; 100])).collect();
    let response = h.upload_chunked(&w, "full2.bin", chunks).await;
    assert_eq!(response.status(), 507);
    // Nothing but the one good file anywhere.
    assert_eq!(h.row_count().await, 1);
    assert_eq!(h.object_keys().await.len(), 2);

    // Auth and ids.
    let response = h
        .http
        .post(h.url("/api/v1/files?filename=x"))
        .body("x")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    let response = h
        .upload_query(&reader(), &[("filename", "x")], b"x".to_vec())
        .await;
    assert_eq!(response.status(), 403);
    let (status, body) = h.get_json(&reader(), "/api/v1/files/not-a-uuid").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_file_id"))
    );
    let unknown = uuid::Uuid::now_v7();
    let (status, body) = h
        .get_json(&reader(), &format!("/api/v1/files/{unknown}"))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("file_not_found"))
    );
    let (status, _) = h
        .get_json(&reader(), &format!("/api/v1/files/{unknown}/download"))
        .await;
    assert_eq!(status, 404);
    let (status, _) = h.post_json(&writer(), "/api/v1/cache/rebuild").await;
    assert_eq!(status, 403, "maintenance is for admins");
    h.finish().await;
}

#[tokio::test]
async fn read_only_modes_refuse_writes() {
    for mode in [
        artstore_contract::ElementMode::Ro,
        artstore_contract::ElementMode::Ar,
    ] {
        let h = Harness::start_with(Kind::Volume, None, |c| c.mode = mode).await;
        let response = h
            .upload_query(&writer(), &[("filename", "x.txt")], b"x".to_vec())
            .await;
        assert_eq!(response.status(), 409);
        assert_eq!(
            response.json::<Value>().await.expect("json")["code"],
            "element_not_writable"
        );
        assert!(h.object_keys().await.is_empty());
        h.finish().await;
    }
    // `rw` takes new files but does not change or delete them.
    let h = Harness::start_with(Kind::Volume, None, |c| {
        c.mode = artstore_contract::ElementMode::Rw
    })
    .await;
    let record = h.upload("x.txt", b"x".to_vec()).await;
    let id = record["file_id"].as_str().expect("id");
    let response = h
        .http
        .delete(h.url(&format!("/api/v1/files/{id}")))
        .bearer_auth(admin())
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.json::<Value>().await.expect("json")["code"],
        "element_not_editable"
    );
    assert_eq!(h.row_count().await, 1);
    h.finish().await;
}

#[tokio::test]
async fn temporary_files_carry_their_expiry() {
    let h = Harness::start(Kind::Volume).await;
    let response = h
        .upload_query(
            &writer(),
            &[
                ("filename", "tmp.log"),
                ("retention", "temporary"),
                ("retention_days", "3"),
            ],
            b"log".to_vec(),
        )
        .await;
    assert_eq!(response.status(), 201);
    let record: Value = response.json().await.expect("json");
    assert_eq!(record["retention"], "temporary");
    let created: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(record["created_at"].clone()).expect("created_at");
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(record["retention_expires_at"].clone()).expect("expiry");
    assert_eq!(expires - created, chrono::Duration::days(3));
    // Concurrent uploads all land (the stream keeps one event each).
    let uploads = futures::stream::iter(0..8)
        .map(|i| {
            let h = &h;
            async move { h.upload(&format!("c{i}.txt"), content(5000, i)).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(uploads.len(), 8);
    let events = h.wait_events(9).await;
    let ids: HashSet<_> = events.iter().map(|e| e.file_id).collect();
    assert_eq!(ids.len(), 9);
    h.finish().await;
}

/// A client that dies mid-upload leaves nothing behind: no blob, no temporary file, no
/// unfinished multipart upload, no row, no event.
/// A client that fails after 10 MiB; `declared`: its body has a Content-Length (12 MiB), so on
/// S3 it goes up as one PutObject while it arrives, not in parts.
async fn interrupted_upload_leaves_nothing(kind: Kind, declared: bool) {
    let h = Harness::start(kind).await;
    let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|i| Ok(content(1024 * 1024, i))).collect();
    chunks.push(Err(std::io::Error::other("client crashed")));
    let mut request = h
        .http
        .post(h.url("/api/v1/files"))
        .bearer_auth(writer())
        .query(&[("filename", "broken.bin")]);
    if declared {
        request = request.header(reqwest::header::CONTENT_LENGTH, 12 * 1024 * 1024);
    }
    let sent = request
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    assert!(sent.is_err() || sent.is_ok_and(|r| r.status().is_client_error()));
    artstore_testsupport::eventually(
        std::time::Duration::from_secs(20),
        "the interrupted upload is cleaned up",
        || async {
            let objects = h.object_keys().await;
            let unfinished = match &h.bucket {
                Some(bucket) => artstore_testsupport::s3_client()
                    .await
                    .list_multipart_uploads()
                    .bucket(bucket)
                    .send()
                    .await
                    .expect("list multipart uploads")
                    .uploads()
                    .len(),
                None => h.temp_files(),
            };
            (objects.is_empty() && unfinished == 0).then_some(())
        },
    )
    .await;
    assert_eq!(h.row_count().await, 0);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&h.db.pool)
        .await
        .expect("outbox");
    assert_eq!(outbox, 0);
    h.finish().await;
}

#[tokio::test]
async fn interrupted_upload_leaves_nothing_s3() {
    interrupted_upload_leaves_nothing(Kind::S3, false).await;
}

#[tokio::test]
async fn interrupted_upload_of_a_declared_length_leaves_nothing_s3() {
    interrupted_upload_leaves_nothing(Kind::S3, true).await;
}

#[tokio::test]
async fn interrupted_upload_leaves_nothing_volume() {
    interrupted_upload_leaves_nothing(Kind::Volume, false).await;
}

/// PostgreSQL refusing the element's connections is a 503 `database_unavailable` with
/// `Retry-After`, not a 500; the element recovers when the database is back.
#[tokio::test]
async fn a_database_that_refuses_connections_is_503_not_500() {
    let h = Harness::start(Kind::Volume).await;
    let record = h.upload("kept.txt", b"kept".to_vec()).await;
    let id = record["file_id"].as_str().expect("id").to_string();
    let admin = sqlx::PgPool::connect(&artstore_testsupport::services().database_url)
        .await
        .expect("admin connection");
    let set_connections = |allow: bool| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {allow}",
            h.db.name
        )))
    };
    set_connections(false)
        .execute(&admin)
        .await
        .expect("refuse");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&h.db.name)
        .execute(&admin)
        .await
        .expect("terminate");

    let response = h
        .http
        .get(h.url(&format!("/api/v1/files/{id}")))
        .bearer_auth(reader())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(body["code"], "database_unavailable", "{body}");

    set_connections(true).execute(&admin).await.expect("allow");
    artstore_testsupport::eventually(
        std::time::Duration::from_secs(30),
        "the element reads again",
        || async {
            let (status, _) = h.get_json(&reader(), &format!("/api/v1/files/{id}")).await;
            (status == 200).then_some(())
        },
    )
    .await;
    h.finish().await;
}

/// An ingester's upload (`X-Artstore-Upload-Id`) whose caller stops waiting before the commit
/// is rolled back: no row, no blob, no sidecar, no event. A plain upload cut off the same way
/// still commits (the element finishes what it started for other clients).
#[tokio::test]
async fn an_abandoned_ingester_upload_rolls_back_at_its_commit() {
    let h = Harness::start(Kind::Volume).await;
    for (with_id, expected_rows) in [(true, 0), (false, 1)] {
        // Hold the maintenance lock so the upload waits at its commit point.
        let mut holder = h.db.pool.begin().await.expect("tx");
        artstore_element::store::lock_for_maintenance(&mut holder)
            .await
            .expect("lock");
        let upload_id = uuid::Uuid::new_v4();
        let request = h.upload_request("late.txt", b"late".to_vec(), with_id.then_some(upload_id));
        let sent = tokio::spawn(request.send());
        // Wait until the upload is at its commit, waiting for the lock.
        artstore_testsupport::eventually(
            std::time::Duration::from_secs(30),
            "the upload waits at its commit",
            || async {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .fetch_one(&h.db.pool)
                .await
                .expect("pg_locks");
                (waiting > 0).then_some(())
            },
        )
        .await;
        // The caller gives up: its connection closes.
        sent.abort();
        let _ = sent.await;
        // Let the element see the closed connection before the commit can go on.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if with_id {
            // Recorded as abandoned at once, before the commit point: had the element died
            // here, a rebuild would remove blob and sidecar rather than restore them.
            artstore_testsupport::eventually(
                std::time::Duration::from_secs(30),
                "the upload id recorded as abandoned",
                || async {
                    let abandoned: Option<bool> =
                        sqlx::query_scalar("SELECT abandoned FROM uploads WHERE upload_id = $1")
                            .bind(upload_id)
                            .fetch_optional(&h.db.pool)
                            .await
                            .expect("uploads");
                    (abandoned == Some(true)).then_some(())
                },
            )
            .await;
        }
        holder.rollback().await.expect("release");
        // Rolled back: no row and no objects; committed: one row, its blob and sidecar.
        artstore_testsupport::eventually(
            std::time::Duration::from_secs(30),
            "the upload rolled back (with an upload id) or committed (without)",
            || async {
                let rows = h.row_count().await;
                let objects = h.object_keys().await.len() as i64;
                (rows == expected_rows && objects == 2 * expected_rows).then_some(())
            },
        )
        .await;
    }
    h.finish().await;
}

/// A PATCH or DELETE whose client goes away after the sidecar changed still reaches the cache
/// row (and the outbox): never a sidecar saying one thing and the cache another.
#[tokio::test]
async fn a_change_whose_client_goes_away_is_finished_not_half_applied() {
    use artstore_element::CrashPoint;
    use artstore_element::core::PauseGate;
    use std::sync::Arc;
    use std::time::Duration;

    let h = Harness::start(Kind::Volume).await;
    let record = h.upload("changed.txt", b"v1".to_vec()).await;
    let id = record["file_id"].as_str().expect("id").to_string();
    let core = h.element.core.clone();

    for method in ["PATCH", "DELETE"] {
        let gate = Arc::new(PauseGate::default());
        core.set_pause_point(Some((CrashPoint::AfterSidecar, gate.clone())));
        let mut request = h
            .http
            .request(
                method.parse().expect("method"),
                h.url(&format!("/api/v1/files/{id}")),
            )
            .bearer_auth(writer());
        if method == "PATCH" {
            request = request.json(&serde_json::json!({"description": "edited"}));
        }
        let sent = tokio::spawn(request.send());
        tokio::time::timeout(Duration::from_secs(30), gate.reached.notified())
            .await
            .expect("the change reached the point after the sidecar");
        // The client goes away while the change is between sidecar and cache row.
        sent.abort();
        let _ = sent.await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        core.set_pause_point(None);
        gate.release.notify_one();

        artstore_testsupport::eventually(
            Duration::from_secs(30),
            "the change finished in the cache too",
            || async {
                let row: Option<(i64, Option<String>)> = sqlx::query_as(
                    "SELECT version, record->>'description' FROM files WHERE file_id = $1::uuid",
                )
                .bind(&id)
                .fetch_optional(&h.db.pool)
                .await
                .expect("row");
                let done = match method {
                    "PATCH" => row.is_some_and(|(v, d)| v == 2 && d.as_deref() == Some("edited")),
                    _ => row.is_none() && h.object_keys().await.is_empty(),
                };
                done.then_some(())
            },
        )
        .await;
    }
    let events = h.wait_events(3).await;
    let kinds: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        kinds,
        vec![EventType::Created, EventType::Updated, EventType::Deleted]
    );
    h.finish().await;
}

/// The running totals behind the capacity check and `/status` follow every way rows come and
/// go: uploads, an edit, a delete, a full rebuild after the cache was emptied, and an
/// incremental one after a row was lost.
#[tokio::test]
async fn running_totals_match_the_files() {
    let h = Harness::start(Kind::Volume).await;
    let totals = || async {
        let counted: (i64, i64) =
            sqlx::query_as("SELECT count(*), COALESCE(sum(size), 0)::bigint FROM files")
                .fetch_one(&h.db.pool)
                .await
                .expect("count");
        let kept = artstore_element::store::file_count_and_bytes(&h.db.pool)
            .await
            .expect("totals");
        (counted, kept)
    };
    let mut ids = Vec::new();
    for (i, len) in [10usize, 2000, 333].into_iter().enumerate() {
        let record = h.upload(&format!("t{i}.bin"), content(len, i as u8)).await;
        ids.push(record["file_id"].as_str().expect("id").to_string());
    }
    let (counted, kept) = totals().await;
    assert_eq!(counted, (3, 2343));
    assert_eq!(kept, counted);

    let edited = h
        .http
        .patch(h.url(&format!("/api/v1/files/{}", ids[0])))
        .bearer_auth(writer())
        .json(&serde_json::json!({"description": "sizes stay"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(edited.status(), 200);
    let deleted = h
        .http
        .delete(h.url(&format!("/api/v1/files/{}", ids[1])))
        .bearer_auth(writer())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    let (counted, kept) = totals().await;
    assert_eq!(counted, (2, 343));
    assert_eq!(kept, counted);

    sqlx::query("TRUNCATE files")
        .execute(&h.db.pool)
        .await
        .expect("truncate");
    assert_eq!(totals().await.1, (0, 0));
    let (status, run) = h.post_json(&admin(), "/api/v1/cache/rebuild").await;
    assert_eq!(status, 200, "{run}");
    let (counted, kept) = totals().await;
    assert_eq!(counted, (2, 343));
    assert_eq!(kept, counted);

    sqlx::query("DELETE FROM files WHERE file_id = $1::uuid")
        .bind(&ids[2])
        .execute(&h.db.pool)
        .await
        .expect("lose a row");
    let (status, run) = h
        .post_json(&admin(), "/api/v1/cache/rebuild/incremental")
        .await;
    assert_eq!(status, 200, "{run}");
    let (counted, kept) = totals().await;
    assert_eq!(counted, (2, 343));
    assert_eq!(kept, counted);
    h.finish().await;
}

/// What the element sent to S3 through a [`recording_relay`], one buffer per connection.
type Sent = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// A TCP relay to the test S3 server that keeps what the element sends through it, each
/// connection apart (the blob's and the sidecar's PutObjects run at once).
async fn recording_relay(target: String) -> (String, Sent) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sent: Sent = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("relay listener");
    let url = format!("http://{}", listener.local_addr().expect("relay address"));
    let target = target.trim_start_matches("http://").to_string();
    let kept = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let slot = {
                let mut sent = kept.lock().expect("sent");
                sent.push(Vec::new());
                sent.len() - 1
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if let Ok(mut sent) = kept.lock() {
                            sent[slot].extend_from_slice(&buf[..n]);
                        }
                    }
                };
                let downstream = tokio::io::copy(&mut server_read, &mut client_write);
                let _ = tokio::join!(upstream, downstream);
            });
        }
    });
    (url, sent)
}

/// An element on S3 whose requests to S3 go through a [`recording_relay`].
async fn element_through_relay() -> (Harness, Sent) {
    let (relay, sent) = recording_relay(artstore_testsupport::services().s3_endpoint.clone()).await;
    let h = Harness::start_with(Kind::S3, None, |config| {
        if let artstore_element::BackendConfig::S3(s3) = &mut config.backend {
            s3.endpoint = relay.clone();
        }
    })
    .await;
    (h, sent)
}

/// The head (request line and headers, lower case) of each PutObject sent through the relay
/// whose path contains `key_part`.
fn put_heads(sent: &Sent, key_part: &str) -> Vec<String> {
    let sent = sent.lock().expect("sent").clone();
    let mut heads = Vec::new();
    for connection in &sent {
        let text = String::from_utf8_lossy(connection).to_lowercase();
        for request in text.split("put /").skip(1) {
            let head = request.split("\r\n\r\n").next().unwrap_or_default();
            if head
                .lines()
                .next()
                .is_some_and(|line| line.contains(key_part))
            {
                heads.push(head.to_string());
            }
        }
    }
    heads
}

#[tokio::test]
async fn a_one_part_blob_is_signed_with_the_hash_its_sidecar_records() {
    let (h, sent) = element_through_relay().await;
    let data = content(300_000, 7);
    let record = h.upload("signed.bin", data.clone()).await;
    assert_eq!(record["sha256"], sha256_hex(&data));
    let heads = put_heads(&sent, "signed_");
    let blob = heads
        .iter()
        .find(|head| {
            !head
                .lines()
                .next()
                .unwrap_or_default()
                .contains(".attr.json")
        })
        .expect("the blob's PutObject went through the relay");
    assert!(
        blob.contains(&format!("x-amz-content-sha256: {}", sha256_hex(&data))),
        "the blob's PutObject is not signed with the sidecar's hash: {blob}"
    );
    h.finish().await;
}

/// The SDK would sign the body's own hash too; given another one, the backend signs that: the
/// hash it is given is the one signed, not a second hashing of the body. A small body (below
/// 64 KiB) is signed with the hash the SDK computes of it.
#[tokio::test]
async fn the_s3_backend_signs_the_hash_it_is_given() {
    let large = bytes::Bytes::from(content(100_000, 3));
    let given = "ab".repeat(32);
    assert_eq!(signed_hash_of_put(large, &given).await, given);
    let small = bytes::Bytes::from_static(b"the body");
    assert_eq!(
        signed_hash_of_put(small.clone(), &given).await,
        sha256_hex(&small)
    );
}

/// The `x-amz-content-sha256` a one-part blob's PutObject carries when the backend is told
/// the blob's hash is `given`.
async fn signed_hash_of_put(body: bytes::Bytes, given: &str) -> String {
    use artstore_element::backend::{BlobBackend, Described, S3Backend, S3Settings};
    let env = artstore_testsupport::services();
    let (relay, sent) = recording_relay(env.s3_endpoint.clone()).await;
    let bucket = artstore_testsupport::fresh_bucket("signed")
        .await
        .expect("bucket");
    let settings = S3Settings {
        endpoint: relay,
        bucket,
        prefix: "signed".into(),
        region: env.s3_region.clone(),
        access_key: env.s3_access_key.clone(),
        secret_key: env.s3_secret_key.clone(),
    };
    let backend = S3Backend::connect(&settings, Default::default()).await;
    assert_ne!(given, sha256_hex(&body));
    let told = given.to_string();
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(body)]).boxed();
    backend
        .put_with_sidecar(
            "blob.bin",
            chunks,
            None,
            "blob.bin.attr.json",
            Box::new(move |_| {
                Ok(Described {
                    sidecar: bytes::Bytes::from_static(b"{}"),
                    blob_sha256: told,
                })
            }),
        )
        .await
        .expect("stored");
    let heads = put_heads(&sent, "signed/blob.bin?");
    assert_eq!(heads.len(), 1, "{heads:?}");
    heads[0]
        .lines()
        .find_map(|line| line.strip_prefix("x-amz-content-sha256: "))
        .map(|hash| hash.trim().to_string())
        .unwrap_or_else(|| panic!("no payload hash signed: {}", heads[0]))
}

/// The requests (method and path, lower case) sent through the relay whose path contains
/// `key_part`.
fn request_lines(sent: &Sent, key_part: &str) -> Vec<String> {
    let sent = sent.lock().expect("sent").clone();
    sent.iter()
        .flat_map(|connection| {
            String::from_utf8_lossy(connection)
                .to_lowercase()
                .split("\r\n")
                .filter(|line| {
                    line.ends_with(" http/1.1")
                        && line.contains(key_part)
                        && ["put ", "post ", "get ", "head ", "delete "]
                            .iter()
                            .any(|method| line.starts_with(method))
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A body with a Content-Length above one part goes up in one PutObject while it arrives (no
/// multipart upload, so nothing is left in flight after its last byte), and the sidecar beside
/// it; a body of the same size without one still goes up in parts.
#[tokio::test]
async fn a_body_of_a_declared_length_goes_up_in_one_put_object() {
    let (h, sent) = element_through_relay().await;
    let data = content(9 * 1024 * 1024 + 7, 3);
    let record = h.upload("declared.bin", data.clone()).await;
    assert_eq!(record["size"], data.len() as u64);
    assert_eq!(record["sha256"], sha256_hex(&data));
    let key = record["storage_key"].as_str().expect("key").to_string();
    let name = key.rsplit('/').next().expect("name").to_lowercase();
    let lines = request_lines(&sent, &name);
    let blob: Vec<_> = lines.iter().filter(|l| !l.contains(".attr.json")).collect();
    assert_eq!(blob.len(), 1, "one request for the blob: {lines:?}");
    assert!(blob[0].starts_with("put "), "{lines:?}");
    assert!(
        !blob[0].contains("uploads") && !blob[0].contains("partnumber"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("put ") && l.contains(".attr.json")),
        "the sidecar: {lines:?}"
    );
    let stored = h
        .element
        .core
        .backend
        .get_small(&key)
        .await
        .expect("the blob is stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(1024 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = h.upload_chunked(&writer(), "undeclared.bin", chunks).await;
    assert_eq!(response.status(), 201);
    let record: Value = response.json().await.expect("json");
    let key = record["storage_key"].as_str().expect("key");
    let name = key.rsplit('/').next().expect("name").to_lowercase();
    let lines = request_lines(&sent, &name);
    assert!(
        lines.iter().any(|l| l.contains("partnumber=2")),
        "without a length: parts {lines:?}"
    );
    h.finish().await;
}

/// A server that stops taking a streamed body's bytes ends the upload after the first-byte
/// timeout, though the SDK's own timeouts are off for that request.
#[tokio::test]
async fn a_streamed_put_to_a_server_that_stops_reading_fails_after_its_idle_time() {
    use artstore_element::backend::{
        BackendError, BlobBackend, Described, S3Backend, S3Settings, S3Timeouts,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    // Accepts and never reads: the socket buffers fill and then nothing moves.
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let settings = S3Settings {
        endpoint: format!("http://{address}"),
        bucket: "frozen".into(),
        prefix: String::new(),
        region: "us-east-1".into(),
        access_key: "key".into(),
        secret_key: "secret".into(),
    };
    let timeouts = S3Timeouts {
        first_byte: std::time::Duration::from_secs(1),
        ..S3Timeouts::default()
    };
    let backend = S3Backend::connect(&settings, timeouts).await;
    let length = 256u64 * 1024 * 1024;
    let chunk = bytes::Bytes::from(vec![7u8; 1024 * 1024]);
    let chunks = futures::stream::repeat_with(move || Ok(chunk.clone()))
        .take(256)
        .boxed();
    let started = std::time::Instant::now();
    let stored = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        backend.put_with_sidecar(
            "frozen.bin",
            chunks,
            Some(length),
            "frozen.bin.attr.json",
            Box::new(|_| {
                Ok(Described {
                    sidecar: bytes::Bytes::from_static(b"{}"),
                    blob_sha256: String::new(),
                })
            }),
        ),
    )
    .await
    .expect("the upload ends on its own");
    match stored {
        Err(BackendError::Storage(message)) => {
            assert!(message.contains("took no bytes"), "{message}")
        }
        other => panic!("a storage error, not {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    held.abort();
}

/// The capacity check remembers the bytes the cache holds for a second (this process's own
/// commits added at once), but refuses only on the database's figure: rows another process took
/// away meanwhile (a rebuild job) do not make a file that fits look too large.
#[tokio::test]
async fn a_refusal_for_capacity_is_decided_on_the_databases_figure() {
    let h = Harness::start_with(Kind::Volume, None, |c| {
        c.capacity_bytes = 1500;
    })
    .await;
    let first = h.upload("first.bin", vec![1; 900]).await;
    let response = h
        .upload_query(&writer(), &[("filename", "over.bin")], vec![1; 900])
        .await;
    assert_eq!(
        response.status(),
        507,
        "this process's commit counts at once"
    );
    // Another process removes the row: the remembered figure is now too high.
    sqlx::query("DELETE FROM files WHERE file_id = $1::uuid")
        .bind(first["file_id"].as_str().expect("file_id"))
        .execute(&h.db.pool)
        .await
        .expect("delete the row");
    let response = h
        .upload_query(&writer(), &[("filename", "fits.bin")], vec![1; 900])
        .await;
    assert_eq!(response.status(), 201, "refused on a remembered figure");
    h.finish().await;
}
