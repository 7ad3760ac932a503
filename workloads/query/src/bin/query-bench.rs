//! Query node benchmark: figures, not a test.
//!
//! 1. Sync throughput: N events on a stream, applied by the node's consumer (XREADGROUP →
//!    decode → batched version-guarded upsert in one transaction → XACK), against a ceiling
//!    measured in the same run on the same entries: a bare loop of XREADGROUP + the same
//!    batched upsert + XACK, without the consumer machinery.
//! 2. Search latency p50/p99 at 100k and 1M synthetic files (generated in SQL), for a few
//!    query shapes.
//!
//! Needs PostgreSQL (a superuser URL, to create scratch databases) and Redis:
//! `query-bench --database-url postgres://… --redis-url redis://… [--events 50000]
//! [--sizes 100000,1000000] [--iterations 200] [--only sync|search] [--keep-databases]`;
//! defaults come from `$ARTSTORE_SERVICES_ENV`. `--keep-databases` leaves each search database
//! (`bench_keep_<size>`) in place and reuses it on the next run (migrations still run, so an
//! index change is measured on the same rows without generating them again).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use artstore_events::consumer::{Consumer, ConsumerConfig, ConsumerObserver, parse_xreadgroup};
use artstore_events::{EventType, FileEvent, FileRecord, Retention};
use artstore_query::apply::{CacheApplier, event_row};
use artstore_query::search::{Filters, SearchRequest, Sort, SortField, search};
use artstore_query::store::upsert_committed;
use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, PgPool};

struct Args {
    database_url: String,
    redis_url: String,
    events: usize,
    sizes: Vec<i64>,
    iterations: usize,
    only: Option<String>,
    keep_databases: bool,
}

fn args() -> Result<Args> {
    let file: HashMap<String, String> = std::env::var("ARTSTORE_SERVICES_ENV")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut a = Args {
        database_url: file
            .get("ARTSTORE_TEST_DATABASE_URL")
            .cloned()
            .unwrap_or_default(),
        redis_url: file
            .get("ARTSTORE_TEST_REDIS_URL")
            .cloned()
            .unwrap_or_default(),
        events: 50_000,
        sizes: vec![100_000, 1_000_000],
        iterations: 200,
        only: None,
        keep_databases: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--keep-databases" {
            a.keep_databases = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database-url" => a.database_url = value,
            "--redis-url" => a.redis_url = value,
            "--events" => a.events = value.parse()?,
            "--iterations" => a.iterations = value.parse()?,
            "--only" if value == "sync" || value == "search" => a.only = Some(value),
            "--sizes" => {
                a.sizes = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        !a.database_url.is_empty() && !a.redis_url.is_empty(),
        "--database-url and --redis-url are required"
    );
    Ok(a)
}

struct Scratch {
    pool: PgPool,
    name: String,
    admin_url: String,
}

impl Scratch {
    async fn drop_database(self) -> Result<()> {
        self.pool.close().await;
        let admin: sqlx::postgres::PgConnectOptions = self.admin_url.parse()?;
        let mut conn = admin.connect().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

async fn scratch_database(admin_url: &str, tag: &str) -> Result<Scratch> {
    let name = format!(
        "bench_{tag}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    open_database(admin_url, name, false).await
}

/// Creates database `name` (unless `reuse` and it exists), connects and migrates it.
async fn open_database(admin_url: &str, name: String, reuse: bool) -> Result<Scratch> {
    let admin: sqlx::postgres::PgConnectOptions = admin_url.parse()?;
    let mut conn = admin.connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !(reuse && exists) {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
    }
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin_url}/{name}"),
    };
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;
    artstore_query::MIGRATOR.run(&pool).await?;
    Ok(Scratch {
        pool,
        name,
        admin_url: admin_url.to_string(),
    })
}

fn synthetic(i: usize) -> FileRecord {
    let now = chrono::Utc::now();
    FileRecord {
        file_id: uuid::Uuid::new_v4(),
        original_filename: format!("bench-{i:07}-report.pdf"),
        storage_key: format!("2026/11/23/20/bench-{i}.pdf"),
        size: (i as u64 % 100_000) + 1,
        sha256: format!("{:064x}", i),
        mime_type: "application/pdf".into(),
        description: Some(format!("benchmark file number {i}")),
        tags: vec![format!("t{}", i % 50), "bench".into()],
        storage_element_id: format!("se-{}", i % 4),
        created_at: now,
        created_by: format!("owner-{}", i % 100),
        updated_at: now,
        retention: Retention::Permanent,
        retention_expires_at: None,
        version: 1,
    }
}

async fn publish(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    n: usize,
) -> Result<()> {
    for chunk_start in (0..n).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in chunk_start..(chunk_start + 1000).min(n) {
            let event = FileEvent::new(EventType::Created, synthetic(i), chrono::Utc::now());
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("*");
            for (k, v) in event.to_fields() {
                cmd.arg(k).arg(v);
            }
            pipe.add_command(cmd).ignore();
        }
        let _: () = pipe.query_async(conn).await?;
    }
    Ok(())
}

async fn count_rows(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM file_cache")
        .fetch_one(pool)
        .await?)
}

