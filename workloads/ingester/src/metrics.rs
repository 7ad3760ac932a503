//! The ingester's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub uploads: Family<Outcome, Counter>,
    pub upload_bytes: Counter,
    pub rate_limited: Counter,
    pub fallthroughs: Counter,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "artstore_ingester_uploads",
            "Uploads by outcome",
            self.uploads.clone(),
        );
        registry.register(
            "artstore_ingester_upload_bytes",
            "Bytes stored",
            self.upload_bytes.clone(),
        );
        registry.register(
            "artstore_ingester_rate_limited",
            "Requests refused by the rate limit",
            self.rate_limited.clone(),
        );
        registry.register(
            "artstore_ingester_fallthroughs",
            "Uploads a storage element could not take, passed to the next one",
            self.fallthroughs.clone(),
        );
    }
}
