//! Children of a QueryNode: backfill Job, Deployment, Service, registry ConfigMap.

use artstore_contract::{DEFAULT_PORT, command as cmd, env};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{EnvVar, PodSpec, PodTemplateSpec, Service, Volume, VolumeMount};
use kube::api::ObjectMeta;

use super::BuildError;
use super::common::*;
use super::registry;
use crate::crd::{EventStream, QueryNode};

pub const COMPONENT: &str = "query-node";
pub const JOB_COMPONENT: &str = "query-node-job";

struct Runtime {
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

fn runtime(qn: &QueryNode, es: &EventStream) -> Result<Runtime, BuildError> {
    let (name, _) = name_ns(qn)?;
    let mut e = base_env();
    e.extend([
        env_secret(env::DATABASE_URL, &qn.spec.database.url_secret_ref),
        env_secret(env::REDIS_URL, &es.spec.redis.url_secret_ref),
        env_value(env::STREAM, es.spec.stream.clone()),
        env_value(env::CONSUMER_GROUP, qn.consumer_group()),
        env_pod_name(),
    ]);
    if let Some(batch) = qn.spec.batch_size {
        e.push(env_value(env::BATCH_SIZE, batch.to_string()));
    }
    if let Some(dl) = &es.spec.dead_letter {
        e.push(env_value(
            env::MAX_DELIVERIES,
            dl.max_deliveries.to_string(),
        ));
        e.push(env_value(env::DEAD_LETTER_STREAM, es.dead_letter_stream()));
    }
    let (jwt_volume, jwt_mount, jwt_env) = jwt_secret(&qn.spec.auth);
    let (reg_volume, reg_mount, reg_env) = registry_volume(&registry::config_map_name(&name));
    e.push(jwt_env);
    e.push(reg_env);
    Ok(Runtime {
        env: e,
        volumes: vec![jwt_volume, reg_volume],
        mounts: vec![jwt_mount, reg_mount],
    })
}

/// The server's console settings: always explicit, so the pod says whether it serves one.
fn console_env(qn: &QueryNode) -> Vec<EnvVar> {
    let console = &qn.spec.console;
    let mut e = vec![env_value(env::CONSOLE, console.enabled.to_string())];
    if console.enabled
        && let Some(url) = &console.ingester_url
    {
        e.push(env_value(env::CONSOLE_INGESTER_URL, url.clone()));
    }
    e
}

/// Base URL of the node's API inside the cluster (its Service).
pub fn endpoint(qn: &QueryNode) -> Result<String, BuildError> {
    let (name, ns) = name_ns(qn)?;
    Ok(format!("http://{name}.{ns}.svc:{DEFAULT_PORT}"))
}

pub fn service(qn: &QueryNode) -> Result<Service, BuildError> {
    super::common::service(qn, COMPONENT)
}

/// The consumers. Init containers migrate the database and ensure the group (both idempotent),
/// so even a pod started by hand never reads before its group exists.
pub fn deployment(
    qn: &QueryNode,
    es: &EventStream,
    cfg: &BuildConfig,
) -> Result<Deployment, BuildError> {
    let (name, _) = name_ns(qn)?;
    let rt = runtime(qn, es)?;
    let image = qn.spec.image.as_deref();
    // Each container gets only the credentials its command reads.
    let init = |cname: &str, action: &str, keep: &[Credential]| {
        let (env, mounts) = only_credentials(&rt.env, &rt.mounts, keep);
        container(
            cfg,
            image,
            cname,
            command(cmd::QUERY_NODE, action, &[]),
            env,
            mounts,
        )
    };
    let inits = vec![
        init("migrate", cmd::MIGRATE, &[Credential::Database]),
        init("ensure-group", cmd::ENSURE_GROUP, &[Credential::Redis]),
    ];
    let server = server_container(container(
        cfg,
        image,
        "query-node",
        command(cmd::QUERY_NODE, cmd::SERVE, &[]),
        rt.env.iter().cloned().chain(console_env(qn)).collect(),
        rt.mounts.clone(),
    ));
    Ok(Deployment {
        metadata: child_meta(qn, name.clone(), labels(COMPONENT, &name))?,
        spec: Some(DeploymentSpec {
            replicas: Some(qn.spec.replicas),
            selector: label_selector(COMPONENT, &name),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(COMPONENT, &name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(pod_security()),
                    automount_service_account_token: AUTOMOUNT_SERVICE_ACCOUNT_TOKEN,
                    volumes: Some(mounted_volumes(
                        rt.volumes.clone(),
                        &[&inits[0], &inits[1], &server],
                    )),
                    init_containers: Some(inits),
                    containers: vec![server],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Name of the backfill Job: one per node and consumer group.
pub fn backfill_job_name(qn: &QueryNode) -> Result<String, BuildError> {
    let (name, _) = name_ns(qn)?;
    Ok(bounded_name(format!(
        "{name}-backfill-{}",
        short_hash(&[&qn.consumer_group()])
    )))
}

/// Migrates, then pages through every storage element into the index (version rule applies,
/// so events consumed later never go backwards).
pub fn backfill_job(
    qn: &QueryNode,
    es: &EventStream,
    cfg: &BuildConfig,
) -> Result<Job, BuildError> {
    let (name, _) = name_ns(qn)?;
    let rt = runtime(qn, es)?;
    let image = qn.spec.image.as_deref();
    let mut pod_labels = labels(JOB_COMPONENT, &name);
    pod_labels.insert(LABEL_JOB_KIND.into(), "backfill".into());
    let mut job_labels = labels(COMPONENT, &name);
    job_labels.insert(LABEL_JOB_KIND.into(), "backfill".into());
    // Migrating needs the database; backfilling the database and the token for the storage
    // elements, never Redis.
    let (migrate_env, migrate_mounts) =
        only_credentials(&rt.env, &rt.mounts, &[Credential::Database]);
    let (backfill_env, backfill_mounts) = only_credentials(
        &rt.env,
        &rt.mounts,
        &[Credential::Database, Credential::Jwt],
    );
    let migrate = container(
        cfg,
        image,
        "migrate",
        command(cmd::QUERY_NODE, cmd::MIGRATE, &[]),
        migrate_env,
        migrate_mounts,
    );
    let backfill = container(
        cfg,
        image,
        "backfill",
        command(cmd::QUERY_NODE, cmd::BACKFILL, &[]),
        backfill_env,
        backfill_mounts,
    );
    let volumes = mounted_volumes(rt.volumes, &[&migrate, &backfill]);
    Ok(Job {
        metadata: child_meta(qn, backfill_job_name(qn)?, job_labels)?,
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            ttl_seconds_after_finished: Some(cfg.job_ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(pod_security()),
                    automount_service_account_token: AUTOMOUNT_SERVICE_ACCOUNT_TOKEN,
                    restart_policy: Some("OnFailure".into()),
                    init_containers: Some(vec![migrate]),
                    containers: vec![backfill],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}
