//! The relay loses nothing while Redis is down.

use artstore_events::EventType;
use artstore_testsupport as ts;

use crate::harness::*;

#[tokio::test]
async fn relay_publishes_everything_after_redis_comes_back() {
    let mut redis = ts::RedisServer::start().expect("redis");
    let h = Harness::start_with(Kind::Volume, Some(redis.url()), |_| {}).await;
    let first = h.upload("first.txt", b"1".to_vec()).await;
    let events = h.wait_events(1).await;
    assert_eq!(
        events[0].file_id.to_string(),
        first["file_id"].as_str().expect("id")
    );

    // The relay marks a row sent after Redis has taken its event: wait for that mark, so the
    // rows counted below are only the uploads made while Redis is down.
    wait_outbox_sent(&h, "the first event marked sent").await;
    // Redis goes away (and loses its data); the element keeps taking files.
    redis.stop();
    let mut expected = Vec::new();
    for i in 0..5 {
        let record = h
            .upload(&format!("while-down-{i}.txt"), content(10, i))
            .await;
        expected.push(record["file_id"].as_str().expect("id").to_string());
    }
    assert_eq!(
        unsent(&h).await.expect("outbox"),
        5,
        "events wait in the outbox"
    );
    // Let the relay fail at least once against the dead server.
    ts::eventually(
        std::time::Duration::from_secs(10),
        "a failed publish attempt",
        || async {
            let attempts: i64 = sqlx::query_scalar(
                "SELECT COALESCE(max(attempts), 0)::bigint FROM outbox WHERE sent_at IS NULL",
            )
            .fetch_one(&h.db.pool)
            .await
            .expect("attempts");
            (attempts >= 1).then_some(())
        },
    )
    .await;

    redis.restart().expect("restart");
    let events = h.wait_events(5).await;
    let ids: Vec<String> = events.iter().map(|e| e.file_id.to_string()).collect();
    assert_eq!(ids, expected, "every event, in order");
    assert!(
        events
            .iter()
            .all(|e| e.event_type == EventType::Created && e.version == 1)
    );
    // The relay marks rows sent just after XADD, so the stream may show them a moment earlier.
    wait_outbox_sent(&h, "the outbox marked sent").await;
    h.finish().await;
}

/// Outbox rows the relay has not marked sent.
async fn unsent(h: &Harness) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&h.db.pool)
        .await
}

/// Waits until the relay has marked every outbox row sent.
async fn wait_outbox_sent(h: &Harness, what: &str) {
    ts::eventually(std::time::Duration::from_secs(10), what, || async {
        (unsent(h).await.ok()? == 0).then_some(())
    })
    .await
}
