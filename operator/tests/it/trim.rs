//! Age trimming against the real Redis: a lagging group's undelivered and unacknowledged
//! entries survive however old they are (Redis 7's XTRIM MINID would delete them).

use artstore_operator::stream::{self, StreamId};
use redis::AsyncCommands;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};

const HOUR_MS: u64 = 3_600_000;

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).expect("clock after 1970")
}

async fn ids(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
    let r: StreamRangeReply = conn.xrange_all(stream).await.expect("xrange");
    r.ids.into_iter().map(|e| e.id).collect()
}

async fn read(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
    count: usize,
) -> Vec<String> {
    let opts = StreamReadOptions::default().group(group, "c1").count(count);
    let r: StreamReadReply = conn
        .xread_options(&[stream], &[">"], &opts)
        .await
        .expect("xreadgroup");
    r.keys
        .into_iter()
        .flat_map(|k| k.ids.into_iter().map(|e| e.id))
        .collect()
}

#[tokio::test]
async fn age_trim_keeps_what_a_lagging_group_has_not_delivered_or_acknowledged() {
    let mut conn = artstore_testsupport::redis_connection()
        .await
        .expect("redis");
    let s = artstore_testsupport::unique_prefix("trim");
    let now = now_ms();
    let groups = [
        ("fast".to_string(), "0".to_string()),
        ("lagging".to_string(), "0".to_string()),
    ];
    stream::ensure_stream_and_groups(&mut conn, &s, &groups)
        .await
        .expect("ensure");
    // Ten entries two hours old, then three fresh ones.
    let old: Vec<String> = (1..=10)
        .map(|i| format!("{}-{i}", now - 2 * HOUR_MS))
        .collect();
    for id in &old {
        let _: String = conn
            .xadd(&s, id, &[("type", "file.created")])
            .await
            .expect("xadd old");
    }
    for _ in 0..3 {
        let _: String = conn
            .xadd(&s, "*", &[("type", "file.created")])
            .await
            .expect("xadd new");
    }
    // `fast` has everything delivered and acknowledged.
    let all = read(&mut conn, &s, "fast", 100).await;
    assert_eq!(all.len(), 13);
    let _: u64 = conn.xack(&s, "fast", &all).await.expect("ack");
    // `lagging` got three, acknowledged only the first: entries 2 and 3 are pending, 4.. undelivered.
    let got = read(&mut conn, &s, "lagging", 3).await;
    assert_eq!(got, old[..3]);
    let _: u64 = conn.xack(&s, "lagging", &[&old[0]]).await.expect("ack one");

    let outcome = stream::trim_by_age(&mut conn, &s, HOUR_MS, now)
        .await
        .expect("trim");
    assert_eq!(
        outcome.removed, 1,
        "only the entry every group acknowledged may go"
    );
    assert_eq!(outcome.min_id, old[1].parse::<StreamId>().unwrap());
    let left = ids(&mut conn, &s).await;
    assert_eq!(left.len(), 12);
    assert_eq!(
        left[..9],
        old[1..],
        "pending and undelivered entries are all still there"
    );
    // The pending entries can still be acknowledged and the rest read: nothing was lost.
    let rest = read(&mut conn, &s, "lagging", 100).await;
    assert_eq!(rest.len(), 10, "7 old undelivered + 3 fresh");
    assert_eq!(rest[..7], old[3..]);
    let acked: u64 = conn
        .xack(&s, "lagging", &[&old[1], &old[2]])
        .await
        .expect("ack pending");
    assert_eq!(
        acked, 2,
        "the pending entries still existed to be acknowledged"
    );
    let _: u64 = conn.xack(&s, "lagging", &rest).await.expect("ack rest");

    // Caught up: every old entry goes, the fresh ones stay.
    let outcome = stream::trim_by_age(&mut conn, &s, HOUR_MS, now)
        .await
        .expect("trim");
    assert_eq!(outcome.removed, 9);
    assert_eq!(ids(&mut conn, &s).await.len(), 3);

    // A group that has never read pins everything.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&s)
        .arg("newcomer")
        .arg("0")
        .query_async(&mut conn)
        .await
        .expect("group");
    let outcome = stream::trim_by_age(&mut conn, &s, 0, now + HOUR_MS)
        .await
        .expect("trim");
    assert_eq!(outcome.removed, 0);

    let st = stream::stats(&mut conn, &s).await.expect("stats");
    assert_eq!(st.length, 3);
    let newcomer = st.groups.iter().find(|g| g.name == "newcomer").unwrap();
    assert_eq!(newcomer.lag, Some(3));
    assert_eq!(
        st.groups
            .iter()
            .find(|g| g.name == "lagging")
            .unwrap()
            .pending,
        0
    );
    let _: () = conn.del(&s).await.expect("cleanup");
}

#[tokio::test]
async fn ensure_is_idempotent_and_creates_a_stream_without_groups() {
    let mut conn = artstore_testsupport::redis_connection()
        .await
        .expect("redis");
    let s = artstore_testsupport::unique_prefix("ensure");
    let created = stream::ensure_stream_and_groups(&mut conn, &s, &[])
        .await
        .expect("ensure");
    assert!(created.is_empty());
    let exists: bool = conn.exists(&s).await.expect("exists");
    assert!(exists, "the stream exists before any producer or consumer");
    let st = stream::stats(&mut conn, &s).await.expect("stats");
    assert!(st.groups.is_empty(), "no placeholder group left behind");
    let g = [("g".to_string(), "$".to_string())];
    assert_eq!(
        stream::ensure_stream_and_groups(&mut conn, &s, &g)
            .await
            .expect("first"),
        ["g"]
    );
    assert!(
        stream::ensure_stream_and_groups(&mut conn, &s, &g)
            .await
            .expect("second")
            .is_empty()
    );
    let _: () = conn.del(&s).await.expect("cleanup");
}

/// A dead-letter stream has no consumer group: an age trim removes exactly its old entries.
#[tokio::test]
async fn age_trim_of_a_stream_without_groups_removes_only_old_entries() {
    let mut conn = artstore_testsupport::redis_connection()
        .await
        .expect("redis");
    let dead_letters = format!(
        "{}:dead-letter",
        artstore_testsupport::unique_prefix("trim")
    );
    let now = now_ms();
    let old = format!("{}-0", now - 3 * HOUR_MS);
    let recent = format!("{}-0", now - 60_000);
    for id in [&old, &recent] {
        let _: String = conn
            .xadd(&dead_letters, id, &[("reason", "poison")])
            .await
            .expect("xadd");
    }
    let outcome = stream::trim_by_age(&mut conn, &dead_letters, HOUR_MS, now)
        .await
        .expect("trim");
    assert_eq!(outcome.removed, 1);
    assert_eq!(ids(&mut conn, &dead_letters).await, vec![recent]);
}
