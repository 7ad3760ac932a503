//! The PostgreSQL side: cache rows, outbox rows and the maintenance lock. Every cache change
//! goes through a transaction that also writes its outbox row.

use artstore_events::{EventType, FileEvent, FileRecord};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

/// Advisory lock key of cache maintenance. Rebuilds hold it exclusively; writes to the cache hold
/// it shared for their transaction; a lazy refresh only tries it (shared) and gives way.
pub const MAINTENANCE_LOCK: i64 = 0x4152_5453_0001;
/// Advisory lock key of the outbox relay: one relay publishes at a time, keeping order.
pub const RELAY_LOCK: i64 = 0x4152_5453_0002;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CacheRow {
    pub record: Json<FileRecord>,
    pub cache_updated_at: DateTime<Utc>,
}

/// Begins a write: a transaction holding the maintenance lock shared until it ends (writes
/// wait for a rebuild). `BEGIN` and the lock go as one simple query: one round trip, not two.
pub async fn begin_write(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT pg_advisory_xact_lock_shared({MAINTENANCE_LOCK})"
    )))
    .await
}

/// Tries the maintenance lock shared for the transaction; `false` while a rebuild runs or waits.
pub async fn try_lock_for_refresh(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock_shared($1)")
        .bind(MAINTENANCE_LOCK)
        .fetch_one(conn)
        .await
}

/// Takes the maintenance lock exclusively for the transaction, waiting for other holders.
pub async fn lock_for_maintenance(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, file_id: Uuid) -> Result<Option<CacheRow>, sqlx::Error> {
    sqlx::query_as("SELECT record, cache_updated_at FROM files WHERE file_id = $1")
        .bind(file_id)
        .fetch_optional(pool)
        .await
}

/// The row, locked until the transaction ends.
pub async fn get_for_update(
    conn: &mut PgConnection,
    file_id: Uuid,
) -> Result<Option<CacheRow>, sqlx::Error> {
    sqlx::query_as("SELECT record, cache_updated_at FROM files WHERE file_id = $1 FOR UPDATE")
        .bind(file_id)
        .fetch_optional(conn)
        .await
}

/// Binds a row's columns as `$1..$8`: file_id, storage_key, size, sha256, created_by,
/// retention_expires_at, version, record.
fn bind_row<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    record: &'q FileRecord,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(record.file_id)
        .bind(&record.storage_key)
        .bind(i64::try_from(record.size).unwrap_or(i64::MAX))
        .bind(&record.sha256)
        .bind(&record.created_by)
        .bind(record.retention_expires_at)
        .bind(record.version)
        .bind(Json(record))
}

/// Inserts a new row; `false` when the file is already cached (a rebuild got there first).
pub async fn insert(conn: &mut PgConnection, record: &FileRecord) -> Result<bool, sqlx::Error> {
    let query = sqlx::query(
        "INSERT INTO files (file_id, storage_key, size, sha256, created_by, retention_expires_at,
                            version, record, cache_updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (file_id) DO NOTHING",
    );
    let done = bind_row(query, record).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// What [`insert_and_announce`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The row and its `file.created` outbox row (and the upload id's claim) are written.
    New,
    /// The row existed already: nothing written.
    Existed,
    /// The upload id was recorded already (by a repeat, a cancel or a rebuild): nothing written.
    UploadIdTaken,
}

/// A new file for [`insert_and_announce`]: its row, and the ingester's upload id to claim.
pub struct NewFile<'a> {
    pub record: &'a FileRecord,
    pub upload_id: Option<Uuid>,
}

