//! The `.attr.json` sidecar: the file's record (the same fields as the cache row and the
//! events) plus what only the element itself needs to read back, today the ingester's upload id.

use artstore_events::FileRecord;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ElementError;

/// One sidecar as stored. Old sidecars (without `upload_id`) read as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    #[serde(flatten)]
    pub record: FileRecord,
    /// The ingester's `X-Artstore-Upload-Id` of the upload that wrote the file, when it had one.
    /// A rebuild meeting this sidecar without a cache row asks the `uploads` table whether the
    /// ingester gave up on that upload (then the file is a leftover of a crash before the
    /// commit, not a file to restore). A PATCH rewrites the sidecar without it: by then the
    /// upload has committed and the id is in the `uploads` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<Uuid>,
}

impl Sidecar {
    pub fn to_bytes(&self) -> Result<Bytes, ElementError> {
        serde_json::to_vec_pretty(self)
            .map(Bytes::from)
            .map_err(|e| ElementError::invalid("invalid_record", e.to_string()))
    }

    pub fn parse(key: &str, bytes: &[u8]) -> Result<Sidecar, ElementError> {
        serde_json::from_slice(bytes).map_err(|e| ElementError::BadSidecar {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> FileRecord {
        let now = chrono::Utc::now();
        FileRecord {
            file_id: Uuid::now_v7(),
            original_filename: "a.txt".into(),
            storage_key: "2026/01/01/00/a_u_1_x.txt".into(),
            size: 3,
            sha256: "00".into(),
            mime_type: "text/plain".into(),
            description: None,
            tags: vec!["t".into()],
            storage_element_id: "se".into(),
            created_at: now,
            created_by: "u".into(),
            updated_at: now,
            retention: artstore_events::Retention::Permanent,
            retention_expires_at: None,
            version: 1,
        }
    }

    #[test]
    fn an_old_sidecar_reads_without_upload_id() {
        let record = record();
        let old = serde_json::to_vec(&record).expect("json");
        let read = Sidecar::parse("k", &old).expect("parse");
        assert_eq!(read.record, record);
        assert_eq!(read.upload_id, None);
    }

    #[test]
    fn the_upload_id_round_trips_and_is_left_out_when_absent() {
        let id = Uuid::new_v4();
        let with = Sidecar {
            record: record(),
            upload_id: Some(id),
        };
        let bytes = with.to_bytes().expect("bytes");
        assert_eq!(Sidecar::parse("k", &bytes).expect("parse"), with);
        let without = Sidecar {
            record: record(),
            upload_id: None,
        };
        let text = String::from_utf8(without.to_bytes().expect("bytes").to_vec()).expect("utf8");
        assert!(!text.contains("upload_id"), "{text}");
        // The record alone reads a new sidecar too (the upload id is an extra field).
        let _: FileRecord = serde_json::from_slice(&bytes).expect("record");
    }
}
