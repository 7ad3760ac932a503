//! An ingester's upload identity (`X-Artstore-Upload-Id`): a repeated id gets the file it
//! produced, and `DELETE /api/v1/uploads/{id}` removes a copy the ingester gave up on or makes a
//! commit still to come roll back.

use std::time::Duration;

use artstore_events::EventType;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::*;

const UPLOAD_ID: &str = "x-artstore-upload-id";

async fn upload_with_id(h: &Harness, upload_id: Uuid, name: &str, body: &[u8]) -> (u16, Value) {
    let response = h
        .http
        .post(h.url("/api/v1/files"))
        .bearer_auth(writer())
        .header(UPLOAD_ID, upload_id.to_string())
        .query(&[("filename", name)])
        .body(body.to_vec())
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
        .header(UPLOAD_ID, upload_id)
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
        .http
        .post(h.url("/api/v1/files"))
        .bearer_auth(writer())
        .header(UPLOAD_ID, id.to_string())
        .query(&[("filename", "late.txt")])
        .body(content(100_000, 3))
        .send();
    let sent = tokio::spawn(request);
    artstore_testsupport::eventually(
        Duration::from_secs(30),
        "the upload waits at its commit",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
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