/// Commits new rows and their `file.created` outbox rows, each first claiming its upload id
/// when it has one, as one statement in a transaction of its own that holds the maintenance
/// lock shared (as [`begin_write`] does). Returns what happened to each file, in order; the
/// outbox rows are numbered in the same order.
pub async fn insert_and_announce(
    pool: &PgPool,
    files: &[NewFile<'_>],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let mut columns = NewFileColumns::default();
    for file in files {
        columns.push(file);
    }
    // Every write below reads from `input`, which reads from `locked`: the lock is taken before
    // any of them. A file without an upload id is allowed without a claim. Claims go in upload
    // id order, so two statements claiming the same ids wait for each other instead of
    // deadlocking; of two files with one id, the first in `files` claims it.
    let rows = sqlx::query(
        "WITH locked AS (SELECT pg_advisory_xact_lock_shared($13)),
         input AS (
             SELECT i.* FROM locked,
                 unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                        $6::timestamptz[], $7::bigint[], $8::jsonb[], $9::uuid[],
                        $10::timestamptz[], $11::uuid[]) WITH ORDINALITY
                 AS i(file_id, storage_key, size, sha256, created_by, retention_expires_at,
                      version, record, event_id, occurred_at, upload_id, position)),
         claimed AS (
             INSERT INTO uploads (upload_id, file_id)
             SELECT upload_id, file_id FROM input WHERE upload_id IS NOT NULL
             ORDER BY upload_id, position
             ON CONFLICT (upload_id) DO NOTHING
             RETURNING file_id),
         allowed AS (
             SELECT * FROM input
             WHERE upload_id IS NULL OR file_id IN (SELECT file_id FROM claimed)),
         inserted AS (
             INSERT INTO files (file_id, storage_key, size, sha256, created_by,
                                retention_expires_at, version, record, cache_updated_at)
             SELECT file_id, storage_key, size, sha256, created_by, retention_expires_at,
                    version, record, now()
             FROM allowed ORDER BY position
             ON CONFLICT (file_id) DO NOTHING
             RETURNING file_id),
         announced AS (
             INSERT INTO outbox (event_type, event_id, file_id, version, occurred_at, payload)
             SELECT $12, event_id, file_id, version, occurred_at, record
             FROM allowed WHERE file_id IN (SELECT file_id FROM inserted) ORDER BY position
             RETURNING file_id)
         SELECT file_id IN (SELECT file_id FROM allowed),
                file_id IN (SELECT file_id FROM announced)
         FROM input ORDER BY position",
    )
    .bind(columns.file_id)
    .bind(columns.storage_key)
    .bind(columns.size)
    .bind(columns.sha256)
    .bind(columns.created_by)
    .bind(columns.retention_expires_at)
    .bind(columns.version)
    .bind(columns.record)
    .bind(columns.event_id)
    .bind(columns.occurred_at)
    .bind(columns.upload_id)
    .bind(EventType::Created.as_str())
    .bind(MAINTENANCE_LOCK)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let (claimed, announced): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
            Ok(match (claimed, announced) {
                (false, _) => Inserted::UploadIdTaken,
                (true, false) => Inserted::Existed,
                (true, true) => Inserted::New,
            })
        })
        .collect()
}

/// [`NewFile`]s as the columns [`insert_and_announce`] binds as arrays.
#[derive(Default)]
struct NewFileColumns<'a> {
    file_id: Vec<Uuid>,
    storage_key: Vec<&'a str>,
    size: Vec<i64>,
    sha256: Vec<&'a str>,
    created_by: Vec<&'a str>,
    retention_expires_at: Vec<Option<DateTime<Utc>>>,
    version: Vec<i64>,
    /// The row's record, and the `file.created` event's payload.
    record: Vec<Json<&'a FileRecord>>,
    event_id: Vec<Uuid>,
    occurred_at: Vec<DateTime<Utc>>,
    upload_id: Vec<Option<Uuid>>,
}

impl<'a> NewFileColumns<'a> {
    fn push(&mut self, file: &NewFile<'a>) {
        let record = file.record;
        let event = FileEvent::new(EventType::Created, record.clone(), Utc::now());
        self.file_id.push(record.file_id);
        self.storage_key.push(&record.storage_key);
        self.size
            .push(i64::try_from(record.size).unwrap_or(i64::MAX));
        self.sha256.push(&record.sha256);
        self.created_by.push(&record.created_by);
        self.retention_expires_at.push(record.retention_expires_at);
        self.version.push(record.version);
        self.record.push(Json(record));
        self.event_id.push(event.event_id);
        self.occurred_at.push(event.occurred_at);
        self.upload_id.push(file.upload_id);
    }
}

