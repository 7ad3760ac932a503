//! Benchmark of the whole write → read path over a running local stack (`scripts/dev.sh`, or
//! `artstore dev-stack`): not a test, a program that prints figures.
//!
//! 1. Upload → searchable latency: 4 KiB files through the ingester at a steady rate (default
//!    200/s for 30 s); each file counts as searchable when the query node returns it by id.
//!    Printed beside it, measured in the same run: the upload's own latency (the floor).
//! 2. Maximum sustained small-upload rate through the ingester (closed loop, N in flight),
//!    against the ceiling measured the same way straight at the storage element the ingester
//!    writes to (no gateway).
//!
//!     cargo run --release -p artstore --bin stack-bench -- --stack target/artstore-dev/stack.json

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use artstore_common::bench_load::{Ran, closed_loop};
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    /// The stack's `stack.json`.
    #[arg(long, default_value = "target/artstore-dev/stack.json")]
    stack: PathBuf,
    /// Uploads per second for the latency phase.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// File size, bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Requests in flight for the throughput phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of the throughput phase per side (through the ingester, straight to the
    /// element), taken in rounds of [`ROUND_SECONDS`] with the sides alternating.
    #[arg(long, default_value_t = 30)]
    throughput_seconds: u64,
    /// Only the throughput run through the ingester, for a profiler to watch
    /// (`scripts/profile-uploads.sh`); prints its rate and records no summary line.
    #[arg(long)]
    ingester_load_only: bool,
    /// The same straight to the storage element (the ceiling's load alone).
    #[arg(long)]
    element_load_only: bool,
}

struct Stack {
    ingester: String,
    query: String,
    element: String,
    writer: String,
    /// Direct uploads to an element take an admin's token (a writer's only through an ingester).
    admin: String,
    reader: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn body(size: usize, n: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (i as u64 ^ n.wrapping_mul(0x9E37_79B9)) as u8;
    }
    v
}

async fn upload_via_ingester(
    http: &reqwest::Client,
    stack: &Stack,
    n: u64,
    size: usize,
) -> Result<String> {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(body(size, n)).file_name(format!("bench-{n}.bin")),
    );
    let r = http
        .post(format!("{}/api/v1/files/upload", stack.ingester))
        .bearer_auth(&stack.writer)
        .multipart(form)
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!(
            "upload answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    let record: Value = r.json().await?;
    record["file_id"]
        .as_str()
        .map(String::from)
        .context("no file_id")
}

async fn upload_to_element(
    http: &reqwest::Client,
    stack: &Stack,
    n: u64,
    size: usize,
) -> Result<()> {
    let r = http
        .post(format!("{}/api/v1/files", stack.element))
        .query(&[("filename", format!("bench-direct-{n}.bin"))])
        .bearer_auth(&stack.admin)
        .body(body(size, n))
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("element answered {}", r.status());
    }
    Ok(())
}

async fn wait_searchable(
    http: &reqwest::Client,
    stack: &Stack,
    id: &str,
    deadline: Instant,
) -> Result<()> {
    loop {
        let r = http
            .get(format!("{}/api/v1/files/{id}", stack.query))
            .bearer_auth(&stack.reader)
            .send()
            .await?;
        if r.status().is_success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("file {id} not searchable after 10 s");
        }
        // Each poll is a request the query node serves beside the stream it applies: every 2 ms
        // (1,500 requests/s at 200 uploads/s) the bench loaded the node it measures; 5 ms keeps
        // the figure's resolution within 5 ms.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Length of one round of the throughput phase.
const ROUND_SECONDS: u64 = 5;

/// Which way the throughput phase's uploads go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Ingester,
    Element,
}

/// Uploads done and seconds taken on one side, over its rounds.
#[derive(Default)]
struct Tally {
    done: u64,
    errors: u64,
    seconds: f64,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.done as f64 / self.seconds
    }
}

