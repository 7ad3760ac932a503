//! The old consumer's bugs (reference document 000) that are not covered by the sync tests.

use std::io::Write;
use std::sync::{Arc, Mutex};

use artstore_events::EventType;
use artstore_events::consumer::Applier;
use artstore_query::apply::{CacheApplier, event_row};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Every key of a JSON object in order, duplicates included.
fn keys_of(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    de.deserialize_map(Keys).expect("log line is a JSON object")
}

/// Bug 1: logging the synced file under a key the log formatter owns (`filename`) crashed the
/// handler and left the event pending. Here: the cluster log format (JSON, flattened, with
/// source file and line) stays one valid object per line with no duplicate keys, the file's
/// name is logged as `original_filename`, and the batch is applied.
#[test]
fn sync_logs_never_reuse_keys_the_log_format_owns() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_file(true)
        .with_line_number(true)
        .with_target(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tricky = "level \"message\" target\nfilename.txt";
    let (env, rec) = runtime.block_on(async {
        let env = Env::new("logging").await;
        let rec = record(tricky);
        let applier = CacheApplier::new(env.db.pool.clone(), None);
        let row = event_row(&event(EventType::Created, &rec)).expect("row");
        applier.apply(&[row]).await.expect("applied");
        (env, rec)
    });
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    let mut synced = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let keys = keys_of(line);
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "duplicate keys in {line}");
        let value: serde_json::Value = serde_json::from_str(line).expect("json");
        if value["message"] == "file synced to cache" {
            synced += 1;
            assert_eq!(value["original_filename"], tricky);
            assert_eq!(value["level"], "DEBUG");
            assert!(
                value["filename"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(".rs")),
                "the formatter's own `filename` is intact: {line}"
            );
        }
    }
    assert_eq!(synced, 1, "log: {text}");
    let version = runtime.block_on(env.version_of(rec.file_id));
    assert_eq!(version, Some((1, false)));
}

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