/// Replaces the row's record when `record` is newer; `false` when it is not.
pub async fn update_if_newer(
    conn: &mut PgConnection,
    record: &FileRecord,
) -> Result<bool, sqlx::Error> {
    let query = sqlx::query(
        "UPDATE files SET storage_key = $2, size = $3, sha256 = $4, created_by = $5,
                          retention_expires_at = $6, version = $7, record = $8,
                          cache_updated_at = now()
         WHERE file_id = $1 AND version < $7",
    );
    let done = bind_row(query, record).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the row fresh (its sidecar was just read and matches).
pub async fn touch(conn: &mut PgConnection, file_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE files SET cache_updated_at = now() WHERE file_id = $1")
        .bind(file_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the row and returns what it held.
pub async fn delete(
    conn: &mut PgConnection,
    file_id: Uuid,
) -> Result<Option<FileRecord>, sqlx::Error> {
    let record: Option<Json<FileRecord>> =
        sqlx::query_scalar("DELETE FROM files WHERE file_id = $1 RETURNING record")
            .bind(file_id)
            .fetch_optional(conn)
            .await?;
    Ok(record.map(|r| r.0))
}

/// Queues an event for the relay.
pub async fn enqueue(
    conn: &mut PgConnection,
    event_type: EventType,
    record: &FileRecord,
) -> Result<(), sqlx::Error> {
    let event = FileEvent::new(event_type, record.clone(), Utc::now());
    sqlx::query(
        "INSERT INTO outbox (event_type, event_id, file_id, version, occurred_at, payload)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.event_type.as_str())
    .bind(event.event_id)
    .bind(event.file_id)
    .bind(event.version)
    .bind(event.occurred_at)
    .bind(Json(&event.payload))
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a row and announces `file.deleted` with the next version. `false` if there was no row.
pub async fn delete_and_announce(
    conn: &mut PgConnection,
    file_id: Uuid,
) -> Result<bool, sqlx::Error> {
    match delete(conn, file_id).await? {
        Some(mut record) => {
            record.version += 1;
            record.updated_at = Utc::now();
            enqueue(conn, EventType::Deleted, &record).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The files' count and bytes, from the running totals the triggers on `files` keep (see the
/// migration `file_totals`): sixteen rows, whatever the number of files.
pub async fn file_count_and_bytes(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(sum(file_count), 0)::bigint, COALESCE(sum(bytes), 0)::bigint
         FROM file_totals",
    )
    .fetch_one(pool)
    .await
}

/// What an ingester's upload id (`X-Artstore-Upload-Id`) already stands for on this element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadIdState {
    /// Never seen (or pruned).
    Unknown,
    /// Committed as this file (which may since have been deleted).
    Committed(Uuid),
    /// The ingester gave up on it: a commit is refused.
    Abandoned,
}

impl UploadIdState {
    /// From an `uploads` row's `file_id` and `abandoned`; `None` for no row.
    fn from_row(row: Option<(Option<Uuid>, bool)>) -> Self {
        match row {
            None => UploadIdState::Unknown,
            Some((_, true)) => UploadIdState::Abandoned,
            Some((Some(file_id), false)) => UploadIdState::Committed(file_id),
            // Not written by this code (an id is either committed with a file or abandoned).
            Some((None, false)) => UploadIdState::Unknown,
        }
    }
}

pub async fn upload_id_state(
    conn: &mut PgConnection,
    upload_id: Uuid,
) -> Result<UploadIdState, sqlx::Error> {
    let row: Option<(Option<Uuid>, bool)> =
        sqlx::query_as("SELECT file_id, abandoned FROM uploads WHERE upload_id = $1")
            .bind(upload_id)
            .fetch_optional(conn)
            .await?;
    Ok(UploadIdState::from_row(row))
}

/// What each of `upload_ids` stands for (ids not listed are unknown).
pub async fn upload_id_states(
    conn: &mut PgConnection,
    upload_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, UploadIdState>, sqlx::Error> {
    let rows: Vec<(Uuid, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT upload_id, file_id, abandoned FROM uploads WHERE upload_id = ANY($1)",
    )
    .bind(upload_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(upload_id, file_id, abandoned)| {
            (
                upload_id,
                UploadIdState::from_row(Some((file_id, abandoned))),
            )
        })
        .collect())
}

/// Binds `upload_id` to `file_id` inside the upload's transaction. `None` when the id was free;
/// otherwise what it already stands for. A concurrent claim or abandonment of the same id waits
/// for this transaction (and this one for it): the primary key orders them.
pub async fn claim_upload_id(
    conn: &mut PgConnection,
    upload_id: Uuid,
    file_id: Uuid,
) -> Result<Option<UploadIdState>, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO uploads (upload_id, file_id) VALUES ($1, $2)
         ON CONFLICT (upload_id) DO NOTHING",
    )
    .bind(upload_id)
    .bind(file_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(None);
    }
    upload_id_state(conn, upload_id).await.map(Some)
}

/// Marks `upload_id` abandoned (a later commit is refused) and returns the file it committed,
/// if it did.
pub async fn abandon_upload_id(
    conn: &mut PgConnection,
    upload_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO uploads (upload_id, abandoned) VALUES ($1, true)
         ON CONFLICT (upload_id) DO UPDATE SET abandoned = true, recorded_at = now()
         RETURNING file_id",
    )
    .bind(upload_id)
    .fetch_one(conn)
    .await
}

/// Records `upload_id` as abandoned unless an upload or a cancel recorded it first (then it
/// stands as it is: a commit is undone only by the ingester's cancel).
pub async fn abandon_unclaimed_upload_id(
    pool: &PgPool,
    upload_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO uploads (upload_id, abandoned) VALUES ($1, true)
         ON CONFLICT (upload_id) DO NOTHING",
    )
    .bind(upload_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets upload ids recorded before `cutoff`; returns how many. An id abandoned before any
/// commit is kept until a full or incremental rebuild has finished that started at least
/// `grace` after it was recorded and met no error: a crash between an upload's sidecar and its commit can leave
/// the upload's blob and sidecar behind, and only that rebuild removes them by this id (without
/// it, the rebuild would restore the file as one nobody gave up on).
pub async fn prune_upload_ids(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    grace: chrono::Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM uploads u WHERE u.recorded_at < $1
         AND (u.file_id IS NOT NULL OR NOT u.abandoned OR EXISTS (
             SELECT 1 FROM maintenance_runs m
             WHERE m.kind IN ('full', 'incremental') AND m.finished_at IS NOT NULL
               AND jsonb_array_length(m.report -> 'errors') = 0
               AND m.started_at > u.recorded_at + $2))",
    )
    .bind(cutoff)
    .bind(grace)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Inserts the rows that are not cached yet, in one statement; returns the ids it inserted.
pub async fn insert_many(
    conn: &mut PgConnection,
    records: &[&FileRecord],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO files (file_id, storage_key, size, sha256, created_by, retention_expires_at,
                            version, record, cache_updated_at)
         SELECT *, now() FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                                     $6::timestamptz[], $7::bigint[], $8::jsonb[])
         ON CONFLICT (file_id) DO NOTHING
         RETURNING file_id",
    )
    .bind(records.iter().map(|r| r.file_id).collect::<Vec<_>>())
    .bind(
        records
            .iter()
            .map(|r| r.storage_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| i64::try_from(r.size).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.sha256.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.created_by.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.retention_expires_at)
            .collect::<Vec<_>>(),
    )
    .bind(records.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(records.iter().map(|r| Json(*r)).collect::<Vec<_>>())
    .fetch_all(conn)
    .await
}

/// Queues one event of `event_type` per record, in one statement.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    event_type: EventType,
    records: &[&FileRecord],
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let events: Vec<FileEvent> = records
        .iter()
        .map(|r| FileEvent::new(event_type, (*r).clone(), now))
        .collect();
    sqlx::query(
        "INSERT INTO outbox (event_type, event_id, file_id, version, occurred_at, payload)
         SELECT $1, * FROM UNNEST($2::uuid[], $3::uuid[], $4::bigint[], $5::timestamptz[],
                                  $6::jsonb[])",
    )
    .bind(event_type.as_str())
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.file_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.version).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| Json(&e.payload)).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks rows fresh (their sidecars were just read and match), in one statement.
pub async fn touch_many(conn: &mut PgConnection, file_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if file_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE files SET cache_updated_at = now() WHERE file_id = ANY($1)")
        .bind(file_ids)
        .execute(conn)
        .await?;
    Ok(())
}
