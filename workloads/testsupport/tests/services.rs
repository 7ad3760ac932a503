//! Proves the harness: each real service does real work in an isolated namespace.

use artstore_testsupport as ts;
use aws_sdk_s3::primitives::ByteStream;
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};

#[tokio::test]
async fn postgres_migration_and_query_in_a_fresh_database() {
    let db = ts::empty_database("probe").await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/migrations");
    sqlx::migrate::Migrator::new(dir)
        .await
        .unwrap()
        .run(&db.pool)
        .await
        .unwrap();

    sqlx::query("INSERT INTO probe (name) VALUES ('alpha.txt'), ('beta.png')")
        .execute(&db.pool)
        .await
        .unwrap();
    let found: Vec<String> =
        sqlx::query_scalar("SELECT name FROM probe WHERE name % 'alpha' ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(found, vec!["alpha.txt".to_string()]);

    // A second database starts empty: tests are isolated from each other.
    let other = ts::empty_database("probe").await.unwrap();
    assert_ne!(db.name, other.name);
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'probe'",
    )
    .fetch_one(&other.pool)
    .await
    .unwrap();
    assert_eq!(tables, 0);
}

#[tokio::test]
async fn redis_stream_consumer_group_roundtrip() {
    let mut conn = ts::redis_connection().await.unwrap();
    let stream = ts::unique_prefix("probe");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let id: String = conn
        .xadd(&stream, "*", &[("type", "file.created"), ("file_id", "f1")])
        .await
        .unwrap();

    let opts = StreamReadOptions::default().group("g", "c1").count(10);
    let reply: StreamReadReply = conn.xread_options(&[&stream], &[">"], &opts).await.unwrap();
    let entries = &reply.keys[0].ids;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].get::<String>("file_id").as_deref(), Some("f1"));

    let pending: redis::streams::StreamPendingReply = conn.xpending(&stream, "g").await.unwrap();
    assert_eq!(pending.count(), 1);
    let acked: i64 = conn.xack(&stream, "g", &[&id]).await.unwrap();
    assert_eq!(acked, 1);
    let pending: redis::streams::StreamPendingReply = conn.xpending(&stream, "g").await.unwrap();
    assert_eq!(pending.count(), 0);
}

#[tokio::test]
async fn s3_put_get_list_in_a_fresh_bucket() {
    let bucket = ts::fresh_bucket("probe").await.unwrap();
    let s3 = ts::s3_client().await;
    for i in 0..3 {
        s3.put_object()
            .bucket(&bucket)
            .key(format!("2026/11/23/20/file-{i}.bin"))
            .body(ByteStream::from(vec![i as u8; 1000 + i]))
            .send()
            .await
            .unwrap();
    }
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("2026/11/23/20/file-2.bin")
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.len(), 1002);
    assert!(body.iter().all(|b| *b == 2));

    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("2026/")
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "2026/11/23/20/file-0.bin",
            "2026/11/23/20/file-1.bin",
            "2026/11/23/20/file-2.bin"
        ]
    );

    // Wrong credentials are refused: the server really enforces them.
    let env = ts::services();
    let bad = aws_sdk_s3::Client::from_conf(
        s3.config()
            .to_builder()
            .credentials_provider(aws_credential_types::Credentials::from_keys(
                env.s3_access_key.clone(),
                "wrong-secret",
                None,
            ))
            .build(),
    );
    assert!(bad.list_objects_v2().bucket(&bucket).send().await.is_err());
}

#[tokio::test]
async fn private_redis_server_restarts_on_the_same_port() {
    let mut server = ts::RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.set("k", "v").await.unwrap();
    server.restart().unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // No persistence: a restart is a clean server.
    let v: Option<String> = conn.get("k").await.unwrap();
    assert_eq!(v, None);
}

#[test]
fn kube_control_plane_serves_the_api_and_runs_controllers() {
    let plane = ts::kube::KubeControlPlane::start_with_controllers().unwrap();
    let curl = |method: &str, path: &str, body: Option<&str>| -> String {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sk", "-X", method, "-H"])
            .arg(format!("Authorization: Bearer {}", plane.token))
            .args(["-H", "Content-Type: application/json"]);
        if let Some(body) = body {
            cmd.args(["-d", body]);
        }
        let out = cmd.arg(format!("{}{path}", plane.url)).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let ns = curl("GET", "/api/v1/namespaces/default", None);
    assert!(ns.contains("\"name\": \"default\""), "{ns}");

    // A Deployment gets a ReplicaSet only if kube-controller-manager really runs.
    let deployment = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"probe"},
        "spec":{"replicas":1,"selector":{"matchLabels":{"app":"probe"}},
        "template":{"metadata":{"labels":{"app":"probe"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#;
    let created = curl(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(deployment),
    );
    assert!(created.contains("\"kind\": \"Deployment\""), "{created}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let sets = curl("GET", "/apis/apps/v1/namespaces/default/replicasets", None);
        if sets.contains("probe-") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ReplicaSet appeared: {sets}\n{}",
            plane.log_of("kube-controller-manager")
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
