//! Least reach of credentials, from fixtures through the pure builders: which Secret keys each
//! pod (and each container) can read, that no credential is ever a literal, and that no pod
//! gets a service-account token.

use std::collections::BTreeSet;

use artstore_contract::env;
use artstore_operator::build::storage_element::{self as se_build, ElementWorkload};
use artstore_operator::build::{BuildConfig, ingester as ing_build, query_node as qn_build};
use artstore_operator::crd::{EventStream, Ingester, QueryNode, StorageElement};
use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::fixture;

fn cfg() -> BuildConfig {
    BuildConfig {
        image: "artstore:test".into(),
        ..Default::default()
    }
}

type SecretKeys = BTreeSet<(String, String)>;

fn keys(pairs: &[(&str, &str)]) -> SecretKeys {
    pairs
        .iter()
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect()
}

/// The Secret keys one container can read: env from secret keys, and Secret volumes it mounts
/// (a volume without `items` exposes every key of its Secret: `*`).
fn container_keys(pod: &PodSpec, c: &Container) -> SecretKeys {
    assert!(
        c.env_from.is_none(),
        "{}: envFrom exposes whole objects",
        c.name
    );
    let mut out = SecretKeys::new();
    for e in c.env.iter().flatten() {
        if let Some(s) = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            out.insert((s.name.clone(), s.key.clone()));
        }
    }
    for m in c.volume_mounts.iter().flatten() {
        // No volume of the pod: a StatefulSet's claim template (data, not a credential).
        let Some(volume) = pod.volumes.iter().flatten().find(|v| v.name == m.name) else {
            continue;
        };
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().expect("secret name");
            match &secret.items {
                Some(items) => out.extend(items.iter().map(|i| (name.clone(), i.key.clone()))),
                None => {
                    out.insert((name, "*".into()));
                }
            }
        }
        assert!(
            volume.projected.is_none(),
            "projected volumes may carry tokens"
        );
    }
    out
}

/// Every Secret key the pod can reach, after checking what holds for every pod: no
/// service-account token, no Secret volume that no container mounts, no credential as a
/// literal value.
fn pod_keys(pod: &PodSpec) -> SecretKeys {
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "a workload pod never needs the Kubernetes API"
    );
    let containers: Vec<&Container> = pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
        .collect();
    for v in pod.volumes.iter().flatten().filter(|v| v.secret.is_some()) {
        assert!(
            containers
                .iter()
                .any(|c| c.volume_mounts.iter().flatten().any(|m| m.name == v.name)),
            "Secret volume {} is mounted by no container",
            v.name
        );
    }
    for c in &containers {
        for e in c.env.iter().flatten() {
            let credential = [
                env::DATABASE_URL,
                env::REDIS_URL,
                env::S3_ACCESS_KEY,
                env::S3_SECRET_KEY,
            ]
            .contains(&e.name.as_str());
            assert!(
                !(credential && e.value.is_some()),
                "{}: {} is a literal",
                c.name,
                e.name
            );
        }
    }
    containers
        .iter()
        .flat_map(|c| container_keys(pod, c))
        .collect()
}

fn named<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    pod.init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn element_pod(w: &ElementWorkload) -> PodSpec {
    match w {
        ElementWorkload::Deployment(d) => d.spec.clone().unwrap().template.spec.unwrap(),
        ElementWorkload::StatefulSet(s) => s.spec.clone().unwrap().template.spec.unwrap(),
    }
}

fn job_pod(job: &k8s_openapi::api::batch::v1::Job) -> PodSpec {
    job.spec.clone().unwrap().template.spec.unwrap()
}

#[test]
fn the_ingester_reaches_redis_and_the_token_secret_only() {
    let ing: Ingester = fixture("ingester.yaml");
    let d = ing_build::deployment(&ing, &cfg()).expect("deployment");
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod_keys(&pod),
        keys(&[("redis", "url"), ("artstore-jwt", "secret")])
    );
}

#[test]
fn a_query_node_reaches_its_own_database_and_each_container_only_what_it_reads() {
    let qn: QueryNode = fixture("querynode.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let d = qn_build::deployment(&qn, &es, &cfg()).expect("deployment");
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod_keys(&pod),
        keys(&[
            ("query-db", "url"),
            ("redis", "url"),
            ("artstore-jwt", "secret")
        ])
    );
    assert_eq!(
        container_keys(&pod, named(&pod, "migrate")),
        keys(&[("query-db", "url")])
    );
    assert_eq!(
        container_keys(&pod, named(&pod, "ensure-group")),
        keys(&[("redis", "url")])
    );

    let job = qn_build::backfill_job(&qn, &es, &cfg()).expect("backfill");
    let pod = job_pod(&job);
    assert_eq!(
        pod_keys(&pod),
        keys(&[("query-db", "url"), ("artstore-jwt", "secret")]),
        "a backfill never reads the stream"
    );
    assert_eq!(
        container_keys(&pod, named(&pod, "migrate")),
        keys(&[("query-db", "url")])
    );
}

#[test]
fn an_element_reaches_its_own_database_and_bucket_not_another_elements() {
    let es: EventStream = fixture("eventstream.yaml");
    let s3: StorageElement = fixture("storageelement-s3.yaml");
    let volume: StorageElement = fixture("storageelement-volume.yaml");
    let s3_keys = keys(&[
        ("se-a-db", "url"),
        ("se-a-s3", "access-key-id"),
        ("se-a-s3", "secret-access-key"),
        ("redis", "url"),
        ("artstore-jwt", "secret"),
    ]);
    assert_eq!(
        pod_keys(&element_pod(&se_build::workload(&s3, &es, &cfg()).unwrap())),
        s3_keys
    );
    let volume_keys = keys(&[
        ("se-archive-db", "url"),
        ("redis", "url"),
        ("artstore-jwt", "secret"),
    ]);
    assert_eq!(
        pod_keys(&element_pod(
            &se_build::workload(&volume, &es, &cfg()).unwrap()
        )),
        volume_keys
    );

    // Jobs never serve HTTP: no token secret. A migration reads only the database.
    for (se, db) in [(&s3, "se-a-db"), (&volume, "se-archive-db")] {
        let migrate = se_build::migration_job(se, &es, &cfg()).unwrap();
        assert_eq!(pod_keys(&job_pod(&migrate)), keys(&[(db, "url")]));
    }
    let rebuild = se_build::rebuild_job(&s3, &es, &cfg(), "full").unwrap();
    let maintenance_keys = keys(&[
        ("se-a-db", "url"),
        ("se-a-s3", "access-key-id"),
        ("se-a-s3", "secret-access-key"),
        ("redis", "url"),
    ]);
    assert_eq!(pod_keys(&job_pod(&rebuild)), maintenance_keys);
    let cronjobs = se_build::cronjobs(&s3, &es, &cfg()).unwrap();
    assert!(!cronjobs.is_empty());
    for cron in cronjobs {
        let pod = cron
            .spec
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(pod_keys(&pod), maintenance_keys);
    }
    let rebuild = se_build::rebuild_job(&volume, &es, &cfg(), "full").unwrap();
    assert_eq!(
        pod_keys(&job_pod(&rebuild)),
        keys(&[("se-archive-db", "url"), ("redis", "url")])
    );
}
