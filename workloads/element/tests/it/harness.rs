//! One element per test: its own database, stream, and bucket or directory.

use std::collections::HashMap;
use std::time::Duration;

use artstore_common::auth::{self, Role, Verifier};
use artstore_element::backend::S3Settings;
use artstore_element::{BackendConfig, ElementConfig, RunningElement};
use artstore_events::FileEvent;
use artstore_testsupport as ts;
use serde_json::Value;

pub const SECRET: &[u8] = b"element-test-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3,
    Volume,
}

pub struct Harness {
    pub element: RunningElement,
    pub db: ts::TestDatabase,
    pub stream: String,
    pub redis_url: String,
    pub http: reqwest::Client,
    /// The bucket, for S3-backed harnesses.
    pub bucket: Option<String>,
    /// Keeps the volume directory alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

/// A token as an ingester signs it for its caller (internal audience): what storage elements
/// take writes with.
pub fn token(role: Role, sub: &str) -> String {
    auth::Signer::new(SECRET.to_vec())
        .bearer(sub, role, 3600)
        .expect("token")
        .trim_start_matches("Bearer ")
        .to_string()
}

/// A client's own token, as `artstore token` prints it.
pub fn own_token(role: Role, sub: &str) -> String {
    auth::mint(SECRET, sub, role, 3600).expect("token")
}

pub fn writer() -> String {
    token(Role::Writer, "alice")
}

pub fn admin() -> String {
    token(Role::Admin, "root")
}

pub fn reader() -> String {
    token(Role::Reader, "carol")
}

/// Deterministic test content.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + seed as u64 * 7 + (i as u64 >> 11)) as u8)
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

impl Harness {
    pub async fn start(kind: Kind) -> Harness {
        Self::start_with(kind, None, |_| {}).await
    }

    pub async fn start_with(
        kind: Kind,
        redis_url: Option<String>,
        adjust: impl FnOnce(&mut ElementConfig),
    ) -> Harness {
        let db = ts::fresh_database("storage-element")
            .await
            .expect("database");
        let stream = ts::unique_prefix("element");
        let (backend, bucket, dir) = match kind {
            Kind::S3 => {
                let env = ts::services();
                let bucket = ts::fresh_bucket("element").await.expect("bucket");
                (
                    BackendConfig::S3(S3Settings {
                        endpoint: env.s3_endpoint.clone(),
                        bucket: bucket.clone(),
                        prefix: "se-test".into(),
                        region: env.s3_region.clone(),
                        access_key: env.s3_access_key.clone(),
                        secret_key: env.s3_secret_key.clone(),
                    }),
                    Some(bucket),
                    None,
                )
            }
            Kind::Volume => {
                let dir = tempfile::tempdir().expect("tempdir");
                (
                    BackendConfig::Volume {
                        path: dir.path().join("volume"),
                    },
                    None,
                    Some(dir),
                )
            }
        };
        let redis_url = redis_url.unwrap_or_else(|| ts::services().redis_url.clone());
        let mut config = ElementConfig::new(
            "se-test",
            backend,
            db.url.clone(),
            redis_url.clone(),
            stream.clone(),
            Verifier::hs256(SECRET),
        );
        config.relay_poll_interval = Duration::from_millis(200);
        adjust(&mut config);
        let element = artstore_element::build(config).await.expect("build");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let element = element.start(listener).expect("start");
        Harness {
            element,
            db,
            stream,
            redis_url,
            http: reqwest::Client::new(),
            bucket,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.element.url())
    }

    pub async fn upload_query(
        &self,
        token: &str,
        query: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/files"))
            .bearer_auth(token)
            .query(query)
            .body(body)
            .send()
            .await
            .expect("upload request")
    }

    /// A writer's upload of `body` as `filename`, carrying `upload_id` as an ingester sends it.
    pub fn upload_request(
        &self,
        filename: &str,
        body: Vec<u8>,
        upload_id: Option<uuid::Uuid>,
    ) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(self.url("/api/v1/files"))
            .bearer_auth(writer())
            .query(&[("filename", filename)])
            .body(body);
        match upload_id {
            Some(id) => request.header(artstore_element::http::UPLOAD_ID_HEADER, id.to_string()),
            None => request,
        }
    }

