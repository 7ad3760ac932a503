//! An ingester's upload identity (`X-Artstore-Upload-Id`): a repeated id gets the file it
//! produced, and `DELETE /api/v1/uploads/{id}` removes a copy the ingester gave up on or makes a
//! commit still to come roll back.

use std::time::Duration;

use artstore_events::EventType;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::*;

async fn upload_with_id(h: &Harness, upload_id: Uuid, name: &str, body: &[u8]) -> (u16, Value) {
    let response = h
        .upload_request(name, body.to_vec(), Some(upload_id))
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn cancel(h: &Harness, upload_id: &str) -> (u16, Value) {
    let response = h
        .http
        .delete(h.url(&format!("/api/v1/uploads/{upload_id}")))
        .bearer_auth(writer())
        .send()
        .await
        .expect("cancel");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn outbox_kinds(h: &Harness) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
        .fetch_all(&h.db.pool)
        .await
        .expect("outbox")
}

#[tokio::test]
async fn a_repeated_upload_id_gets_the_file_it_produced() {
    let h = Harness::start(Kind::Volume).await;
    let id = Uuid::new_v4();
    let (status, first) = upload_with_id(&h, id, "once.txt", b"first body").await;
    assert_eq!(status, 201, "{first}");
    // Even with another body: the id already produced a file, nothing new is stored.
    let (status, again) = upload_with_id(&h, id, "once.txt", b"another body").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["file_id"], first["file_id"]);
    assert_eq!(again["sha256"], sha256_hex(b"first body"));
    assert_eq!(h.row_count().await, 1);
    assert_eq!(h.object_keys().await.len(), 2, "one blob and one sidecar");
    assert_eq!(outbox_kinds(&h).await, vec!["file.created"]);

    // Concurrent attempts with one id commit once.
    let other = Uuid::new_v4();
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| format!("body {i}").into_bytes()).collect();
    let attempts = futures::future::join_all(
        bodies
            .iter()
            .map(|body| upload_with_id(&h, other, "race.txt", body)),
    )
    .await;
    let ids: std::collections::HashSet<String> = attempts
        .iter()
        .map(|(status, record)| {
            assert!(*status == 200 || *status == 201, "{status} {record}");
            record["file_id"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{attempts:?}");
    assert_eq!(h.row_count().await, 2);
    assert_eq!(h.object_keys().await.len(), 4);

    let (status, error) = upload_with_id_raw(&h, "not-a-uuid").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_upload_id"))
    );
    let (status, error) = cancel(&h, "not-a-uuid").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_upload_id"))
    );
    h.finish().await;
}

