//! Sidecar packs: copies of many sidecars in one object, so a full rebuild reads a thousand
//! sidecars with one GET instead of a thousand. A pack is only ever a shortcut: a rebuild takes a
//! packed sidecar only when the MD5 of its packed bytes equals the MD5 the listing gives for the
//! stored sidecar under the same key, so a pack that is stale, partial, damaged or forged can
//! cost a read, never change what is restored. Packs are kept only on backends whose listing
//! gives each object's MD5 (S3).
//!
//! A pack is NDJSON, one `{"key": <sidecar key>, "sidecar": <its bytes as a string>}` per line,
//! under [`layout::PACK_PREFIX`]. The element packs the sidecars it writes (uploads, edits) a
//! thousand at a time, and what is left when it shuts down; a full rebuild packs the sidecars it
//! had to read one by one and, when any packed entry is dead or the packs are more than the live
//! entries need, rewrites them. (No flush on a timer: a quiet element would make a small pack
//! per tick.)

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::backend::{BackendError, BlobBackend};
use crate::layout;

/// Sidecars per pack.
pub const PACK_ENTRIES: usize = 1000;

/// One packed sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackEntry {
    pub key: String,
    pub sidecar: String,
}

impl PackEntry {
    /// `None` for what no pack holds: a key that is no sidecar's, bytes that are no UTF-8 or
    /// hold a NUL (PostgreSQL's text refuses it; no sidecar the element writes has one). Such a
    /// sidecar is simply read one by one.
    pub fn new(key: &str, sidecar: &[u8]) -> Option<PackEntry> {
        let entry = PackEntry {
            key: key.to_string(),
            sidecar: String::from_utf8(sidecar.to_vec()).ok()?,
        };
        entry.is_packable().then_some(entry)
    }

    fn is_packable(&self) -> bool {
        layout::blob_key_of_sidecar(&self.key).is_some()
            && !self.key.contains('\0')
            && !self.sidecar.contains('\0')
    }
}

/// The lowercase hex MD5 of `bytes`, as an S3 listing gives it.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

pub fn encode(entries: &[PackEntry]) -> Result<Bytes, BackendError> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.sidecar.len() + 128).sum());
    for entry in entries {
        serde_json::to_writer(&mut out, entry).map_err(BackendError::storage)?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// The pack's entries, and how many of its lines were not entries (or none a pack may hold).
pub fn decode(bytes: &[u8]) -> (Vec<PackEntry>, usize) {
    let mut bad = 0;
    let entries = bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let entry = serde_json::from_slice::<PackEntry>(line)
                .ok()
                .filter(PackEntry::is_packable);
            bad += usize::from(entry.is_none());
            entry
        })
        .collect();
    (entries, bad)
}

/// Stores `entries` as a new pack; returns its key.
pub async fn write(
    backend: &dyn BlobBackend,
    entries: &[PackEntry],
) -> Result<String, BackendError> {
    let key = layout::pack_key(Utc::now(), Uuid::now_v7());
    backend.put_small(&key, encode(entries)?).await?;
    Ok(key)
}

/// The sidecars the element wrote since its last pack. Best effort by design: a pack lost with
/// a crash or a failed write only means those sidecars are read one by one by the next full
/// rebuild (which then packs them).
pub struct Packer {
    backend: Arc<dyn BlobBackend>,
    pending: Mutex<Vec<PackEntry>>,
    /// Full packs on their way to the backend ([`Packer::flush`] waits for them).
    writing: Mutex<JoinSet<()>>,
}

/// Full packs written at once, at most; beyond that a full pack is dropped (a slow backend
/// must not pile up memory), its sidecars left to the next full rebuild.
const WRITES_IN_FLIGHT: usize = 4;

impl Packer {
    pub fn new(backend: Arc<dyn BlobBackend>) -> Self {
        Packer {
            backend,
            pending: Mutex::new(Vec::new()),
            writing: Mutex::new(JoinSet::new()),
        }
    }

