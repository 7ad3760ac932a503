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
//! had to read one by one and, when most packed entries are dead or the packs are many small
//! ones, rewrites them. (No flush on a timer: a quiet element would make a small pack per tick.)

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
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
    /// `None` when the bytes are no UTF-8 (no sidecar the element writes; such a file is simply
    /// read one by one).
    pub fn new(key: &str, sidecar: &[u8]) -> Option<PackEntry> {
        Some(PackEntry {
            key: key.to_string(),
            sidecar: String::from_utf8(sidecar.to_vec()).ok()?,
        })
    }
}

pub fn encode(entries: &[PackEntry]) -> Result<Bytes, BackendError> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.sidecar.len() + 128).sum());
    for entry in entries {
        serde_json::to_writer(&mut out, entry).map_err(BackendError::storage)?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// The pack's entries, and how many of its lines were not entries.
pub fn decode(bytes: &[u8]) -> (Vec<PackEntry>, usize) {
    let mut bad = 0;
    let entries = bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let entry = serde_json::from_slice(line).ok();
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
}

impl Packer {
    pub fn new(backend: Arc<dyn BlobBackend>) -> Self {
        Packer {
            backend,
            pending: Mutex::new(Vec::new()),
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
        if let Some(entries) = full {
            let backend = self.backend.clone();
            tokio::spawn(async move { write_logged(backend.as_ref(), &entries).await });
        }
    }

    /// Writes what is pending as a pack now; returns how many sidecars it held.
    pub async fn flush(&self) -> usize {
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
        let good = PackEntry::new("k.attr.json", b"{}").expect("utf-8");
        let mut bytes = encode(std::slice::from_ref(&good))
            .expect("encode")
            .to_vec();
        bytes.extend_from_slice(b"not json\n{\"key\": \"k\"}\n");
        assert_eq!(decode(&bytes), (vec![good], 2));
    }

    #[test]
    fn bytes_that_are_no_text_are_not_packed() {
        assert_eq!(PackEntry::new("k", &[0xff, 0xfe]), None);
    }

    #[test]
    fn pack_keys_are_outside_the_file_layout() {
        let key = layout::pack_key(Utc::now(), Uuid::now_v7());
        assert!(layout::is_pack_key(&key));
        assert_eq!(layout::file_id_of_blob_key(&key), None);
        assert_eq!(layout::blob_key_of_sidecar(&key), None);
    }
}
