//! Shared helpers of the query node's integration tests.

use std::collections::HashMap;
use std::time::Duration;

use artstore_common::auth::{Role, mint};
use artstore_events::{EventType, FileEvent, FileRecord, Retention};
use artstore_query::{NodeConfig, QueryNode};
use artstore_testsupport::{TestDatabase, eventually, fresh_database, services, unique_prefix};
use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use uuid::Uuid;

pub const SECRET: &[u8] = b"query-node-test-secret";
pub const WAIT: Duration = Duration::from_secs(30);

pub fn record(name: &str) -> FileRecord {
    let now = Utc::now();
    FileRecord {
        file_id: Uuid::new_v4(),
        original_filename: name.to_string(),
        storage_key: format!("2026/11/23/20/{name}"),
        size: 1000,
        sha256: "ab".repeat(32),
        mime_type: "application/pdf".into(),
        description: None,
        tags: vec![],
        storage_element_id: "se-a".into(),
        created_at: now,
        created_by: "alice".into(),
        updated_at: now,
        retention: Retention::Permanent,
        retention_expires_at: None,
        version: 1,
    }
}

pub fn event(kind: EventType, record: &FileRecord) -> FileEvent {
    FileEvent::new(kind, record.clone(), Utc::now())
}

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

/// One test's database, stream and group on the shared services.
pub struct Env {
    pub db: TestDatabase,
    pub stream: String,
    pub group: String,
    pub redis_url: String,
    pub redis: MultiplexedConnection,
}

impl Env {
    pub async fn new(tag: &str) -> Env {
        Env::with_redis(tag, &services().redis_url).await
    }

    pub async fn with_redis(tag: &str, redis_url: &str) -> Env {
        let db = fresh_database("query-node").await.expect("test database");
        let client = redis::Client::open(redis_url).expect("redis url");
        let redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
        Env {
            db,
            stream: unique_prefix(tag),
            group: "query-node".into(),
            redis_url: redis_url.to_string(),
            redis,
        }
    }

    /// A node config with short timings so tests do not wait long.
    pub fn config(&self, consumer: &str) -> NodeConfig {
        let mut c = NodeConfig::new(
            &self.db.url,
            &self.redis_url,
            &self.stream,
            &self.group,
            consumer,
            SECRET,
        );
        c.block = Duration::from_millis(200);
        c.claim_min_idle = Duration::from_millis(300);
        c.claim_interval = Duration::from_millis(100);
        c.info_interval = Duration::from_millis(100);
        c.max_deliveries = 3;
        c.batch_size = 50;
        c
    }

    pub async fn ensure_group(&mut self, start: &str) {
        artstore_events::groups::ensure_group(&mut self.redis, &self.stream, &self.group, start)
            .await
            .expect("group");
    }

    pub async fn publish(&mut self, event: &FileEvent) -> String {
        xadd(&mut self.redis, &self.stream, &event.to_fields()).await
    }

    pub async fn pending(&mut self) -> u64 {
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .query_async(&mut self.redis)
            .await
            .expect("XPENDING");
        match reply {
            redis::Value::Array(parts) => match parts.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        }
    }

    pub async fn dead_letters(&mut self, stream: &str) -> Vec<HashMap<String, String>> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis)
            .await
            .expect("XRANGE");
        reply
            .ids
            .into_iter()
            .map(|id| {
                id.map
                    .into_iter()
                    .map(|(k, v)| {
                        let text: String = redis::from_redis_value(v).unwrap_or_default();
                        (k, text)
                    })
                    .collect()
            })
            .collect()
    }

    /// Waits until the group has nothing pending (everything acknowledged).
    pub async fn wait_nothing_pending(&self) {
        eventually(WAIT, "nothing pending", || {
            let mut conn = self.redis.clone();
            async move {
                let reply: redis::Value = redis::cmd("XPENDING")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                matches!(reply, redis::Value::Array(ref p) if p.first() == Some(&redis::Value::Int(0)))
                    .then_some(())
            }
        })
        .await
    }

    pub async fn version_of(&self, file_id: Uuid) -> Option<(i64, bool)> {
        sqlx::query_as("SELECT version, deleted FROM file_cache WHERE file_id = $1")
            .bind(file_id)
            .fetch_optional(&self.db.pool)
            .await
            .expect("query")
    }

    pub async fn wait_version(&self, file_id: Uuid, version: i64, deleted: bool) {
        eventually(
            WAIT,
            &format!("file {file_id} at version {version}"),
            || async { (self.version_of(file_id).await == Some((version, deleted))).then_some(()) },
        )
        .await
    }

    /// Records every effective write to the cache (a row trigger, transactional like the
    /// write itself): proves "applied once".
    pub async fn install_apply_log(&self) {
        for sql in [
            "CREATE TABLE apply_log (file_id uuid, version bigint, at timestamptz DEFAULT clock_timestamp())",
            "CREATE FUNCTION log_apply() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO apply_log (file_id, version) VALUES (NEW.file_id, NEW.version); RETURN NEW; END $$",
            "CREATE TRIGGER file_cache_apply_log AFTER INSERT OR UPDATE ON file_cache \
             FOR EACH ROW EXECUTE FUNCTION log_apply()",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&self.db.pool)
                .await
                .expect("install apply log");
        }
    }

    pub async fn apply_log(&self, file_id: Uuid) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM apply_log WHERE file_id = $1 ORDER BY at")
            .bind(file_id)
            .fetch_all(&self.db.pool)
            .await
            .expect("apply log")
    }
}

pub async fn xadd(
    conn: &mut MultiplexedConnection,
    stream: &str,
    fields: &[(&str, String)],
) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    cmd.query_async(conn).await.expect("XADD")
}

pub async fn start(config: NodeConfig) -> QueryNode {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    QueryNode::start(config, listener)
        .await
        .expect("node starts")
}

pub fn token(role: Role) -> String {
    mint(SECRET, "tester", role, 600).expect("token")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn search(node: &QueryNode, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = http()
        .post(format!("{}/api/v1/search", node.url()))
        .bearer_auth(token(Role::Reader))
        .json(&body)
        .send()
        .await
        .expect("search request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

pub fn ids(body: &serde_json::Value) -> Vec<String> {
    body["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["file_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