/// The ceiling: XREADGROUP + the same batched upsert + XACK in a bare loop.
async fn raw_ceiling(
    conn: &mut redis::aio::MultiplexedConnection,
    pool: &PgPool,
    stream: &str,
    group: &str,
    n: usize,
) -> Result<f64> {
    artstore_events::groups::ensure_group(conn, stream, group, "0").await?;
    let started = Instant::now();
    let mut applied = 0usize;
    while applied < n {
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("raw")
            .arg("COUNT")
            .arg(256)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(conn)
            .await?;
        let entries = parse_xreadgroup(&reply, stream)?;
        if entries.is_empty() {
            break;
        }
        let mut rows = Vec::with_capacity(entries.len());
        let mut ids = Vec::with_capacity(entries.len());
        for e in &entries {
            let fields: HashMap<String, String> = e
                .fields
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            let event = FileEvent::from_fields(&fields)?;
            rows.push(event_row(&event).map_err(anyhow::Error::msg)?);
            ids.push(e.id.clone());
        }
        upsert_committed(pool, &rows).await?;
        let _: u64 = redis::cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&ids)
            .query_async(conn)
            .await?;
        applied += entries.len();
    }
    anyhow::ensure!(count_rows(pool).await? as usize == n, "ceiling applied all");
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Counts applied entries; tells the waiting benchmark when all are in.
struct Applied {
    count: AtomicUsize,
    target: usize,
    done: tokio::sync::Notify,
}

impl ConsumerObserver for Applied {
    fn applied(&self, entries: usize, _: Duration) {
        if self.count.fetch_add(entries, Ordering::SeqCst) + entries >= self.target {
            self.done.notify_one();
        }
    }
}

