//! The chaos test (docs/faults.md, "Chaos test"): the whole archive as processes this test owns,
//! on PostgreSQL, Redis and SeaweedFS it also owns; several clients upload (with and without
//! Idempotency-Key), change, delete, search and download while a seeded schedule kills (-9),
//! freezes and restarts every process and cuts connections; then the system's own repair, a
//! bounded wait, and the ledger checked against what the archive holds.
//!
//! Bounded form (the test command runs it): one round of every fault. Long form:
//! `scripts/chaos.sh --minutes 20 [--seed N]` (environment `ARTSTORE_CHAOS_MINUTES`,
//! `ARTSTORE_CHAOS_SEED`, `ARTSTORE_CHAOS_CLIENTS`).

mod archive;
mod check;
mod faults;
mod ledger;
mod ports;
mod procs;
mod proxy;
mod services;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use artstore_common::auth::Role;

use crate::archive::Archive;
use crate::faults::Chaos;
use crate::ledger::{Answer, Tally};
use crate::services::{Programs, Services};
use crate::workload::Client;

/// SeaweedFS sizes its volumes from the free space it finds when it starts: on a nearly full
/// disk it has none, refuses every write ("no volume server capacity") and the run measures the
/// disk, not the archive.
const MIN_FREE_BYTES: u64 = 8 << 30;

fn require_free_space(dir: &std::path::Path, min: u64) {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df runs");
    let free: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes");
    assert!(
        free >= min,
        "{} has {} GiB free; the chaos run needs {} GiB (SeaweedFS makes no volumes on a full disk)",
        dir.display(),
        free >> 30,
        min >> 30
    );
}

