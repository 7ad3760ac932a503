//! The event log: the shape of stream entries and the Redis Streams primitives both sides use.
//! Knows nothing of HTTP or of the databases; the storage element publishes through
//! [`publish`], the query node consumes through [`consumer`].

pub mod consumer;
pub mod event;
pub mod groups;
pub mod publish;

pub use event::{EventDecodeError, EventType, FileEvent, FileRecord, Retention};
