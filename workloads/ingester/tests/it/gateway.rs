//! What the gateway decides before any storage element is involved.

use artstore_common::auth::Role;

use crate::support::*;

#[tokio::test]
async fn rate_limit_fires_at_the_limit_with_retry_after() {
    let url = start_without_elements(100, 1 << 20).await;
    let client = reqwest::Client::new();
    let auth = token(Role::Writer, "busy-client");
    let mut limited = 0;
    let mut retry_after = None;
    for _ in 0..150 {
        // A request the handler refuses cheaply (bad id) still counts against the limit.
        let r = client
            .delete(format!("{url}/api/v1/files/not-a-uuid"))
            .header("authorization", &auth)
            .send()
            .await
            .expect("request");
        match r.status().as_u16() {
            429 => {
                limited += 1;
                retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                assert_eq!(error_code(r).await.1, "rate_limited");
            }
            400 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        limited, 50,
        "exactly the 50 requests over the limit of 100 are refused"
    );
    let seconds: u64 = retry_after
        .expect("Retry-After header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&seconds), "Retry-After {seconds}");

    // The limit is per client: another caller is not affected.
    let other = client
        .delete(format!("{url}/api/v1/files/not-a-uuid"))
        .header("authorization", token(Role::Writer, "quiet-client"))
        .send()
        .await
        .expect("request");
    assert_eq!(other.status().as_u16(), 400);
}

#[tokio::test]
async fn rate_limit_holds_across_replicas_sharing_redis() {
    let config = config(10, 1 << 20);
    let a = start(
        config.clone(),
        artstore_common::registry::RegistryHandle::fixed(Default::default()),
    )
    .await;
    let b = start(
        config,
        artstore_common::registry::RegistryHandle::fixed(Default::default()),
    )
    .await;
    let client = reqwest::Client::new();
    let auth = token(Role::Writer, "spread-client");
    let mut statuses = Vec::new();
    for i in 0..20 {
        let url = if i % 2 == 0 { &a } else { &b };
        let r = client
            .delete(format!("{url}/api/v1/files/x"))
            .header("authorization", &auth)
            .send()
            .await
            .expect("request");
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn unauthenticated_and_wrong_role_are_refused() {
    let url = start_without_elements(1000, 1 << 20).await;
    let client = reqwest::Client::new();
    let none = client
        .post(format!("{url}/api/v1/files/upload"))
        .multipart(file_form("a.txt", b"hello".to_vec()))
        .send()
        .await
        .expect("request");
    assert_eq!(error_code(none).await, (401, "unauthorized".into()));

    let forged = client
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", "Bearer not.a.token")
        .multipart(file_form("a.txt", b"hello".to_vec()))
        .send()
        .await
        .expect("request");
    assert_eq!(error_code(forged).await, (401, "unauthorized".into()));

    let reader = client
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", token(Role::Reader, "viewer"))
        .multipart(file_form("a.txt", b"hello".to_vec()))
        .send()
        .await
        .expect("request");
    assert_eq!(error_code(reader).await, (403, "forbidden".into()));

    // Health endpoints need no token.
    let health = client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status().as_u16(), 200);
    let ready = client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn bad_forms_get_clear_errors() {
    let url = start_without_elements(1000, 1000).await;
    let client = reqwest::Client::new();
    let auth = token(Role::Writer, "sloppy");
    let post = |form: reqwest::multipart::Form| {
        client
            .post(format!("{url}/api/v1/files/upload"))
            .header("authorization", &auth)
            .multipart(form)
            .send()
    };
    let no_file = reqwest::multipart::Form::new().text("description", "nothing attached");
    assert_eq!(
        error_code(post(no_file).await.expect("r")).await,
        (400, "missing_file".into())
    );

    let unknown = file_form("a.txt", b"x".to_vec()).text("colour", "blue");
    assert_eq!(
        error_code(post(unknown).await.expect("r")).await,
        (400, "unknown_field".into())
    );

    let retention = file_form("a.txt", b"x".to_vec()).text("retention", "forever");
    assert_eq!(
        error_code(post(retention).await.expect("r")).await,
        (400, "invalid_retention".into())
    );

    let days = file_form("a.txt", b"x".to_vec()).text("retention_days", "-3");
    assert_eq!(
        error_code(post(days).await.expect("r")).await,
        (400, "invalid_retention_days".into())
    );

    let big = file_form("big.bin", vec![7u8; 5000]);
    assert_eq!(
        error_code(post(big).await.expect("r")).await,
        (413, "file_too_large".into())
    );

    let not_multipart = client
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", &auth)
        .body("plain text")
        .send()
        .await
        .expect("r");
    assert_eq!(
        error_code(not_multipart).await,
        (400, "invalid_multipart".into())
    );

    let bad_key = client
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", &auth)
        .header("idempotency-key", "has spaces in it")
        .multipart(file_form("a.txt", b"x".to_vec()))
        .send()
        .await
        .expect("r");
    assert_eq!(
        error_code(bad_key).await,
        (400, "invalid_idempotency_key".into())
    );
}

#[tokio::test]
async fn no_writable_element_is_a_503_with_reason() {
    let url = start_without_elements(1000, 1 << 20).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", token(Role::Writer, "w"))
        .multipart(file_form("a.txt", b"hello".to_vec()))
        .send()
        .await
        .expect("request");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, (503, "no_storage_available".into()));
}

#[tokio::test]
async fn every_answer_has_security_headers_and_a_json_error_body() {
    let url = start_without_elements(1000, 1 << 20).await;
    let client = reqwest::Client::new();
    let auth = token(Role::Writer, "headers-client");
    // An unknown route, a wrong method and a handler's own error: all JSON, all with nosniff.
    let unknown = client
        .get(format!("{url}/api/v1/nowhere"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.headers()["x-content-type-options"], "nosniff");
    assert_eq!(error_code(unknown).await, (404, "not_found".to_string()));
    let wrong_method = client
        .get(format!("{url}/api/v1/files/upload"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("request");
    assert_eq!(
        error_code(wrong_method).await,
        (405, "method_not_allowed".to_string())
    );
    let long_uri = client
        .delete(format!("{url}/api/v1/files/{}", "a".repeat(10_000)))
        .header("authorization", &auth)
        .send()
        .await
        .expect("request");
    assert_eq!(
        error_code(long_uri).await,
        (414, "uri_too_long".to_string())
    );
    let health = client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.headers()["x-content-type-options"], "nosniff");
    assert_eq!(health.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn expired_future_and_subjectless_tokens_are_refused() {
    let url = start_without_elements(1000, 1 << 20).await;
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: serde_json::Value| {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let token =
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign");
        format!("Bearer {token}")
    };
    let cases = [
        (
            serde_json::json!({"sub": "a", "role": "writer", "exp": now - 30}),
            "token_expired",
        ),
        (
            serde_json::json!({"sub": "a", "role": "writer", "exp": now + 600, "nbf": now + 300}),
            "token_not_yet_valid",
        ),
        (
            serde_json::json!({"sub": "", "role": "writer", "exp": now + 600}),
            "invalid_token_subject",
        ),
    ];
    for (claims, expected) in cases {
        let r = client
            .delete(format!("{url}/api/v1/files/not-a-uuid"))
            .header("authorization", sign(claims.clone()))
            .send()
            .await
            .expect("request");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(error_code(r).await, (401, expected.to_string()), "{claims}");
    }
    // A valid token gets past auth to the handler's own check.
    let ok = client
        .delete(format!("{url}/api/v1/files/not-a-uuid"))
        .header(
            "authorization",
            sign(serde_json::json!({"sub": "a", "role": "writer", "exp": now + 600})),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(error_code(ok).await, (400, "invalid_file_id".to_string()));
}

/// Redis frozen by SIGSTOP: readiness turns 503 instead of hanging, a keyed upload gets a 503
/// with a code instead of waiting forever, and both recover when Redis runs again.
#[tokio::test]
async fn a_frozen_redis_makes_the_ingester_unready_not_hung() {
    let redis = artstore_testsupport::RedisServer::start().expect("private redis");
    let mut config = config(1000, 1 << 20);
    config.redis_url = redis.url();
    let url = start(
        config,
        artstore_common::registry::RegistryHandle::fixed(Default::default()),
    )
    .await;
    let client = reqwest::Client::new();
    let ready = |client: reqwest::Client, url: String| async move {
        client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .expect("readyz answers")
            .status()
            .as_u16()
    };
    assert_eq!(ready(client.clone(), url.clone()).await, 200);

    redis.freeze().expect("SIGSTOP");
    // The outer bound only keeps a hang from stalling the suite; the ingester's own timeouts
    // are what answer.
    let guard = std::time::Duration::from_secs(60);
    let status = tokio::time::timeout(guard, ready(client.clone(), url.clone()))
        .await
        .expect("readyz answered while Redis is frozen");
    assert_eq!(status, 503);
    let keyed = tokio::time::timeout(
        guard,
        client
            .post(format!("{url}/api/v1/files/upload"))
            .header("authorization", token(Role::Writer, "frozen-redis"))
            .header("idempotency-key", "k-1")
            .multipart(file_form("a.txt", b"hello".to_vec()))
            .send(),
    )
    .await
    .expect("the upload answered while Redis is frozen")
    .expect("request");
    assert_eq!(
        error_code(keyed).await,
        (503, "redis_unavailable".to_string())
    );

    redis.thaw().expect("SIGCONT");
    artstore_testsupport::eventually(guard, "ready again after SIGCONT", || {
        let (client, url) = (client.clone(), url.clone());
        async move { (ready(client, url).await == 200).then_some(()) }
    })
    .await;
}

/// The console (another origin) may call the API when its origin is listed: the preflight is
/// answered without a token, and every answer, errors included, lets the page read it. Origins
/// not listed get no CORS headers, so their pages cannot read anything.
#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let mut config = config(1000, 1 << 20);
    config.cors_allowed_origins = vec!["http://console.example:8081".into()];
    let url = start(
        config,
        artstore_common::registry::RegistryHandle::fixed(artstore_contract::Registry::default()),
    )
    .await;
    let client = reqwest::Client::new();
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{url}/api/v1/files/upload"),
        )
        .header("origin", "http://console.example:8081")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,idempotency-key",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://console.example:8081"
    );
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert!(
        allowed_headers.contains("idempotency-key"),
        "{allowed_headers}"
    );

    // An error answer (no token) is readable by the listed origin, as the JSON error.
    let refused = client
        .delete(format!("{url}/api/v1/files/not-a-uuid"))
        .header("origin", "http://console.example:8081")
        .send()
        .await
        .expect("delete");
    assert_eq!(
        refused.headers()["access-control-allow-origin"],
        "http://console.example:8081"
    );
    assert_eq!(error_code(refused).await, (401, "unauthorized".into()));

    let other = client
        .delete(format!("{url}/api/v1/files/not-a-uuid"))
        .header("origin", "http://elsewhere.example")
        .header("authorization", token(Role::Writer, "cors"))
        .send()
        .await
        .expect("delete");
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    assert_eq!(error_code(other).await, (400, "invalid_file_id".into()));
}

fn redis_client() -> redis::Client {
    redis::Client::open(artstore_testsupport::services().redis_url.as_str()).expect("url")
}

async fn limiter(prefix: &str, limit: u32) -> artstore_ingester::ratelimit::RateLimiter {
    let redis = redis::aio::ConnectionManager::new(redis_client())
        .await
        .expect("redis");
    artstore_ingester::ratelimit::RateLimiter::new(redis, prefix, limit)
}

/// Runs `n` checks for `client`, `in_flight` at a time; how many were admitted.
async fn admitted(
    limiter: &artstore_ingester::ratelimit::RateLimiter,
    client: &str,
    n: usize,
    in_flight: usize,
) -> usize {
    use artstore_ingester::ratelimit::Decision;
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|_| limiter.check(client))
        .buffer_unordered(in_flight)
        .filter(|d| std::future::ready(matches!(d, Ok(Decision::Allowed))))
        .count()
        .await
}

#[tokio::test]
async fn a_busy_client_is_admitted_from_leases_in_few_round_trips_and_never_past_the_limit() {
    let prefix = artstore_testsupport::unique_prefix("lease");
    let roomy = limiter(&prefix, 10_000).await;
    assert_eq!(admitted(&roomy, "busy", 500, 32).await, 500);
    assert!(
        roomy.round_trips() <= 50,
        "500 requests took {} round trips to Redis",
        roomy.round_trips()
    );

    let tight = limiter(&prefix, 100).await;
    assert_eq!(admitted(&tight, "tight", 300, 32).await, 100);
}

#[tokio::test]
async fn replicas_never_admit_past_the_limit_and_give_back_the_hits_they_held() {
    let prefix = artstore_testsupport::unique_prefix("lease");
    let (a, b) = (limiter(&prefix, 100).await, limiter(&prefix, 100).await);
    let (from_a, from_b) = tokio::join!(
        admitted(&a, "shared", 150, 16),
        admitted(&b, "shared", 150, 16)
    );
    assert!(from_a + from_b <= 100, "{from_a} + {from_b} admitted");
    // Once the holds end, what either replica reserved and did not use is free again.
    tokio::time::sleep(artstore_ingester::ratelimit::LEASE_HOLD * 3).await;
    let rest = admitted(&a, "shared", 150, 1).await;
    assert_eq!(from_a + from_b + rest, 100, "{from_a} + {from_b} + {rest}");
}

#[tokio::test]
async fn a_request_dropped_while_reserving_leaves_no_hits_held() {
    let prefix = artstore_testsupport::unique_prefix("lease");
    let limiter = limiter(&prefix, 100).await;
    let hold = artstore_ingester::ratelimit::LEASE_HOLD;
    // A burst sizes the next lease; once its hold ended, the next request reserves one.
    let burst = admitted(&limiter, "hangs-up", 30, 30).await;
    tokio::time::sleep(hold + hold / 4).await;
    // Redis is busy for 300 ms, so the reservation is sent and waits; its client hangs up.
    let redis_client = redis_client();
    let mut busy_conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut probe = redis_client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let busy = tokio::spawn(async move {
        let done: i64 = redis::Script::new(
            "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2]
             repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 300000
             return 0",
        )
        .invoke_async(&mut busy_conn)
        .await
        .expect("busy script");
        done
    });
    wait_until_redis_is_busy(&mut probe).await;
    // Whether or not the check got its answer in time (a slow machine), it counts as one hit
    // and its lease's unused hits go back.
    let _hung_up = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        limiter.check("hangs-up"),
    )
    .await;
    busy.await.expect("busy task");
    tokio::time::sleep(hold * 3).await;
    // The hung-up request counts as one hit; the lease it reserved for the requests to come is
    // given back, not held until it leaves the window.
    let rest = admitted(&limiter, "hangs-up", 100, 1).await;
    assert_eq!(burst + 1 + rest, 100, "{burst} + 1 + {rest}");
}

/// Returns once a PING on `probe` (connected beforehand: a busy Redis does not accept
/// connections either) goes unanswered for 20 ms: a script holds Redis.
async fn wait_until_redis_is_busy(probe: &mut redis::aio::MultiplexedConnection) {
    let step = std::time::Duration::from_millis(20);
    for _ in 0..100 {
        let ping = redis::cmd("PING");
        if tokio::time::timeout(step, ping.query_async::<String>(probe))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("Redis never got busy");
}
