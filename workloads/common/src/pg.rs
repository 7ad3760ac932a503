//! PostgreSQL pool settings the workloads share.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

/// A connection used this recently is handed out without a liveness ping.
pub const PING_AFTER_IDLE: Duration = Duration::from_millis(500);

/// Pool options whose idle connections are pinged before use only after [`PING_AFTER_IDLE`].
/// sqlx pings every connection it hands out by default: one more round trip before each
/// statement, two on an upload's critical path (docs/performance.md). A connection that
/// answered half a second ago is as good as known alive (connection pools such as HikariCP skip
/// the check in the same window); should the server have gone away since, that statement fails
/// like any other during an outage, and the connection is dropped.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}
