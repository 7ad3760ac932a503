//! Cache maintenance: consistency check, full and incremental rebuilds, expired-row cleanup and
//! the retention sweep. The sidecars are the truth; every change a run makes to the cache is
//! announced through the outbox. Runs that change the cache hold the maintenance lock
//! exclusively, so two of them never interleave and lazy refreshes give way to them.

use std::collections::HashMap;
use std::time::Instant;

use artstore_contract::ConsistencyReport;
use artstore_events::{EventType, FileRecord};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::backend::{BackendError, ObjectInfo};
use crate::core::Core;
use crate::error::ElementError;
use crate::{layout, store};

/// How far the storage clock may run ahead of PostgreSQL's when deciding that a sidecar was
/// written after its row was cached.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);
/// Ids listed in a report's details, at most.
const DETAIL_LIMIT: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaintenanceKind {
    Full,
    Incremental,
    Consistency,
    CleanupExpired,
    Retention,
}

impl MaintenanceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceKind::Full => "full",
            MaintenanceKind::Incremental => "incremental",
            MaintenanceKind::Consistency => "consistency",
            MaintenanceKind::CleanupExpired => "cleanup-expired",
            MaintenanceKind::Retention => "retention",
        }
    }
}

/// What a rebuild, cleanup or sweep did.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RunReport {
    pub kind: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: u64,
    /// Sidecars read.
    pub scanned: u64,
    /// Rows added from orphan sidecars (`file.created`).
    pub added: u64,
    /// Rows replaced by a newer sidecar (`file.updated`).
    pub updated: u64,
    /// Rows whose sidecar was gone, or files deleted by retention (`file.deleted`).
    pub removed: u64,
    /// Rows re-read and found current.
    pub refreshed: u64,
    /// Blobs without a sidecar, older than the grace period, deleted.
    pub orphan_blobs_deleted: u64,
    /// Unfinished uploads (S3 multipart uploads, temporary files) older than the grace period,
    /// aborted or deleted.
    #[serde(default)]
    pub incomplete_uploads_removed: u64,
    pub errors: Vec<String>,
}

struct Scan {
    sidecars: HashMap<Uuid, ObjectInfo>,
    blobs: HashMap<Uuid, ObjectInfo>,
}

#[derive(sqlx::FromRow)]
struct RowSummary {
    file_id: Uuid,
    version: i64,
    cache_updated_at: DateTime<Utc>,
}

async fn scan(core: &Core) -> Result<Scan, ElementError> {
    let mut sidecars = HashMap::new();
    let mut blobs = HashMap::new();
    for object in core.backend.list().await? {
        let Some(id) = layout::file_id_of_blob_key(&object.key) else {
            tracing::debug!(key = %object.key, "object outside the layout ignored");
            continue;
        };
        if layout::blob_key_of_sidecar(&object.key).is_some() {
            sidecars.insert(id, object);
        } else {
            blobs.insert(id, object);
        }
    }
    Ok(Scan { sidecars, blobs })
}

async fn rows(core: &Core) -> Result<HashMap<Uuid, RowSummary>, ElementError> {
    let rows: Vec<RowSummary> =
        sqlx::query_as("SELECT file_id, version, cache_updated_at FROM files")
            .fetch_all(&core.pool)
            .await?;
    Ok(rows.into_iter().map(|r| (r.file_id, r)).collect())
}

/// A sidecar written after its row was last cached may hold a newer record.
fn maybe_newer(sidecar: &ObjectInfo, row: &RowSummary) -> bool {
    match sidecar.modified {
        Some(modified) => modified + CLOCK_SKEW >= row.cache_updated_at,
        None => true,
    }
}

/// Before this, an unfinished blob or upload is a leftover, not one in flight.
fn grace_cutoff(core: &Core) -> DateTime<Utc> {
    let grace = chrono::Duration::from_std(core.settings.orphan_blob_grace)
        .unwrap_or(chrono::Duration::hours(1));
    Utc::now() - grace
}

fn orphan_blobs<'a>(core: &Core, scan: &'a Scan) -> Vec<&'a ObjectInfo> {
    let cutoff = grace_cutoff(core);
    scan.blobs
        .iter()
        .filter(|(id, _)| !scan.sidecars.contains_key(id))
        .filter(|(_, b)| b.modified.is_none_or(|m| m <= cutoff))
        .map(|(_, b)| b)
        .collect()
}