    /// Notes a sidecar the element has just stored and committed. A full pack is written in
    /// the background; the caller never waits for it.
    pub fn record(&self, key: &str, sidecar: &[u8]) {
        if !self.backend.lists_content_md5() {
            return;
        }
        let Some(entry) = PackEntry::new(key, sidecar) else {
            return;
        };
        let full = {
            let Ok(mut pending) = self.pending.lock() else {
                return;
            };
            pending.push(entry);
            (pending.len() >= PACK_ENTRIES).then(|| std::mem::take(&mut *pending))
        };
        let (Some(entries), Ok(mut writing)) = (full, self.writing.lock()) else {
            return;
        };
        while writing.try_join_next().is_some() {}
        if writing.len() >= WRITES_IN_FLIGHT {
            tracing::warn!(
                sidecars = entries.len(),
                "sidecar packs are not keeping up; a full rebuild reads these sidecars one by one"
            );
            return;
        }
        let backend = self.backend.clone();
        writing.spawn(async move { write_logged(backend.as_ref(), &entries).await });
    }

    /// Writes what is pending as a pack now, after the full packs still on their way; returns
    /// how many sidecars the new pack held.
    pub async fn flush(&self) -> usize {
        let writing = match self.writing.lock() {
            Ok(mut writing) => std::mem::take(&mut *writing),
            Err(_) => JoinSet::new(),
        };
        writing.join_all().await;
        let entries = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return 0,
        };
        if entries.is_empty() {
            return 0;
        }
        write_logged(self.backend.as_ref(), &entries).await;
        entries.len()
    }
}

async fn write_logged(backend: &dyn BlobBackend, entries: &[PackEntry]) {
    match write(backend, entries).await {
        Ok(key) => tracing::debug!(%key, sidecars = entries.len(), "sidecar pack written"),
        Err(e) => tracing::warn!(
            error = %e,
            sidecars = entries.len(),
            "sidecar pack not written; a full rebuild reads these sidecars one by one"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_keeps_each_sidecar_byte_for_byte() {
        let entries = vec![
            PackEntry::new("2026/a.bin.attr.json", b"{\n  \"x\": \"\\u00e9\\n\"\n}")
                .expect("utf-8"),
            PackEntry::new("2026/b.bin.attr.json", "{\"name\": \"é\"}".as_bytes()).expect("utf-8"),
        ];
        let bytes = encode(&entries).expect("encode");
        assert_eq!(
            bytes.iter().filter(|b| **b == b'\n').count(),
            2,
            "one line each"
        );
        assert_eq!(decode(&bytes), (entries, 0));
    }

    #[test]
    fn lines_that_are_no_entries_are_counted_and_skipped() {
        let good = PackEntry::new("k.attr.json", b"{}").expect("packable");
        let mut bytes = encode(std::slice::from_ref(&good))
            .expect("encode")
            .to_vec();
        bytes.extend_from_slice(b"not json\n{\"key\": \"k\"}\n");
        assert_eq!(decode(&bytes), (vec![good], 2));
    }

    #[test]
    fn what_no_pack_may_hold_is_not_packed_nor_read_back() {
        assert_eq!(
            PackEntry::new("a.attr.json", &[0xff, 0xfe]),
            None,
            "no UTF-8"
        );
        assert_eq!(
            PackEntry::new("a.attr.json", b"{\"x\": \"\0\"}"),
            None,
            "NUL"
        );
        assert_eq!(PackEntry::new("a.bin", b"{}"), None, "no sidecar key");
        let forged = b"{\"key\":\"a.attr.json\",\"sidecar\":\"\\u0000\"}\n{\"key\":\"a.bin\",\"sidecar\":\"{}\"}\n";
        assert_eq!(decode(forged), (vec![], 2));
    }

    #[test]
    fn md5_is_the_one_an_s3_listing_gives() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn pack_keys_are_outside_the_file_layout() {
        let key = layout::pack_key(Utc::now(), Uuid::now_v7());
        assert!(layout::is_pack_key(&key));
        assert_eq!(layout::file_id_of_blob_key(&key), None);
        assert_eq!(layout::blob_key_of_sidecar(&key), None);
    }
}
