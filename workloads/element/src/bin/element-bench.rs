//! Benchmark (not a test): upload throughput through the storage element vs raw PutObject of the
//! same bytes to the same S3 server, in the same run; small uploads against the element's raw
//! ceiling (two PutObjects and one transaction); and the process's peak RSS while a 1 GiB body
//! streams through the element.
//!
//! Needs the test services: `ARTSTORE_SERVICES_ENV=<services.env> cargo run --release
//! -p artstore-element --features bench --bin element-bench [-- --small-only]`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use artstore_common::auth::{self, Role, Verifier};
use artstore_common::bench_load::{Ran, closed_loop};
use artstore_element::backend::S3Settings;
use artstore_element::layout;
use artstore_element::{BackendConfig, ElementConfig};
use bytes::Bytes;

const MIB: usize = 1024 * 1024;

fn services() -> Result<HashMap<String, String>> {
    let path = std::env::var("ARTSTORE_SERVICES_ENV")
        .context("set ARTSTORE_SERVICES_ENV to the services' env file")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn payload(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| {
                (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(seed as u32) as u8
            })
            .collect::<Vec<u8>>(),
    )
}

const PHASES: [&str; 4] = ["prepare", "receive", "backend", "commit"];

/// Seconds and count of each upload phase so far, from the element's own `/metrics`.
async fn phase_totals(http: &reqwest::Client, base: &str) -> Result<HashMap<String, (f64, f64)>> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut totals: HashMap<String, (f64, f64)> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("artstore_element_upload_phase_seconds_") else {
            continue;
        };
        let (kind, rest) = rest.split_once("{phase=\"").unwrap_or(("", ""));
        let Some((phase, value)) = rest.split_once("\"}") else {
            continue;
        };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        let entry = totals.entry(phase.to_string()).or_default();
        match kind {
            "sum" => entry.0 = value,
            "count" => entry.1 = value,
            _ => {}
        }
    }
    Ok(totals)
}