/// The order of the throughput phase's rounds: the sides alternate in pairs (E I I E E I ...),
/// so a machine that slows down as the store grows weighs on both alike instead of on the side
/// measured second.
fn round_order(rounds: u64) -> Vec<Side> {
    (0..2 * rounds)
        .map(|i| match i.div_ceil(2) % 2 {
            0 => Side::Element,
            _ => Side::Ingester,
        })
        .collect()
}

/// One round's sustained uploads on `side`.
async fn throughput_round(
    http: &reqwest::Client,
    stack: &Arc<Stack>,
    args: &Args,
    side: Side,
    seconds: u64,
) -> Ran {
    let (http, stack, size) = (http.clone(), stack.clone(), args.size);
    closed_loop(args.concurrency, seconds, move |n| {
        let http = http.clone();
        let stack = stack.clone();
        async move {
            match side {
                Side::Ingester => upload_via_ingester(&http, &stack, n, size)
                    .await
                    .map(|_| ()),
                Side::Element => upload_to_element(&http, &stack, n, size).await,
            }
        }
    })
    .await
}

/// The sustained rates through the ingester and straight to the element, interleaved.
async fn throughput(http: &reqwest::Client, stack: &Arc<Stack>, args: &Args) -> (Tally, Tally) {
    let rounds = args.throughput_seconds.div_ceil(ROUND_SECONDS).max(1);
    let seconds = args.throughput_seconds.clamp(1, ROUND_SECONDS);
    let (mut ingester, mut element) = (Tally::default(), Tally::default());
    for side in round_order(rounds) {
        let ran = throughput_round(http, stack, args, side, seconds).await;
        let tally = match side {
            Side::Ingester => &mut ingester,
            Side::Element => &mut element,
        };
        tally.done += ran.done;
        tally.errors += ran.errors;
        tally.seconds += ran.elapsed.as_secs_f64();
    }
    (ingester, element)
}

