//! `Ingester`: the write path (upload gateway).
#![allow(clippy::duplicated_attributes)] // each printcolumn(...) repeats `type_`

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AuthSpec, Condition, RedisRef};

#[derive(CustomResource, kube::KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "artstore.io",
    version = "v1alpha1",
    kind = "Ingester",
    namespaced,
    doc = "The write path: the upload gateway",
    status = "IngesterStatus",
    shortname = "aing",
    category = "artstore",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Targets",
        type_ = "string",
        json_path = ".status.writableTargets"
    ),
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
pub struct IngesterSpec {
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("replicas must be between 0 and 100"))]
    pub replicas: i32,
    /// StorageElement names it may write to; all of the namespace when empty.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(s, s.size() > 0)").message("storageElements entries must not be empty"))]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub storage_elements: Vec<String>,
    pub auth: AuthSpec,
    /// Redis for rate limits and idempotency keys.
    pub redis: RedisRef,
    #[serde(default)]
    pub limits: UploadLimits,
    /// Browser pages (the query nodes' web console) allowed to call the API.
    #[serde(default)]
    pub cors: CorsSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// CORS: which origins' pages may call the ingester from a browser.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Origins such as `https://archive.example.org` (scheme, host and port; no path), or `*`
    /// for any. Empty (default): no CORS headers, browsers on other origins cannot call it.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(o, o == '*' || o.matches('^https?://[^\\\\s/?#,]+$'))").message("cors.allowedOrigins entries must be `*` or an origin like https://host[:port]"))]
    #[schemars(length(max = 32), inner(length(max = 253)))]
    pub allowed_origins: Vec<String>,
}

fn default_replicas() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadLimits {
    /// Largest upload, a quantity like `5Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("maxUploadSize must be a quantity greater than 0"))]
    pub max_upload_size: Option<Quantity>,
    /// Requests per minute and client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("rateLimitPerMinute must be at least 1"))]
    pub rate_limit_per_minute: Option<u32>,
    /// How long an `Idempotency-Key` is remembered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 60 && self <= 604800").message("idempotencyTtlSeconds must be between 60 and 604800"))]
    pub idempotency_ttl_seconds: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngesterStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Element ids it can write to now (mode edit or rw, with an endpoint).
    #[serde(default)]
    pub writable_targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}
