//! The storage-element role of the `artstore` binary.

pub mod cli;
