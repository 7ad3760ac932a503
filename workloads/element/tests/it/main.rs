//! Integration tests of the storage element against real PostgreSQL, Redis and SeaweedFS.

mod commits;
mod flows;
mod harness;
mod maintenance;
mod relay;
mod uploads;
