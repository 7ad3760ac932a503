//! Ingester integration tests against real Redis (and, where files are stored, real storage
//! elements on PostgreSQL, SeaweedFS and a local directory).

mod gateway;
mod limits;
mod storing;
mod support;
