//! Integration tests of the query node against real PostgreSQL and Redis.

mod support;
mod sync;
