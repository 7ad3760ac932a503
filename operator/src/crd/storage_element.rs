//! `StorageElement`: one storage node (S3 bucket or local volume, PostgreSQL cache).
#![allow(clippy::duplicated_attributes)] // each printcolumn(...) repeats `type_`

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AuthSpec, Condition, DatabaseRef, JobPhase, SecretKeyRef};

/// Annotation that asks for one rebuild: `full` or `incremental`, optionally `@<token>`
/// (`full@2026-11-23`) so the same mode can be asked for again. Each distinct value runs once.
pub const REBUILD_ANNOTATION: &str = "artstore.io/rebuild";

const CRON: &str = "self.matches('^\\\\S+( +\\\\S+){4}$')";

#[derive(CustomResource, kube::KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "artstore.io",
    version = "v1alpha1",
    kind = "StorageElement",
    namespaced,
    doc = "One storage node: S3 bucket or volume, its PostgreSQL cache, maintenance schedules",
    status = "StorageElementStatus",
    shortname = "ase",
    category = "artstore",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Capacity", type_ = "string", json_path = ".spec.capacity"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.usedBytes"),
    printcolumn(name = "Files", type_ = "integer", json_path = ".status.fileCount"),
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
pub struct StorageElementSpec {
    /// Element id on the stream and in file records; defaults to the resource name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message("elementId must be a DNS label"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("elementId is immutable"))]
    #[schemars(length(max = 63))]
    pub element_id: Option<String>,
    pub mode: Mode,
    /// Higher priority fills first.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000000").message("priority must be between 0 and 1000000"))]
    pub priority: i32,
    /// Bytes the element may hold, a quantity like `500Gi`.
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("capacity must be a quantity greater than 0"))]
    pub capacity: Quantity,
    /// Largest single file, a quantity; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("maxFileSize must be a quantity greater than 0"))]
    pub max_file_size: Option<Quantity>,
    pub backend: Backend,
    pub database: DatabaseRef,
    pub auth: AuthSpec,
    /// Name of the EventStream (same namespace) the element announces changes on.
    #[x_kube(validation = Rule::new("self.size() > 0").message("eventStreamRef must not be empty"))]
    #[schemars(length(max = 253))]
    pub event_stream_ref: String,
    /// Hours a cache row stays fresh before a lazy refresh from its sidecar.
    #[serde(default = "default_cache_ttl_hours")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 8760").message("cacheTtlHours must be between 1 and 8760"))]
    pub cache_ttl_hours: u32,
    #[serde(default)]
    pub maintenance: Maintenance,
    /// Container image; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Who may reach the element's pods (a NetworkPolicy the operator keeps).
    #[serde(default)]
    pub network_policy: ElementNetworkPolicy,
}

/// The element's pods accept traffic only from the namespace's ingesters and query nodes, the
/// element's own Jobs, query nodes' backfill Jobs, the operator and `allowFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElementNetworkPolicy {
    /// `false`: no NetworkPolicy (an existing one of the operator's is deleted).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// More peers allowed to reach the element's port, e.g. the Prometheus that scrapes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allow_from: Vec<NetworkPolicyPeer>,
}

impl Default for ElementNetworkPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_from: Vec::new(),
        }
    }
}

fn enabled() -> bool {
    true
}

fn default_cache_ttl_hours() -> u32 {
    24
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Edit,
    Rw,
    Ro,
    Ar,
}

impl From<Mode> for artstore_contract::ElementMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Edit => Self::Edit,
            Mode::Rw => Self::Rw,
            Mode::Ro => Self::Ro,
            Mode::Ar => Self::Ar,
        }
    }
}

/// Exactly one of `s3` or `volume`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.volume)").message("exactly one backend (s3 or volume) must be set"))]
pub struct Backend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeBackend>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Backend {
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("endpoint must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub endpoint: String,
    #[x_kube(validation = Rule::new("self.size() >= 3 && self.size() <= 63").message("bucket must be 3 to 63 characters"))]
    #[schemars(length(max = 63))]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub access_key_id_ref: SecretKeyRef,
    pub secret_access_key_ref: SecretKeyRef,
}

/// Immutable once set: a StatefulSet's claim templates cannot change, so the API server would
/// refuse the operator's update (grow the PersistentVolumeClaim itself instead).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.size == oldSelf.size").message("volume.size is immutable: a StatefulSet's claim template cannot change; expand the PersistentVolumeClaim instead"))]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("volume.storageClassName is immutable"))]
pub struct VolumeBackend {
    /// Size of the PersistentVolumeClaim.
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("volume.size must be a quantity greater than 0"))]
    pub size: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

/// Cron schedules (five fields) of the maintenance runs; each absent one is not scheduled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Maintenance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(CRON).message("consistencyCheck must be a five-field cron schedule"))]
    #[schemars(length(max = 128))]
    pub consistency_check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(CRON).message("incrementalRebuild must be a five-field cron schedule"))]
    #[schemars(length(max = 128))]
    pub incremental_rebuild: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(CRON).message("cleanupExpired must be a five-field cron schedule"))]
    #[schemars(length(max = 128))]
    pub cleanup_expired: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(CRON).message("retentionSweep must be a five-field cron schedule"))]
    #[schemars(length(max = 128))]
    pub retention_sweep: Option<String>,
}

impl Maintenance {
    /// `(rebuild --mode, schedule)` of every scheduled run, in a fixed order.
    pub fn schedules(&self) -> Vec<(&'static str, &str)> {
        [
            ("consistency", &self.consistency_check),
            ("incremental", &self.incremental_rebuild),
            ("cleanup-expired", &self.cleanup_expired),
            ("retention", &self.retention_sweep),
        ]
        .into_iter()
        .filter_map(|(mode, s)| s.as_deref().map(|s| (mode, s)))
        .collect()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageElementStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Base URL of the element's API inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<JobRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_consistency_report: Option<ConsistencySummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rebuild: Option<RebuildRecord>,
}

/// A Job the operator started and what became of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub job_name: String,
    pub phase: JobPhase,
}

/// One handled `artstore.io/rebuild` request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildRecord {
    /// The annotation value that asked for it; the same value never runs twice.
    pub request: String,
    pub mode: String,
    pub job_name: String,
    pub phase: JobPhase,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// The element's last consistency report, in brief.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsistencySummary {
    pub checked_at: String,
    pub is_consistent: bool,
    pub inconsistency_percentage: f64,
    pub orphan_cache_count: u64,
    pub orphan_attr_count: u64,
    pub expired_cache_count: u64,
}

impl StorageElement {
    /// Element id: `spec.elementId` or the resource name.
    pub fn element_id(&self) -> String {
        self.spec
            .element_id
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
