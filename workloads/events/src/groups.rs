//! Creating streams and consumer groups idempotently: the one function the operator uses too.

pub use artstore_contract::stream::ensure_group;
