//! The query node's cache table: version-guarded upserts (create, update and delete alike) and
//! reads. A delete is a tombstone row that keeps its version, so nothing older can revive it.

use artstore_events::consumer::ApplyError;
use artstore_events::{FileRecord, Retention};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// One row to write: a record at a version, live or deleted.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CacheRow {
    pub file_id: Uuid,
    pub version: i64,
    pub deleted: bool,
    pub original_filename: String,
    pub storage_key: String,
    pub size: i64,
    pub sha256: String,
    pub mime_type: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub storage_element_id: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub retention: String,
    pub retention_expires_at: Option<DateTime<Utc>>,
    pub source_event_id: Option<Uuid>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("record of file {file_id} cannot be cached: {reason}")]
pub struct RowError {
    pub file_id: Uuid,
    pub reason: String,
}

impl CacheRow {
    pub fn from_record(
        record: &FileRecord,
        version: i64,
        deleted: bool,
        source_event_id: Option<Uuid>,
    ) -> Result<Self, RowError> {
        let bad = |reason: &str| RowError {
            file_id: record.file_id,
            reason: reason.to_string(),
        };
        let size = i64::try_from(record.size).map_err(|_| bad("size is out of range"))?;
        let texts = [
            record.original_filename.as_str(),
            record.storage_key.as_str(),
            record.sha256.as_str(),
            record.mime_type.as_str(),
            record.storage_element_id.as_str(),
            record.created_by.as_str(),
            record.description.as_deref().unwrap_or(""),
        ];
        // PostgreSQL text cannot hold NUL; refuse here with a reason rather than fail a batch.
        if texts.iter().any(|t| t.contains('\0')) || record.tags.iter().any(|t| t.contains('\0')) {
            return Err(bad("a text field contains a NUL character"));
        }
        if version < 1 {
            return Err(bad("version must be at least 1"));
        }
        Ok(CacheRow {
            file_id: record.file_id,
            version,
            deleted,
            original_filename: record.original_filename.clone(),
            storage_key: record.storage_key.clone(),
            size,
            sha256: record.sha256.clone(),
            mime_type: record.mime_type.clone(),
            description: record.description.clone(),
            tags: record.tags.clone(),
            storage_element_id: record.storage_element_id.clone(),
            created_at: record.created_at,
            created_by: record.created_by.clone(),
            updated_at: record.updated_at,
            retention: match record.retention {
                Retention::Temporary => "temporary".into(),
                Retention::Permanent => "permanent".into(),
            },
            retention_expires_at: record.retention_expires_at,
            source_event_id,
        })
    }
}

/// Keeps the newest version of each file (a batch may carry several events of one file, and
/// one INSERT … ON CONFLICT may not touch a row twice).
pub fn newest_per_file(rows: &[CacheRow]) -> Vec<&CacheRow> {
    let mut by_file: std::collections::HashMap<Uuid, &CacheRow> =
        std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        by_file
            .entry(row.file_id)
            .and_modify(|kept| {
                if row.version > kept.version {
                    *kept = row;
                }
            })
            .or_insert(row);
    }
    let mut out: Vec<&CacheRow> = by_file.into_values().collect();
    // A stable order keeps concurrent writers (consumer, backfill) from deadlocking.
    out.sort_by_key(|r| r.file_id);
    out
}

const UPSERT_SQL: &str = r#"
INSERT INTO file_cache AS c (
    file_id, version, deleted, original_filename, storage_key, size, sha256, mime_type,
    description, tags, storage_element_id, created_at, created_by, updated_at, retention,
    retention_expires_at, source_event_id, synced_at)
SELECT file_id, version, deleted, original_filename, storage_key, size, sha256, mime_type,
    description, coalesce(tags, '{}'), storage_element_id, created_at, created_by, updated_at,
    retention, retention_expires_at, source_event_id, now()
FROM jsonb_to_recordset($1) AS r(
    file_id uuid, version bigint, deleted boolean, original_filename text, storage_key text,
    size bigint, sha256 text, mime_type text, description text, tags text[],
    storage_element_id text, created_at timestamptz, created_by text, updated_at timestamptz,
    retention text, retention_expires_at timestamptz, source_event_id uuid)
