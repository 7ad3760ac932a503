//! Types shared by the four kinds: secret references, conditions, the pause annotation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group and version of every ArtStore kind.
pub const GROUP: &str = "artstore.io";
pub const VERSION: &str = "v1alpha1";

/// Annotation that stops the operator from touching a resource's children.
pub const PAUSE_ANNOTATION: &str = "artstore.io/reconcile";
pub const PAUSE_VALUE: &str = "paused";

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self.size() > 0").message("secret name must not be empty"))]
    // The API server checks both in every Pod template that references them; caught here, a
    // bad reference is refused at `kubectl apply` instead of failing the operator's writes.
    #[x_kube(validation = Rule::new("self.size() == 0 || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secret name must be a DNS subdomain (lowercase letters, digits, '-' and '.')"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[x_kube(validation = Rule::new("self.size() > 0").message("secret key must not be empty"))]
    #[x_kube(validation = Rule::new("self.size() == 0 || self.matches('^[-._a-zA-Z0-9]+$')").message("secret key may hold only letters, digits, '-', '_' and '.'"))]
    #[schemars(length(max = 253))]
    pub key: String,
}

/// A PostgreSQL database: its URL is a Secret key (it carries the password).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRef {
    pub url_secret_ref: SecretKeyRef,
}

/// A Redis server: its URL is a Secret key (it may carry a password).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisRef {
    pub url_secret_ref: SecretKeyRef,
}

/// How workloads check the bearer tokens on `/api/` routes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The HMAC secret that signs and checks JWTs; mounted as a file.
    pub jwt_secret_ref: SecretKeyRef,
}

/// One condition, in the shape of `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The three values of a condition's `status`, as `metav1.Condition` spells them. The CRD
/// keeps the field a string (its schema is the upstream shape); code sets and reads it only
/// through this type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl Condition {
    pub fn is(&self, status: ConditionStatus) -> bool {
        self.status == status.as_str()
    }
}

/// Phase of a Job the operator started (migration, backfill, rebuild).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobPhase {
    Running,
    Succeeded,
    Failed,
}

impl JobPhase {
    pub fn is_finished(self) -> bool {
        !matches!(self, JobPhase::Running)
    }
}

/// Whether the resource carries `artstore.io/reconcile: paused`.
pub fn is_paused(meta: &kube::api::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(PAUSE_ANNOTATION))
        .is_some_and(|v| v == PAUSE_VALUE)
}
