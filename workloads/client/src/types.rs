//! The JSON the APIs exchange, as the contract (docs/DESIGN) fixes it. Unknown fields of a
//! record are kept in `extra`, so printing a record loses nothing the server sent.

use serde::{Deserialize, Serialize};

/// A file record (ingester upload answer, query node and storage element `GET /files/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub file_id: String,
    pub original_filename: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub storage_element_id: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub retention_expires_at: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Form fields of an upload besides the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadMeta {
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// `temporary` or `permanent`.
    pub retention: Option<String>,
    pub retention_days: Option<u32>,
}

/// `PATCH /api/v1/files/{id}`: absent fields stay as they are; `tags` replaces the set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetadataPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// `POST /api/v1/search`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SearchRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub filters: Filters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<Sort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Filters {
    /// Exact (`application/pdf`) or a family (`image/*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Files carrying every one of these tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags_all: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags_any: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_min: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_max: Option<u64>,
    /// Inclusive, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_after: Option<String>,
    /// Exclusive, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_element_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sort {
    pub field: SortField,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<SortOrder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    Relevance,
    CreatedAt,
    Size,
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

/// One page of search results; `next_cursor` continues the same query (keyset paging).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SearchPage {
    pub results: Vec<FileRecord>,
    pub total_count: u64,
    #[serde(default)]
    pub total_count_capped: bool,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/files?limit=&cursor=` of a storage element.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FileList {
    pub total: u64,
    pub files: Vec<FileRecord>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_keep_unknown_fields_and_requests_omit_empty_ones() {
        let raw = json!({
            "file_id": "0190a0a0-0000-7000-8000-000000000001",
            "original_filename": "a.txt", "size": 3, "sha256": "ab",
            "storage_element_id": "se-a", "created_at": "2026-11-01T10:00:00Z",
            "tags": ["x"], "score": 0.5, "synced_at": null
        });
        let record: FileRecord = serde_json::from_value(raw.clone()).expect("record");
        assert_eq!(record.tags, vec!["x"]);
        assert_eq!(record.extra.get("score"), Some(&json!(0.5)));
        let back = serde_json::to_value(&record).expect("json");
        assert_eq!(back["score"], 0.5);
        assert_eq!(back["original_filename"], "a.txt");

        let request = SearchRequest {
            query: Some("kestrel".into()),
            filters: Filters {
                tags_all: vec!["birds".into()],
                ..Filters::default()
            },
            sort: Some(Sort {
                field: SortField::CreatedAt,
                order: Some(SortOrder::Desc),
            }),
            limit: Some(5),
            cursor: None,
        };
        assert_eq!(
            serde_json::to_value(&request).expect("json"),
            json!({"query": "kestrel", "filters": {"tags_all": ["birds"]},
                   "sort": {"field": "created_at", "order": "desc"}, "limit": 5})
        );
    }
}
