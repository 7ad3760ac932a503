//! Backfill and resync: page through every storage element's file list and upsert with the
//! same version rule as the consumer, so it is safe while the consumer runs.

use std::time::Instant;

use artstore_contract::RegistryEntry;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::elements::{ElementClient, ElementError, RegistryWatcher};
use crate::store::{self, CacheRow};

pub const PAGE_SIZE: u32 = 500;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ElementBackfill {
    pub element_id: String,
    pub files_listed: u64,
    pub rows_changed: u64,
    /// Live rows the complete listing no longer contained (deleted while events were lost).
    pub rows_pruned: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillReport {
    pub elements: Vec<ElementBackfill>,
    pub seconds: f64,
}

impl BackfillReport {
    pub fn ok(&self) -> bool {
        self.elements.iter().all(|e| e.error.is_none())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Element(#[from] ElementError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// One pass over every element in the registry. One element failing does not stop the others;
/// its error is in the report.
pub async fn backfill_all(
    pool: &PgPool,
    registry: &RegistryWatcher,
    client: &ElementClient,
) -> Result<BackfillReport, BackfillError> {
    let started = Instant::now();
    let registry = registry.current().await?;
    let mut report = BackfillReport::default();
    for element in &registry.elements {
        let mut result = ElementBackfill {
            element_id: element.id.clone(),
            ..Default::default()
        };
        if let Err(e) = backfill_element(pool, client, element, &mut result).await {
            tracing::warn!(element = %element.id, error = %e, "backfill of element failed");
            result.error = Some(e.to_string());
        }
        report.elements.push(result);
    }
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(report = ?report, "backfill finished");
    Ok(report)
}

async fn backfill_element(
    pool: &PgPool,
    client: &ElementClient,
    element: &RegistryEntry,
    result: &mut ElementBackfill,
) -> Result<(), BackfillError> {
    let listing_started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let mut seen: Vec<Uuid> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .list_page(element, PAGE_SIZE, cursor.as_deref())
            .await?;
        let mut rows = Vec::with_capacity(page.files.len());
        for record in &page.files {
            seen.push(record.file_id);
            match CacheRow::from_record(record, record.version, false, None) {
                Ok(row) => rows.push(row),
                Err(e) => tracing::warn!(element = %element.id, error = %e, "skipping record"),
            }
        }
        result.files_listed += page.files.len() as u64;
        result.rows_changed += store::upsert_committed(pool, &rows).await?;
        match page.next_cursor {
            Some(next) if !next.is_empty() && !page.files.is_empty() => cursor = Some(next),
            _ => break,
        }
    }
    result.rows_pruned = store::prune_unlisted(pool, &element.id, listing_started, &seen).await?;
    Ok(())
}
