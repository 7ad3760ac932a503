//! Integration tests of the query node against real PostgreSQL and Redis.

mod elements;
mod reference_bugs;
mod resilience;
mod search_api;
mod support;
mod sync;
