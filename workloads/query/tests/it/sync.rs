//! Event sync: stream → consumer group → cache.

use std::time::Duration;

use artstore_events::EventType;
use artstore_events::consumer::Applier;
use artstore_events::consumer::dead_letter_fields;
use artstore_query::apply::{CacheApplier, event_row};
use artstore_testsupport::eventually;

use crate::support::*;

/// Reference document 000's flow: publish → consumer group → cache → search finds it.
#[tokio::test]
async fn published_event_reaches_the_cache_and_search_finds_it() {
    let mut env = Env::new("e2e").await;
    env.ensure_group("$").await;
    let node = start(env.config("pod-0")).await;
    let mut rec = record("sync-test-file.txt");
    rec.description = Some("quarterly numbers".into());
    env.publish(&event(EventType::Created, &rec)).await;
    env.wait_version(rec.file_id, 1, false).await;

    let (status, body) = search(&node, serde_json::json!({"query": "quarterly"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), vec![rec.file_id.to_string()]);
    let response = http()
        .get(format!("{}/api/v1/files/{}", node.url(), rec.file_id))
        .bearer_auth(token(artstore_common::auth::Role::Reader))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 200);
    let got: serde_json::Value = response.json().await.expect("json");
    assert_eq!(got["original_filename"], "sync-test-file.txt");
    // Acknowledged after the commit: nothing stays pending.
    env.wait_nothing_pending().await;
    node.shutdown().await;
}

/// Reference document 000, bug 2: a unique index on the content hash refused the second of two
/// files with the same content.
#[tokio::test]
async fn two_files_with_identical_content_are_both_indexed() {
    let mut env = Env::new("same-hash").await;
    env.ensure_group("$").await;
    let node = start(env.config("pod-0")).await;
    let first = record("original.bin");
    let mut second = record("copy-of-original.bin");
    second.sha256 = first.sha256.clone();
    env.publish(&event(EventType::Created, &first)).await;
    env.publish(&event(EventType::Created, &second)).await;
    env.wait_version(first.file_id, 1, false).await;
    env.wait_version(second.file_id, 1, false).await;
    let unique_on_hash: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'file_cache' \
         AND indexdef ILIKE '%UNIQUE%' AND indexdef ILIKE '%sha256%'",
    )
    .fetch_one(&env.db.pool)
    .await
    .expect("pg_indexes");
    assert_eq!(unique_on_hash, 0);
    let (_, body) = search(&node, serde_json::json!({"query": "original"})).await;
    let mut found = ids(&body);
    found.sort();
    let mut expected = vec![first.file_id.to_string(), second.file_id.to_string()];
    expected.sort();
    assert_eq!(found, expected);
    assert!(
        env.dead_letters(&format!("{}:dead-letter", env.stream))
            .await
            .is_empty()
    );
    node.shutdown().await;
}

/// Reference document 000's start-up race: the node starts before anyone created the stream
/// or the group, and consumes once events arrive — no restart.
#[tokio::test]
async fn node_started_before_the_stream_exists_consumes_once_events_arrive() {
    let mut env = Env::new("race").await;
    let node = start(env.config("pod-0")).await;
    // Let the consumer hit the missing stream at least once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rec = record("late-stream.txt");
    env.publish(&event(EventType::Created, &rec)).await;
    env.wait_version(rec.file_id, 1, false).await;
    node.shutdown().await;
}

/// The group deleted under a running node (or the stream with it) is recreated; events
/// published afterwards still arrive.
#[tokio::test]
async fn a_group_destroyed_while_running_is_recreated() {
    let mut env = Env::new("nogroup").await;
    env.ensure_group("$").await;
    let node = start(env.config("pod-0")).await;
    let first = record("before.txt");
    env.publish(&event(EventType::Created, &first)).await;
    env.wait_version(first.file_id, 1, false).await;
    let _: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&env.stream)
        .arg(&env.group)
        .query_async(&mut env.redis)
        .await
        .expect("destroy group");
    let second = record("after.txt");
    env.publish(&event(EventType::Created, &second)).await;
    env.wait_version(second.file_id, 1, false).await;
    node.shutdown().await;
}

