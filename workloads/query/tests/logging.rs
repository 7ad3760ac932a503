//! Bug 1 of the old consumer (reference document 000): logging the synced file under a key the
//! log formatter owns. A test binary of its own, because it installs the process-wide
//! subscriber: with a thread-scoped one, other tests running in parallel race tracing's
//! per-callsite interest cache and the event may go unrecorded.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

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
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber of this process");
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
