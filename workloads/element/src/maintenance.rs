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

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sqlx::PgConnection;

use crate::backend::{BackendError, ObjectInfo};
use crate::core::Core;
use crate::error::ElementError;
use crate::packs::{self, PackEntry};
use crate::sidecar::Sidecar;
use crate::store::UploadIdState;
use crate::{layout, store};

/// How far the storage clock may run ahead of PostgreSQL's when deciding that a sidecar was
/// written after its row was cached.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);
/// Ids listed in a report's details, at most.
const DETAIL_LIMIT: usize = 100;
/// Files a rebuild handles per step: fetched from the scan, read, applied in one transaction.
const BATCH: usize = 500;
/// Sidecars read at once.
const READS_IN_FLIGHT: usize = 32;

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
    /// Sidecars without a blob, older than the grace period, deleted (with their rows).
    #[serde(default)]
    pub orphan_sidecars_deleted: u64,
    /// Blob and sidecar of an upload the ingester gave up on (its upload id cancelled, or
    /// committed as another file) left by a crash before the commit: deleted, nothing announced.
    #[serde(default)]
    pub abandoned_uploads_removed: u64,
    /// Sidecars taken from packs (copies checked against the stored sidecar's MD5) instead of
    /// read one by one; included in `scanned`.
    #[serde(default)]
    pub sidecars_from_packs: u64,
    /// Packs written (of sidecars read one by one, or all of them when the packs were
    /// rewritten) and old packs removed after a rewrite.
    #[serde(default)]
    pub packs_written: u64,
    #[serde(default)]
    pub packs_removed: u64,
    pub errors: Vec<String>,
}

/// One file as the listing and the cache see it.
#[derive(sqlx::FromRow)]
struct Entry {
    file_id: Uuid,
    sidecar_key: Option<String>,
    sidecar_modified: Option<DateTime<Utc>>,
    blob_key: Option<String>,
    blob_modified: Option<DateTime<Utc>>,
    /// The cache row's version and freshness, when the file is cached.
    row_version: Option<i64>,
    cache_updated_at: Option<DateTime<Utc>>,
    /// The stored sidecar's MD5, when the listing gives it.
    sidecar_md5: Option<String>,
    /// A packed copy of the sidecar whose MD5 is the stored sidecar's.
    packed_sidecar: Option<String>,
}

impl Entry {
    /// A sidecar written after its row was last cached may hold a newer record.
    fn maybe_newer(&self) -> bool {
        match (self.sidecar_modified, self.cache_updated_at) {
            (Some(modified), Some(cached)) => modified + CLOCK_SKEW >= cached,
            _ => true,
        }
    }

    /// A sidecar without its blob (the two are written at once; a crash can leave the sidecar
    /// alone), old enough not to be an upload in flight. It describes nothing readable: the
    /// sidecar is deleted and its row, if any, removed.
    fn is_orphan_sidecar(&self, cutoff: DateTime<Utc>) -> bool {
        self.sidecar_key.is_some()
            && self.blob_key.is_none()
            && self.sidecar_modified.is_none_or(|m| m <= cutoff)
    }

    /// A sidecar whose blob is not (yet) there: an upload in flight or an orphan sidecar;
    /// either way not a file to cache.
    fn lacks_blob(&self) -> bool {
        self.sidecar_key.is_some() && self.blob_key.is_none()
    }

    /// A blob without a sidecar, old enough not to be an upload in flight.
    fn is_orphan_blob(&self, cutoff: DateTime<Utc>) -> bool {
        self.sidecar_key.is_none()
            && self.blob_key.is_some()
            && self.blob_modified.is_none_or(|m| m <= cutoff)
    }
}

/// A pack larger than this is none the element wrote (a thousand sidecars are ~1 MB): it is
/// not loaded (a rewrite removes it).
const MAX_PACK_BYTES: u64 = 64 << 20;

