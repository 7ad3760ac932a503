//! The ArtStore operator: CRD types, pure builders of child objects, one reconciler per kind,
//! and the process around them (leader election, health, metrics).

pub mod build;
pub mod controller;
pub mod crd;
pub mod metrics;
pub mod stream;
