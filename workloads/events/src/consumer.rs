//! Consuming the stream with a consumer group (used by the query node).