/// The packs a scan found, and what loading them gave.
#[derive(Default)]
struct ScanPacks {
    /// Every pack listed, with its size.
    keys: Vec<(String, u64)>,
    /// Entries loaded (distinct key and MD5).
    entries: u64,
    /// Entries that are a listed sidecar's current bytes.
    current: u64,
}

impl ScanPacks {
    /// Any dead entry (a deleted or changed file's copy: the rewrite is what removes a deleted
    /// file's metadata from the packs), or more packs than the live entries need (small packs
    /// left by restarts): worth writing anew.
    fn worth_rewriting(&self) -> bool {
        let needed = (self.current as usize).div_ceil(packs::PACK_ENTRIES);
        !self.keys.is_empty() && (self.entries > self.current || self.keys.len() > needed)
    }
}

/// Lists the backend page by page into a temporary table on `conn` (PostgreSQL holds the
/// listing, not this process, so memory stays flat in the number of files), loads the sidecar
/// packs when `with_packs` (and the backend can vouch for them), then opens the cursor `scan`
/// over the listing joined with the cache and the packs. The tables and cursor end with
/// `conn`'s transaction.
async fn open_scan(
    core: &Core,
    conn: &mut PgConnection,
    with_packs: bool,
) -> Result<ScanPacks, ElementError> {
    sqlx::query(
        "CREATE TEMPORARY TABLE listing (
             file_id uuid PRIMARY KEY,
             sidecar_key text, sidecar_modified timestamptz, sidecar_md5 text,
             blob_key text, blob_modified timestamptz
         ) ON COMMIT DROP",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "CREATE TEMPORARY TABLE packed (
             sidecar_key text, md5 text, sidecar text, PRIMARY KEY (sidecar_key, md5)
         ) ON COMMIT DROP",
    )
    .execute(&mut *conn)
    .await?;
    let mut packs = ScanPacks::default();
    let mut pages = core.backend.list_pages();
    while let Some(page) = pages.next().await {
        let mut sidecars = HashMap::new();
        let mut blobs = HashMap::new();
        for object in page? {
            if layout::is_pack_key(&object.key) {
                packs.keys.push((object.key, object.size));
                continue;
            }
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
        list_into(conn, Listed::Sidecars, sidecars).await?;
        list_into(conn, Listed::Blobs, blobs).await?;
    }
    if with_packs && core.backend.lists_content_md5() {
        load_packs(core, conn, &mut packs).await?;
    }
    sqlx::query(
        "DECLARE scan NO SCROLL CURSOR FOR
         SELECT coalesce(l.file_id, f.file_id) AS file_id,
                l.sidecar_key, l.sidecar_modified, l.blob_key, l.blob_modified,
                f.version AS row_version, f.cache_updated_at,
                l.sidecar_md5, p.sidecar AS packed_sidecar
         FROM listing l FULL JOIN files f ON f.file_id = l.file_id
         LEFT JOIN packed p ON p.sidecar_key = l.sidecar_key AND p.md5 = l.sidecar_md5",
    )
    .execute(&mut *conn)
    .await?;
    Ok(packs)
}

#[derive(Clone, Copy)]
enum Listed {
    Sidecars,
    Blobs,
}