/// Mean milliseconds per phase between two snapshots, as one line.
fn phase_breakdown(
    before: &HashMap<String, (f64, f64)>,
    after: &HashMap<String, (f64, f64)>,
) -> String {
    PHASES
        .iter()
        .map(|phase| {
            let (s0, c0) = before.get(*phase).copied().unwrap_or_default();
            let (s1, c1) = after.get(*phase).copied().unwrap_or_default();
            let mean = if c1 > c0 {
                1000.0 * (s1 - s0) / (c1 - c0)
            } else {
                0.0
            };
            format!("{phase} {mean:.2} ms")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Small uploads: size, uploads in flight, seconds per half (each side runs two halves, the
/// sides alternating, so both see the same machine).
const SMALL: usize = 4096;
const SMALL_IN_FLIGHT: usize = 32;
const SMALL_HALF_SECONDS: u64 = 5;

/// The sides of the small-upload comparison.
#[derive(Clone, Copy)]
enum Small {
    Element,
    /// The raw ceiling, writing the element's dated keys.
    Raw,
    /// The raw side with flat keys.
    RawFlat,
}

/// Adds a half's operations and seconds to `side`; a failed operation fails the benchmark.
fn add_half(side: &mut (u64, f64), ran: Ran) -> Result<()> {
    if let Some(error) = ran.first_error {
        anyhow::bail!("{} of the small uploads failed: {error}", ran.errors);
    }
    side.0 += ran.done;
    side.1 += ran.elapsed.as_secs_f64();
    Ok(())
}

/// 4 KiB uploads straight to the element against the raw ceiling for what it stores:
/// the blob's and the sidecar's PutObjects at once, then one transaction writing a row and its
/// outbox row (one statement, as the element commits), with the same number in flight.
async fn small_uploads(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    db_url: &str,
) -> Result<()> {
    let pool = artstore_element::connect_database(db_url).await?;
    sqlx::raw_sql(
        "CREATE TABLE raw_rows (id uuid PRIMARY KEY, record jsonb NOT NULL,
                               created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE raw_outbox (id bigserial PRIMARY KEY, file_id uuid NOT NULL,
                                  payload jsonb NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let data = payload(SMALL, 4);
    let record = serde_json::json!({ "description": "x".repeat(600) });
    let element = {
        let (http, url, token, data) = (
            http.clone(),
            url.to_string(),
            token.to_string(),
            data.clone(),
        );
        move |n: u64| {
            let request = http
                .post(&url)
                .bearer_auth(&token)
                .query(&[("filename", format!("small-{n}.bin"))])
                .body(data.clone());
            async move {
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status() == 201,
                    "upload failed: {}",
                    response.status()
                );
                anyhow::Ok(())
            }
        }
    };
    // The raw side writes the keys the element would (its dated directories: SeaweedFS's filer
    // pays for each level), and, to show what that layout costs, flat keys as well.
    let raw = |dated_keys: bool| {
        let (s3, bucket, pool, data) = (s3.clone(), bucket.to_string(), pool.clone(), data.clone());
        let (sidecar, record) = (payload(700, 5), record.clone());
        move |n: u64| {
            let (s3, bucket, pool, data, sidecar, record) = (
                s3.clone(),
                bucket.clone(),
                pool.clone(),
                data.clone(),
                sidecar.clone(),
                record.clone(),
            );
            let id = uuid::Uuid::now_v7();
            let key = if dated_keys {
                let blob =
                    layout::blob_key(&format!("small-{n}.bin"), "bench", chrono::Utc::now(), id);
                format!("bench/{blob}")
            } else {
                format!("small-raw/{n}")
            };
            async move {
                tokio::try_join!(
                    s3.put_object()
                        .bucket(&bucket)
                        .key(&key)
                        .body(data.into())
                        .send(),
                    s3.put_object()
                        .bucket(&bucket)
                        .key(layout::sidecar_key(&key))
                        .body(sidecar.into())
                        .send()
                )?;
                sqlx::query(
                    "WITH row AS (INSERT INTO raw_rows (id, record) VALUES ($1, $2) RETURNING id)
                     INSERT INTO raw_outbox (file_id, payload) SELECT id, $2 FROM row",
                )
                .bind(id)
                .bind(sqlx::types::Json(&record))
                .execute(&pool)
                .await?;
                anyhow::Ok(())
            }
        }
    };
    let (mut through, mut ceiling, mut flat) = ((0u64, 0.0), (0u64, 0.0), (0u64, 0.0));
    // The second round runs the sides in the opposite order, so neither gains from going first
    // (the store grows as the run goes on).
    for round in 0..2 {
        let mut order = [Small::Element, Small::Raw, Small::RawFlat];
        if round == 1 {
            order.reverse();
        }
        for side in order {
            let (ran, tally) = match side {
                Small::Element => (
                    closed_loop(SMALL_IN_FLIGHT, SMALL_HALF_SECONDS, element.clone()).await,
                    &mut through,
                ),
                Small::Raw => (
                    closed_loop(SMALL_IN_FLIGHT, SMALL_HALF_SECONDS, raw(true)).await,
                    &mut ceiling,
                ),
                Small::RawFlat => (
                    closed_loop(SMALL_IN_FLIGHT, SMALL_HALF_SECONDS, raw(false)).await,
                    &mut flat,
                ),
            };
            add_half(tally, ran)?;
        }
    }
    let rate = |side: (u64, f64)| side.0 as f64 / side.1;
    let (t, c, f) = (rate(through), rate(ceiling), rate(flat));
    println!(
        "  4 KiB x {SMALL_IN_FLIGHT} in flight: element {t:6.0} uploads/s   raw PutObject blob and sidecar at once + one transaction {c:6.0}/s   ratio {:5.1} %",
        100.0 * t / c
    );
    println!(
        "             the same raw side with flat keys (no dated directories) {f:6.0}/s   element vs that {:5.1} %",
        100.0 * t / f
    );
    artstore_common::bench_summary::record(artstore_common::bench_summary::Row {
        benchmark: "element small uploads (4 KiB, 32 in flight) vs raw blob + sidecar PutObjects + one transaction",
        figure: format!("{t:.0} uploads/s"),
        ceiling: format!("{c:.0} per s"),
        ratio: Some(t / c),
        goal: "≥ 80 %",
        pass: t / c >= 0.80,
    });
    pool.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let env = services()?;
    let get = |k: &str| env.get(k).cloned().with_context(|| format!("{k} missing"));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let settings = S3Settings {
        endpoint: get("ARTSTORE_TEST_S3_ENDPOINT")?,
        bucket: format!("bench-{suffix}"),
        prefix: "bench".into(),
        region: get("ARTSTORE_TEST_S3_REGION")?,
        access_key: get("ARTSTORE_TEST_S3_ACCESS_KEY")?,
        secret_key: get("ARTSTORE_TEST_S3_SECRET_KEY")?,
    };
    let s3 = artstore_element::backend::s3_client(&settings, Default::default()).await;
    s3.create_bucket().bucket(&settings.bucket).send().await?;

    let admin_url = get("ARTSTORE_TEST_DATABASE_URL")?;
    let db_name = format!("bench_{suffix}");
    let admin = artstore_element::connect_database(&admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&admin)
        .await?;
    let db_url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db_name}"),
        None => anyhow::bail!("odd database url"),
    };

    let secret = b"bench-secret";
    let mut config = ElementConfig::new(
        "se-bench",
        BackendConfig::S3(settings.clone()),
        db_url.clone(),
        get("ARTSTORE_TEST_REDIS_URL")?,
        format!("bench:{suffix}"),
        Verifier::hs256(secret),
    );
    config.capacity_bytes = 1 << 40;
    config.max_file_bytes = 2 << 30;
    let element = artstore_element::build(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = element.start(listener)?;
    let url = format!("{}/api/v1/files", running.url());
    // What an ingester sends: a token it signed for its caller (internal audience).
    let bearer = auth::Signer::new(secret.to_vec()).bearer("bench", Role::Writer, 3600)?;
    let token = bearer.trim_start_matches("Bearer ").to_string();
    let http = reqwest::Client::new();

    // A new bucket's first writes make SeaweedFS grow volumes for it (hundreds of ms): neither
    // side is timed until both have written to it.
    for i in 0..4 {
        let response = http
            .post(&url)
            .bearer_auth(&token)
            .query(&[("filename", format!("warm-{i}.bin"))])
            .body(payload(MIB, 1))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 201, "warm-up upload failed");
        s3.put_object()
            .bucket(&settings.bucket)
            .key(format!("warm/{i}"))
            .body(payload(MIB, 1).into())
            .send()
            .await?;
    }
    // `--small-only`: the small-upload comparison alone (what changes to the commit path move).
    let small_only = std::env::args().any(|arg| arg == "--small-only");
    let large: &[(usize, usize)] = if small_only {
        &[]
    } else {
        println!(
            "upload throughput: storage element (S3 backend) vs raw PutObject, same server, same bytes"
        );
        &[(MIB, 128), (64 * MIB, 10)]
    };
    for &(size, rounds) in large {
        let data = payload(size, 3);
        let mut through = Duration::ZERO;
        let mut raw = Duration::ZERO;
        let phases_before = phase_totals(&http, &running.url()).await?;
        // Alternate so both see the same server state.
        for i in 0..rounds {
            let start = Instant::now();
            let response = http
                .post(&url)
                .bearer_auth(&token)
                .query(&[("filename", format!("bench-{i}.bin"))])
                .body(data.clone())
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == 201,
                "upload failed: {}",
                response.status()
            );
            through += start.elapsed();
            let start = Instant::now();
            s3.put_object()
                .bucket(&settings.bucket)
                .key(format!("raw/{size}/{i}"))
                .body(data.clone().into())
                .send()
                .await?;
            raw += start.elapsed();
        }
        let phases_after = phase_totals(&http, &running.url()).await?;
        // The element's own ceiling: blob and sidecar PutObjects at once, as it stores them.
        let sidecar = payload(700, 5);
        let mut raw_both = Duration::ZERO;
        for i in 0..rounds {
            let start = Instant::now();
            tokio::try_join!(
                s3.put_object()
                    .bucket(&settings.bucket)
                    .key(format!("both/{size}/{i}"))
                    .body(data.clone().into())
                    .send(),
                s3.put_object()
                    .bucket(&settings.bucket)
                    .key(format!("both/{size}/{i}.attr.json"))
                    .body(sidecar.clone().into())
                    .send()
            )?;
            raw_both += start.elapsed();
        }
        // The blob and then its sidecar, two PutObjects in a row.
        let mut raw_pair = Duration::ZERO;
        for i in 0..rounds {
            let start = Instant::now();
            s3.put_object()
                .bucket(&settings.bucket)
                .key(format!("pair/{size}/{i}"))
                .body(data.clone().into())
                .send()
                .await?;
            s3.put_object()
                .bucket(&settings.bucket)
                .key(format!("pair/{size}/{i}.attr.json"))
                .body(sidecar.clone().into())
                .send()
                .await?;
            raw_pair += start.elapsed();
        }
        let mib = (size * rounds) as f64 / MIB as f64;
        let pair = mib / raw_pair.as_secs_f64();
        let both = mib / raw_both.as_secs_f64();
        let (t, r) = (mib / through.as_secs_f64(), mib / raw.as_secs_f64());
        println!(
            "  {:>3} MiB x {rounds:>2}: element {t:8.1} MiB/s   raw PutObject {r:8.1} MiB/s   ratio {:5.1} %",
            size / MIB,
            100.0 * t / r
        );
        println!(
            "             raw PutObject blob, then sidecar {pair:8.1} MiB/s   element vs that {:5.1} %",
            100.0 * t / pair
        );
        println!(
            "             raw PutObject blob and sidecar at once {both:8.1} MiB/s   element vs that {:5.1} %",
            100.0 * t / both
        );
        println!(
            "             per upload: {:.2} ms in all; raw blob {:.2} ms, blob and sidecar at once {:.2} ms",
            1000.0 * through.as_secs_f64() / rounds as f64,
            1000.0 * raw.as_secs_f64() / rounds as f64,
            1000.0 * raw_both.as_secs_f64() / rounds as f64,
        );
        println!(
            "             element phases (mean, its /metrics): {}",
            phase_breakdown(&phases_before, &phases_after)
        );
        let goal = if size == MIB { 0.80 } else { 0.90 };
        artstore_common::bench_summary::record(artstore_common::bench_summary::Row {
            benchmark: &format!(
                "element upload {} MiB x {rounds} vs raw PutObject",
                size / MIB
            ),
            figure: format!("{t:.1} MiB/s"),
            ceiling: format!("{r:.1} MiB/s"),
            ratio: Some(t / r),
            goal: if size == MIB { "≥ 80 %" } else { "≥ 90 %" },
            pass: t / r >= goal,
        });
    }

    small_uploads(&http, &url, &token, &s3, &settings.bucket, &db_url).await?;
    if small_only {
        return Ok(());
    }

    // Peak RSS while 1 GiB streams through the element (chunked body, never whole in memory).
    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let chunk = payload(MIB, 9);
    let body =
        futures::stream::iter((0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let start = Instant::now();
    let response = http
        .post(&url)
        .bearer_auth(&token)
        .query(&[("filename", "one-gib.bin")])
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "1 GiB upload failed: {}",
        response.status()
    );
    let took = start.elapsed();
    done.store(true, Ordering::SeqCst);
    sampler.await?;
    let peak = peak.load(Ordering::SeqCst);
    println!(
        "1 GiB streamed upload: {:.1} MiB/s; RSS before {} MiB, peak during {} MiB (+{} MiB)",
        1024.0 / took.as_secs_f64(),
        baseline / 1024,
        peak / 1024,
        peak.saturating_sub(baseline) / 1024
    );
    let grew_mib = peak.saturating_sub(baseline) / 1024;
    artstore_common::bench_summary::record(artstore_common::bench_summary::Row {
        benchmark: "element 1 GiB streamed upload: peak RSS growth",
        figure: format!("+{grew_mib} MiB"),
        ceiling: format!("{} MiB before", baseline / 1024),
        ratio: None,
        goal: "flat: ≤ +64 MiB (parts in flight)",
        pass: grew_mib <= 64,
    });
    let core = running.core.clone();
    running.shutdown().await;

    // Leave nothing behind: the bench's objects, bucket and database.
    let mut pages = s3
        .list_objects_v2()
        .bucket(&settings.bucket)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for object in page?.contents() {
            if let Some(key) = object.key() {
                s3.delete_object()
                    .bucket(&settings.bucket)
                    .key(key)
                    .send()
                    .await?;
            }
        }
    }
    s3.delete_bucket().bucket(&settings.bucket).send().await?;
    core.pool.close().await;
    drop(core);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    Ok(())
}
