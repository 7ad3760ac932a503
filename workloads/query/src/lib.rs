//! The query-node role of the `artstore` binary.

pub mod cli;
