//! Resync on demand: when the consumer reports that events may have been missed, a background
//! task backfills from the storage elements. Requests that arrive while one runs are folded
//! into one more run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use crate::backfill::backfill_all;
use crate::elements::{ElementClient, RegistryWatcher};

pub struct Resyncer {
    wanted: AtomicBool,
    notify: Notify,
    completed: AtomicU64,
    requested: AtomicU64,
}

impl Resyncer {
    pub fn new() -> Arc<Self> {
        Arc::new(Resyncer {
            wanted: AtomicBool::new(false),
            notify: Notify::new(),
            completed: AtomicU64::new(0),
            requested: AtomicU64::new(0),
        })
    }

    pub fn request(&self, reason: &str) {
        tracing::warn!(reason, "resync from the storage elements requested");
        self.requested.fetch_add(1, Ordering::Relaxed);
        self.wanted.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Successful resyncs so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
    }

    /// Runs requested resyncs until shutdown; a failed one is retried with back-off.
    pub async fn run(
        self: Arc<Self>,
        pool: PgPool,
        registry: Arc<RegistryWatcher>,
        client: ElementClient,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut delay = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if !self.wanted.swap(false, Ordering::SeqCst) {
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            match backfill_all(&pool, &registry, &client).await {
                Ok(report) if report.ok() => {
                    self.completed.fetch_add(1, Ordering::Relaxed);
                    delay = Duration::from_millis(200);
                }
                outcome => {
                    tracing::warn!(outcome = ?outcome.map(|r| r.elements), "resync incomplete; retrying");
                    self.wanted.store(true, Ordering::SeqCst);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