    /// An upload whose body is sent in `chunks`, without a Content-Length.
    pub async fn upload_chunked(
        &self,
        token: &str,
        filename: &str,
        chunks: Vec<Result<Vec<u8>, std::io::Error>>,
    ) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/files"))
            .bearer_auth(token)
            .query(&[("filename", filename)])
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .expect("upload")
    }

    pub async fn upload(&self, filename: &str, body: Vec<u8>) -> Value {
        let response = self
            .upload_query(&writer(), &[("filename", filename)], body)
            .await;
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, 201, "upload of {filename}: {text}");
        serde_json::from_str(&text).expect("json")
    }

    pub async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post_json(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Files in the volume's temporary directory.
    pub fn temp_files(&self) -> usize {
        self._dir
            .as_ref()
            .and_then(|d| std::fs::read_dir(d.path().join("volume/.tmp")).ok())
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    /// The volume directory, for volume-backed harnesses.
    pub fn volume_path(&self) -> Option<String> {
        self._dir
            .as_ref()
            .map(|d| d.path().join("volume").to_string_lossy().into_owned())
    }

    pub async fn post_json_owned(&self, token: String, path: &str) -> (u16, Value) {
        self.post_json(&token, path).await
    }

    /// Stops the element and removes what the test made: bucket (SeaweedFS has a limited number
    /// of volumes, one set per bucket), database and stream.
    pub async fn finish(self) {
        let Harness {
            element,
            db,
            stream,
            redis_url,
            bucket,
            ..
        } = self;
        let core = element.core.clone();
        element.shutdown().await;
        if let Some(bucket) = bucket {
            if let Ok(objects) = core.backend.list().await {
                for object in objects {
                    let _ = core.backend.delete(&object.key).await;
                }
            }
            let _ = ts::s3_client()
                .await
                .delete_bucket()
                .bucket(&bucket)
                .send()
                .await;
        }
        drop(core);
        db.pool.close().await;
        let admin = sqlx::PgPool::connect(&ts::services().database_url).await;
        if let Ok(admin) = admin {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                db.name
            )))
            .execute(&admin)
            .await;
        }
        if let Ok(client) = redis::Client::open(redis_url.as_str())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<i64> =
                redis::cmd("DEL").arg(&stream).query_async(&mut conn).await;
        }
    }

    /// Every event on the element's stream, in stream order.
    pub async fn events(&self) -> Vec<FileEvent> {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis url");
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return Vec::new();
        };
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("xrange");
        reply
            .ids
            .iter()
            .map(|entry| {
                let fields: HashMap<String, String> = entry
                    .map
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            redis::from_redis_value_ref::<String>(v).expect("string field"),
                        )
                    })
                    .collect();
                FileEvent::from_fields(&fields).expect("well-formed event")
            })
            .collect()
    }

    /// Waits until the stream holds at least `n` events and returns them.
    pub async fn wait_events(&self, n: usize) -> Vec<FileEvent> {
        ts::eventually(
            Duration::from_secs(20),
            &format!("{n} events on the stream"),
            || async {
                let events = self.events().await;
                (events.len() >= n).then_some(events)
            },
        )
        .await
    }

    /// Keys of every file's object in the backend (blobs and sidecars; not sidecar packs).
    pub async fn object_keys(&self) -> Vec<String> {
        self.keys_where(|key| !artstore_element::layout::is_pack_key(key))
            .await
    }

    /// Keys of the sidecar packs in the backend.
    pub async fn pack_keys(&self) -> Vec<String> {
        self.keys_where(artstore_element::layout::is_pack_key).await
    }

    async fn keys_where(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let mut keys: Vec<String> = self
            .element
            .core
            .backend
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .filter(|key| keep(key))
            .collect();
        keys.sort();
        keys
    }

    pub async fn row_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM files")
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }
}
