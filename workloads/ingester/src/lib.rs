//! The ingester role of the `artstore` binary.

pub mod cli;
