//! Prometheus metrics of the operator: reconcile counts, durations, errors, a ready gauge per
//! resource, and whether this replica leads.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub durations: Family<KindLabels, Histogram>,
    pub errors: Family<ErrorLabels, Counter>,
    pub ready: Family<ResourceLabels, Gauge<i64, AtomicI64>>,
    /// Last consistency report of each storage element (share of inconsistent entries, 0–100).
    pub inconsistency: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    pub leader: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("artstore_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let errors = Family::<ErrorLabels, Counter>::default();
        let ready = Family::<ResourceLabels, Gauge<i64, AtomicI64>>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        let inconsistency = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            durations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            errors.clone(),
        );
        registry.register(
            "resource_ready",
            "1 when the resource's Ready condition is True",
            ready.clone(),
        );
        registry.register(
            "storage_element_inconsistency_percent",
            "Inconsistent cache entries in the last consistency report of a storage element, percent",
            inconsistency.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            durations,
            errors,
            ready,
            inconsistency,
            leader,
        }
    }
}

impl Metrics {
    /// Starts timing one reconcile of `kind`.
    pub fn start(&self, kind: &str) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            kind: kind.to_string(),
            started: Instant::now(),
        }
    }

    pub fn set_ready(&self, kind: &str, namespace: &str, name: &str, ready: bool) {
        self.ready
            .get_or_create(&ResourceLabels {
                kind: kind.into(),
                namespace: namespace.into(),
                name: name.into(),
            })
            .set(i64::from(ready));
    }

    pub fn set_inconsistency(&self, kind: &str, namespace: &str, name: &str, percent: f64) {
        self.inconsistency
            .get_or_create(&ResourceLabels {
                kind: kind.into(),
                namespace: namespace.into(),
                name: name.into(),
            })
            .set(percent);
    }

    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let labels = ResourceLabels {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.ready.remove(&labels);
        self.inconsistency.remove(&labels);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: String,
    started: Instant,
}

impl ReconcileTimer<'_> {
    /// Records the outcome: `ok`, or `error` with its reason.
    pub fn finish(self, error_reason: Option<&str>) {
        let m = self.metrics;
        m.durations
            .get_or_create(&KindLabels {
                kind: self.kind.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
        let result = if error_reason.is_some() {
            "error"
        } else {
            "ok"
        };
        m.reconciles
            .get_or_create(&ResultLabels {
                kind: self.kind.clone(),
                result: result.into(),
            })
            .inc();
        if let Some(reason) = error_reason {
            m.errors
                .get_or_create(&ErrorLabels {
                    kind: self.kind,
                    reason: reason.into(),
                })
                .inc();
        }
    }
}
