//! Pure builders: custom resource (+ what it references) in, child objects out. No client, no
//! I/O, so every child is unit-tested from YAML fixtures.

pub mod common;
pub mod ingester;
pub mod network_policy;
pub mod quantity;
pub mod query_node;
pub mod registry;
pub mod storage_element;

pub use common::BuildConfig;

use thiserror::Error;

/// A spec the API server accepted but the operator cannot turn into children.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    #[error("resource has no {0}")]
    MissingMetadata(&'static str),
}
