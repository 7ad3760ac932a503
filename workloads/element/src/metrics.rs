//! The element's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
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
}

impl Metrics {
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
    }
}