async fn consumer_throughput(
    redis_url: &str,
    pool: &PgPool,
    stream: &str,
    group: &str,
    n: usize,
) -> Result<f64> {
    let mut config = ConsumerConfig::new(redis_url, stream, group, "bench-consumer");
    config.block = Duration::from_millis(100);
    config.info_interval = Duration::from_secs(3600);
    artstore_events::groups::ensure_group(
        &mut redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?,
        stream,
        group,
        "0",
    )
    .await?;
    let applier = Arc::new(CacheApplier::new(pool.clone(), None));
    let applied = Arc::new(Applied {
        count: AtomicUsize::new(0),
        target: n,
        done: tokio::sync::Notify::new(),
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(
        Consumer::new(config, applier)
            .with_observer(applied.clone())
            .run(stop_rx),
    );
    applied.done.notified().await;
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    let _ = task.await;
    anyhow::ensure!(
        count_rows(pool).await? as usize == n,
        "consumer applied all"
    );
    Ok(n as f64 / elapsed.as_secs_f64())
}

async fn sync_bench(a: &Args) -> Result<()> {
    let client = redis::Client::open(a.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let stream = format!("bench:{}", uuid::Uuid::new_v4().simple());
    publish(&mut conn, &stream, a.events).await?;
    // The ceiling runs before and after the consumer (the machine is shared; the better of
    // the two is the ceiling), each into a fresh database of its own.
    let raw_db = scratch_database(&a.database_url, "raw").await?;
    let before = raw_ceiling(&mut conn, &raw_db.pool, &stream, "raw", a.events).await?;
    raw_db.drop_database().await?;
    let app_db = scratch_database(&a.database_url, "app").await?;
    let app = consumer_throughput(&a.redis_url, &app_db.pool, &stream, "app", a.events).await?;
    app_db.drop_database().await?;
    let raw_db = scratch_database(&a.database_url, "raw").await?;
    let after = raw_ceiling(&mut conn, &raw_db.pool, &stream, "raw2", a.events).await?;
    raw_db.drop_database().await?;
    let ceiling = before.max(after);
    println!(
        "sync: {} events, batch 256 | ceiling (bare XREADGROUP + same batched upsert + XACK) {:.0} events/s (runs: {:.0}, {:.0}) | consumer {:.0} events/s | {:.0} % of ceiling",
        a.events,
        ceiling,
        before,
        after,
        app,
        100.0 * app / ceiling
    );
    artstore_common::bench_summary::record(artstore_common::bench_summary::Row {
        benchmark: &format!("query sync, {} events", a.events),
        figure: format!("{app:.0} events/s"),
        ceiling: format!("{ceiling:.0} events/s"),
        ratio: Some(app / ceiling),
        goal: "≥ 90 %",
        pass: app / ceiling >= 0.90,
    });
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// The synthetic words `w0000`…: one per thousand files, at least a thousand, so from a million
/// files up a word is in ~3,000 files (name + two description words), as its query class says
/// (at 100,000 files in ~300). A database kept with `--keep-databases` from before this
/// vocabulary (bench_keep_N above a million) has other words: drop it.
#[derive(Clone, Copy)]
struct Vocabulary {
    words: i64,
    width: i32,
}

impl Vocabulary {
    fn for_files(n: i64) -> Self {
        let words = (n / 1000).max(1000);
        let width = ((words - 1).max(1).ilog10() as i32 + 1).max(4);
        Vocabulary { words, width }
    }

    fn word(self, i: usize) -> String {
        format!(
            "w{:0width$}",
            i as i64 % self.words,
            width = self.width as usize
        )
    }
}

/// `n` synthetic files in SQL. A `Vocabulary` word in each name and two in each description,
/// 100 owners (1 % each), 50 tags, 4 elements, mixed mime types. The secondary indexes are
/// dropped for the load and built again after it (one sorted build each instead of a million
/// GIN insertions: minutes become about a minute at 1M).
async fn generate(pool: &PgPool, n: i64) -> Result<()> {
    let vocabulary = Vocabulary::for_files(n);
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexname::text, i.indexdef FROM pg_indexes i \
         JOIN pg_index x ON x.indexrelid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass \
         WHERE i.tablename = 'file_cache' AND NOT x.indisprimary",
    )
    .fetch_all(pool)
    .await?;
    for (name, _) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(pool)
            .await?;
    }
    sqlx::query(
        "INSERT INTO file_cache (file_id, version, original_filename, storage_key, size, sha256, \
         mime_type, description, tags, storage_element_id, created_at, created_by, updated_at, retention) \
         SELECT gen_random_uuid(), 1, \
           'doc-' || g || '-' || 'w' || lpad(((g * 7919) % $2)::text, $3, '0') || '.' || (ARRAY['pdf','png','txt','mp4'])[1 + g % 4], \
           'k/' || g, (g::bigint * 104729) % 10000000, md5(g::text) || md5(g::text), \
           (ARRAY['application/pdf','image/png','text/plain','video/mp4'])[1 + g % 4], \
           'file about w' || lpad(((g * 31) % $2)::text, $3, '0') || ' and w' || lpad(((g * 17) % $2)::text, $3, '0'), \
           ARRAY['t' || (g % 50), 'g' || (g % 7)], 'se-' || (g % 4), \
           timestamptz '2026-01-01' + (g * interval '13 seconds'), 'owner-' || (g % 100), now(), 'permanent' \
         FROM generate_series(1, $1) AS g",
    )
    .bind(n)
    .bind(vocabulary.words)
    .bind(vocabulary.width)
    .execute(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    sqlx::query("SET maintenance_work_mem = '256MB'")
        .execute(&mut *conn)
        .await?;
    for (_, definition) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(definition.clone()))
            .execute(&mut *conn)
            .await?;
    }
    drop(conn);
    sqlx::query("VACUUM ANALYZE file_cache")
        .execute(pool)
        .await?;
    Ok(())
}

/// Loads the table and its indexes into the buffer pool (as far as it holds them), so the
/// figures are a running server's and not its first reads from disk: at ten million files a
/// cold word search reads ~10,000 heap pages from disk, seconds each time.
async fn prewarm(pool: &PgPool) -> Result<()> {
    let started = Instant::now();
    // Needs a superuser (the services' own are); elsewhere the bench runs cold, and says so.
    if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(pool)
        .await
    {
        println!("  not prewarmed (pg_prewarm: {e}): the first queries read from disk");
        return Ok(());
    }
    let pages: i64 = sqlx::query_scalar(
        "SELECT sum(pg_prewarm(c.oid))::int8 FROM pg_class c \
         WHERE c.oid = 'file_cache'::regclass \
            OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'file_cache'::regclass)",
    )
    .fetch_one(pool)
    .await?;
    println!(
        "  prewarmed {pages} pages ({:.0} MiB) in {:.1} s",
        pages as f64 * 8192.0 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// CPU time (user + system) the database's server processes have used so far, when the server
/// runs on this host (it does under `scripts/services.sh`); `None` elsewhere. A figure the
/// machine's other load disturbs far less than wall-clock latency. Linux reports it in
/// USER_HZ ticks, which is 100 per second on every architecture the project builds for.
async fn server_cpu(pool: &PgPool) -> Option<Duration> {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            .fetch_all(pool)
            .await
            .ok()?;
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_millis(ticks * 10))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn search_bench(a: &Args, n: i64) -> Result<()> {
    let n_files = n;
    let db = if a.keep_databases {
        open_database(&a.database_url, format!("bench_keep_{n}"), true).await?
    } else {
        scratch_database(&a.database_url, &format!("search{n}")).await?
    };
    let pool = db.pool.clone();
    let started = Instant::now();
    if count_rows(&pool).await? != n {
        sqlx::query("TRUNCATE file_cache").execute(&pool).await?;
        generate(&pool, n).await?;
        println!(
            "search @ {n} files (generated in {:.1} s):",
            started.elapsed().as_secs_f64()
        );
    } else {
        sqlx::query("ANALYZE file_cache").execute(&pool).await?;
        println!("search @ {n} files (reused database {}):", db.name);
    }
    prewarm(&pool).await?;
    type Make = Box<dyn Fn(usize) -> SearchRequest>;
    let vocabulary = Vocabulary::for_files(n);
    let word = move |i: usize| vocabulary.word(i * 37);
    let shapes: Vec<(&str, Make)> = vec![
        (
            "selective: one file's number, relevance",
            Box::new(move |i| SearchRequest {
                query: Some(format!("{}", 1 + (i * 7907) % (n_files as usize))),
                ..Default::default()
            }),
        ),
        (
            "selective word, relevance",
            Box::new(move |i| SearchRequest {
                query: Some(word(i)),
                ..Default::default()
            }),
        ),
        (
            "selective word + mime + tag filters",
            Box::new(move |i| SearchRequest {
                query: Some(word(i)),
                filters: Filters {
                    mime_type: Some("image/*".into()),
                    tags_any: vec![format!("g{}", i % 7)],
                    ..Default::default()
                },
                ..Default::default()
            }),
        ),
        (
            "two words AND, newest first",
            Box::new(move |i| SearchRequest {
                query: Some(format!("{} {}", word(i), word(i + 1))),
                sort: Some(Sort {
                    field: SortField::CreatedAt,
                    order: None,
                }),
                ..Default::default()
            }),
        ),
        (
            "filter only (owner, 1 %), newest first",
            Box::new(|i| SearchRequest {
                filters: Filters {
                    owner: Some(format!("owner-{}", i % 100)),
                    ..Default::default()
                },
                ..Default::default()
            }),
        ),
        (
            "broad (matches all), newest first",
            Box::new(|_| SearchRequest {
                query: Some("doc".into()),
                sort: Some(Sort {
                    field: SortField::CreatedAt,
                    order: None,
                }),
                ..Default::default()
            }),
        ),
        (
            "broad (matches all), relevance",
            Box::new(|_| SearchRequest {
                query: Some("doc".into()),
                ..Default::default()
            }),
        ),
    ];
    for (name, make) in shapes {
        // Warm the cache once.
        let _ = search(&pool, make(0)).await;
        let mut times = Vec::with_capacity(a.iterations);
        let mut hits = 0i64;
        let cpu_before = server_cpu(&pool).await;
        for i in 0..a.iterations {
            let t = Instant::now();
            let r = search(&pool, make(i))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            times.push(t.elapsed());
            hits += r.total_count;
        }
        let cpu = match (cpu_before, server_cpu(&pool).await) {
            (Some(before), Some(after)) => format!(
                "{:>6.2} ms",
                after.saturating_sub(before).as_secs_f64() * 1e3 / a.iterations.max(1) as f64
            ),
            _ => "     — ".into(),
        };
        times.sort();
        let p99_ms = percentile(&times, 0.99).as_secs_f64() * 1e3;
        let goal_ms = if n_files > 1_000_000 { 50.0 } else { 25.0 };
        artstore_common::bench_summary::record(artstore_common::bench_summary::Row {
            benchmark: &format!("search @ {n_files}: {name}"),
            figure: format!("p99 {p99_ms:.1} ms"),
            ceiling: "—".into(),
            ratio: None,
            goal: if goal_ms > 25.0 {
                "p99 < 50 ms"
            } else {
                "p99 < 25 ms"
            },
            pass: p99_ms < goal_ms,
        });
        println!(
            "  {name:<42} p50 {:>7.2} ms  p99 {:>7.2} ms  server CPU/query {cpu}  (mean total_count {})",
            percentile(&times, 0.50).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            hits / a.iterations.max(1) as i64
        );
    }
    drop(pool);
    if a.keep_databases {
        db.pool.close().await;
    } else {
        db.drop_database().await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    if a.only.as_deref() != Some("search") {
        sync_bench(&a).await?;
    }
    if a.only.as_deref() != Some("sync") {
        for &n in &a.sizes {
            search_bench(&a, n).await?;
        }
    }
    Ok(())
}