/// Adds one listing page's sidecars (with their MD5s) or blobs to the `listing` table.
async fn list_into(
    conn: &mut PgConnection,
    listed: Listed,
    objects: HashMap<Uuid, ObjectInfo>,
) -> Result<(), ElementError> {
    if objects.is_empty() {
        return Ok(());
    }
    let (ids, objects): (Vec<Uuid>, Vec<ObjectInfo>) = objects.into_iter().unzip();
    let sql = match listed {
        Listed::Sidecars => {
            "INSERT INTO listing (file_id, sidecar_key, sidecar_modified, sidecar_md5)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::text[])
             ON CONFLICT (file_id) DO UPDATE
             SET sidecar_key = EXCLUDED.sidecar_key,
                 sidecar_modified = EXCLUDED.sidecar_modified,
                 sidecar_md5 = EXCLUDED.sidecar_md5"
        }
        Listed::Blobs => {
            "INSERT INTO listing (file_id, blob_key, blob_modified)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[])
             ON CONFLICT (file_id) DO UPDATE
             SET blob_key = EXCLUDED.blob_key, blob_modified = EXCLUDED.blob_modified"
        }
    };
    let mut query = sqlx::query(sql)
        .bind(ids)
        .bind(objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>())
        .bind(objects.iter().map(|o| o.modified).collect::<Vec<_>>());
    if let Listed::Sidecars = listed {
        query = query.bind(
            objects
                .iter()
                .map(|o| o.content_md5.as_deref())
                .collect::<Vec<_>>(),
        );
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Reads every pack into the `packed` table, a pack at a time, each entry under the MD5 of its
/// own bytes (PostgreSQL computes it), so only a copy identical to the stored sidecar joins.
/// A pack that cannot be read or loaded is skipped (its own savepoint): its sidecars are read
/// one by one.
async fn load_packs(
    core: &Core,
    conn: &mut PgConnection,
    packs: &mut ScanPacks,
) -> Result<(), ElementError> {
    for (key, size) in &packs.keys {
        if *size > MAX_PACK_BYTES {
            tracing::warn!(%key, size, "sidecar pack too large to be one the element wrote; not loaded");
            continue;
        }
        let bytes = match core.backend.get_small(key).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(%key, error = %e, "sidecar pack unreadable; its sidecars are read one by one");
                continue;
            }
        };
        let (entries, bad) = packs::decode(&bytes);
        if bad > 0 {
            tracing::warn!(%key, bad, "lines of a sidecar pack skipped");
        }
        sqlx::query("SAVEPOINT pack").execute(&mut *conn).await?;
        let loaded = sqlx::query(
            "INSERT INTO packed (sidecar_key, md5, sidecar)
             SELECT k, md5(convert_to(s, 'UTF8')), s FROM UNNEST($1::text[], $2::text[]) AS u(k, s)
             ON CONFLICT DO NOTHING",
        )
        .bind(entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>())
        .bind(
            entries
                .iter()
                .map(|e| e.sidecar.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await;
        match loaded {
            Ok(loaded) => {
                packs.entries += loaded.rows_affected();
                sqlx::query("RELEASE SAVEPOINT pack")
                    .execute(&mut *conn)
                    .await?;
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "sidecar pack not loaded; its sidecars are read one by one");
                sqlx::query("ROLLBACK TO SAVEPOINT pack")
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    let current: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM listing l
         JOIN packed p ON p.sidecar_key = l.sidecar_key AND p.md5 = l.sidecar_md5",
    )
    .fetch_one(&mut *conn)
    .await?;
    packs.current = current as u64;
    Ok(())
}

/// The next batch of the scan; empty at its end.
async fn next_batch(conn: &mut PgConnection) -> Result<Vec<Entry>, ElementError> {
    Ok(
        sqlx::query_as(sqlx::AssertSqlSafe(format!("FETCH {BATCH} FROM scan")))
            .fetch_all(conn)
            .await?,
    )
}

/// Before this, an unfinished blob or upload is a leftover, not one in flight.
fn grace_cutoff(core: &Core) -> DateTime<Utc> {
    let grace = chrono::Duration::from_std(core.settings.orphan_blob_grace)
        .unwrap_or(chrono::Duration::hours(1));
    Utc::now() - grace
}

/// Sidecars a full rebuild packs as it reads them.
struct Repack {
    /// Every sidecar read, packed ones too (the old packs are being rewritten); otherwise only
    /// those read one by one.
    everything: bool,
    pending: Vec<PackEntry>,
    failed: bool,
}

impl Repack {
    fn new(everything: bool) -> Self {
        Repack {
            everything,
            pending: Vec::new(),
            failed: false,
        }
    }

    /// Keeps a sidecar read one by one and parsed, when its bytes are the ones listed: only
    /// such a copy is ever taken from a pack (on a store whose ETags are no MD5s, none is kept).
    fn keep_read(&mut self, entry: &Entry, key: &str, sidecar: &[u8]) {
        if entry.sidecar_md5.as_deref() == Some(packs::md5_hex(sidecar).as_str()) {
            self.pending.extend(PackEntry::new(key, sidecar));
        }
    }

    /// Keeps a packed copy for the rewrite; PostgreSQL already matched its MD5 to the listing's.
    fn keep_packed(&mut self, key: &str, sidecar: &str) {
        if self.everything {
            self.pending.push(PackEntry {
                key: key.to_string(),
                sidecar: sidecar.to_string(),
            });
        }
    }

    /// Writes full packs; with `all`, the rest too.
    async fn write(&mut self, core: &Core, all: bool, report: &mut RunReport) {
        while self.pending.len() >= packs::PACK_ENTRIES || (all && !self.pending.is_empty()) {
            let rest = self
                .pending
                .split_off(self.pending.len().min(packs::PACK_ENTRIES));
            let entries = std::mem::replace(&mut self.pending, rest);
            match packs::write(core.backend.as_ref(), &entries).await {
                Ok(_) => report.packs_written += 1,
                Err(e) => {
                    // One error is enough to tell: the rest would say the same.
                    if !self.failed {
                        report.errors.push(format!("sidecar pack: {e}"));
                    }
                    self.failed = true;
                }
            }
        }
    }
}

/// Reads the sidecars of `entries` (several at once; a packed copy instead when there is one),
/// each with its outcome, handing the bytes to `repack` when given. A loop rather than stream
/// combinators: their closures trip the compiler's `Send` check of spawned runs.
async fn read_sidecars<'a>(
    core: &Core,
    entries: Vec<&'a Entry>,
    mut repack: Option<&mut Repack>,
) -> Vec<(&'a Entry, Result<Sidecar, ElementError>)> {
    let mut out = Vec::with_capacity(entries.len());
    let mut to_get = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(key) = entry.sidecar_key.as_deref() else {
            continue;
        };
        match &entry.packed_sidecar {
            Some(packed) => {
                let parsed = Sidecar::parse(key, packed.as_bytes());
                if let Some(repack) = repack.as_deref_mut()
                    && parsed.is_ok()
                {
                    repack.keep_packed(key, packed);
                }
                out.push((entry, parsed));
            }
            None => to_get.push((entry, key)),
        }
    }
    let mut pending = to_get.into_iter();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < READS_IN_FLIGHT {
            let Some((entry, key)) = pending.next() else {
                break;
            };
            in_flight.push(async move { (entry, key, core.backend.get_small(key).await) });
        }
        let Some((entry, key, read)) = in_flight.next().await else {
            break;
        };
        let outcome = read.map_err(ElementError::from).and_then(|bytes| {
            let parsed = Sidecar::parse(key, &bytes)?;
            if let Some(repack) = repack.as_deref_mut() {
                repack.keep_read(entry, key, &bytes);
            }
            Ok(parsed)
        });
        out.push((entry, outcome));
    }
    out
}

