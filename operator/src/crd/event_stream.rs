//! `EventStream`: a Redis Stream, its consumer groups, retention and dead-letter policy.
#![allow(clippy::duplicated_attributes)] // each printcolumn(...) repeats `type_`

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, RedisRef};

#[derive(CustomResource, kube::KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "artstore.io",
    version = "v1alpha1",
    kind = "EventStream",
    namespaced,
    doc = "A Redis Stream, its consumer groups, retention and dead-letter policy",
    status = "EventStreamStatus",
    shortname = "aes",
    category = "artstore",
    printcolumn(name = "Stream", type_ = "string", json_path = ".spec.stream"),
    printcolumn(name = "Length", type_ = "integer", json_path = ".status.length"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
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
pub struct EventStreamSpec {
    pub redis: RedisRef,
    /// Redis key of the stream.
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 256").message("stream must be 1 to 256 characters"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("stream is immutable"))]
    #[schemars(length(max = 256))]
    pub stream: String,
    #[serde(default)]
    pub retention: Retention,
    /// Consumer groups the operator creates (query nodes add their own).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(g, self.exists_one(h, h.name == g.name))").message("group names must be unique"))]
    #[schemars(length(max = 64))]
    pub groups: Vec<ConsumerGroupSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterPolicy>,
    /// What happens to the Redis stream when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Retention: approximate maximum length and maximum age. Entries that some group has not yet
/// delivered or acknowledged are kept whatever their age.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxLength) || self.maxLength >= 1000").message("retention.maxLength must be at least 1000 (it is approximate)"))]
pub struct Retention {
    /// Approximate maximum number of entries (`XADD MAXLEN ~`), applied by the producers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Maximum age of an entry, a duration like `168h` or `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$') && duration(self) >= duration('1m')").message("retention.maxAge must be a duration of at least 1m, like 168h"))]
    #[schemars(length(max = 32))]
    pub max_age: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupSpec {
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 128").message("group name must be 1 to 128 characters"))]
    #[schemars(length(max = 128))]
    pub name: String,
    /// Where a new group starts: `0` (the whole retained stream) or `$` (only new entries).
    #[serde(default = "default_start_id")]
    #[x_kube(validation = Rule::new("self == '0' || self == '$'").message("startId must be 0 or $"))]
    #[schemars(length(max = 1))]
    pub start_id: String,
}

fn default_start_id() -> String {
    "0".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPolicy {
    /// Deliveries after which an entry moves to the dead-letter stream.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxDeliveries must be between 1 and 1000"))]
    pub max_deliveries: u32,
    /// Dead-letter stream; defaults to `<stream>:dead-letter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub stream: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the Redis stream (default): deleting the resource never deletes data.
    #[default]
    Retain,
    /// Delete the stream and its dead-letter stream from Redis.
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventStreamStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Sum of pending (delivered, unacknowledged) entries over all groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Largest lag (entries not yet delivered) over all groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    #[serde(default)]
    pub groups: Vec<GroupStatus>,
    /// Entries removed by the last age trim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trimmed: Option<u64>,
    /// Lowest id the last age trim kept (`XTRIM MINID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim_min_id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub name: String,
    pub consumers: u64,
    pub pending: u64,
    /// Entries not yet delivered to the group; absent when Redis cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    pub last_delivered_id: String,
}

impl EventStream {
    /// Dead-letter stream name (declared or derived).
    pub fn dead_letter_stream(&self) -> String {
        self.spec
            .dead_letter
            .as_ref()
            .and_then(|d| d.stream.clone())
            .unwrap_or_else(|| artstore_contract::default_dead_letter_stream(&self.spec.stream))
    }
}