ON CONFLICT (file_id) DO UPDATE SET
    version = EXCLUDED.version,
    deleted = EXCLUDED.deleted,
    original_filename = EXCLUDED.original_filename,
    storage_key = EXCLUDED.storage_key,
    size = EXCLUDED.size,
    sha256 = EXCLUDED.sha256,
    mime_type = EXCLUDED.mime_type,
    description = EXCLUDED.description,
    tags = EXCLUDED.tags,
    storage_element_id = EXCLUDED.storage_element_id,
    created_at = EXCLUDED.created_at,
    created_by = EXCLUDED.created_by,
    updated_at = EXCLUDED.updated_at,
    retention = EXCLUDED.retention,
    retention_expires_at = EXCLUDED.retention_expires_at,
    source_event_id = EXCLUDED.source_event_id,
    synced_at = EXCLUDED.synced_at
WHERE c.version < EXCLUDED.version
"#;

/// Writes rows in one statement; older or equal versions are ignored. Returns how many rows
/// changed.
pub async fn upsert_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[CacheRow],
) -> Result<u64, sqlx::Error> {
    let newest = newest_per_file(rows);
    if newest.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(UPSERT_SQL)
        .bind(sqlx::types::Json(&newest))
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// Upserts in a transaction of its own.
pub async fn upsert_committed(pool: &PgPool, rows: &[CacheRow]) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let changed = upsert_rows(&mut tx, rows).await?;
    tx.commit().await?;
    Ok(changed)
}

/// Whether a database error is about the data (retrying the same rows cannot help) or about
/// the database being unreachable, restarting, busy or misconfigured (retry later).
pub fn classify(error: &sqlx::Error) -> ApplyError {
    if let sqlx::Error::Database(db) = error
        && let Some(code) = db.code()
        && (code.starts_with("22") || code.starts_with("23") || code.starts_with("P0"))
    {
        return ApplyError::Rejected(format!("{} (SQLSTATE {code})", db.message()));
    }
    ApplyError::Unavailable(error.to_string())
}

/// A cached record as served by `GET /api/v1/files/{id}` and in search results (the shape of
/// [`CachedRecord::to_json`]).
#[derive(Debug, Clone, sqlx::FromRow, utoipa::ToSchema)]
pub struct CachedRecord {
    pub file_id: Uuid,
    pub version: i64,
    pub original_filename: String,
    pub storage_key: String,
    pub size: i64,
    pub sha256: String,
    pub mime_type: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub storage_element_id: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub retention: String,
    pub retention_expires_at: Option<DateTime<Utc>>,
    pub synced_at: DateTime<Utc>,
}

/// Columns of [`CachedRecord`], for SELECT lists.
pub const RECORD_COLUMNS: &str = "file_id, version, original_filename, storage_key, size, sha256, \
     mime_type, description, tags, storage_element_id, created_at, created_by, updated_at, \
     retention, retention_expires_at, synced_at";

impl CachedRecord {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file_id": self.file_id,
            "original_filename": self.original_filename,
            "storage_key": self.storage_key,
            "size": self.size,
            "sha256": self.sha256,
            "mime_type": self.mime_type,
            "description": self.description,
            "tags": self.tags,
            "storage_element_id": self.storage_element_id,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "updated_at": self.updated_at,
            "retention": self.retention,
            "retention_expires_at": self.retention_expires_at,
            "version": self.version,
            "synced_at": self.synced_at,
        })
    }
}

/// The live record of a file (`None` when unknown or deleted).
pub async fn get_live(pool: &PgPool, file_id: Uuid) -> Result<Option<CachedRecord>, sqlx::Error> {
    sqlx::query_as::<_, CachedRecord>(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM file_cache WHERE file_id = $1 AND NOT deleted"
    )))
    .bind(file_id)
    .fetch_optional(pool)
    .await
}

/// Tombstones the live rows of an element that a complete listing did not contain and that no
/// event touched since `listing_started` (a resync after events were trimmed away). Returns
/// how many rows were marked deleted.
pub async fn prune_unlisted(
    pool: &PgPool,
    storage_element_id: &str,
    listing_started: DateTime<Utc>,
    seen: &[Uuid],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE file_cache SET deleted = true, synced_at = now() \
         WHERE storage_element_id = $1 AND NOT deleted AND synced_at < $2 \
           AND NOT (file_id = ANY($3))",
    )
    .bind(storage_element_id)
    .bind(listing_started)
    .bind(seen)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Live rows in the cache.
pub async fn live_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM file_cache WHERE NOT deleted")
        .fetch_one(pool)
        .await
}

/// Whether an error means "the database cannot be reached or is not serving" (a 503 for HTTP
/// callers) rather than a fault of the statement.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "53", "55", "57", "3D"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}