/// Compares sidecars with cache rows. Read-only; does not take the maintenance lock.
pub async fn consistency(core: &Core) -> Result<ConsistencyReport, ElementError> {
    let mut tx = core.pool.begin().await?;
    open_scan(core, &mut tx, false).await?;
    let cutoff = grace_cutoff(core);
    let (mut sidecars, mut rows, mut expired) = (0u64, 0u64, 0u64);
    let (mut orphan_cache, mut orphan_attr, mut stale) =
        (Found::default(), Found::default(), Found::default());
    let mut orphan_blobs = Found::<String>::default();
    let mut orphan_sidecars = Found::<String>::default();
    let mut abandoned_uploads = Found::<String>::default();
    loop {
        let batch = next_batch(&mut tx).await?;
        if batch.is_empty() {
            break;
        }
        let mut suspects = Vec::new();
        let mut unrowed = Vec::new();
        for entry in &batch {
            sidecars += u64::from(entry.sidecar_key.is_some());
            if let Some(cached) = entry.cache_updated_at {
                rows += 1;
                expired += u64::from(core.is_expired(cached));
            }
            if entry.is_orphan_sidecar(cutoff)
                && let Some(key) = &entry.sidecar_key
            {
                orphan_sidecars.push(key.clone());
                if entry.row_version.is_some() {
                    orphan_cache.push(entry.file_id);
                }
                continue;
            }
            match (&entry.sidecar_key, entry.row_version) {
                (None, Some(_)) => orphan_cache.push(entry.file_id),
                (Some(_), None) if !entry.lacks_blob() => unrowed.push(entry),
                (Some(_), None) => orphan_attr.push(entry.file_id),
                (Some(_), Some(_)) if entry.maybe_newer() => suspects.push(entry),
                _ => {}
            }
            if entry.is_orphan_blob(cutoff)
                && let Some(key) = &entry.blob_key
            {
                orphan_blobs.push(key.clone());
            }
        }
        for (entry, read) in read_sidecars(core, suspects, None).await {
            if let Ok(sidecar) = read
                && entry
                    .row_version
                    .is_some_and(|v| sidecar.record.version > v)
            {
                stale.push(entry.file_id);
            }
        }
        // A sidecar without a row is a file to restore, unless it is what an upload the
        // ingester gave up on left behind (a rebuild removes those instead).
        let read = read_sidecars(core, unrowed, None).await;
        let states =
            upload_states(&mut tx, read.iter().filter_map(|(_, r)| r.as_ref().ok())).await?;
        for (entry, outcome) in &read {
            match outcome {
                Ok(sidecar) if classify(entry, sidecar, &states, cutoff) == Unrowed::Abandoned => {
                    abandoned_uploads.push(entry.sidecar_key.clone().unwrap_or_default())
                }
                _ => orphan_attr.push(entry.file_id),
            }
        }
    }
    tx.rollback().await?;
    let incomplete = core.backend.incomplete_uploads(cutoff).await?;
    let problems = orphan_cache.count + orphan_attr.count + stale.count;
    let base = sidecars.max(rows).max(1);
    let percentage = ((problems as f64 / base as f64) * 10_000.0).round() / 100.0;
    let list =
        |found: &Found<Uuid>| -> Vec<String> { found.first.iter().map(Uuid::to_string).collect() };
    Ok(ConsistencyReport {
        total_attr_files: sidecars,
        total_cache_entries: rows,
        orphan_cache_count: orphan_cache.count,
        orphan_attr_count: orphan_attr.count,
        expired_cache_count: expired,
        is_consistent: problems == 0
            && abandoned_uploads.count == 0
            && orphan_blobs.count == 0
            && orphan_sidecars.count == 0
            && incomplete.is_empty(),
        inconsistency_percentage: percentage.min(100.0),
        details: serde_json::json!({
            "orphan_cache_entries": list(&orphan_cache),
            "orphan_attr_files": list(&orphan_attr),
            "stale_cache_count": stale.count,
            "stale_cache_entries": list(&stale),
            "orphan_blob_count": orphan_blobs.count,
            "orphan_blobs": orphan_blobs.first,
            "abandoned_upload_count": abandoned_uploads.count,
            "abandoned_uploads": abandoned_uploads.first,
            "orphan_sidecar_count": orphan_sidecars.count,
            "orphan_sidecars": orphan_sidecars.first,
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

/// A count and the first few of what was found (a report's details stay bounded).
struct Found<T> {
    count: u64,
    first: Vec<T>,
}

impl<T> Default for Found<T> {
    fn default() -> Self {
        Found {
            count: 0,
            first: Vec::new(),
        }
    }
}

impl<T> Found<T> {
    fn push(&mut self, item: T) {
        self.count += 1;
        if self.first.len() < DETAIL_LIMIT {
            self.first.push(item);
        }
    }
}

/// Removes one cache row whose sidecar is gone and queues `file.deleted`. Runs under the
/// maintenance lock.
async fn remove_row(
    core: &Core,
    file_id: Uuid,
    report: &mut RunReport,
) -> Result<(), ElementError> {
    let mut tx = core.pool.begin().await?;
    if store::delete_and_announce(&mut tx, file_id).await? {
        report.removed += 1;
    }
    tx.commit().await?;
    Ok(())
}

/// What a sidecar without a cache row stands for, by the upload id it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unrowed {
    /// A file to cache: no upload id, or one committed as this very file.
    Restore,
    /// An upload id this element never committed nor had cancelled, older than the grace
    /// period: the element died between the sidecar and the commit. Restored, and the id
    /// recorded as committed to it, so a cancel the ingester still sends deletes it (announced
    /// as any delete) instead of finding nothing.
    RestoreAndClaim(Uuid),
    /// The same, younger than the grace period: an upload in flight, whose commit caches it.
    InFlight,
    /// The ingester gave up on the upload (its cancel arrived), or the id committed as another
    /// file (a concurrent attempt won): a leftover of a crash before the commit, not a file.
    Abandoned,
}

fn classify(
    entry: &Entry,
    sidecar: &Sidecar,
    states: &HashMap<Uuid, UploadIdState>,
    cutoff: DateTime<Utc>,
) -> Unrowed {
    let Some(upload_id) = sidecar.upload_id else {
        return Unrowed::Restore;
    };
    match states
        .get(&upload_id)
        .copied()
        .unwrap_or(UploadIdState::Unknown)
    {
        UploadIdState::Abandoned => Unrowed::Abandoned,
        UploadIdState::Committed(file_id) if file_id == sidecar.record.file_id => Unrowed::Restore,
        UploadIdState::Committed(_) => Unrowed::Abandoned,
        UploadIdState::Unknown if entry.sidecar_modified.is_some_and(|m| m > cutoff) => {
            Unrowed::InFlight
        }
        UploadIdState::Unknown => Unrowed::RestoreAndClaim(upload_id),
    }
}

/// The `uploads` states of the upload ids these sidecars carry.
async fn upload_states<'a>(
    conn: &mut PgConnection,
    sidecars: impl Iterator<Item = &'a Sidecar>,
) -> Result<HashMap<Uuid, UploadIdState>, ElementError> {
    let ids: Vec<Uuid> = sidecars.filter_map(|s| s.upload_id).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(store::upload_id_states(conn, &ids).await?)
}

/// Deletes the blob and sidecar an abandoned upload left (sidecar first: it is the truth).
async fn remove_abandoned(core: &Core, entry: &Entry, report: &mut RunReport) {
    for key in [&entry.sidecar_key, &entry.blob_key].into_iter().flatten() {
        if let Err(e) = core.backend.delete(key).await {
            report.errors.push(format!("{key}: {e}"));
            return;
        }
    }
    tracing::info!(file_id = %entry.file_id, "blob and sidecar of an abandoned upload removed");
    report.abandoned_uploads_removed += 1;
}

/// Brings a batch of rows in line with their sidecars in one transaction, queueing the event
/// for every change. Runs under the maintenance lock.
async fn apply(
    core: &Core,
    read: Vec<(&Entry, Result<Sidecar, ElementError>)>,
    cutoff: DateTime<Utc>,
    report: &mut RunReport,
) -> Result<(), ElementError> {
    let mut new: Vec<FileRecord> = Vec::new();
    let mut newer: Vec<FileRecord> = Vec::new();
    let mut current = Vec::new();
    let mut gone = Vec::new();
    let mut tx = core.pool.begin().await?;
    let states = upload_states(
        &mut tx,
        read.iter()
            .filter(|(entry, _)| entry.row_version.is_none())
            .filter_map(|(_, outcome)| outcome.as_ref().ok()),
    )
    .await?;
    let mut claims: Vec<(Uuid, FileRecord, &Entry)> = Vec::new();
    let mut abandoned: Vec<&Entry> = Vec::new();
    for (entry, outcome) in read {
        match outcome {
            Ok(sidecar) if sidecar.record.file_id != entry.file_id => report.errors.push(format!(
                "{}: describes another file",
                entry.sidecar_key.as_deref().unwrap_or_default()
            )),
            Ok(sidecar) => {
                report.scanned += 1;
                let kind = classify(entry, &sidecar, &states, cutoff);
                let record = sidecar.record;
                match entry.row_version {
                    None => match kind {
                        Unrowed::Restore => new.push(record),
                        Unrowed::RestoreAndClaim(upload_id) => {
                            claims.push((upload_id, record, entry))
                        }
                        Unrowed::InFlight => {}
                        Unrowed::Abandoned => abandoned.push(entry),
                    },
                    Some(version) if record.version > version => newer.push(record),
                    Some(_) => current.push(record.file_id),
                }
            }
            Err(ElementError::Backend(BackendError::NotFound(_))) => gone.push(entry.file_id),
            Err(ElementError::BadSidecar { key, reason }) => {
                report.errors.push(format!("{key}: {reason}"))
            }
            Err(e) => return Err(e),
        }
    }
    // Claimed in this transaction before the row exists: a cancel arriving meanwhile either
    // came first (the claim finds the id abandoned and the upload's leftovers go) or waits for
    // this commit and then deletes the restored file as a committed upload's.
    for (upload_id, record, entry) in claims {
        match store::claim_upload_id(&mut tx, upload_id, record.file_id).await? {
            None => new.push(record),
            Some(UploadIdState::Committed(file_id)) if file_id == record.file_id => {
                new.push(record)
            }
            Some(_) => abandoned.push(entry),
        }
    }
    let inserted: std::collections::HashSet<Uuid> =
        store::insert_many(&mut tx, &new.iter().collect::<Vec<_>>())
            .await?
            .into_iter()
            .collect();
    let (created, raced): (Vec<&FileRecord>, Vec<&FileRecord>) =
        new.iter().partition(|r| inserted.contains(&r.file_id));
    store::enqueue_many(&mut tx, EventType::Created, &created).await?;
    report.added += created.len() as u64;
    // Cached since the scan began (an upload's commit): compare versions row by row.
    for record in newer.iter().chain(raced) {
        if store::update_if_newer(&mut tx, record).await? {
            store::enqueue(&mut tx, EventType::Updated, record).await?;
            report.updated += 1;
        } else {
            current.push(record.file_id);
        }
    }
    store::touch_many(&mut tx, &current).await?;
    report.refreshed += current.len() as u64;
    for file_id in gone {
        if store::delete_and_announce(&mut tx, file_id).await? {
            report.removed += 1;
        }
    }
    tx.commit().await?;
    for entry in abandoned {
        remove_abandoned(core, entry, report).await;
    }
    Ok(())
}

async fn incremental(
    core: &Core,
    lock: &mut PgConnection,
    full: bool,
    report: &mut RunReport,
) -> Result<(), ElementError> {
    let packs = open_scan(core, lock, full).await?;
    // A full rebuild reads every sidecar anyway: it packs those it had to read one by one.
    let mut repack =
        (full && core.backend.lists_content_md5()).then(|| Repack::new(packs.worth_rewriting()));
    let cutoff = grace_cutoff(core);
    loop {
        let batch = next_batch(lock).await?;
        if batch.is_empty() {
            break;
        }
        let mut to_read = Vec::new();
        for entry in &batch {
            if entry.sidecar_key.is_some()
                && !entry.lacks_blob()
                && (full || entry.row_version.is_none() || entry.maybe_newer())
            {
                to_read.push(entry);
            }
        }
        report.sidecars_from_packs += to_read
            .iter()
            .filter(|e| e.packed_sidecar.is_some())
            .count() as u64;
        let read = read_sidecars(core, to_read, repack.as_mut()).await;
        apply(core, read, cutoff, report).await?;
        if let Some(repack) = repack.as_mut() {
            repack.write(core, false, report).await;
        }
        for entry in &batch {
            if entry.is_orphan_sidecar(cutoff)
                && let Some(key) = &entry.sidecar_key
            {
                // The sidecar first: it is the truth, and the row follows it.
                match core.backend.delete(key).await {
                    Ok(()) => report.orphan_sidecars_deleted += 1,
                    Err(e) => {
                        report.errors.push(format!("{key}: {e}"));
                        continue;
                    }
                }
                if entry.row_version.is_some() {
                    remove_row(core, entry.file_id, report).await?;
                }
            }
            if entry.sidecar_key.is_none() && entry.row_version.is_some() {
                remove_row(core, entry.file_id, report).await?;
            }
            if entry.is_orphan_blob(cutoff)
                && let Some(key) = &entry.blob_key
            {
                match core.backend.delete(key).await {
                    Ok(()) => report.orphan_blobs_deleted += 1,
                    Err(e) => report.errors.push(format!("{key}: {e}")),
                }
            }
        }
    }
    sqlx::query("CLOSE scan").execute(&mut *lock).await?;
    sqlx::query("DROP TABLE listing, packed")
        .execute(&mut *lock)
        .await?;
    if let Some(mut repack) = repack {
        repack.write(core, true, report).await;
        if repack.everything && !repack.failed {
            remove_packs(core, &packs.keys, report).await;
        }
    }
    for upload in core.backend.incomplete_uploads(cutoff).await? {
        match core.backend.remove_incomplete(&upload).await {
            Ok(()) => report.incomplete_uploads_removed += 1,
            Err(e) => report.errors.push(format!("{}: {e}", upload.key)),
        }
    }
    Ok(())
}

/// Removes packs a rewrite has replaced (written once and never changed, so nothing newer is
/// lost with them).
async fn remove_packs(core: &Core, keys: &[(String, u64)], report: &mut RunReport) {
    for (key, _) in keys {
        match core.backend.delete(key).await {
            Ok(()) => report.packs_removed += 1,
            Err(e) => report.errors.push(format!("{key}: {e}")),
        }
    }
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

/// The report of the last consistency check recorded in `maintenance_runs`, if any.
pub async fn last_consistency(core: &Core) -> Result<Option<serde_json::Value>, ElementError> {
    Ok(sqlx::query_scalar(
        "SELECT report FROM maintenance_runs
         WHERE kind = $1 AND report IS NOT NULL
         ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT 1",
    )
    .bind(MaintenanceKind::Consistency.as_str())
    .fetch_optional(&core.pool)
    .await?)
}

/// Runs one maintenance operation. Everything but the consistency check takes the maintenance
/// lock exclusively (waiting for a run in progress) and is recorded in `maintenance_runs`.
pub async fn run(core: &Core, kind: MaintenanceKind) -> Result<serde_json::Value, ElementError> {
    let result = run_kind(core, kind).await;
    // A rebuild adds and removes rows: the next capacity check reads the database.
    core.used.forget();
    result
}

async fn run_kind(core: &Core, kind: MaintenanceKind) -> Result<serde_json::Value, ElementError> {
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
        MaintenanceKind::Full => incremental(core, &mut lock, true, &mut report).await,
        MaintenanceKind::Incremental => incremental(core, &mut lock, false, &mut report).await,
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
