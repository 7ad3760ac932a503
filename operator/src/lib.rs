//! The ArtStore operator: CRD types, pure builders of child objects, one reconciler per kind,
//! and the process around them (leader election, health, metrics).

pub mod build;
pub mod controller;
pub mod crd;
pub mod lease;
pub mod metrics;
pub mod process;
pub mod stream;

pub use process::{OperatorConfig, install_crypto_provider, run};
