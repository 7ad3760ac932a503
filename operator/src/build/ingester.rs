//! Children of an Ingester: Deployment, Service, registry ConfigMap.

use artstore_contract::{command as cmd, env};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, Service};
use kube::api::ObjectMeta;

use super::common::*;
use super::{BuildError, quantity, registry};
use crate::crd::Ingester;

pub const COMPONENT: &str = "ingester";

pub fn service(ing: &Ingester) -> Result<Service, BuildError> {
    super::common::service(ing, COMPONENT)
}

pub fn deployment(ing: &Ingester, cfg: &BuildConfig) -> Result<Deployment, BuildError> {
    let (name, _) = name_ns(ing)?;
    let mut e = base_env();
    e.push(env_secret(env::REDIS_URL, &ing.spec.redis.url_secret_ref));
    let limits = &ing.spec.limits;
    if let Some(max) = &limits.max_upload_size {
        let bytes = quantity::to_bytes(max).map_err(|message| BuildError::InvalidField {
            field: "spec.limits.maxUploadSize".into(),
            message,
        })?;
        e.push(env_value(env::MAX_UPLOAD_BYTES, bytes.to_string()));
    }
    if let Some(rate) = limits.rate_limit_per_minute {
        e.push(env_value(env::RATE_LIMIT_PER_MINUTE, rate.to_string()));
    }
    if let Some(ttl) = limits.idempotency_ttl_seconds {
        e.push(env_value(env::IDEMPOTENCY_TTL_SECONDS, ttl.to_string()));
    }
    if !ing.spec.cors.allowed_origins.is_empty() {
        e.push(env_value(
            env::CORS_ALLOWED_ORIGINS,
            ing.spec.cors.allowed_origins.join(","),
        ));
    }
    let (jwt_volume, jwt_mount, jwt_env) = jwt_secret(&ing.spec.auth);
    let (reg_volume, reg_mount, reg_env) = registry_volume(&registry::config_map_name(&name));
    e.push(jwt_env);
    e.push(reg_env);
    Ok(Deployment {
        metadata: child_meta(ing, name.clone(), labels(COMPONENT, &name))?,
        spec: Some(DeploymentSpec {
            replicas: Some(ing.spec.replicas),
            selector: label_selector(COMPONENT, &name),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(COMPONENT, &name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(pod_security()),
                    automount_service_account_token: AUTOMOUNT_SERVICE_ACCOUNT_TOKEN,
                    containers: vec![server_container(container(
                        cfg,
                        ing.spec.image.as_deref(),
                        "ingester",
                        command(cmd::INGESTER, cmd::SERVE, &[]),
                        e,
                        vec![jwt_mount, reg_mount],
                    ))],
                    volumes: Some(vec![jwt_volume, reg_volume]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}
