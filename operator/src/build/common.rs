//! Pieces every child object shares: labels, owner references, env vars, volumes, probes.

use std::collections::BTreeMap;

use artstore_contract::{DEFAULT_PORT, env, paths};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PodSecurityContext, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::ObjectMeta;

use super::BuildError;
use crate::crd::{AuthSpec, SecretKeyRef};

/// Operator-wide settings the builders need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildConfig {
    /// Image of the `artstore` binary when a spec names none.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// Seconds a finished Job is kept before Kubernetes deletes it.
    pub job_ttl_seconds: i32,
    /// Namespace the operator's pods run in, the one namespace whose operator pods may reach
    /// a storage element; any namespace when `None` (an operator outside the cluster).
    pub operator_namespace: Option<String>,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            image: "ghcr.io/artstore/artstore:latest".into(),
            image_pull_policy: None,
            job_ttl_seconds: 7 * 24 * 3600,
            operator_namespace: None,
        }
    }
}

pub const APP: &str = "artstore";
pub const MANAGED_BY: &str = "artstore-operator";
/// `app.kubernetes.io/name` of the operator's own pods (the chart's name, see
/// charts/artstore-operator/templates/_helpers.tpl).
pub const OPERATOR_APP: &str = "artstore-operator";
/// Label the API server puts on every Namespace (its name), for namespace selectors.
pub const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Marks Jobs by purpose (`migrate`, `rebuild`, `backfill`, `maintenance`).
pub const LABEL_JOB_KIND: &str = "artstore.io/job";

pub const JWT_MOUNT: &str = "/etc/artstore/jwt";
pub const REGISTRY_MOUNT: &str = "/etc/artstore/registry";
pub const DATA_MOUNT: &str = "/data";
pub const HTTP_PORT_NAME: &str = "http";

/// Labels that select one instance's pods (stable: they are in immutable selectors).
pub fn selector_labels(component: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
    ])
}

/// Selector labels plus `managed-by`, for object metadata.
pub fn labels(component: &str, instance: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(component, instance);
    l.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    l
}

pub fn label_selector(component: &str, instance: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(component, instance)),
        ..Default::default()
    }
}

/// Name and namespace of a resource, or an error if the API server left them out.
pub fn name_ns<K: Resource>(obj: &K) -> Result<(String, String), BuildError> {
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(BuildError::MissingMetadata("name"))?;
    let ns = obj
        .meta()
        .namespace
        .clone()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    Ok((name, ns))
}

/// Controller owner reference, so children are garbage-collected with their owner.
pub fn owner_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Result<OwnerReference, BuildError> {
    obj.controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("uid"))
}

/// Metadata of a child: name, owner's namespace, labels, controller owner reference.
pub fn child_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<ObjectMeta, BuildError> {
    let (_, ns) = name_ns(owner)?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(ns),
        labels: Some(labels),
        owner_references: Some(vec![owner_ref(owner)?]),
        ..Default::default()
    })
}

