//! Pieces every workload role shares: JSON errors, JWT auth, telemetry, and the
//! `/healthz`, `/readyz`, `/metrics` endpoints.

pub mod auth;
pub mod bench_load;
pub mod bench_summary;
pub mod error;
pub mod harden;
pub mod headers;
mod idle_io;
pub mod openapi;
pub mod ops;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod registry;
pub mod serve;
pub mod telemetry;

pub use error::ApiError;