fn setting<T: std::str::FromStr>(key: &str) -> Option<T> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_run_loses_nothing_and_converges() {
    let seed: u64 = setting("ARTSTORE_CHAOS_SEED").unwrap_or_else(rand::random);
    let minutes: f64 = setting("ARTSTORE_CHAOS_MINUTES").unwrap_or(0.0);
    let client_count: usize = setting("ARTSTORE_CHAOS_CLIENTS").unwrap_or(4);
    let schedule = faults::schedule(seed, minutes);
    println!(
        "chaos: seed {seed} (ARTSTORE_CHAOS_SEED={seed} repeats this schedule), {} faults, {client_count} clients",
        schedule.len()
    );
    for (i, f) in schedule.iter().enumerate() {
        println!(
            "  {:>3}. {:<28} hold {:>5.1}s  then {:>4.1}s",
            i + 1,
            f.label(),
            f.hold.as_secs_f64(),
            f.gap.as_secs_f64()
        );
    }

    let dir = artstore_testsupport::workspace_root()
        .join("target/chaos")
        .join(format!("{seed}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).expect("run directory");
    println!("chaos: processes' logs in {}", dir.join("logs").display());
    require_free_space(&dir, MIN_FREE_BYTES);

    let mut services = Services::start(&dir, &Programs::find()).expect("services start");
    services::postgres_ready(&services.database_url("postgres"), Duration::from_secs(60))
        .await
        .expect("PostgreSQL up");
    services::redis_ready(&services.redis_url(), Duration::from_secs(30))
        .await
        .expect("Redis up");
    services::s3_ready(&services.s3_endpoint(), Duration::from_secs(60))
        .await
        .expect("SeaweedFS up");
    let mut archive = Archive::start(&dir, &services)
        .await
        .expect("archive starts");
    let redis_url = services.redis_url();

    // The workload.
    let stop = Arc::new(AtomicBool::new(false));
    let owners: Vec<String> = (0..client_count).map(|i| format!("chaos-{i}")).collect();
    let mut handles = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        let client = Client::new(
            i,
            seed,
            archive.ingester_proxy.url.clone(),
            archive.query_proxy.url.clone(),
            archive.token(Role::Writer, owner),
        );
        handles.push(tokio::spawn(client.run(seed, stop.clone())));
    }

    // The faults, one after the other.
    let started = Instant::now();
    let mut chaos = Chaos {
        services: &mut services,
        archive: &mut archive,
        unplanned_exits: Vec::new(),
    };
    let applied = chaos.run(&schedule, started).await;
    let fault_phase = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    chaos.settle().await.expect("every process back and ready");
    let unplanned = std::mem::take(&mut chaos.unplanned_exits);
    let mut clients = Vec::new();
    for h in handles {
        clients.push(h.await.expect("client task"));
    }
    let stopped = Instant::now();
    println!(
        "chaos: faults done after {:.0}s; workload stopped",
        fault_phase.as_secs_f64()
    );

    // Convergence 1: a client retries what it sent with a key and never got an answer for.
    let deadline = Instant::now() + Duration::from_secs(180);
    for c in &mut clients {
        loop {
            let pending = c.take_pending_keyed();
            if pending.is_empty() || Instant::now() > deadline {
                break;
            }
            for n in pending {
                c.retry_keyed(seed, n).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // Convergence 2: the operator's repair once the grace period has passed, then a bounded wait
    // for every event to be published and consumed.
    let grace = Duration::from_secs(archive::ORPHAN_GRACE_SECONDS + 2);
    if let Some(rest) = grace.checked_sub(stopped.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    check::wait_uploads_ended(&archive, Duration::from_secs(120))
        .await
        .expect("every element's uploads ended");
    println!("chaos: keyed retries done, no upload at work; incremental rebuild of every element");
    let reports = check::repair(&archive).await.expect("incremental rebuilds");
    for r in &reports {
        println!("chaos: repair {r}");
    }
    let drained = check::wait_drained(&archive, &redis_url, Duration::from_secs(120)).await;
    println!("chaos: events (unsent, pending, lag, dead letters): {drained}");

    // The verdict.
    let uploads: Vec<ledger::Upload> = clients
        .iter()
        .flat_map(|c| c.ledger.uploads.iter().cloned())
        .collect();
    let mut totals = check::check(&archive, &redis_url, &uploads, &owners)
        .await
        .expect("checking the archive");
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for c in &clients {
        for (kind, tally) in &c.ledger.tallies {
            tallies.entry(kind).or_default().merge(tally);
        }
        for a in &c.ledger.anomalies {
            totals.half_applied += 1;
            totals.problems.push(format!("seen by a client: {a}"));
        }
    }
    for t in tallies.values() {
        totals.acknowledged += t.ok;
        totals.failed += t.error + t.no_answer;
    }
    let replays = uploads
        .iter()
        .filter(|u| u.key.is_some() && u.answers.len() > 1 && u.acknowledged())
        .count();
    let never = uploads
        .iter()
        .filter(|u| u.key.is_some() && !u.acknowledged())
        .count();
    let unanswered_unkeyed = uploads
        .iter()
        .filter(|u| u.key.is_none() && u.answers.iter().all(|a| *a == Answer::Unanswered))
        .count();

    println!();
    println!(
        "chaos: seed {seed}, {:.1} min of faults, {} clients",
        fault_phase.as_secs_f64() / 60.0,
        client_count
    );
    let counts = faults::counts(&schedule);
    println!("  faults by kind: {counts:?}");
    println!("  faults applied: {}", applied.is_ok());
    println!("  processes that exited on their own (restarted): {unplanned:?}");
    check::print_tallies(&tallies);
    println!(
        "  uploads: {} logical, {} acknowledged, {} keyed and acknowledged after a retry, {} keyed never answered, {} unkeyed without answer",
        uploads.len(),
        uploads.iter().filter(|u| u.acknowledged()).count(),
        replays,
        never,
        unanswered_unkeyed
    );
    println!(
        "  LEDGER acknowledged {} failed {} lost {} duplicated {} stale {} orphaned {} half-applied {} stored-after-error {} undelivered-events {}",
        totals.acknowledged,
        totals.failed,
        totals.lost,
        totals.duplicated,
        totals.stale,
        totals.orphaned,
        totals.half_applied,
        totals.phantom,
        totals.pending
    );
    for p in &totals.problems {
        println!("  ! {p}");
    }

    applied.expect("the fault schedule ran");
    for kind in ["upload", "patch", "delete", "search", "download"] {
        assert!(
            tallies.get(kind).is_some_and(|t| t.ok > 0),
            "no {kind} succeeded: the workload did not reach the archive"
        );
    }
    assert!(
        never == 0,
        "{never} keyed uploads were never answered after the faults stopped"
    );
    assert!(
        totals.clean(),
        "the chaos run found problems (seed {seed}; logs in {})",
        dir.join("logs").display()
    );
    drop(archive);
    drop(services);
    let _ = std::fs::remove_dir_all(&dir);
}
