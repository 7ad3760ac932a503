//! Redis or PostgreSQL going away under a running node.

use std::time::Duration;

use artstore_events::EventType;
use artstore_testsupport::{RedisServer, eventually, services};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use crate::support::*;

/// Redis dies (losing everything: no persistence) and comes back: the node backs off, keeps
/// serving search from its cache, recreates the group and consumes new events — no restart.
#[tokio::test]
async fn a_redis_outage_is_ridden_out() {
    let mut redis = RedisServer::start().expect("private redis");
    let mut env = Env::with_redis("redis-down", &redis.url()).await;
    env.ensure_group("$").await;
    let node = start(env.config("pod-0")).await;
    let before = record("before-outage.txt");
    env.publish(&event(EventType::Created, &before)).await;
    env.wait_version(before.file_id, 1, false).await;

    redis.stop();
    eventually(WAIT, "the consumer noticed", || async {
        (node.metrics.redis_errors.get() > 0).then_some(())
    })
    .await;
    let (status, body) = search(&node, serde_json::json!({"query": "outage"})).await;
    assert_eq!(
        status, 200,
        "search serves from the cache while Redis is down"
    );
    assert_eq!(ids(&body), vec![before.file_id.to_string()]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.restart().expect("restart");
    let client = redis::Client::open(redis.url()).expect("url");
    env.redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("reconnect");
    let after = record("after-outage.txt");
    env.publish(&event(EventType::Created, &after)).await;
    env.wait_version(after.file_id, 1, false).await;
    node.shutdown().await;
}

/// PostgreSQL refuses connections for a while: the batch is retried with back-off (not spent as
/// deliveries, not dead-lettered) and applied once when the database is back.
#[tokio::test]
async fn a_database_outage_is_ridden_out_without_dead_letters() {
    let mut env = Env::new("pg-down").await;
    env.install_apply_log().await;
    env.ensure_group("$").await;
    let node = start(env.config("pod-0")).await;
    let first = record("first.txt");
    env.publish(&event(EventType::Created, &first)).await;
    env.wait_version(first.file_id, 1, false).await;

    let admin_options: PgConnectOptions = services().database_url.parse().expect("admin url");
    let mut admin = admin_options.connect().await.expect("admin connection");
    let name = env.db.name.clone();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    )))
    .execute(&mut admin)
    .await
    .expect("refuse connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .expect("terminate");

    let during: Vec<_> = (0..3).map(|i| record(&format!("during-{i}.txt"))).collect();
    for r in &during {
        env.publish(&event(EventType::Created, r)).await;
    }
    // Longer than max_deliveries × claim_min_idle: an outage must not spend deliveries.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = search(&node, serde_json::json!({"query": "first"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "database_unavailable");

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .expect("allow connections");
    for r in &during {
        env.wait_version(r.file_id, 1, false).await;
        assert_eq!(env.apply_log(r.file_id).await, vec![1]);
    }
    assert!(
        env.dead_letters(&format!("{}:dead-letter", env.stream))
            .await
            .is_empty()
    );
    assert_eq!(node.metrics.events_dead_lettered.get(), 0);
    node.shutdown().await;
}