/// One side alone for `--*-load-only`, for a profiler to watch.
async fn load_only(http: &reqwest::Client, stack: &Arc<Stack>, args: &Args, side: Side) -> Ran {
    throughput_round(http, stack, args, side, args.throughput_seconds).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let info: Value = serde_json::from_slice(
        &std::fs::read(&args.stack).with_context(|| format!("reading {}", args.stack.display()))?,
    )?;
    let field = |v: &Value| {
        v.as_str()
            .map(String::from)
            .context("stack.json is incomplete")
    };
    // The element sequential fill writes to first: highest priority.
    let elements = info["storage_elements"]
        .as_array()
        .context("no storage_elements")?;
    let first = elements
        .iter()
        .max_by_key(|e| e["priority"].as_i64().unwrap_or(0))
        .context("no storage element")?;
    let stack = Arc::new(Stack {
        ingester: field(&info["ingester_url"])?,
        query: field(&info["query_url"])?,
        element: field(&first["url"])?,
        writer: field(&info["tokens"]["writer"])?,
        admin: field(&info["tokens"]["admin"])?,
        reader: field(&info["tokens"]["reader"])?,
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    println!(
        "stack-bench: {} B files; latency phase {}/s for {} s; throughput phase {} in flight for {} s",
        args.size, args.rate, args.seconds, args.concurrency, args.throughput_seconds
    );

    // Untimed: each element's bucket has SeaweedFS grow its first volumes (about a second) and
    // every hop opens its connections; neither is the steady state being measured.
    for n in 0..16 {
        upload_via_ingester(&http, &stack, u64::MAX - n, args.size).await?;
        upload_to_element(&http, &stack, u64::MAX - n, args.size).await?;
    }

    if args.ingester_load_only {
        let ran = load_only(&http, &stack, &args, Side::Ingester).await;
        println!(
            "through the ingester: {:.0} uploads/s ({} errors)",
            ran.rate(),
            ran.errors
        );
        return Ok(());
    }
    if args.element_load_only {
        let ran = load_only(&http, &stack, &args, Side::Element).await;
        println!(
            "straight to the element: {:.0} uploads/s ({} errors)",
            ran.rate(),
            ran.errors
        );
        return Ok(());
    }

    // Phase 1: steady rate, upload → searchable.
    let total = args.rate as u64 * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    let phase_start = Instant::now();
    for n in 0..total {
        ticker.tick().await;
        let http = http.clone();
        let stack = stack.clone();
        let size = args.size;
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let id = upload_via_ingester(&http, &stack, n, size).await?;
            let uploaded = t0.elapsed();
            wait_searchable(&http, &stack, &id, Instant::now() + Duration::from_secs(10)).await?;
            Ok::<_, anyhow::Error>((uploaded, t0.elapsed()))
        }));
    }
    let mut upload_ms = Vec::new();
    let mut visible_ms = Vec::new();
    let mut failures = 0;
    for t in tasks {
        match t.await {
            Ok(Ok((u, v))) => {
                upload_ms.push(u.as_secs_f64() * 1000.0);
                visible_ms.push(v.as_secs_f64() * 1000.0);
            }
            _ => failures += 1,
        }
    }
    let achieved = upload_ms.len() as f64 / phase_start.elapsed().as_secs_f64();
    upload_ms.sort_by(f64::total_cmp);
    visible_ms.sort_by(f64::total_cmp);
    println!(
        "\nupload → searchable ({} files, {failures} failed, {achieved:.0}/s achieved):",
        upload_ms.len()
    );
    println!(
        "  searchable  p50 {:7.1} ms   p99 {:7.1} ms   max {:7.1} ms   (goal: p99 < 100 ms)",
        percentile(&visible_ms, 50.0),
        percentile(&visible_ms, 99.0),
        visible_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  upload only p50 {:7.1} ms   p99 {:7.1} ms   (the floor inside the figure above)",
        percentile(&upload_ms, 50.0),
        percentile(&upload_ms, 99.0)
    );

    let searchable_p99 = percentile(&visible_ms, 99.0);
    artstore_common::bench_summary::record(artstore_common::bench_summary::Row {
        benchmark: &format!("upload → searchable at {}/s, {} B", args.rate, args.size),
        figure: format!("p99 {searchable_p99:.1} ms"),
        ceiling: format!("upload alone p99 {:.1} ms", percentile(&upload_ms, 99.0)),
        ratio: None,
        goal: "p99 < 100 ms",
        pass: searchable_p99 < 100.0 && failures == 0,
    });

    // Phase 2: maximum sustained rate, ingester vs the element directly.
    let (through, direct) = throughput(&http, &stack, &args).await;
    let (gateway, gateway_errors) = (through.rate(), through.errors);
    let (ceiling, ceiling_errors) = (direct.rate(), direct.errors);
    println!(
        "\nsustained small uploads ({} in flight, {:.0} s a side in rounds of {ROUND_SECONDS} s, sides alternating):",
        args.concurrency, through.seconds
    );
    println!(
        "  through the ingester      {gateway:7.0} uploads/s  ({gateway_errors} errors)  (goal: >= 500/s)"
    );
    println!(
        "  straight to the element   {ceiling:7.0} uploads/s  ({ceiling_errors} errors)  (ceiling, same run)"
    );
    println!(
        "  ratio                     {:7.0} %",
        100.0 * gateway / ceiling
    );
    artstore_common::bench_summary::record(artstore_common::bench_summary::Row {
        benchmark: &format!(
            "small uploads ({} B, {} in flight) through the ingester vs straight to the element",
            args.size, args.concurrency
        ),
        figure: format!("{gateway:.0} uploads/s"),
        ceiling: format!("{ceiling:.0} uploads/s"),
        ratio: Some(gateway / ceiling),
        goal: "≥ 90 % and ≥ 500/s",
        pass: gateway / ceiling >= 0.90 && gateway >= 500.0 && gateway_errors == 0,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sides_alternate_in_pairs_starting_with_the_element() {
        use Side::{Element as E, Ingester as I};
        assert!(round_order(3) == [E, I, I, E, E, I]);
        assert!(round_order(1) == [E, I]);
    }
}