/// The ClusterIP Service in front of one instance's pods: its name, the `http` port.
pub fn service<K: Resource<DynamicType = ()>>(
    owner: &K,
    component: &str,
) -> Result<Service, BuildError> {
    let (name, _) = name_ns(owner)?;
    Ok(Service {
        metadata: child_meta(owner, name.clone(), labels(component, &name))?,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(component, &name)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: i32::from(DEFAULT_PORT),
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

pub fn env_secret(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn env_pod_name() -> EnvVar {
    EnvVar {
        name: env::POD_NAME.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Env every role reads: listen address and JSON logs.
pub fn base_env() -> Vec<EnvVar> {
    vec![
        env_value(env::LISTEN, format!("0.0.0.0:{DEFAULT_PORT}")),
        env_value(env::LOG_FORMAT, "json"),
    ]
}

/// A credential a container may be handed. Each container gets only those its command reads,
/// so a pod can read no Secret it does not need (see `docs/operator.md`, least reach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The role's own PostgreSQL URL.
    Database,
    /// The Redis URL.
    Redis,
    /// An element's S3 access key and secret key.
    S3,
    /// The shared JWT secret (a mounted file).
    Jwt,
}

impl Credential {
    fn of_env(name: &str) -> Option<Credential> {
        match name {
            env::DATABASE_URL => Some(Credential::Database),
            env::REDIS_URL => Some(Credential::Redis),
            env::S3_ACCESS_KEY | env::S3_SECRET_KEY => Some(Credential::S3),
            env::JWT_SECRET_FILE => Some(Credential::Jwt),
            _ => None,
        }
    }

    fn of_mount(name: &str) -> Option<Credential> {
        (name == JWT_VOLUME).then_some(Credential::Jwt)
    }
}

/// `env` and `mounts` without the credentials not in `keep`.
pub fn only_credentials(
    env: &[EnvVar],
    mounts: &[VolumeMount],
    keep: &[Credential],
) -> (Vec<EnvVar>, Vec<VolumeMount>) {
    let kept = |c: Option<Credential>| c.is_none_or(|c| keep.contains(&c));
    (
        env.iter()
            .filter(|e| kept(Credential::of_env(&e.name)))
            .cloned()
            .collect(),
        mounts
            .iter()
            .filter(|m| kept(Credential::of_mount(&m.name)))
            .cloned()
            .collect(),
    )
}

/// The volumes some container of the pod mounts: a Secret volume no container mounts would
/// still be fetched for the pod.
pub fn mounted_volumes(volumes: Vec<Volume>, containers: &[&Container]) -> Vec<Volume> {
    volumes
        .into_iter()
        .filter(|v| {
            containers
                .iter()
                .any(|c| c.volume_mounts.iter().flatten().any(|m| m.name == v.name))
        })
        .collect()
}

/// Name of the JWT secret's volume.
pub const JWT_VOLUME: &str = "jwt";

/// JWT secret as a file: the volume (holding only the named key of the Secret, not its other
/// keys), its mount and the env var naming the file.
pub fn jwt_secret(auth: &AuthSpec) -> (Volume, VolumeMount, EnvVar) {
    let volume = Volume {
        name: JWT_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(auth.jwt_secret_ref.name.clone()),
            items: Some(vec![KeyToPath {
                key: auth.jwt_secret_ref.key.clone(),
                path: auth.jwt_secret_ref.key.clone(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: JWT_VOLUME.into(),
        mount_path: JWT_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    };
    let env = env_value(
        env::JWT_SECRET_FILE,
        format!("{JWT_MOUNT}/{}", auth.jwt_secret_ref.key),
    );
    (volume, mount, env)
}

/// The registry ConfigMap as a mounted directory (a directory mount, so updates reach the pod).
pub fn registry_volume(config_map: &str) -> (Volume, VolumeMount, EnvVar) {
    let volume = Volume {
        name: "registry".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "registry".into(),
        mount_path: REGISTRY_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    };
    let env = env_value(
        env::REGISTRY_FILE,
        format!("{REGISTRY_MOUNT}/{}", artstore_contract::REGISTRY_FILE_NAME),
    );
    (volume, mount, env)
}

/// `artstore <role> <action> [extra...]` as container args (the image's entrypoint is the binary).
pub fn command(role: &str, action: &str, extra: &[&str]) -> (Vec<String>, Vec<String>) {
    let cmd = vec![artstore_contract::BINARY.to_string()];
    let mut args = vec![role.to_string(), action.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    (cmd, args)
}

/// Seconds a probe waits for an answer: the process's own readiness budget plus a second, so a
/// busy node's slow but healthy answer does not take the pod out of its Service.
const PROBE_TIMEOUT_SECONDS: i32 = paths::READY_BUDGET_SECONDS as i32 + 1;

fn http_probe(path: &str, period: i32, failure: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure),
        timeout_seconds: Some(PROBE_TIMEOUT_SECONDS),
        ..Default::default()
    }
}

/// No workload pod talks to the Kubernetes API (the operator is the registry): none gets a
/// service-account token, so none can read Secrets through the API whatever the namespace's
/// default ServiceAccount may do.
pub const AUTOMOUNT_SERVICE_ACCOUNT_TOKEN: Option<bool> = Some(false);

/// A container running one `artstore` command.
/// User and group the `artstore` image runs as (non-root).
pub const RUN_AS: i64 = 65532;

/// Every workload pod runs as the image's non-root user; `fsGroup` makes a volume element's
/// PersistentVolume writable to it whatever the storage class's default ownership.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container(
    cfg: &BuildConfig,
    image: Option<&str>,
    name: &str,
    (command, args): (Vec<String>, Vec<String>),
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(image.unwrap_or(&cfg.image).to_string()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        command: Some(command),
        args: Some(args),
        env: Some(env),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            // Not read-only: the ingester spools large uploads to /tmp.
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A long-running server container: the port and the probes on top of [`container`].
pub fn server_container(mut c: Container) -> Container {
    c.ports = Some(vec![ContainerPort {
        name: Some(HTTP_PORT_NAME.into()),
        container_port: i32::from(DEFAULT_PORT),
        protocol: Some("TCP".into()),
        ..Default::default()
    }]);
    c.readiness_probe = Some(http_probe(paths::READYZ, 5, 3));
    c.liveness_probe = Some(http_probe(paths::HEALTHZ, 10, 6));
    c
}

/// Short stable hash (FNV-1a, 8 hex digits) for names that must change with their input.
pub fn short_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:08x}", h as u32)
}

/// Kubernetes object names are at most 63 characters for labels and Jobs' pods; keep a hash tail
/// when the natural name is longer.
pub fn bounded_name(name: String) -> String {
    if name.len() <= 63 {
        return name;
    }
    let hash = short_hash(&[&name]);
    let mut head: String = name.chars().take(54).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}-{hash}")
}
