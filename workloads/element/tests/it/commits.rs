//! Group commit: uploads that are ready to commit while a commit statement runs are committed
//! together, each with its own answer, row, outbox row and upload-id claim.

use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::harness::*;

const UPLOADS: usize = 20;

async fn upload(h: &Harness, n: usize, upload_id: Option<Uuid>) -> (u16, Value) {
    let response = h
        .upload_request(
            &format!("group-{n}.bin"),
            content(1000 + n, n as u8),
            upload_id,
        )
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// Waits until every upload has stored its blob and sidecar (and so waits for its commit).
async fn wait_for_objects(h: &Harness, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.object_keys().await.len() < n {
        assert!(
            Instant::now() < deadline,
            "uploads never reached their commit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn uploads_ready_at_once_commit_together_each_with_its_own_answer() {
    let h = Harness::start(Kind::Volume).await;
    // Every fourth upload has no upload id; three others share one, the rest have their own.
    let shared = Uuid::new_v4();
    let ids: Vec<Option<Uuid>> = (0..UPLOADS)
        .map(|n| match n % 4 {
            0 => None,
            1 => Some(Uuid::new_v4()),
            _ if n < 8 => Some(shared),
            _ => Some(Uuid::new_v4()),
        })
        .collect();
    let sharing = ids.iter().filter(|id| **id == Some(shared)).count();
    assert_eq!(sharing, 4);

    // Held by another transaction: the first commit statements wait, the uploads behind them
    // queue; released once every upload has stored its objects (and so waits for its commit).
    let mut blocker = h.db.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE files IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let uploads =
        futures::future::join_all(ids.iter().enumerate().map(|(n, id)| upload(&h, n, *id)));
    let release = async {
        wait_for_objects(&h, 2 * UPLOADS).await;
        // From its sidecar to the queue an upload takes microseconds.
        tokio::time::sleep(Duration::from_millis(200)).await;
        blocker.commit().await.expect("release");
    };
    let (answers, ()) = tokio::join!(uploads, release);

    let mut created = std::collections::HashSet::new();
    let mut shared_files = std::collections::HashSet::new();
    for ((status, record), id) in answers.iter().zip(&ids) {
        assert!(*status == 200 || *status == 201, "{status} {record}");
        let file_id = record["file_id"].as_str().expect("file_id").to_string();
        if *id == Some(shared) {
            shared_files.insert(file_id.clone());
        } else {
            assert_eq!(*status, 201, "{record}");
        }
        created.insert(file_id);
    }
    assert_eq!(shared_files.len(), 1, "one id, one file: {answers:?}");
    assert_eq!(created.len(), UPLOADS - sharing + 1);

    let files: Vec<(Uuid, i64)> = sqlx::query_as("SELECT file_id, size FROM files")
        .fetch_all(&h.db.pool)
        .await
        .expect("files");
    let rows: std::collections::HashSet<String> =
        files.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(rows, created);
    let announced: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT event_type, file_id FROM outbox ORDER BY id")
            .fetch_all(&h.db.pool)
            .await
            .expect("outbox");
    assert_eq!(announced.len(), created.len(), "{announced:?}");
    assert!(
        announced
            .iter()
            .all(|(kind, id)| kind == "file.created" && created.contains(&id.to_string()))
    );
    let totals = artstore_element::store::file_count_and_bytes(&h.db.pool)
        .await
        .expect("totals");
    let bytes: i64 = files.iter().map(|(_, size)| size).sum();
    assert_eq!(totals, (files.len() as i64, bytes));
    // One transaction id per statement: the two statements held by the lock, the queue behind
    // them in one more (a slow machine may leave one upload behind for a statement of its own).
    let statements: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM files")
        .fetch_one(&h.db.pool)
        .await
        .expect("xmin");
    assert!(
        statements <= 4,
        "{statements} statements for {} files",
        files.len()
    );
    assert_eq!(
        h.object_keys().await.len(),
        2 * created.len(),
        "the repeats' objects are taken back"
    );
    h.finish().await;
}
