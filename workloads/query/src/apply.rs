//! Applying stream entries to the cache: the query node's [`Applier`] for the generic consumer.

use std::sync::Arc;

use artstore_events::consumer::{Applier, ApplyError, Entry, Gap};
use artstore_events::{EventType, FileEvent};
use sqlx::PgPool;

use crate::resync::Resyncer;
use crate::store::{self, CacheRow};

/// Decodes events into cache rows and writes a batch in one transaction.
pub struct CacheApplier {
    pool: PgPool,
    resync: Option<Arc<Resyncer>>,
}

impl CacheApplier {
    pub fn new(pool: PgPool, resync: Option<Arc<Resyncer>>) -> Self {
        CacheApplier { pool, resync }
    }
}

/// An event as a row: created/updated are live rows, deleted is a tombstone at its version.
pub fn event_row(event: &FileEvent) -> Result<CacheRow, String> {
    CacheRow::from_record(
        &event.payload,
        event.version,
        event.event_type == EventType::Deleted,
        Some(event.event_id),
    )
    .map_err(|e| e.to_string())
}

impl Applier for CacheApplier {
    type Item = CacheRow;

    fn decode(&self, entry: &Entry) -> Result<CacheRow, String> {
        let event = FileEvent::from_fields(&entry.fields).map_err(|e| e.to_string())?;
        event_row(&event)
    }

    async fn apply(&self, rows: &[CacheRow]) -> Result<(), ApplyError> {
        let mut tx = self.pool.begin().await.map_err(|e| store::classify(&e))?;
        let changed = store::upsert_rows(&mut tx, rows)
            .await
            .map_err(|e| store::classify(&e))?;
        tx.commit().await.map_err(|e| store::classify(&e))?;
        for row in rows {
            // `original_filename`, never `filename`: keys that a log formatter sets itself
            // (file, line, level, target, message) must not be reused for data.
            tracing::debug!(
                file_id = %row.file_id,
                original_filename = %row.original_filename,
                version = row.version,
                deleted = row.deleted,
                storage_element_id = %row.storage_element_id,
                "file synced to cache"
            );
        }
        tracing::debug!(
            entries = rows.len(),
            rows_changed = changed,
            "batch applied"
        );
        Ok(())
    }

    async fn on_gap(&self, gap: Gap) {
        match &self.resync {
            Some(resync) => resync.request(&format!("{gap:?}")),
            None => tracing::warn!(
                ?gap,
                "events may have been missed and no registry is configured to resync from"
            ),
        }
    }
}
