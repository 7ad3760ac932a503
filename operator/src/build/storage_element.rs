//! Children of a StorageElement: migration Job, Deployment (S3) or StatefulSet with its PVC
//! (volume), Service, maintenance CronJobs and the rebuild Job.

use artstore_contract::{DEFAULT_PORT, command as cmd, env};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodAffinity, PodAffinityTerm, PodSpec, PodTemplateSpec,
    Service, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

use super::common::*;
use super::{BuildError, quantity};
use crate::crd::{EventStream, StorageElement};

pub const COMPONENT: &str = "storage-element";
/// Component label of the element's Job pods.
pub const JOB_COMPONENT: &str = "storage-element-job";
/// Modes the `artstore.io/rebuild` annotation accepts.
pub const REBUILD_REQUEST_MODES: [&str; 2] = ["full", "incremental"];

/// Base URL of the element's API inside the cluster.
pub fn endpoint(se: &StorageElement) -> Result<String, BuildError> {
    let (name, ns) = name_ns(se)?;
    Ok(format!("http://{name}.{ns}.svc:{DEFAULT_PORT}"))
}

pub fn service(se: &StorageElement) -> Result<Service, BuildError> {
    super::common::service(se, COMPONENT)
}

/// Name of the PVC the StatefulSet's claim template makes for its one pod.
pub fn data_claim_name(se_name: &str) -> String {
    format!("data-{se_name}-0")
}

/// `spec.capacity` in bytes; zero is refused.
pub fn capacity_bytes(se: &StorageElement) -> Result<u64, BuildError> {
    let invalid = |message: String| BuildError::InvalidField {
        field: "spec.capacity".into(),
        message,
    };
    let capacity = quantity::to_bytes(&se.spec.capacity).map_err(invalid)?;
    if capacity == 0 {
        return Err(invalid("must be greater than 0".into()));
    }
    Ok(capacity)
}

/// Everything a storage-element process needs: env, volumes and mounts. Jobs that run
/// maintenance get the same, so they see the same backend, database and stream.
struct Runtime {
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

fn runtime(se: &StorageElement, es: &EventStream) -> Result<Runtime, BuildError> {
    let spec = &se.spec;
    let invalid = |field: &str, message: String| BuildError::InvalidField {
        field: field.into(),
        message,
    };
    let capacity = capacity_bytes(se)?;
    let mut e = base_env();
    e.extend([
        env_value(env::ELEMENT_ID, se.element_id()),
        env_value(
            env::ELEMENT_MODE,
            artstore_contract::ElementMode::from(spec.mode).as_str(),
        ),
        env_value(env::ELEMENT_PRIORITY, spec.priority.to_string()),
        env_value(env::CAPACITY_BYTES, capacity.to_string()),
        env_value(env::CACHE_TTL_HOURS, spec.cache_ttl_hours.to_string()),
        env_secret(env::DATABASE_URL, &spec.database.url_secret_ref),
        env_secret(env::REDIS_URL, &es.spec.redis.url_secret_ref),
        env_value(env::STREAM, es.spec.stream.clone()),
    ]);
    if let Some(max) = &spec.max_file_size {
        let bytes = quantity::to_bytes(max).map_err(|m| invalid("spec.maxFileSize", m))?;
        e.push(env_value(env::MAX_FILE_BYTES, bytes.to_string()));
    }
    if let Some(maxlen) = es.spec.retention.max_length {
        e.push(env_value(env::STREAM_MAXLEN, maxlen.to_string()));
    }
    let (jwt_volume, jwt_mount, jwt_env) = jwt_secret(&spec.auth);
    e.push(jwt_env);
    let mut volumes = vec![jwt_volume];
    let mut mounts = vec![jwt_mount];
    match (&spec.backend.s3, &spec.backend.volume) {
        (Some(s3), None) => {
            e.push(env_value(env::BACKEND, "s3"));
            e.push(env_value(env::S3_ENDPOINT, s3.endpoint.clone()));
            e.push(env_value(env::S3_BUCKET, s3.bucket.clone()));
            if let Some(prefix) = &s3.prefix {
                e.push(env_value(env::S3_PREFIX, prefix.clone()));
            }
            if let Some(region) = &s3.region {
                e.push(env_value(env::S3_REGION, region.clone()));
            }
            e.push(env_secret(env::S3_ACCESS_KEY, &s3.access_key_id_ref));
            e.push(env_secret(env::S3_SECRET_KEY, &s3.secret_access_key_ref));
        }
        (None, Some(_)) => {
            e.push(env_value(env::BACKEND, "volume"));
            e.push(env_value(env::VOLUME_PATH, DATA_MOUNT));
            mounts.push(VolumeMount {
                name: "data".into(),
                mount_path: DATA_MOUNT.into(),
                ..Default::default()
            });
        }
        _ => {
            return Err(invalid(
                "spec.backend",
                "exactly one of s3 or volume must be set".into(),
            ));
        }
    }
    // Jobs mount the StatefulSet's claim by name; the StatefulSet brings its own template.
    if spec.backend.volume.is_some() {
        volumes.push(Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: data_claim_name(&name_ns(se)?.0),
                read_only: Some(false),
            }),
            ..Default::default()
        });
    }
    Ok(Runtime {
        env: e,
        volumes,
        mounts,
    })
}

