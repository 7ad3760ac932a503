//! Prometheus metrics of the query node.

use std::time::Duration;

use artstore_events::consumer::{ConsumerObserver, GroupInfo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    pub events_applied: Counter,
    pub events_failed: Counter,
    pub events_dead_lettered: Counter,
    pub events_reclaimed: Counter,
    pub redis_errors: Counter,
    pub batch_seconds: Histogram,
    pub group_lag: Gauge,
    pub group_pending: Gauge,
    pub search_seconds: Histogram,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            events_applied: Counter::default(),
            events_failed: Counter::default(),
            events_dead_lettered: Counter::default(),
            events_reclaimed: Counter::default(),
            redis_errors: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            group_lag: Gauge::default(),
            group_pending: Gauge::default(),
            search_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        let r = registry.sub_registry_with_prefix("artstore_query");
        r.register(
            "events_applied",
            "Stream entries applied to the cache and acknowledged",
            m.events_applied.clone(),
        );
        r.register(
            "events_failed",
            "Stream entries the cache refused (each refusal counts)",
            m.events_failed.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Stream entries moved to the dead-letter stream",
            m.events_dead_lettered.clone(),
        );
        r.register(
            "events_reclaimed",
            "Stream entries taken over from idle consumers (XAUTOCLAIM)",
            m.events_reclaimed.clone(),
        );
        r.register(
            "redis_errors",
            "Consumer loop errors talking to Redis",
            m.redis_errors.clone(),
        );
        r.register(
            "batch_seconds",
            "Time to apply and acknowledge one batch",
            m.batch_seconds.clone(),
        );
        r.register(
            "group_lag",
            "Entries not yet delivered to the consumer group (XINFO GROUPS lag; -1 unknown)",
            m.group_lag.clone(),
        );
        r.register(
            "group_pending",
            "Entries delivered but not acknowledged (XINFO GROUPS pending)",
            m.group_pending.clone(),
        );
        r.register(
            "search_seconds",
            "Latency of POST /api/v1/search",
            m.search_seconds.clone(),
        );
        m
    }
}

impl ConsumerObserver for Metrics {
    fn applied(&self, entries: usize, elapsed: Duration) {
        self.events_applied.inc_by(entries as u64);
        self.batch_seconds.observe(elapsed.as_secs_f64());
    }
    fn failed(&self, entries: usize) {
        self.events_failed.inc_by(entries as u64);
    }
    fn dead_lettered(&self, entries: usize) {
        self.events_dead_lettered.inc_by(entries as u64);
    }
    fn reclaimed(&self, entries: usize) {
        self.events_reclaimed.inc_by(entries as u64);
    }
    fn group_info(&self, info: &GroupInfo) {
        self.group_lag.set(info.lag.map(|l| l as i64).unwrap_or(-1));
        self.group_pending.set(info.pending as i64);
    }
    fn redis_error(&self) {
        self.redis_errors.inc();
    }
}
