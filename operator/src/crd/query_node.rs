//! `QueryNode`: the read path (consumer of the stream, search index, downloads).
#![allow(clippy::duplicated_attributes)] // each printcolumn(...) repeats `type_`

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AuthSpec, Condition, DatabaseRef, JobPhase};

#[derive(CustomResource, kube::KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "artstore.io",
    version = "v1alpha1",
    kind = "QueryNode",
    namespaced,
    doc = "The read path: a stream consumer with a search index that serves search and download",
    status = "QueryNodeStatus",
    shortname = "aqn",
    category = "artstore",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Group", type_ = "string", json_path = ".status.consumerGroup"),
    printcolumn(
        name = "Backfill",
        type_ = "string",
        json_path = ".status.backfill.phase"
    ),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct QueryNodeSpec {
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("replicas must be between 0 and 100"))]
    pub replicas: i32,
    pub database: DatabaseRef,
    pub auth: AuthSpec,
    /// Name of the EventStream (same namespace) the node consumes.
    #[x_kube(validation = Rule::new("self.size() > 0").message("eventStreamRef must not be empty"))]
    #[schemars(length(max = 253))]
    pub event_stream_ref: String,
    /// Consumer group; defaults to `query-<name>`. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 128").message("consumerGroup must be 1 to 128 characters"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("consumerGroup is immutable"))]
    #[schemars(length(max = 128))]
    pub consumer_group: Option<String>,
    /// StorageElement names this node serves; all of the namespace when empty.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(s, s.size() > 0)").message("storageElements entries must not be empty"))]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub storage_elements: Vec<String>,
    /// Entries read per XREADGROUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("batchSize must be between 1 and 10000"))]
    pub batch_size: Option<u32>,
    /// The web console the node serves at `/console/`.
    #[serde(default)]
    pub console: ConsoleSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The web console of a query node (`/console/` on its Service).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleSpec {
    /// Serve the console (default true); false turns it off.
    #[serde(default = "default_console_enabled")]
    pub enabled: bool,
    /// The ingester's base URL as browsers reach it (for uploads, edits and deletes); that
    /// Ingester must list the console's origin in `spec.cors.allowedOrigins`. Without it the
    /// console only searches and downloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/?#]+(/[^\\\\s?#]*)?$')").message("console.ingesterUrl must be an http(s) URL without query or fragment"))]
    #[schemars(length(max = 2048))]
    pub ingester_url: Option<String>,
}

impl Default for ConsoleSpec {
    fn default() -> Self {
        ConsoleSpec {
            enabled: true,
            ingester_url: None,
        }
    }
}

fn default_console_enabled() -> bool {
    true
}

fn default_replicas() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryNodeStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillRecord {
    pub job_name: String,
    pub phase: JobPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

impl QueryNode {
    /// Consumer group: `spec.consumerGroup` or `query-<name>`.
    pub fn consumer_group(&self) -> String {
        self.spec.consumer_group.clone().unwrap_or_else(|| {
            format!(
                "query-{}",
                self.metadata.name.as_deref().unwrap_or_default()
            )
        })
    }
}
