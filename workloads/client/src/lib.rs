//! A typed client of ArtStore's three HTTP APIs: the ingester (write path), the query node
//! (search and download) and a storage element (status, consistency, maintenance).
//!
//! Every call has a timeout; calls that are safe to repeat are retried with exponential back-off
//! ([`RetryPolicy`], built on `backon`) on `429` (honouring `Retry-After`), `503` and connection
//! errors. Uploads stream the file from disk and carry an `Idempotency-Key`, so a retried upload
//! is stored once. The `artstore` binary's client commands, tests and benchmarks use this crate.

mod element;
mod error;
mod ingester;
mod query;
mod retry;
mod transport;
mod types;

pub use element::ElementClient;
pub use error::{ClientError, Service};
pub use ingester::{
    IngesterClient, NoProgress, Progress, RetryNotice, UploadOptions, Uploaded, new_idempotency_key,
};
pub use query::{Download, QueryClient, partial_path};
pub use retry::RetryPolicy;
pub use transport::Timeouts;
pub use types::{
    FileRecord, Filters, MetadataPatch, SearchPage, SearchRequest, Sort, SortField, SortOrder,
    UploadMeta,
};