async fn upload_with_id_raw(h: &Harness, upload_id: &str) -> (u16, Value) {
    let response = h
        .http
        .post(h.url("/api/v1/files"))
        .bearer_auth(writer())
        .header(artstore_element::http::UPLOAD_ID_HEADER, upload_id)
        .query(&[("filename", "bad-id.txt")])
        .body(b"x".to_vec())
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// The cancel arrives while the upload waits at its commit (its caller still connected, as
/// through an element that froze): the commit is refused and nothing stays.
#[tokio::test]
async fn a_cancel_before_the_commit_makes_the_commit_roll_back() {
    let h = Harness::start(Kind::S3).await;
    let id = Uuid::new_v4();
    // Hold the maintenance lock so the upload waits at its commit point.
    let mut holder = h.db.pool.begin().await.expect("tx");
    artstore_element::store::lock_for_maintenance(&mut holder)
        .await
        .expect("lock");
    let request = h
        .upload_request("late.txt", content(100_000, 3), Some(id))
        .send();
    let sent = tokio::spawn(request);
    artstore_testsupport::eventually(
        Duration::from_secs(30),
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
    assert_eq!(h.object_keys().await.len(), 2, "blob and sidecar written");

    let (status, answer) = cancel(&h, &id.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deleted_file_id"], Value::Null);
    holder.rollback().await.expect("release");

    let response = sent.await.expect("task").expect("answer");
    assert_eq!(response.status().as_u16(), 410);
    let error: Value = response.json().await.expect("JSON");
    assert_eq!(error["code"], "upload_cancelled", "{error}");
    assert_eq!(h.row_count().await, 0);
    assert!(h.object_keys().await.is_empty(), "no blob, no sidecar");
    assert!(outbox_kinds(&h).await.is_empty(), "nothing announced");
    // The id stays refused.
    let (status, error) = upload_with_id(&h, id, "late.txt", b"again").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (410, Some("upload_cancelled"))
    );
    h.finish().await;
}

/// The cancel arrives after the commit (the answer never reached the ingester): the copy is
/// deleted and `file.deleted` published. A file deleted normally keeps its id refused.
#[tokio::test]
async fn a_cancel_after_the_commit_deletes_the_copy_and_announces_it() {
    let h = Harness::start(Kind::Volume).await;
    let id = Uuid::new_v4();
    let (status, record) = upload_with_id(&h, id, "committed.txt", b"committed").await;
    assert_eq!(status, 201, "{record}");
    let file_id = record["file_id"].as_str().expect("id").to_string();

    let (status, answer) = cancel(&h, &id.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deleted_file_id"].as_str(), Some(file_id.as_str()));
    let (status, _) = h
        .get_json(&reader(), &format!("/api/v1/files/{file_id}"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(h.row_count().await, 0);
    assert!(h.object_keys().await.is_empty());
    let events = h.wait_events(2).await;
    let kinds: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(kinds, vec![EventType::Created, EventType::Deleted]);
    assert_eq!(events[1].file_id.to_string(), file_id);
    assert_eq!(events[1].version, 2);
    // Again: nothing left to do.
    let (status, answer) = cancel(&h, &id.to_string()).await;
    assert_eq!(
        (status, answer["deleted_file_id"].clone()),
        (200, Value::Null)
    );

    // Deleted normally: the id is not reused for a new copy.
    let normal = Uuid::new_v4();
    let (_, record) = upload_with_id(&h, normal, "normal.txt", b"normal").await;
    let normal_file = record["file_id"].as_str().expect("id").to_string();
    let deleted = h
        .http
        .delete(h.url(&format!("/api/v1/files/{normal_file}")))
        .bearer_auth(writer())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
    let (status, error) = upload_with_id(&h, normal, "normal.txt", b"normal").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (410, Some("upload_deleted"))
    );
    let (status, answer) = cancel(&h, &normal.to_string()).await;
    assert_eq!(
        (status, answer["deleted_file_id"].clone()),
        (200, Value::Null)
    );
    assert_eq!(h.row_count().await, 0);
    h.finish().await;
}

/// A client's own writer token does not let it write to a storage element directly (past the
/// ingester's limits and idempotency): 403 `internal_only` for upload, change, delete and
/// cancel. Reading with one's own token, and an admin's own token for anything, still work.
#[tokio::test]
async fn a_writers_own_token_cannot_write_to_an_element_directly() {
    use artstore_common::auth::Role;
    let h = Harness::start(Kind::Volume).await;
    let own_writer = own_token(Role::Writer, "alice");
    let record = h.upload("mine.txt", b"through the ingester".to_vec()).await;
    let file_id = record["file_id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/files/{file_id}");

    let refused = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("internal_only"))
        );
    };
    refused(
        h.upload_query(
            &own_writer,
            &[("filename", "direct.txt")],
            b"direct".to_vec(),
        )
        .await,
    )
    .await;
    refused(
        h.http
            .patch(h.url(&path))
            .bearer_auth(&own_writer)
            .json(&serde_json::json!({"description": "direct"}))
            .send()
            .await
            .expect("patch"),
    )
    .await;
    refused(
        h.http
            .delete(h.url(&path))
            .bearer_auth(&own_writer)
            .send()
            .await
            .expect("delete"),
    )
    .await;
    refused(
        h.http
            .delete(h.url(&format!("/api/v1/uploads/{}", Uuid::new_v4())))
            .bearer_auth(&own_writer)
            .send()
            .await
            .expect("cancel"),
    )
    .await;
    assert_eq!(h.row_count().await, 1, "nothing changed");

    // Reading with one's own token is fine.
    let (status, _) = h.get_json(&own_writer, &path).await;
    assert_eq!(status, 200);
    let (status, _) = h.get_json(&own_token(Role::Reader, "carol"), &path).await;
    assert_eq!(status, 200);
    // An admin's own token writes (maintenance, repairs).
    let admin = own_token(Role::Admin, "root");
    let response = h
        .upload_query(&admin, &[("filename", "by-admin.txt")], b"admin".to_vec())
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let deleted = h
        .http
        .delete(h.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
    h.finish().await;
}

/// An upload with an id whose element dies between its sidecar and its commit: blob and
/// sidecar (carrying the id) are written, no row. Returns the file id the sidecar describes.
async fn crash_before_commit(h: &Harness, upload_id: Option<Uuid>, name: &str) -> String {
    let core = &h.element.core;
    let before = h.object_keys().await;
    core.set_crash_point(Some(artstore_element::CrashPoint::AfterSidecar));
    let response = h
        .upload_request(name, name.as_bytes().to_vec(), upload_id)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status().as_u16(), 500);
    core.set_crash_point(None);
    let sidecar = h
        .object_keys()
        .await
        .into_iter()
        .find(|k| !before.contains(k) && k.ends_with(".attr.json"))
        .expect("the sidecar was written");
    let read = core
        .read_sidecar_with_upload_id(&sidecar)
        .await
        .expect("sidecar");
    assert_eq!(
        read.upload_id, upload_id,
        "the sidecar carries the upload id"
    );
    read.record.file_id.to_string()
}

async fn rebuild(h: &Harness, path: &str) -> Value {
    let (status, run) = h.post_json(&admin(), path).await;
    assert_eq!(status, 200, "{run}");
    assert!(
        run["errors"].as_array().is_some_and(|e| e.is_empty()),
        "{run}"
    );
    run
}

async fn consistency(h: &Harness) -> Value {
    let (status, report) = h.get_json(&reader(), "/api/v1/cache/consistency").await;
    assert_eq!(status, 200, "{report}");
    report
}

/// The element dies after writing an upload's blob and sidecar, before its commit; the
/// ingester (which counts the lost answer as a failure) stored the file elsewhere.
/// (a) Its cancel arrives before the rebuild: the rebuild removes blob and sidecar and
/// announces nothing. (b) The rebuild runs first: the file is restored (`file.created`) with its
/// id recorded, and the cancel then deletes it (`file.deleted`): one copy either way.
/// (c) A sidecar without an upload id is restored as before.
async fn a_crash_before_the_commit_leaves_no_second_copy(kind: Kind) {
    let h = Harness::start_with(kind, None, |c| c.orphan_blob_grace = Duration::ZERO).await;

    // (a), with both kinds of rebuild.
    for path in ["/api/v1/cache/rebuild/incremental", "/api/v1/cache/rebuild"] {
        let id = Uuid::new_v4();
        crash_before_commit(&h, Some(id), "given-up.txt").await;
        assert_eq!(h.object_keys().await.len(), 2);
        let (status, answer) = cancel(&h, &id.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["deleted_file_id"],
            Value::Null,
            "nothing was committed"
        );
        let report = consistency(&h).await;
        assert_eq!(report["is_consistent"], false, "{report}");
        assert_eq!(report["details"]["abandoned_upload_count"], 1, "{report}");
        assert_eq!(
            report["orphan_attr_count"], 0,
            "not a file to restore: {report}"
        );
        let run = rebuild(&h, path).await;
        assert_eq!(
            (&run["abandoned_uploads_removed"], &run["added"]),
            (&Value::from(1), &Value::from(0)),
            "{run}"
        );
        assert!(h.object_keys().await.is_empty(), "blob and sidecar removed");
        assert_eq!(h.row_count().await, 0);
        assert!(outbox_kinds(&h).await.is_empty(), "nothing announced");
        assert_eq!(consistency(&h).await["is_consistent"], true);
    }

    // (b)
    let id = Uuid::new_v4();
    let file_id = crash_before_commit(&h, Some(id), "late-cancel.txt").await;
    let run = rebuild(&h, "/api/v1/cache/rebuild/incremental").await;
    assert_eq!(run["added"], 1, "{run}");
    assert_eq!(run["abandoned_uploads_removed"], 0, "{run}");
    let (status, _) = h
        .get_json(&reader(), &format!("/api/v1/files/{file_id}"))
        .await;
    assert_eq!(status, 200, "restored");
    let (status, answer) = cancel(&h, &id.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deleted_file_id"].as_str(), Some(file_id.as_str()));
    assert_eq!(h.row_count().await, 0);
    assert!(h.object_keys().await.is_empty());
    let events = h.wait_events(2).await;
    let seen: Vec<(EventType, String, i64)> = events
        .iter()
        .map(|e| (e.event_type, e.file_id.to_string(), e.version))
        .collect();
    assert_eq!(
        seen,
        vec![
            (EventType::Created, file_id.clone(), 1),
            (EventType::Deleted, file_id.clone(), 2)
        ]
    );
    // The id stays refused for a repeat.
    let (status, error) = upload_with_id(&h, id, "late-cancel.txt", b"again").await;
    assert_eq!(status, 410, "{error}");

    // (c)
    let file_id = crash_before_commit(&h, None, "no-id.txt").await;
    let report = consistency(&h).await;
    assert_eq!(report["orphan_attr_count"], 1, "{report}");
    assert_eq!(report["details"]["abandoned_upload_count"], 0, "{report}");
    let run = rebuild(&h, "/api/v1/cache/rebuild/incremental").await;
    assert_eq!(run["added"], 1, "{run}");
    let events = h.wait_events(3).await;
    assert_eq!(
        (events[2].event_type, events[2].file_id.to_string()),
        (EventType::Created, file_id)
    );
    assert_eq!(consistency(&h).await["is_consistent"], true);
    h.finish().await;
}

#[tokio::test]
async fn a_crash_before_the_commit_leaves_no_second_copy_s3() {
    a_crash_before_the_commit_leaves_no_second_copy(Kind::S3).await;
}

#[tokio::test]
async fn a_crash_before_the_commit_leaves_no_second_copy_volume() {
    a_crash_before_the_commit_leaves_no_second_copy(Kind::Volume).await;
}

/// Within the grace period an upload id nobody committed or cancelled is an upload in flight:
/// the rebuild leaves its blob and sidecar to the upload's own commit.
#[tokio::test]
async fn a_rebuild_leaves_an_upload_in_flight_alone() {
    let h = Harness::start(Kind::Volume).await;
    let id = Uuid::new_v4();
    crash_before_commit(&h, Some(id), "in-flight.txt").await;
    let run = rebuild(&h, "/api/v1/cache/rebuild/incremental").await;
    assert_eq!(
        (&run["added"], &run["abandoned_uploads_removed"]),
        (&Value::from(0), &Value::from(0)),
        "{run}"
    );
    assert_eq!(h.object_keys().await.len(), 2);
    assert_eq!(h.row_count().await, 0);
    assert!(outbox_kinds(&h).await.is_empty());
    h.finish().await;
}

/// An id abandoned before any commit outlives the 48 h until a clean rebuild has run after it
/// (that rebuild removes what a crash before the commit left); a committed id goes at 48 h.
#[tokio::test]
async fn an_abandoned_id_is_kept_until_a_rebuild_has_run_after_it() {
    let h = Harness::start(Kind::Volume).await;
    let pool = &h.db.pool;
    let (abandoned, committed) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO uploads (upload_id, file_id, abandoned, recorded_at) VALUES
         ($1, NULL, true, now() - interval '50 hours'),
         ($2, gen_random_uuid(), false, now() - interval '50 hours')",
    )
    .bind(abandoned)
    .bind(committed)
    .execute(pool)
    .await
    .expect("seed");
    let prune = || async {
        artstore_element::store::prune_upload_ids(
            pool,
            chrono::Utc::now() - chrono::Duration::hours(48),
            chrono::Duration::hours(1),
        )
        .await
        .expect("prune")
    };
    let left = || async {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT upload_id FROM uploads")
            .fetch_all(pool)
            .await
            .expect("ids");
        ids
    };
    assert_eq!(prune().await, 1);
    assert_eq!(left().await, vec![abandoned]);
    // A rebuild within the grace period after the cancel, or one with errors, does not count.
    sqlx::query(
        "INSERT INTO maintenance_runs (kind, started_at, finished_at, report) VALUES
         ('incremental', now() - interval '49 hours 30 minutes', now(), '{\"errors\": []}'),
         ('incremental', now() - interval '10 hours', now(), '{\"errors\": [\"x\"]}'),
         ('consistency', now() - interval '10 hours', now(), '{\"errors\": []}')",
    )
    .execute(pool)
    .await
    .expect("runs");
    assert_eq!(prune().await, 0);
    sqlx::query(
        "INSERT INTO maintenance_runs (kind, started_at, finished_at, report)
         VALUES ('full', now() - interval '10 hours', now(), '{\"errors\": []}')",
    )
    .execute(pool)
    .await
    .expect("run");
    assert_eq!(prune().await, 1);
    assert!(left().await.is_empty());
    h.finish().await;
}

/// An ingester's upload that fails here records its id as abandoned: the ingester never sends
/// that id again, and should the backend have kept blob or sidecar of it (a failure to take them
/// back), the next rebuild removes them instead of restoring a file its caller was told failed.
#[tokio::test]
async fn a_failed_upload_records_its_id_as_abandoned() {
    let h = Harness::start(Kind::Volume).await;
    let id = Uuid::new_v4();
    let (status, error) = upload_with_id(&h, id, "../escape.txt", b"refused").await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = upload_with_id(&h, id, "fine.txt", b"refused").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (410, Some("upload_cancelled")),
        "{error}"
    );
    assert_eq!(h.row_count().await, 0);
    // Another id goes through.
    let (status, _) = upload_with_id(&h, Uuid::new_v4(), "fine.txt", b"stored").await;
    assert_eq!(status, 201);
    h.finish().await;
}
