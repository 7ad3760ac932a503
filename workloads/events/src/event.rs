//! A stream entry: `type`, `event_id`, `file_id`, `version`, `storage_element_id`, `occurred_at`
//! and `payload` (the file record as JSON), as the HTTP contract fixes them.

use std::collections::HashMap;

use artstore_contract::{event_types, stream_fields as f};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    Temporary,
    Permanent,
}

/// The file record: what a storage element's sidecar holds, what the cache rows mirror and what
/// every event carries as `payload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileRecord {
    pub file_id: Uuid,
    pub original_filename: String,
    /// Object key of the blob inside its storage element (`YYYY/MM/DD/HH/<stem>_<user>_<ts>_<uuid>.<ext>`).
    pub storage_key: String,
    pub size: u64,
    pub sha256: String,
    pub mime_type: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub storage_element_id: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub retention: Retention,
    #[serde(default)]
    pub retention_expires_at: Option<DateTime<Utc>>,
    /// Per-file version: starts at 1 and increases with every change (delete included).
    pub version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Created,
    Updated,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => event_types::FILE_CREATED,
            EventType::Updated => event_types::FILE_UPDATED,
            EventType::Deleted => event_types::FILE_DELETED,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            event_types::FILE_CREATED => Some(EventType::Created),
            event_types::FILE_UPDATED => Some(EventType::Updated),
            event_types::FILE_DELETED => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// One event on the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct FileEvent {
    pub event_type: EventType,
    pub event_id: Uuid,
    pub file_id: Uuid,
    pub version: i64,
    pub storage_element_id: String,
    pub occurred_at: DateTime<Utc>,
    /// The record after the change (for `file.deleted`, the record as it was, with the new version).
    pub payload: FileRecord,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventDecodeError {
    #[error("field {0:?} is missing")]
    Missing(&'static str),
    #[error("field {field:?} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl FileEvent {
    pub fn new(event_type: EventType, payload: FileRecord, occurred_at: DateTime<Utc>) -> Self {
        FileEvent {
            event_type,
            event_id: Uuid::now_v7(),
            file_id: payload.file_id,
            version: payload.version,
            storage_element_id: payload.storage_element_id.clone(),
            occurred_at,
            payload,
        }
    }

    /// The entry's fields, in contract order, ready for XADD.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (f::TYPE, self.event_type.as_str().to_string()),
            (f::EVENT_ID, self.event_id.to_string()),
            (f::FILE_ID, self.file_id.to_string()),
            (f::VERSION, self.version.to_string()),
            (f::STORAGE_ELEMENT_ID, self.storage_element_id.clone()),
            (f::OCCURRED_AT, self.occurred_at.to_rfc3339()),
            (
                f::PAYLOAD,
                serde_json::to_string(&self.payload).unwrap_or_else(|_| "{}".to_string()),
            ),
        ]
    }

    /// Decodes an entry's fields (as strings). Anything malformed is an error, never a panic:
    /// the consumer dead-letters what it cannot decode.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, EventDecodeError> {
        let get = |name: &'static str| fields.get(name).ok_or(EventDecodeError::Missing(name));
        let invalid =
            |field: &'static str, reason: String| EventDecodeError::Invalid { field, reason };
        let type_text = get(f::TYPE)?;
        let event_type = EventType::parse(type_text)
            .ok_or_else(|| invalid(f::TYPE, format!("unknown event type {type_text:?}")))?;
        let event_id = get(f::EVENT_ID)?
            .parse::<Uuid>()
            .map_err(|e| invalid(f::EVENT_ID, e.to_string()))?;
        let file_id = get(f::FILE_ID)?
            .parse::<Uuid>()
            .map_err(|e| invalid(f::FILE_ID, e.to_string()))?;
        let version = get(f::VERSION)?
            .parse::<i64>()
            .map_err(|e| invalid(f::VERSION, e.to_string()))?;
        if version < 1 {
            return Err(invalid(f::VERSION, "must be at least 1".into()));
        }
        let storage_element_id = get(f::STORAGE_ELEMENT_ID)?.clone();
        let occurred_at = DateTime::parse_from_rfc3339(get(f::OCCURRED_AT)?)
            .map_err(|e| invalid(f::OCCURRED_AT, e.to_string()))?
            .with_timezone(&Utc);
        let payload: FileRecord = serde_json::from_str(get(f::PAYLOAD)?)
            .map_err(|e| invalid(f::PAYLOAD, e.to_string()))?;
        if payload.file_id != file_id {
            return Err(invalid(
                f::PAYLOAD,
                "payload file_id differs from file_id".into(),
            ));
        }
        Ok(FileEvent {
            event_type,
            event_id,
            file_id,
            version,
            storage_element_id,
            occurred_at,
            payload,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample_record() -> FileRecord {
        let now = Utc::now();
        FileRecord {
            file_id: Uuid::new_v4(),
            original_filename: "report.pdf".into(),
            storage_key: "2026/11/23/20/report_alice_20261123T200000_x.pdf".into(),
            size: 42,
            sha256: "ab".repeat(32),
            mime_type: "application/pdf".into(),
            description: Some("quarterly".into()),
            tags: vec!["finance".into()],
            storage_element_id: "se-a".into(),
            created_at: now,
            created_by: "alice".into(),
            updated_at: now,
            retention: Retention::Permanent,
            retention_expires_at: None,
            version: 3,
        }
    }

    #[test]
    fn fields_round_trip() {
        let event = FileEvent::new(EventType::Updated, sample_record(), Utc::now());
        let fields: HashMap<String, String> = event
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let back = FileEvent::from_fields(&fields).expect("decodes");
        assert_eq!(back.event_id, event.event_id);
        assert_eq!(back.version, 3);
        assert_eq!(back.payload, event.payload);
        assert_eq!(back.event_type, EventType::Updated);
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        let event = FileEvent::new(EventType::Created, sample_record(), Utc::now());
        let good: HashMap<String, String> = event
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut missing = good.clone();
        missing.remove(f::PAYLOAD);
        assert_eq!(
            FileEvent::from_fields(&missing),
            Err(EventDecodeError::Missing("payload"))
        );
        let mut bad_type = good.clone();
        bad_type.insert(f::TYPE.into(), "file.exploded".into());
        assert!(FileEvent::from_fields(&bad_type).is_err());
        let mut bad_version = good.clone();
        bad_version.insert(f::VERSION.into(), "0".into());
        assert!(FileEvent::from_fields(&bad_version).is_err());
        let mut bad_json = good;
        bad_json.insert(f::PAYLOAD.into(), "{not json".into());
        assert!(FileEvent::from_fields(&bad_json).is_err());
    }
}
