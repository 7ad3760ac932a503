//! The element's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A step of a stored upload, timed apart so `/metrics` shows where an upload's time goes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UploadPhase {
    /// `prepare` (checks, capacity, the upload id's state), `receive` (until the body's last
    /// byte), `backend` (from there until blob and sidecar are stored), `commit` (the cache +
    /// outbox transaction).
    pub phase: &'static str,
}

fn phase_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

#[derive(Clone)]
pub struct Metrics {
    pub uploads: Counter,
    pub upload_bytes: Counter,
    pub events_published: Counter,
    pub relay_failures: Counter,
    pub outbox_pending: Gauge,
    /// Uploads whose work has not ended (it goes on after the caller leaves, up to the commit
    /// point or the rollback). Zero means this element sends no more writes for them; a request
    /// its S3 client gave up on may still be completed by the S3 server.
    pub uploads_in_flight: Gauge,
    pub upload_phase_seconds: Family<UploadPhase, Histogram>,
    /// New files committed together in one statement (see `commits`): 1 at a low rate, more
    /// under load.
    pub commit_group_files: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            uploads: Counter::default(),
            upload_bytes: Counter::default(),
            events_published: Counter::default(),
            relay_failures: Counter::default(),
            outbox_pending: Gauge::default(),
            uploads_in_flight: Gauge::default(),
            upload_phase_seconds: Family::new_with_constructor(phase_histogram),
            commit_group_files: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
        }
    }
}

impl Metrics {
    /// Records how long one phase of a stored upload took.
    pub fn upload_phase(&self, phase: &'static str, seconds: f64) {
        self.upload_phase_seconds
            .get_or_create(&UploadPhase { phase })
            .observe(seconds);
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "artstore_element_uploads",
            "Files stored",
            self.uploads.clone(),
        );
        registry.register(
            "artstore_element_upload_bytes",
            "Bytes stored",
            self.upload_bytes.clone(),
        );
        registry.register(
            "artstore_element_events_published",
            "Outbox events published to the stream",
            self.events_published.clone(),
        );
        registry.register(
            "artstore_element_relay_failures",
            "Failed attempts to publish outbox events",
            self.relay_failures.clone(),
        );
        registry.register(
            "artstore_element_outbox_pending",
            "Outbox events not yet published",
            self.outbox_pending.clone(),
        );
        registry.register(
            "artstore_element_uploads_in_flight",
            "Uploads being stored or rolled back",
            self.uploads_in_flight.clone(),
        );
        registry.register(
            "artstore_element_upload_phase_seconds",
            "Time per phase of stored uploads (prepare, receive, backend, commit)",
            self.upload_phase_seconds.clone(),
        );
        registry.register(
            "artstore_element_commit_group_files",
            "New files committed together in one statement",
            self.commit_group_files.clone(),
        );
    }
}
