//! The outbox relay: publishes outbox rows to the stream in order, marks them sent, and retries
//! with backoff while Redis is away. A row is marked sent only after XADD succeeded, so nothing
//! is ever dropped (a crash between XADD and the mark can repeat an event; consumers ignore
//! versions they already have).

use std::sync::Arc;
use std::time::Duration;

use artstore_events::publish::xadd_events;
use artstore_events::{EventType, FileEvent, FileRecord};
use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use sqlx::PgPool;
use sqlx::types::Json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::RELAY_LOCK;

const BATCH: i64 = 200;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Sent rows are kept this long (to look back at what was published), then pruned.
const KEEP_SENT: &str = "7 days";
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// After publishing a partial batch of `n` > 1 rows (commits are arriving faster than one batch
/// takes), the relay lets commits gather for `n` × this, at most [`MAX_GATHER`], before the next:
/// under load each batch then carries many rows instead of a few (a batch costs the same five
/// statements and one XADD whatever its size), while at a moderate rate the wait stays a few
/// milliseconds. A batch of one row means commits are sparse: the next goes out as it commits.
const GATHER_PER_ROW: Duration = Duration::from_millis(2);
const MAX_GATHER: Duration = Duration::from_millis(20);

fn gather_after(rows: usize) -> Duration {
    GATHER_PER_ROW.saturating_mul(rows as u32).min(MAX_GATHER)
}

#[derive(Clone)]
pub struct RelayConfig {
    pub redis_url: String,
    pub stream: String,
    pub max_len: Option<u64>,
    /// How often to look for rows written by other processes (rebuild jobs).
    pub poll_interval: Duration,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_type: String,
    event_id: Uuid,
    file_id: Uuid,
    version: i64,
    occurred_at: DateTime<Utc>,
    payload: Json<FileRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub struct Relay {
    config: RelayConfig,
    pool: PgPool,
    metrics: Metrics,
    connection: Option<MultiplexedConnection>,
}

impl Relay {
    pub fn new(config: RelayConfig, pool: PgPool, metrics: Metrics) -> Self {
        Relay {
            config,
            pool,
            metrics,
            connection: None,
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, RelayError> {
        if let Some(conn) = &self.connection {
            return Ok(conn.clone());
        }
        let client = redis::Client::open(self.config.redis_url.as_str())?;
        let settings = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&settings)
            .await?;
        self.connection = Some(conn.clone());
        Ok(conn)
    }

    /// Publishes up to one batch. Returns how many rows were published.
    pub async fn publish_batch(&mut self) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !got {
            return Ok(0);
        }
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, event_type, event_id, file_id, version, occurred_at, payload
             FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            self.metrics.outbox_pending.set(0);
            return Ok(0);
        }
        // Events up to the first row of an unknown type (left unsent, reported as the failure).
        let mut events = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            let Some(event_type) = EventType::parse(&row.event_type) else {
                tracing::error!(id = row.id, event_type = %row.event_type, "outbox row of unknown type left unsent");
                failure = Some((
                    row.id,
                    RelayError::Database(sqlx::Error::Protocol(format!(
                        "unknown event type {}",
                        row.event_type
                    ))),
                ));
                break;
            };
            events.push(FileEvent {
                event_type,
                event_id: row.event_id,
                file_id: row.file_id,
                version: row.version,
                storage_element_id: row.payload.storage_element_id.clone(),
                occurred_at: row.occurred_at,
                payload: row.payload.0.clone(),
            });
        }
        let mut sent_ids = Vec::with_capacity(events.len());
        let mut stream_ids = Vec::with_capacity(events.len());
        if !events.is_empty() {
            let published = match self.connection().await {
                Ok(mut conn) => {
                    xadd_events(&mut conn, &self.config.stream, self.config.max_len, &events)
                        .await
                        .map_err(RelayError::from)
                }
                Err(e) => Err(e),
            };
            match published {
                Ok(ids) => {
                    sent_ids.extend(rows.iter().take(ids.len()).map(|row| row.id));
                    stream_ids = ids;
                }
                // None counted as sent: the whole batch goes again (duplicates are ignored).
                Err(e) => failure = Some((rows[0].id, e)),
            }
        }
        if !sent_ids.is_empty() {
            sqlx::query(
                "UPDATE outbox SET sent_at = now(), attempts = attempts + 1, stream_id = s.stream_id
                 FROM unnest($1::bigint[], $2::text[]) AS s(id, stream_id)
                 WHERE outbox.id = s.id",
            )
            .bind(&sent_ids)
            .bind(&stream_ids)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((id, _)) = &failure {
            sqlx::query("UPDATE outbox SET attempts = attempts + 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.metrics.events_published.inc_by(sent_ids.len() as u64);
        // A batch that took every pending row leaves only rows committed since (the next batch
        // takes them at once: their commits woke the relay); otherwise count.
        let pending: i64 = if failure.is_none() && (rows.len() as i64) < BATCH {
            0
        } else {
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                .fetch_one(&self.pool)
                .await?
        };
        self.metrics.outbox_pending.set(pending);
        match failure {
            Some((_, e)) => {
                if matches!(e, RelayError::Redis(_)) {
                    self.connection = None;
                }
                Err(e)
            }
            None => Ok(sent_ids.len()),
        }
    }

    /// Deletes rows sent more than a week ago.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM outbox WHERE sent_at < now() - interval '{KEEP_SENT}'"
        )))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Publishes everything pending; stops at the first failure.
    pub async fn drain(&mut self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let n = self.publish_batch().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Runs until `shutdown`: publishes whenever woken or every poll interval, backing off
    /// (100 ms doubling to 5 s) while publishing fails.
    pub async fn run(mut self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        let mut last_prune: Option<std::time::Instant> = None;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(std::time::Instant::now());
                if let Err(e) = self.prune().await {
                    tracing::warn!(error = %e, "pruning sent outbox rows failed");
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            match self.publish_batch().await {
                // A full batch: more are waiting. (After a partial one, the commits since have
                // left a wake-up, so waiting for it loses nothing and saves an empty batch.)
                Ok(n) if n as i64 >= BATCH => {
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Ok(n) => {
                    backoff = MIN_BACKOFF;
                    if n > 1 {
                        tokio::select! {
                            _ = tokio::time::sleep(gather_after(n)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                Err(e) => {
                    self.metrics.relay_failures.inc();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gathering_grows_with_the_batch_up_to_its_cap() {
        assert_eq!(gather_after(2), Duration::from_millis(4));
        assert_eq!(gather_after(5), Duration::from_millis(10));
        assert_eq!(gather_after(199), MAX_GATHER);
        assert_eq!(gather_after(usize::MAX), MAX_GATHER);
    }
}
