//! The ingester role: the authenticated upload gateway. It rate-limits per client, honours
//! `Idempotency-Key`, spools each uploaded file once (hashing it on the way), then hands it to the
//! first storage element that can take it ("sequential fill"): modes `edit`/`rw`, highest priority
//! first, enough free capacity, falling through on a full or failing element.

pub mod cli;
pub mod config;
mod cors;
mod element_client;
mod form;
mod http;
mod idempotency;
pub mod limits;
mod metrics;
pub mod ratelimit;
pub mod select;
mod spool;
mod spool_dir;

pub use config::IngesterConfig;
pub use http::{Ingester, build, openapi};
