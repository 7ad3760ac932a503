//! The old consumer's bugs (reference document 000) that are not covered by the sync tests.
//! (Bug 1, the reserved logging field, is `tests/logging.rs`: it needs a process of its own.)

use artstore_events::EventType;

use crate::support::*;

/// Bug 3: entries taken over from a dead consumer (XCLAIM/XAUTOCLAIM) were parsed as if they
/// were an XREADGROUP reply and failed. Here another replica's unacknowledged entries — one of
/// them deleted from the stream meanwhile — are taken over, applied and acknowledged.
#[tokio::test]
async fn entries_of_a_dead_consumer_are_taken_over_and_applied() {
    let mut env = Env::new("autoclaim").await;
    env.ensure_group("$").await;
    let recs: Vec<_> = (0..4)
        .map(|i| record(&format!("claimed-{i}.txt")))
        .collect();
    let mut ids = Vec::new();
    for r in &recs {
        ids.push(env.publish(&event(EventType::Created, r)).await);
    }
    // "pod-dead" reads them and dies.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&env.group)
        .arg("pod-dead")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&env.stream)
        .arg(">")
        .query_async(&mut env.redis)
        .await
        .expect("read");
    let _: i64 = redis::cmd("XDEL")
        .arg(&env.stream)
        .arg(&ids[3])
        .query_async(&mut env.redis)
        .await
        .expect("XDEL");
    assert_eq!(env.pending().await, 4);

    let node = start(env.config("pod-live")).await;
    for r in &recs[..3] {
        env.wait_version(r.file_id, 1, false).await;
    }
    env.wait_nothing_pending().await;
    assert!(node.metrics.events_reclaimed.get() >= 3);
    assert_eq!(node.metrics.events_dead_lettered.get(), 0);
    assert_eq!(env.version_of(recs[3].file_id).await, None);
    node.shutdown().await;
}
