//! The element's operations, independent of HTTP: upload, read (with lazy refresh), change,
//! delete, list and status.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use artstore_contract::{ElementMode, ElementStatus};
use artstore_events::{EventType, FileRecord, Retention};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::CrashPoint;
use crate::backend::{BackendError, BlobBackend, ByteChunks, Described, MakeSidecar};
use crate::commits::Committer;
use crate::error::ElementError;
use crate::layout;
use crate::metrics::Metrics;
use crate::packs::Packer;
use crate::sidecar::Sidecar;
use crate::store;
use crate::used_bytes::UsedBytes;

const MAX_DESCRIPTION_CHARS: usize = 4000;
const MAX_TAGS: usize = 50;
const MAX_TAG_CHARS: usize = 100;
const MAX_RETENTION_DAYS: i64 = 36_500;
const DEFAULT_RETENTION_DAYS: i64 = 30;

/// The settings operations need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub id: String,
    pub mode: ElementMode,
    pub priority: i32,
    pub capacity_bytes: u64,
    pub max_file_bytes: u64,
    pub cache_ttl_hours: u32,
    pub orphan_blob_grace: Duration,
}

pub struct Core {
    pub settings: Settings,
    pub pool: PgPool,
    pub backend: Arc<dyn BlobBackend>,
    /// Wakes the relay when an outbox row was committed.
    pub relay_wake: Arc<Notify>,
    /// Commits new files, together when several are ready at once.
    commits: Committer,
    pub metrics: Metrics,
    /// The sidecars written since the last pack.
    pub packs: Packer,
    /// When upload ids were last pruned (seconds since the epoch).
    upload_ids_pruned_at: std::sync::atomic::AtomicI64,
    /// Bytes promised to uploads in flight, so concurrent uploads cannot overfill the element.
    reserved: AtomicU64,
    /// The bytes the cache holds, for the capacity check (read from memory while fresh).
    pub(crate) used: UsedBytes,
    crash_point: Mutex<Option<CrashPoint>>,
    pause_point: Mutex<Option<(CrashPoint, Arc<PauseGate>)>>,
}

/// Holds an operation at a point until the test lets it go (tests of cancellation).
#[derive(Default)]
pub struct PauseGate {
    pub reached: Notify,
    pub release: Notify,
}

/// What the user supplies with an upload.
#[derive(Debug, Clone, Default)]
pub struct UploadRequest {
    pub filename: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub retention: Option<String>,
    pub retention_days: Option<String>,
    pub mime_type: Option<String>,
    /// From `Content-Length`, when the client sent one.
    pub content_length: Option<u64>,
    /// Set by an ingester's upload (`X-Artstore-Upload-Id`): cancelled when the caller stopped
    /// waiting. The upload then rolls back at its commit point instead of committing a copy the
    /// caller has already stored elsewhere.
    pub caller_gone: Option<tokio_util::sync::CancellationToken>,
    /// The ingester's identity for the upload (`X-Artstore-Upload-Id`): a repeat is answered
    /// with the file it produced, and an id cancelled by `DELETE /api/v1/uploads/{id}` is
    /// refused at the commit point.
    pub upload_id: Option<Uuid>,
}

/// How long an upload id is remembered (committed or cancelled). It must outlast the ingester's
/// retries of a cancel (24 h) and any upload still in flight when the cancel arrives.
pub const UPLOAD_ID_MEMORY: chrono::Duration = chrono::Duration::hours(48);

/// The outcome of an upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub record: FileRecord,
    /// The upload id had already produced this file; nothing new was stored.
    pub replayed: bool,
}

/// A record as the metadata API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileView {
    #[serde(flatten)]
    pub record: FileRecord,
    pub cache_updated_at: DateTime<Utc>,
    pub cache_ttl_hours: u32,
    pub cache_expired: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileList {
    pub total: i64,
    pub files: Vec<FileView>,
    pub next_cursor: Option<String>,
}

/// A change to a file's metadata. `description: Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct MetadataPatch {
    pub description: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
}

struct Reservation<'a> {
    core: &'a Core,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.core.reserved.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Counts one upload in [`Metrics::uploads_in_flight`] while it lives.
struct InFlight(Gauge);

