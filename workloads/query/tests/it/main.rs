//! Integration tests of the query node against real PostgreSQL and Redis.

mod reference_bugs;
mod resilience;
mod support;
mod sync;