/// Compares sidecars with cache rows. Read-only; does not take the maintenance lock.
pub async fn consistency(core: &Core) -> Result<ConsistencyReport, ElementError> {
    let scan = scan(core).await?;
    let rows = rows(core).await?;
    let orphan_cache: Vec<Uuid> = rows
        .keys()
        .filter(|id| !scan.sidecars.contains_key(id))
        .copied()
        .collect();
    let orphan_attr: Vec<Uuid> = scan
        .sidecars
        .keys()
        .filter(|id| !rows.contains_key(id))
        .copied()
        .collect();
    let mut stale = Vec::new();
    for (id, sidecar) in &scan.sidecars {
        if let Some(row) = rows.get(id)
            && maybe_newer(sidecar, row)
            && let Ok(record) = core.read_sidecar(&sidecar.key).await
            && record.version > row.version
        {
            stale.push(*id);
        }
    }
    let expired = rows
        .values()
        .filter(|r| core.is_expired(r.cache_updated_at))
        .count() as u64;
    let orphan_blobs: Vec<String> = orphan_blobs(core, &scan)
        .into_iter()
        .map(|b| b.key.clone())
        .collect();
    let incomplete = core.backend.incomplete_uploads(grace_cutoff(core)).await?;
    let problems = orphan_cache.len() + orphan_attr.len() + stale.len();
    let base = scan.sidecars.len().max(rows.len()).max(1);
    let percentage = ((problems as f64 / base as f64) * 10_000.0).round() / 100.0;
    let list = |ids: &[Uuid]| -> Vec<String> {
        ids.iter().take(DETAIL_LIMIT).map(Uuid::to_string).collect()
    };
    Ok(ConsistencyReport {
        total_attr_files: scan.sidecars.len() as u64,
        total_cache_entries: rows.len() as u64,
        orphan_cache_count: orphan_cache.len() as u64,
        orphan_attr_count: orphan_attr.len() as u64,
        expired_cache_count: expired,
        is_consistent: problems == 0 && orphan_blobs.is_empty() && incomplete.is_empty(),
        inconsistency_percentage: percentage.min(100.0),
        details: serde_json::json!({
            "orphan_cache_entries": list(&orphan_cache),
            "orphan_attr_files": list(&orphan_attr),
            "stale_cache_count": stale.len(),
            "stale_cache_entries": list(&stale),
            "orphan_blob_count": orphan_blobs.len(),
            "orphan_blobs": orphan_blobs.iter().take(DETAIL_LIMIT).collect::<Vec<_>>(),
            "incomplete_upload_count": incomplete.len(),
            "incomplete_uploads": incomplete
                .iter()
                .take(DETAIL_LIMIT)
                .map(|u| u.key.as_str())
                .collect::<Vec<_>>(),
            "checked_at": Utc::now(),
        }),
    })
}

