//! The query-node role of the `artstore` binary: consumes file events into its own PostgreSQL
//! search cache and serves search, record lookup and download (proxied to the storage element
//! that holds the file). `events` knows nothing of HTTP; this crate never imports the storage
//! element's code, only its HTTP API.

pub mod apply;
pub mod backfill;
pub mod cli;
pub mod console;
pub mod elements;
pub mod http;
pub mod metrics;
pub mod node;
pub mod resync;
pub mod search;
pub mod store;
pub mod timeouts;

pub use node::{NodeConfig, QueryNode};

/// The query node's migrations, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/query-node");