fn pod_template(
    se: &StorageElement,
    es: &EventStream,
    cfg: &BuildConfig,
    with_claim_volume: bool,
) -> Result<PodTemplateSpec, BuildError> {
    let (name, _) = name_ns(se)?;
    let rt = runtime(se, es)?;
    let volumes = rt
        .volumes
        .into_iter()
        .filter(|v| with_claim_volume || v.persistent_volume_claim.is_none())
        .collect();
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(COMPONENT, &name)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            security_context: Some(pod_security()),
            containers: vec![server_container(container(
                cfg,
                se.spec.image.as_deref(),
                "storage-element",
                command(cmd::STORAGE_ELEMENT, cmd::SERVE, &[]),
                rt.env,
                rt.mounts,
            ))],
            volumes: Some(volumes),
            ..Default::default()
        }),
    })
}

/// The long-running workload: a Deployment for S3, a StatefulSet with a claim for a volume.
#[derive(Clone, Debug, PartialEq)]
pub enum ElementWorkload {
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
}

pub fn workload(
    se: &StorageElement,
    es: &EventStream,
    cfg: &BuildConfig,
) -> Result<ElementWorkload, BuildError> {
    let (name, _) = name_ns(se)?;
    let meta = child_meta(se, name.clone(), labels(COMPONENT, &name))?;
    if let Some(volume) = &se.spec.backend.volume {
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: Some(labels(COMPONENT, &name)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: volume.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), volume.size.clone())])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        return Ok(ElementWorkload::StatefulSet(Box::new(StatefulSet {
            metadata: meta,
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                service_name: Some(name.clone()),
                selector: label_selector(COMPONENT, &name),
                template: pod_template(se, es, cfg, false)?,
                volume_claim_templates: Some(vec![claim]),
                // The files are the truth: deleting the resource never deletes the volume.
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some("Retain".into()),
                        when_scaled: Some("Retain".into()),
                    },
                ),
                ..Default::default()
            }),
            ..Default::default()
        })));
    }
    Ok(ElementWorkload::Deployment(Box::new(Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: label_selector(COMPONENT, &name),
            // One element process at a time: never two outbox relays or rebuild lock holders.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            template: pod_template(se, es, cfg, false)?,
            ..Default::default()
        }),
        ..Default::default()
    })))
}

/// What a Job's pod needs of the element besides its database.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JobData {
    /// Only the database: the migration, which runs before the StatefulSet (and so its claim
    /// and its pod) exists.
    DatabaseOnly,
    /// The stored files too: rebuilds and maintenance, which for a volume backend mount the
    /// StatefulSet's claim and are scheduled next to its pod.
    Files,
}

/// A run-to-completion pod spec for the element (migrations, rebuilds, maintenance).
fn job_pod(
    se: &StorageElement,
    es: &EventStream,
    cfg: &BuildConfig,
    container_name: &str,
    args: (Vec<String>, Vec<String>),
    job_kind: &str,
    data: JobData,
) -> Result<PodTemplateSpec, BuildError> {
    let (name, _) = name_ns(se)?;
    let mut rt = runtime(se, es)?;
    if data == JobData::DatabaseOnly {
        let claims: Vec<String> = rt
            .volumes
            .iter()
            .filter(|v| v.persistent_volume_claim.is_some())
            .map(|v| v.name.clone())
            .collect();
        rt.volumes.retain(|v| !claims.contains(&v.name));
        rt.mounts.retain(|m| !claims.contains(&m.name));
    }
    let needs_files_on_node = data == JobData::Files && se.spec.backend.volume.is_some();
    // Not the server's component label: the Service and the workload must never select Job pods.
    let mut pod_labels = labels(JOB_COMPONENT, &name);
    pod_labels.insert(LABEL_JOB_KIND.into(), job_kind.into());
    let affinity = needs_files_on_node.then(|| Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(COMPONENT, &name)),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            security_context: Some(pod_security()),
            restart_policy: Some("OnFailure".into()),
            containers: vec![container(
                cfg,
                se.spec.image.as_deref(),
                container_name,
                args,
                rt.env,
                rt.mounts,
            )],
            volumes: Some(rt.volumes),
            affinity,
            ..Default::default()
        }),
    })
}

