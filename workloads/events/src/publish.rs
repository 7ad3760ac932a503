//! Publishing events to the stream (used by the storage element's outbox relay).