/// Duplicates and reordering converge to the newest version; a delete is a tombstone that a
/// late, older update cannot undo.
#[tokio::test]
async fn duplicates_and_out_of_order_versions_converge_to_the_newest() {
    let mut env = Env::new("order").await;
    env.ensure_group("$").await;
    let mut v1 = record("draft.txt");
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.original_filename = "final.txt".into();
    let mut v3 = v1.clone();
    v3.version = 3;
    v1.version = 1;
    let deleted = event(EventType::Deleted, &v3);
    let other = record("other.txt");
    let mut other_v2 = other.clone();
    other_v2.version = 2;
    other_v2.description = Some("second".into());

    // Newest first, then the older ones, each twice; one file never deleted.
    for e in [
        event(EventType::Updated, &v2),
        event(EventType::Updated, &v2),
        event(EventType::Updated, &other_v2),
        event(EventType::Created, &v1),
        event(EventType::Created, &other),
    ] {
        env.publish(&e).await;
    }
    let node = start(env.config("pod-0")).await;
    env.wait_version(v1.file_id, 2, false).await;
    env.wait_version(other.file_id, 2, false).await;
    env.publish(&deleted).await;
    env.publish(&event(EventType::Updated, &v2)).await;
    env.publish(&event(EventType::Created, &v1)).await;
    env.wait_version(v1.file_id, 3, true).await;
    // The late v2 and v1 come after the delete and must not revive it.
    env.wait_nothing_pending().await;
    assert_eq!(env.version_of(v1.file_id).await, Some((3, true)));
    let (_, body) = search(&node, serde_json::json!({"query": "final"})).await;
    assert!(ids(&body).is_empty(), "deleted file is searchable: {body}");
    let response = http()
        .get(format!("{}/api/v1/files/{}", node.url(), v1.file_id))
        .bearer_auth(token(artstore_common::auth::Role::Reader))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 404);
    let (_, body) = search(&node, serde_json::json!({"query": "second"})).await;
    assert_eq!(ids(&body), vec![other.file_id.to_string()]);
    // The node's status (what the operator shows as indexedFiles) counts live files only.
    let status: serde_json::Value = http()
        .get(format!("{}/api/v1/status", node.url()))
        .bearer_auth(token(artstore_common::auth::Role::Reader))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(
        status,
        serde_json::json!({"indexed_files": 1, "tombstones": 1})
    );
    node.shutdown().await;
}

/// A crash after the commit but before XACK: the restarted replica (same consumer name) reads
/// its own pending entries again; the version rule makes the second application a no-op.
#[tokio::test]
async fn a_consumer_killed_after_commit_before_ack_does_not_duplicate() {
    let mut env = Env::new("crash-ack").await;
    env.install_apply_log().await;
    env.ensure_group("$").await;
    let recs: Vec<_> = (0..3).map(|i| record(&format!("crash-{i}.txt"))).collect();
    for r in &recs {
        env.publish(&event(EventType::Created, r)).await;
    }
    // The first life of "pod-0": read a batch, commit it, die before XACK.
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&env.group)
        .arg("pod-0")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&env.stream)
        .arg(">")
        .query_async(&mut env.redis)
        .await
        .expect("read");
    let entries = artstore_events::consumer::parse_xreadgroup(&reply, &env.stream).expect("parse");
    assert_eq!(entries.len(), 3);
    let applier = CacheApplier::new(env.db.pool.clone(), None);
    let rows: Vec<_> = entries
        .iter()
        .map(|raw| {
            let fields = raw
                .fields
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8(k).expect("utf8"),
                        String::from_utf8(v).expect("utf8"),
                    )
                })
                .collect();
            let event = artstore_events::FileEvent::from_fields(&fields).expect("decode");
            event_row(&event).expect("row")
        })
        .collect();
    applier.apply(&rows).await.expect("commit");
    assert_eq!(env.pending().await, 3, "not acknowledged: the crash");

    // The second life of "pod-0".
    let node = start(env.config("pod-0")).await;
    env.wait_nothing_pending().await;
    for r in &recs {
        assert_eq!(env.apply_log(r.file_id).await, vec![1], "applied once");
    }
    node.shutdown().await;
}