impl InFlight {
    fn start(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Hashes and counts the body as it streams past, stopping it at the limit.
struct Meter {
    hasher: Mutex<Sha256>,
    size: AtomicU64,
    over_limit: AtomicBool,
}

pub fn validate_description(text: &str) -> Result<(), ElementError> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ElementError::invalid(
            "invalid_description",
            format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ElementError::invalid(
            "invalid_description",
            "description must not contain control characters",
        ));
    }
    Ok(())
}

pub fn normalise_tags(tags: Vec<String>) -> Result<Vec<String>, ElementError> {
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        let tag = tag.trim().to_string();
        if tag.is_empty()
            || tag.chars().count() > MAX_TAG_CHARS
            || tag.chars().any(char::is_control)
        {
            return Err(ElementError::invalid(
                "invalid_tag",
                format!("tags must be 1 to {MAX_TAG_CHARS} characters without control characters"),
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(ElementError::invalid(
            "invalid_tag",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    Ok(out)
}

fn parse_retention(
    retention: Option<&str>,
    days: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(Retention, Option<DateTime<Utc>>), ElementError> {
    let retention = match retention.unwrap_or("permanent") {
        "permanent" => Retention::Permanent,
        "temporary" => Retention::Temporary,
        other => {
            return Err(ElementError::invalid(
                "invalid_retention",
                format!("retention {other:?}: expected temporary or permanent"),
            ));
        }
    };
    let days = match days {
        None => None,
        Some(text) => match text.trim().parse::<i64>() {
            Ok(d) if (1..=MAX_RETENTION_DAYS).contains(&d) => Some(d),
            _ => {
                return Err(ElementError::invalid(
                    "invalid_retention_days",
                    format!("retention_days must be a whole number from 1 to {MAX_RETENTION_DAYS}"),
                ));
            }
        },
    };
    match retention {
        Retention::Permanent if days.is_some() => Err(ElementError::invalid(
            "invalid_retention_days",
            "retention_days applies only to retention=temporary",
        )),
        Retention::Permanent => Ok((Retention::Permanent, None)),
        Retention::Temporary => {
            let days = days.unwrap_or(DEFAULT_RETENTION_DAYS);
            Ok((
                Retention::Temporary,
                Some(now + chrono::Duration::days(days)),
            ))
        }
    }
}

fn mime_type_for(filename: &str, given: Option<&str>) -> Result<String, ElementError> {
    match given.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => {
            let plain = m.len() <= 255
                && m.contains('/')
                && !m
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() && c != ' ');
            if plain {
                Ok(m.to_string())
            } else {
                Err(ElementError::invalid(
                    "invalid_mime_type",
                    format!("{m:?} is not a media type"),
                ))
            }
        }
        None => Ok(mime_guess::from_path(filename)
            .first_or_octet_stream()
            .essence_str()
            .to_string()),
    }
}

/// The sidecar of `record` without an upload id (a PATCH's rewrite, tools that seed files).
pub fn sidecar_bytes(record: &FileRecord) -> Result<Bytes, ElementError> {
    Sidecar {
        record: record.clone(),
        upload_id: None,
    }
    .to_bytes()
}

impl Core {
    pub fn new(
        settings: Settings,
        pool: PgPool,
        backend: Arc<dyn BlobBackend>,
        metrics: Metrics,
    ) -> Self {
        let commits = Committer::start(pool.clone(), metrics.clone());
        Core {
            packs: Packer::new(backend.clone()),
            settings,
            pool,
            backend,
            relay_wake: Arc::new(Notify::new()),
            commits,
            metrics,
            upload_ids_pruned_at: std::sync::atomic::AtomicI64::new(0),
            reserved: AtomicU64::new(0),
            used: UsedBytes::default(),
            crash_point: Mutex::new(None),
            pause_point: Mutex::new(None),
        }
    }

    /// Makes the next operation that passes `point` wait there until `gate.release` is
    /// notified, after notifying `gate.reached` (tests of a client that goes away mid-change).
    pub fn set_pause_point(&self, pause: Option<(CrashPoint, Arc<PauseGate>)>) {
        if let Ok(mut slot) = self.pause_point.lock() {
            *slot = pause;
        }
    }

    async fn pause_at(&self, point: CrashPoint) {
        let gate = self.pause_point.lock().ok().and_then(|p| {
            p.as_ref()
                .filter(|(at, _)| *at == point)
                .map(|(_, g)| g.clone())
        });
        if let Some(gate) = gate {
            gate.reached.notify_one();
            gate.release.notified().await;
        }
    }

    /// Makes the next operations stop dead at `point` (tests of crash recovery).
    pub fn set_crash_point(&self, point: Option<CrashPoint>) {
        if let Ok(mut slot) = self.crash_point.lock() {
            *slot = point;
        }
    }

    fn crash_armed(&self, point: CrashPoint) -> bool {
        self.crash_point
            .lock()
            .map(|p| *p == Some(point))
            .unwrap_or(false)
    }

    fn crash_at(&self, point: CrashPoint) -> Result<(), ElementError> {
        if self.crash_armed(point) {
            tracing::warn!(?point, "simulated crash");
            return Err(ElementError::SimulatedCrash(point));
        }
        Ok(())
    }

    pub fn ttl(&self) -> chrono::Duration {
        chrono::Duration::hours(i64::from(self.settings.cache_ttl_hours))
    }

    pub fn is_expired(&self, cache_updated_at: DateTime<Utc>) -> bool {
        cache_updated_at + self.ttl() < Utc::now()
    }

    fn view(&self, row: store::CacheRow) -> FileView {
        FileView {
            cache_expired: self.is_expired(row.cache_updated_at),
            record: row.record.0,
            cache_updated_at: row.cache_updated_at,
            cache_ttl_hours: self.settings.cache_ttl_hours,
        }
    }

    /// The bytes the cache holds, from the database (and remembered for the next uploads).
    async fn read_used_bytes(&self) -> Result<i64, ElementError> {
        let changes = self.used.changes();
        let used = store::file_count_and_bytes(&self.pool).await?.1;
        self.used.set(used, changes);
        Ok(used)
    }

    fn require_writable(&self) -> Result<(), ElementError> {
        if self.settings.mode.accepts_writes() {
            Ok(())
        } else {
            Err(ElementError::NotWritable(self.settings.mode.as_str()))
        }
    }

    fn require_editable(&self) -> Result<(), ElementError> {
        if self.settings.mode == ElementMode::Edit {
            Ok(())
        } else {
            Err(ElementError::NotEditable(self.settings.mode.as_str()))
        }
    }

    /// Streams `body` into the backend (hashing it on the way), writes the sidecar, then commits
    /// the cache row and its `file.created` outbox row in one transaction.
    ///
    /// An ingester's upload (with an upload id) that fails here records its id as abandoned
    /// unless it is recorded already: the ingester never sends that id again, and blob or
    /// sidecar that could not be taken back (the backend failing is often why it failed) are
    /// then removed by the next rebuild instead of restored as a file the caller was told
    /// failed.
    pub async fn upload(
        &self,
        created_by: &str,
        request: UploadRequest,
        body: ByteChunks,
    ) -> Result<Uploaded, ElementError> {
        let _in_flight = InFlight::start(&self.metrics.uploads_in_flight);
        let upload_id = request.upload_id;
        let result = self.upload_once(created_by, request, body).await;
        // (A simulated crash stands for this process dying: it records nothing.)
        if let (Err(error), Some(upload_id)) = (&result, upload_id)
            && !matches!(error, ElementError::SimulatedCrash(_))
        {
            match store::abandon_unclaimed_upload_id(&self.pool, upload_id).await {
                Ok(()) => {
                    tracing::debug!(%upload_id, %error, "failed upload's id recorded as abandoned")
                }
                Err(e) => {
                    tracing::warn!(%upload_id, error = %e, "recording a failed upload's id failed")
                }
            }
        }
        result
    }

    async fn upload_once(
        &self,
        created_by: &str,
        request: UploadRequest,
        body: ByteChunks,
    ) -> Result<Uploaded, ElementError> {
        let started = Instant::now();
        // An upload id already used (a repeat, a cancel) is found by the claim at the commit:
        // no round trip on every upload for what seldom happens (an ingester sends an id to one
        // element once). A repeat that fails before its commit (a full or read-only element)
        // answers with that failure instead of the first attempt's record.
        let _caller_watch = self.watch_caller(request.upload_id, request.caller_gone.clone());
        self.require_writable()?;
        layout::validate_filename(&request.filename)
            .map_err(|e| ElementError::invalid("invalid_filename", e.to_string()))?;
        let description = request.description.filter(|d| !d.trim().is_empty());
        if let Some(d) = &description {
            validate_description(d)?;
        }
        let tags = normalise_tags(request.tags)?;
        let now = Utc::now();
        let (retention, retention_expires_at) = parse_retention(
            request.retention.as_deref(),
            request.retention_days.as_deref(),
            now,
        )?;
        let mime_type = mime_type_for(&request.filename, request.mime_type.as_deref())?;

        // Size limits: known lengths are refused before a byte is read.
        let max_file = self.settings.max_file_bytes;
        if let Some(length) = request.content_length
            && length > max_file
        {
            return Err(ElementError::TooLarge { limit: max_file });
        }
        let promise = request.content_length.unwrap_or(0);
        let reserved_before = self.reserved.fetch_add(promise, Ordering::SeqCst);
        let _reservation = Reservation {
            core: self,
            bytes: promise,
        };
        let free_with = |used: i64| {
            let committed = (used.max(0) as u64).saturating_add(reserved_before);
            self.settings.capacity_bytes.saturating_sub(committed)
        };
        // A body without a length is cut at the free space: that limit comes from the database.
        let remembered = self
            .used
            .fresh()
            .filter(|_| request.content_length.is_some());
        let mut free = match remembered {
            Some(used) => free_with(used),
            None => free_with(self.read_used_bytes().await?),
        };
        // Refused only on the database's own figure, never on a remembered one.
        if promise > free && remembered.is_some() {
            free = free_with(self.read_used_bytes().await?);
        }
        if promise > free {
            return Err(ElementError::InsufficientStorage);
        }
        let limit = max_file.min(free);

        let file_id = Uuid::now_v7();
        let key = layout::blob_key(&request.filename, created_by, now, file_id);
        let meter = Arc::new(Meter {
            hasher: Mutex::new(Sha256::new()),
            size: AtomicU64::new(0),
            over_limit: AtomicBool::new(false),
        });
        let body_meter = meter.clone();
        let metered: ByteChunks = body
            .map(move |chunk| {
                let chunk = chunk?;
                let size = body_meter
                    .size
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst)
                    + chunk.len() as u64;
                if size > limit {
                    body_meter.over_limit.store(true, Ordering::SeqCst);
                    return Err(std::io::Error::other("size limit reached"));
                }
                if let Ok(mut hasher) = body_meter.hasher.lock() {
                    hasher.update(&chunk);
                }
                Ok(chunk)
            })
            .boxed();
        let record = FileRecord {
            file_id,
            original_filename: request.filename,
            storage_key: key.clone(),
            size: 0,
            sha256: String::new(),
            mime_type,
            description,
            tags,
            storage_element_id: self.settings.id.clone(),
            created_at: now,
            created_by: created_by.to_string(),
            updated_at: now,
            retention,
            retention_expires_at,
            version: 1,
        };
        let sidecar = layout::sidecar_key(&key);
        // The sidecar is made once the body has ended (size and hash known), and the backend
        // may store it while the blob's last bytes are still on their way.
        let described = Arc::new(Mutex::new(None::<(FileRecord, Bytes, Instant)>));
        let sidecar_upload_id = request.upload_id;
        let make_sidecar: MakeSidecar = {
            let (meter, described) = (meter.clone(), described.clone());
            Box::new(move |size| {
                let mut record = record;
                record.size = size;
                record.sha256 = match meter.hasher.lock() {
                    Ok(hasher) => hex::encode(hasher.clone().finalize()),
                    Err(_) => return Err(BackendError::storage("hasher poisoned")),
                };
                let sidecar = Sidecar {
                    record,
                    upload_id: sidecar_upload_id,
                };
                let bytes = sidecar.to_bytes().map_err(BackendError::storage)?;
                let blob_sha256 = sidecar.record.sha256.clone();
                if let Ok(mut slot) = described.lock() {
                    *slot = Some((sidecar.record, bytes.clone(), Instant::now()));
                }
                Ok(Described {
                    sidecar: bytes,
                    blob_sha256,
                })
            })
        };
        let storing = Instant::now();
        let stored = if self.crash_armed(CrashPoint::AfterBlob) {
            // Simulates a crash between the two writes: the blob alone (the overlapped write
            // can leave either one alone; maintenance repairs both).
            self.backend.put_stream(&key, metered).await
        } else {
            self.backend
                .put_with_sidecar(
                    &key,
                    metered,
                    request.content_length,
                    &sidecar,
                    make_sidecar,
                )
                .await
        };
        let stored = match stored {
            Ok(_) => described.lock().ok().and_then(|mut slot| slot.take()),
            Err(BackendError::Body(e)) => {
                return Err(if meter.over_limit.load(Ordering::SeqCst) {
                    if limit == max_file {
                        ElementError::TooLarge { limit: max_file }
                    } else {
                        ElementError::InsufficientStorage
                    }
                } else {
                    ElementError::BodyInterrupted(e.to_string())
                });
            }
            Err(e) => {
                // Either object may have landed: take both back.
                let _ = self.backend.delete(&sidecar).await;
                let _ = self.backend.delete(&key).await;
                return Err(e.into());
            }
        };
        self.crash_at(CrashPoint::AfterBlob)?;
        let stored_at = Instant::now();
        let Some((record, sidecar_bytes, body_ended)) = stored else {
            let _ = self.backend.delete(&sidecar).await;
            let _ = self.backend.delete(&key).await;
            return Err(ElementError::invalid(
                "internal",
                "the sidecar was never made",
            ));
        };
        let size = record.size;
        self.crash_at(CrashPoint::AfterSidecar)?;

        let upload_id = request.upload_id;
        // `Ok(Some(..))`: the same upload id committed meanwhile (a concurrent repeat).
        let committed: Result<Option<FileRecord>, ElementError> = async {
            // `None`: the caller gave up before the commit (its last moment to be honoured:
            // after the statement the copy is visible).
            let inserted = self
                .commits
                .commit(record.clone(), upload_id, request.caller_gone)
                .await?;
            let Some(upload_id) = upload_id else {
                return match inserted {
                    Some(_) => Ok(None),
                    None => Err(ElementError::Abandoned),
                };
            };
            if inserted == Some(store::Inserted::New) {
                return Ok(None);
            }
            let mut conn = self.pool.acquire().await?;
            let state = store::upload_id_state(&mut conn, upload_id).await?;
            drop(conn);
            // A rebuild found this attempt's sidecar (older than the grace period) and
            // committed it already: the copy is visible, so finish as a commit would; a cancel
            // from the ingester deletes it like any committed upload.
            if state == store::UploadIdState::Committed(file_id) {
                return Ok(None);
            }
            if inserted.is_none() {
                return Err(ElementError::Abandoned);
            }
            // Taken meanwhile: by a concurrent attempt (replay its file) or a cancel.
            match self.existing_upload(upload_id, state).await? {
                Some(existing) => Ok(Some(existing)),
                None => Err(ElementError::UploadCancelled(upload_id)),
            }
        }
        .await;
        if !matches!(committed, Ok(None)) {
            // Nothing of this attempt is visible: take the blob and sidecar back.
            let _ = self.backend.delete(&sidecar).await;
            let _ = self.backend.delete(&key).await;
            return committed.map(|existing| Uploaded {
                record: existing.unwrap_or(record),
                replayed: true,
            });
        }
        self.relay_wake.notify_one();
        self.used.add(size);
        self.packs.record(&sidecar, &sidecar_bytes);
        let phases = [
            ("prepare", storing - started),
            ("receive", body_ended.saturating_duration_since(storing)),
            ("backend", stored_at.saturating_duration_since(body_ended)),
            ("commit", stored_at.elapsed()),
        ];
        for (phase, took) in phases {
            self.metrics.upload_phase(phase, took.as_secs_f64());
        }
        if upload_id.is_some() {
            self.prune_upload_ids().await;
        }
        self.metrics.uploads.inc();
        self.metrics.upload_bytes.inc_by(size);
        tracing::info!(%file_id, size, key = %key, "file stored");
        Ok(Uploaded {
            record,
            replayed: false,
        })
    }

    /// For an ingester's upload: when the ingester goes away (it counts the upload as failed and
    /// stores the file elsewhere) the id is recorded as abandoned at once, as its cancel would
    /// do, without waiting for that cancel (which dies with the ingester, if the ingester is
    /// what went away). Should this process die before the commit point takes blob and sidecar
    /// back, a rebuild then removes them instead of restoring a second copy. The watch ends with
    /// the returned guard (when the upload returns).
    fn watch_caller(
        &self,
        upload_id: Option<Uuid>,
        caller_gone: Option<tokio_util::sync::CancellationToken>,
    ) -> Option<tokio_util::sync::DropGuard> {
        let (upload_id, caller_gone) = (upload_id?, caller_gone?);
        let finished = tokio_util::sync::CancellationToken::new();
        let (pool, done) = (self.pool.clone(), finished.clone());
        tokio::spawn(async move {
            tokio::select! {
                biased;
                () = done.cancelled() => {}
                () = caller_gone.cancelled() => {
                    match store::abandon_unclaimed_upload_id(&pool, upload_id).await {
                        Ok(()) => tracing::info!(%upload_id, "the ingester went away; upload id recorded as abandoned"),
                        Err(e) => tracing::warn!(%upload_id, error = %e, "recording an abandoned upload id failed"),
                    }
                }
            }
        });
        Some(finished.drop_guard())
    }

    /// What a known upload id means for a new attempt with it: `Ok(Some(record))` replays the
    /// file it produced, `Ok(None)` lets the attempt through (an unknown id), and a cancelled id
    /// or one whose file has since been deleted is refused (410).
    async fn existing_upload(
        &self,
        upload_id: Uuid,
        state: store::UploadIdState,
    ) -> Result<Option<FileRecord>, ElementError> {
        match state {
            store::UploadIdState::Unknown => Ok(None),
            store::UploadIdState::Abandoned => Err(ElementError::UploadCancelled(upload_id)),
            store::UploadIdState::Committed(file_id) => {
                match store::get(&self.pool, file_id).await? {
                    Some(row) => Ok(Some(row.record.0)),
                    None => Err(ElementError::UploadDeleted { upload_id, file_id }),
                }
            }
        }
    }

    /// Forgets upload ids older than [`UPLOAD_ID_MEMORY`], at most every ten minutes (called
    /// from the paths that add ids, so the table stays bounded without a schedule).
    async fn prune_upload_ids(&self) {
        let now = Utc::now().timestamp();
        let last = self.upload_ids_pruned_at.load(Ordering::Relaxed);
        if now - last < 600
            || self
                .upload_ids_pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let grace = chrono::Duration::from_std(self.settings.orphan_blob_grace)
            .unwrap_or(chrono::Duration::hours(1));
        match store::prune_upload_ids(&self.pool, Utc::now() - UPLOAD_ID_MEMORY, grace).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "forgot old upload ids"),
            Err(e) => tracing::warn!(error = %e, "pruning upload ids failed"),
        }
    }

    /// Cancels an ingester's upload it gave up on (`DELETE /api/v1/uploads/{id}`): remembers the
    /// id as cancelled, so an attempt still in flight rolls back at its commit point, and
    /// deletes the file it committed if it did (announced as `file.deleted`, like any delete).
    /// Returns that file's id. Idempotent; works in every mode, since it undoes a write the
    /// element should never have made.
    pub async fn cancel_upload(&self, upload_id: Uuid) -> Result<Option<Uuid>, ElementError> {
        self.prune_upload_ids().await;
        let mut tx = self.pool.begin().await?;
        let file_id = store::abandon_upload_id(&mut tx, upload_id).await?;
        tx.commit().await?;
        let Some(file_id) = file_id else {
            tracing::info!(%upload_id, "upload cancelled before it committed");
            return Ok(None);
        };
        match self.delete_unchecked(None, file_id).await {
            Ok(()) => {
                tracing::info!(%upload_id, %file_id, "cancelled upload's file deleted");
                Ok(Some(file_id))
            }
            // Deleted already (by its owner, or by an earlier cancel).
            Err(ElementError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The record, refreshed from its sidecar first when the cache row has expired (unless a
    /// rebuild holds the cache, in which case the stale row is served as it is).
    pub async fn get(&self, file_id: Uuid) -> Result<FileView, ElementError> {
        let row = store::get(&self.pool, file_id)
            .await?
            .ok_or(ElementError::NotFound(file_id))?;
        if !self.is_expired(row.cache_updated_at) {
            return Ok(self.view(row));
        }
        match self.lazy_refresh(file_id).await {
            Ok(Some(view)) => Ok(view),
            Ok(None) => Err(ElementError::NotFound(file_id)),
            Err(ElementError::NotFound(id)) => Err(ElementError::NotFound(id)),
            Err(e) => {
                tracing::warn!(%file_id, error = %e, "lazy refresh failed; serving the stale row");
                Ok(self.view(row))
            }
        }
    }

    /// Re-reads an expired row's sidecar. `Ok(None)` when the file turned out to be gone.
    async fn lazy_refresh(&self, file_id: Uuid) -> Result<Option<FileView>, ElementError> {
        let mut tx = self.pool.begin().await?;
        if !store::try_lock_for_refresh(&mut tx).await? {
            tracing::debug!(%file_id, "cache maintenance holds the lock; lazy refresh skipped");
            let row = store::get(&self.pool, file_id)
                .await?
                .ok_or(ElementError::NotFound(file_id))?;
            return Ok(Some(self.view(row)));
        }
        let Some(row) = store::get_for_update(&mut tx, file_id).await? else {
            return Ok(None);
        };
        if !self.is_expired(row.cache_updated_at) {
            return Ok(Some(self.view(row)));
        }
        let key = layout::sidecar_key(&row.record.storage_key);
        match self.read_sidecar(&key).await {
            Ok(sidecar) if sidecar.file_id == file_id => {
                if store::update_if_newer(&mut tx, &sidecar).await? {
                    store::enqueue(&mut tx, EventType::Updated, &sidecar).await?;
                } else {
                    store::touch(&mut tx, file_id).await?;
                }
            }
            Ok(_) => {
                return Err(ElementError::BadSidecar {
                    key,
                    reason: "it describes another file".into(),
                });
            }
            Err(ElementError::Backend(BackendError::NotFound(_))) => {
                store::delete_and_announce(&mut tx, file_id).await?;
                tx.commit().await?;
                self.used.forget();
                self.relay_wake.notify_one();
                tracing::info!(%file_id, "lazy refresh: sidecar gone, cache row removed");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        tx.commit().await?;
        self.relay_wake.notify_one();
        tracing::info!(%file_id, "lazy refresh of an expired cache row");
        let row = store::get(&self.pool, file_id)
            .await?
            .ok_or(ElementError::NotFound(file_id))?;
        Ok(Some(self.view(row)))
    }

    pub async fn read_sidecar(&self, key: &str) -> Result<FileRecord, ElementError> {
        Ok(self.read_sidecar_with_upload_id(key).await?.record)
    }

    /// The sidecar with the upload id it carries (maintenance needs both).
    pub async fn read_sidecar_with_upload_id(&self, key: &str) -> Result<Sidecar, ElementError> {
        let bytes = self.backend.get_small(key).await?;
        Sidecar::parse(key, &bytes)
    }

    fn check_owner(record: &FileRecord, caller: &Caller) -> Result<(), ElementError> {
        if caller.is_admin || record.created_by == caller.sub {
            Ok(())
        } else {
            Err(ElementError::Forbidden(format!(
                "file {} belongs to {}; only its owner or an admin may change it",
                record.file_id, record.created_by
            )))
        }
    }

    /// Changes description and/or tags: sidecar first, then cache + `file.updated`, under the
    /// row's lock so concurrent changes of one file apply one after the other.
    pub async fn patch(
        &self,
        caller: &Caller,
        file_id: Uuid,
        patch: MetadataPatch,
    ) -> Result<FileView, ElementError> {
        self.require_editable()?;
        if let Some(Some(d)) = &patch.description {
            validate_description(d)?;
        }
        let tags = patch.tags.map(normalise_tags).transpose()?;
        let mut tx = store::begin_write(&self.pool).await?;
        let row = store::get_for_update(&mut tx, file_id)
            .await?
            .ok_or(ElementError::NotFound(file_id))?;
        let mut record = row.record.0;
        Self::check_owner(&record, caller)?;
        if let Some(description) = patch.description {
            record.description = description.filter(|d| !d.trim().is_empty());
        }
        if let Some(tags) = tags {
            record.tags = tags;
        }
        record.version += 1;
        record.updated_at = Utc::now();
        let sidecar = layout::sidecar_key(&record.storage_key);
        let bytes = sidecar_bytes(&record)?;
        self.backend.put_small(&sidecar, bytes.clone()).await?;
        self.crash_at(CrashPoint::AfterSidecar)?;
        self.pause_at(CrashPoint::AfterSidecar).await;
        if store::update_if_newer(&mut tx, &record).await? {
            store::enqueue(&mut tx, EventType::Updated, &record).await?;
        }
        tx.commit().await?;
        self.relay_wake.notify_one();
        self.packs.record(&sidecar, &bytes);
        let row = store::get(&self.pool, file_id)
            .await?
            .ok_or(ElementError::NotFound(file_id))?;
        Ok(self.view(row))
    }

    /// Deletes sidecar, blob, cache row, and announces `file.deleted` with the next version.
    pub async fn delete(&self, caller: &Caller, file_id: Uuid) -> Result<(), ElementError> {
        self.require_editable()?;
        self.delete_unchecked(Some(caller), file_id).await
    }

    /// The delete steps; `caller: None` is the system (retention sweep).
    pub async fn delete_unchecked(
        &self,
        caller: Option<&Caller>,
        file_id: Uuid,
    ) -> Result<(), ElementError> {
        let mut tx = store::begin_write(&self.pool).await?;
        let row = store::get_for_update(&mut tx, file_id)
            .await?
            .ok_or(ElementError::NotFound(file_id))?;
        if let Some(caller) = caller {
            Self::check_owner(&row.record, caller)?;
        }
        let key = row.record.storage_key.clone();
        // The sidecar is the truth: once it is gone the file is gone, whatever happens next.
        self.backend.delete(&layout::sidecar_key(&key)).await?;
        self.crash_at(CrashPoint::AfterSidecar)?;
        self.pause_at(CrashPoint::AfterSidecar).await;
        self.backend.delete(&key).await?;
        self.crash_at(CrashPoint::AfterBlob)?;
        store::delete_and_announce(&mut tx, file_id).await?;
        tx.commit().await?;
        self.used.forget();
        self.relay_wake.notify_one();
        tracing::info!(%file_id, "file deleted");
        Ok(())
    }

    /// Keyset pagination in file id order (ids are time-ordered UUIDv7).
    pub async fn list(&self, limit: i64, cursor: Option<Uuid>) -> Result<FileList, ElementError> {
        let (total, _) = store::file_count_and_bytes(&self.pool).await?;
        let rows: Vec<store::CacheRow> = sqlx::query_as(
            "SELECT record, cache_updated_at FROM files
             WHERE file_id > $1
             ORDER BY file_id LIMIT $2",
        )
        .bind(cursor.unwrap_or(Uuid::nil()))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > limit;
        let files: Vec<FileView> = rows
            .into_iter()
            .take(limit as usize)
            .map(|r| self.view(r))
            .collect();
        let next_cursor = if more {
            files.last().map(|f| f.record.file_id.to_string())
        } else {
            None
        };
        Ok(FileList {
            total,
            files,
            next_cursor,
        })
    }

    pub async fn status(&self) -> Result<ElementStatus, ElementError> {
        let (count, bytes) = store::file_count_and_bytes(&self.pool).await?;
        Ok(ElementStatus {
            id: self.settings.id.clone(),
            mode: self.settings.mode,
            priority: self.settings.priority,
            capacity_bytes: self.settings.capacity_bytes,
            used_bytes: bytes.max(0) as u64,
            file_count: count.max(0) as u64,
            backend: self.backend.kind().to_string(),
        })
    }
}

/// Who asks: the token's subject and whether it is an admin.
#[derive(Debug, Clone)]
pub struct Caller {
    pub sub: String,
    pub is_admin: bool,
}