fn job(
    se: &StorageElement,
    cfg: &BuildConfig,
    job_name: String,
    job_kind: &str,
    template: PodTemplateSpec,
) -> Result<Job, BuildError> {
    let (name, _) = name_ns(se)?;
    let mut l = labels(COMPONENT, &name);
    l.insert(LABEL_JOB_KIND.into(), job_kind.into());
    Ok(Job {
        metadata: child_meta(se, job_name, l)?,
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            ttl_seconds_after_finished: Some(cfg.job_ttl_seconds),
            template,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Name of the migration Job: changes with the image, so a new version migrates once.
pub fn migration_job_name(se: &StorageElement, cfg: &BuildConfig) -> Result<String, BuildError> {
    let (name, _) = name_ns(se)?;
    let image = se.spec.image.as_deref().unwrap_or(&cfg.image);
    Ok(bounded_name(format!(
        "{name}-migrate-{}",
        short_hash(&[image])
    )))
}

pub fn migration_job(
    se: &StorageElement,
    es: &EventStream,
    cfg: &BuildConfig,
) -> Result<Job, BuildError> {
    let pod = job_pod(
        se,
        es,
        cfg,
        "migrate",
        command(cmd::STORAGE_ELEMENT, cmd::MIGRATE, &[]),
        "migrate",
        JobData::DatabaseOnly,
    )?;
    job(se, cfg, migration_job_name(se, cfg)?, "migrate", pod)
}

/// A parsed `artstore.io/rebuild` value: `full` or `incremental`, optionally `@<token>` (a new
/// token asks for the same mode again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildRequest {
    /// The annotation value as written: the identity of the request.
    pub value: String,
    pub mode: &'static str,
}

impl RebuildRequest {
    pub fn parse(value: &str) -> Result<Self, String> {
        let mode = value.split_once('@').map_or(value, |(m, _)| m).trim();
        REBUILD_REQUEST_MODES
            .iter()
            .find(|m| **m == mode)
            .map(|mode| RebuildRequest {
                value: value.to_string(),
                mode,
            })
            .ok_or_else(|| {
                format!(
                    "artstore.io/rebuild={value:?}: expected full or incremental, optionally followed by @<token>"
                )
            })
    }

    fn parse_field(value: &str) -> Result<Self, BuildError> {
        Self::parse(value).map_err(|message| BuildError::InvalidField {
            field: "metadata.annotations".into(),
            message,
        })
    }
}

/// The mode of an `artstore.io/rebuild` value (see [`RebuildRequest`]).
pub fn parse_rebuild_request(value: &str) -> Result<&'static str, String> {
    RebuildRequest::parse(value).map(|r| r.mode)
}

/// Name of a rebuild Job: a function of the request, so the same request never starts twice.
pub fn rebuild_job_name(se: &StorageElement, request: &str) -> Result<String, BuildError> {
    request_job_name(se, &RebuildRequest::parse_field(request)?)
}

fn request_job_name(se: &StorageElement, request: &RebuildRequest) -> Result<String, BuildError> {
    let (name, _) = name_ns(se)?;
    Ok(bounded_name(format!(
        "{name}-rebuild-{}-{}",
        request.mode,
        short_hash(&[&request.value])
    )))
}

pub fn rebuild_job(
    se: &StorageElement,
    es: &EventStream,
    cfg: &BuildConfig,
    request: &str,
) -> Result<Job, BuildError> {
    request_job(se, es, cfg, &RebuildRequest::parse_field(request)?)
}

/// The rebuild Job of a request parsed once.
pub fn request_job(
    se: &StorageElement,
    es: &EventStream,
    cfg: &BuildConfig,
    request: &RebuildRequest,
) -> Result<Job, BuildError> {
    let pod = job_pod(
        se,
        es,
        cfg,
        "rebuild",
        command(
            cmd::STORAGE_ELEMENT,
            cmd::REBUILD,
            &["--mode", request.mode],
        ),
        "rebuild",
        JobData::Files,
    )?;
    job(se, cfg, request_job_name(se, request)?, "rebuild", pod)
}

/// Name of the CronJob for one maintenance mode.
pub fn cronjob_name(se_name: &str, mode: &str) -> String {
    bounded_name(format!("{se_name}-{mode}"))
}

/// One CronJob per declared maintenance schedule.
pub fn cronjobs(
    se: &StorageElement,
    es: &EventStream,
    cfg: &BuildConfig,
) -> Result<Vec<CronJob>, BuildError> {
    let (name, _) = name_ns(se)?;
    se.spec
        .maintenance
        .schedules()
        .into_iter()
        .map(|(mode, schedule)| {
            let pod = job_pod(
                se,
                es,
                cfg,
                "maintenance",
                command(cmd::STORAGE_ELEMENT, cmd::REBUILD, &["--mode", mode]),
                "maintenance",
                JobData::Files,
            )?;
            let mut l = labels(COMPONENT, &name);
            l.insert(LABEL_JOB_KIND.into(), "maintenance".into());
            Ok(CronJob {
                metadata: child_meta(se, cronjob_name(&name, mode), l.clone())?,
                spec: Some(CronJobSpec {
                    schedule: schedule.to_string(),
                    // Two rebuilds never interleave; a late run is skipped, not queued.
                    concurrency_policy: Some("Forbid".into()),
                    successful_jobs_history_limit: Some(3),
                    failed_jobs_history_limit: Some(3),
                    job_template: JobTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(l),
                            ..Default::default()
                        }),
                        spec: Some(JobSpec {
                            backoff_limit: Some(2),
                            ttl_seconds_after_finished: Some(cfg.job_ttl_seconds),
                            template: pod,
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect()
}