/// A batch refused mid-way is rolled back whole; its good entries go through one by one, the
/// refused one stays pending, is retried from the pending list after its idle time and, once
/// it can be applied, is applied exactly once.
#[tokio::test]
async fn a_batch_failing_mid_way_is_retried_from_pending_and_applied_once() {
    let mut env = Env::new("midway").await;
    env.install_apply_log().await;
    // Refuse one file while it is listed in `refuse` (a real constraint failure in the database).
    for sql in [
        "CREATE TABLE refuse (file_id uuid PRIMARY KEY)",
        "CREATE FUNCTION refuse_listed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF EXISTS (SELECT 1 FROM refuse WHERE file_id = NEW.file_id) THEN \
         RAISE EXCEPTION 'file % refused by test', NEW.file_id; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER file_cache_refuse BEFORE INSERT OR UPDATE ON file_cache \
         FOR EACH ROW EXECUTE FUNCTION refuse_listed()",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&env.db.pool)
            .await
            .expect("setup");
    }
    let recs: Vec<_> = (0..5).map(|i| record(&format!("midway-{i}.txt"))).collect();
    let bad = recs[2].file_id;
    sqlx::query("INSERT INTO refuse VALUES ($1)")
        .bind(bad)
        .execute(&env.db.pool)
        .await
        .expect("refuse");
    env.ensure_group("$").await;
    for r in &recs {
        env.publish(&event(EventType::Created, r)).await;
    }
    let mut config = env.config("pod-0");
    config.max_deliveries = 100;
    config.claim_min_idle = Duration::from_millis(200);
    let node = start(config).await;
    for (i, r) in recs.iter().enumerate() {
        if i != 2 {
            env.wait_version(r.file_id, 1, false).await;
        }
    }
    eventually(WAIT, "the refused entry was retried", || async {
        (node.metrics.events_failed.get() >= 2).then_some(())
    })
    .await;
    assert_eq!(env.version_of(bad).await, None);
    assert_eq!(env.pending().await, 1);
    sqlx::query("DELETE FROM refuse")
        .execute(&env.db.pool)
        .await
        .expect("lift");
    env.wait_version(bad, 1, false).await;
    env.wait_nothing_pending().await;
    for r in &recs {
        assert_eq!(
            env.apply_log(r.file_id).await,
            vec![1],
            "{} applied once",
            r.original_filename
        );
    }
    assert!(
        env.dead_letters(&format!("{}:dead-letter", env.stream))
            .await
            .is_empty()
    );
    node.shutdown().await;
}

/// Poison entries (undecodable, or refused on every delivery) end in the dead-letter stream
/// with a reason and are acknowledged; later events flow meanwhile.
#[tokio::test]
async fn poison_events_are_dead_lettered_while_later_events_flow() {
    let mut env = Env::new("poison").await;
    env.ensure_group("$").await;
    let node = start(env.config("pod-0")).await;
    // Undecodable, and carrying a field named like the consumer's own reason field.
    let garbage_id = xadd(
        &mut env.redis,
        &env.stream,
        &[
            ("type", "file.exploded".to_string()),
            (dead_letter_fields::REASON, "forged".to_string()),
        ],
    )
    .await;
    // Decodable but refused by the database on every delivery (a CHECK constraint).
    sqlx::query(
        "ALTER TABLE file_cache ADD CONSTRAINT no_evil CHECK (original_filename <> 'evil.txt')",
    )
    .execute(&env.db.pool)
    .await
    .expect("constraint");
    let evil = record("evil.txt");
    let evil_id = env.publish(&event(EventType::Created, &evil)).await;
    let good = record("good-after-poison.txt");
    env.publish(&event(EventType::Created, &good)).await;
    env.wait_version(good.file_id, 1, false).await;

    let dlq = format!("{}:dead-letter", env.stream);
    eventually(WAIT, "two dead letters", || {
        let mut env_redis = env.redis.clone();
        let dlq = dlq.clone();
        async move {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&dlq)
                .arg("-")
                .arg("+")
                .query_async(&mut env_redis)
                .await
                .ok()?;
            (reply.ids.len() == 2).then_some(())
        }
    })
    .await;
    let letters = env.dead_letters(&dlq).await;
    let by_source = |id: &str| {
        letters
            .iter()
            .find(|l| l.get(dead_letter_fields::SOURCE_ID).map(String::as_str) == Some(id))
            .cloned()
            .unwrap_or_default()
    };
    let g = by_source(&garbage_id);
    assert!(
        g[dead_letter_fields::REASON].starts_with("undecodable"),
        "{g:?}"
    );
    assert_eq!(g["type"], "file.exploded");
    let e = by_source(&evil_id);
    assert!(
        e[dead_letter_fields::REASON].contains("refused after 3 deliveries"),
        "{e:?}"
    );
    assert!(e[dead_letter_fields::REASON].contains("no_evil"), "{e:?}");
    assert_eq!(e[dead_letter_fields::DELIVERIES], "3");
    assert_eq!(e["file_id"], evil.file_id.to_string());
    assert_eq!(env.pending().await, 0);
    // The consumer counts a dead letter after Redis has taken it.
    eventually(WAIT, "two dead letters counted", || async {
        (node.metrics.events_dead_lettered.get() == 2).then_some(())
    })
    .await;
    // The stream keeps flowing after the poison.
    let later = record("later.txt");
    env.publish(&event(EventType::Created, &later)).await;
    env.wait_version(later.file_id, 1, false).await;
    node.shutdown().await;
}