/// Brings one row in line with its sidecar (or removes it when the sidecar is gone) and queues
/// the event for the change. Runs under the maintenance lock.
async fn reconcile(
    core: &Core,
    file_id: Uuid,
    sidecar_key: Option<&str>,
    report: &mut RunReport,
) -> Result<(), ElementError> {
    let record: Option<FileRecord> = match sidecar_key {
        None => None,
        Some(key) => match core.read_sidecar(key).await {
            Ok(record) if record.file_id == file_id => Some(record),
            Ok(_) => {
                report.errors.push(format!("{key}: describes another file"));
                return Ok(());
            }
            Err(ElementError::Backend(BackendError::NotFound(_))) => None,
            Err(ElementError::BadSidecar { key, reason }) => {
                report.errors.push(format!("{key}: {reason}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        },
    };
    if sidecar_key.is_some() {
        report.scanned += 1;
    }
    let mut tx = core.pool.begin().await?;
    match record {
        Some(record) => {
            if store::insert(&mut tx, &record).await? {
                store::enqueue(&mut tx, EventType::Created, &record).await?;
                report.added += 1;
            } else if store::update_if_newer(&mut tx, &record).await? {
                store::enqueue(&mut tx, EventType::Updated, &record).await?;
                report.updated += 1;
            } else {
                store::touch(&mut tx, file_id).await?;
                report.refreshed += 1;
            }
        }
        None => {
            if store::delete_and_announce(&mut tx, file_id).await? {
                report.removed += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn incremental(core: &Core, full: bool, report: &mut RunReport) -> Result<(), ElementError> {
    let scan = scan(core).await?;
    let rows = rows(core).await?;
    for (id, sidecar) in &scan.sidecars {
        let needs_read = match rows.get(id) {
            None => true,
            Some(row) => full || maybe_newer(sidecar, row),
        };
        if needs_read {
            reconcile(core, *id, Some(&sidecar.key), report).await?;
        }
    }
    for id in rows.keys().filter(|id| !scan.sidecars.contains_key(id)) {
        reconcile(core, *id, None, report).await?;
    }
    for blob in orphan_blobs(core, &scan) {
        match core.backend.delete(&blob.key).await {
            Ok(()) => report.orphan_blobs_deleted += 1,
            Err(e) => report.errors.push(format!("{}: {e}", blob.key)),
        }
    }
    for upload in core.backend.incomplete_uploads(grace_cutoff(core)).await? {
        match core.backend.remove_incomplete(&upload).await {
            Ok(()) => report.incomplete_uploads_removed += 1,
            Err(e) => report.errors.push(format!("{}: {e}", upload.key)),
        }
    }
    Ok(())
}

/// Re-reads expired rows from their sidecars; rows whose sidecar is gone are removed.
async fn cleanup_expired(core: &Core, report: &mut RunReport) -> Result<(), ElementError> {
    let cutoff = Utc::now() - core.ttl();
    let expired: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT file_id, storage_key FROM files WHERE cache_updated_at < $1 ORDER BY file_id",
    )
    .bind(cutoff)
    .fetch_all(&core.pool)
    .await?;
    for (id, key) in expired {
        reconcile(core, id, Some(&layout::sidecar_key(&key)), report).await?;
    }
    Ok(())
}

/// Deletes temporary files past their expiry (blob, sidecar, row; `file.deleted`).
async fn retention(core: &Core, report: &mut RunReport) -> Result<(), ElementError> {
    if !core.settings.mode.accepts_writes() {
        report.errors.push(format!(
            "mode {} keeps every file; retention sweep skipped",
            core.settings.mode.as_str()
        ));
        return Ok(());
    }
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT file_id FROM files WHERE retention_expires_at < now() ORDER BY file_id",
    )
    .fetch_all(&core.pool)
    .await?;
    for id in due {
        // The maintenance lock is held by this run: delete without the shared lock.
        match delete_locked(core, id).await {
            Ok(()) => report.removed += 1,
            Err(ElementError::NotFound(_)) => {}
            Err(e) => report.errors.push(format!("{id}: {e}")),
        }
    }
    Ok(())
}

async fn delete_locked(core: &Core, file_id: Uuid) -> Result<(), ElementError> {
    let mut tx = core.pool.begin().await?;
    let row = store::get_for_update(&mut tx, file_id)
        .await?
        .ok_or(ElementError::NotFound(file_id))?;
    let key = row.record.storage_key.clone();
    core.backend.delete(&layout::sidecar_key(&key)).await?;
    core.backend.delete(&key).await?;
    store::delete_and_announce(&mut tx, file_id).await?;
    tx.commit().await?;
    tracing::info!(%file_id, "retention: temporary file expired and deleted");
    Ok(())
}

/// Runs one maintenance operation. Everything but the consistency check takes the maintenance
/// lock exclusively (waiting for a run in progress) and is recorded in `maintenance_runs`.
pub async fn run(core: &Core, kind: MaintenanceKind) -> Result<serde_json::Value, ElementError> {
    if kind == MaintenanceKind::Consistency {
        let started = Utc::now();
        let report = consistency(core).await?;
        let value = serde_json::to_value(&report)
            .map_err(|e| ElementError::invalid("internal", e.to_string()))?;
        sqlx::query(
            "INSERT INTO maintenance_runs (kind, started_at, finished_at, report)
             VALUES ($1, $2, now(), $3)",
        )
        .bind(kind.as_str())
        .bind(started)
        .bind(&value)
        .execute(&core.pool)
        .await?;
        return Ok(value);
    }
    let mut lock = core.pool.begin().await?;
    store::lock_for_maintenance(&mut lock).await?;
    let clock = Instant::now();
    let started_at = Utc::now();
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO maintenance_runs (kind, started_at) VALUES ($1, $2) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(started_at)
    .fetch_one(&core.pool)
    .await?;
    tracing::info!(kind = kind.as_str(), "cache maintenance started");
    let mut report = RunReport {
        kind: kind.as_str().to_string(),
        started_at: Some(started_at),
        ..RunReport::default()
    };
    let outcome = match kind {
        MaintenanceKind::Full => incremental(core, true, &mut report).await,
        MaintenanceKind::Incremental => incremental(core, false, &mut report).await,
        MaintenanceKind::CleanupExpired => cleanup_expired(core, &mut report).await,
        MaintenanceKind::Retention => retention(core, &mut report).await,
        MaintenanceKind::Consistency => Ok(()),
    };
    if let Err(e) = &outcome {
        report.errors.push(e.to_string());
    }
    report.finished_at = Some(Utc::now());
    report.duration_ms = clock.elapsed().as_millis() as u64;
    let value = serde_json::to_value(&report)
        .map_err(|e| ElementError::invalid("internal", e.to_string()))?;
    sqlx::query("UPDATE maintenance_runs SET finished_at = $2, report = $3 WHERE id = $1")
        .bind(run_id)
        .bind(report.finished_at)
        .bind(&value)
        .execute(&core.pool)
        .await?;
    lock.commit().await?;
    core.relay_wake.notify_one();
    tracing::info!(kind = kind.as_str(), ?report, "cache maintenance finished");
    outcome.map(|()| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn rebuild_modes_match_the_contract() {
        for mode in artstore_contract::REBUILD_MODES {
            let kind = MaintenanceKind::from_str(mode, false).expect(mode);
            assert_eq!(kind.as_str(), mode);
        }
    }
}
