//! Pure builders from YAML fixtures: field assertions on every child object.

use artstore_contract::{ElementMode, Registry, env};
use artstore_operator::build::storage_element::{self as se_build, ElementWorkload};
use artstore_operator::build::{
    BuildConfig, ingester as ing_build, query_node as qn_build, registry,
};
use artstore_operator::crd::{
    EventStream, Ingester, Mode, QueryNode, StorageElement, StorageElementStatus,
};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};

use crate::fixture;

fn cfg() -> BuildConfig {
    BuildConfig {
        image: "artstore:test".into(),
        ..Default::default()
    }
}

fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.as_ref()?.iter().find(|e| e.name == name)
}

fn value(c: &Container, name: &str) -> String {
    env_of(c, name)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("{name} not set as a value in {}", c.name))
}

fn secret(c: &Container, name: &str) -> (String, String) {
    let s = env_of(c, name)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap_or_else(|| panic!("{name} not from a secret in {}", c.name));
    (s.name.clone(), s.key.clone())
}

fn args(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

fn pod_of_deployment(w: &ElementWorkload) -> &PodSpec {
    match w {
        ElementWorkload::Deployment(d) => d.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
        ElementWorkload::StatefulSet(s) => s.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
    }
}

#[test]
fn s3_element_runs_as_a_recreate_deployment_with_the_contract_env() {
    let se: StorageElement = fixture("storageelement-s3.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let w = se_build::workload(&se, &es, &cfg()).expect("build");
    let ElementWorkload::Deployment(d) = &w else {
        panic!("s3 backend must be a Deployment");
    };
    assert_eq!(d.metadata.name.as_deref(), Some("se-a"));
    assert_eq!(d.metadata.namespace.as_deref(), Some("archive"));
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("StorageElement", "se-a")
    );
    assert_eq!(owner.controller, Some(true));
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
    let c = &pod_of_deployment(&w).containers[0];
    assert_eq!(c.image.as_deref(), Some("artstore:test"));
    assert_eq!(c.command, Some(vec!["artstore".to_string()]));
    assert_eq!(args(c), ["storage-element", "serve"]);
    assert_eq!(value(c, env::ELEMENT_ID), "se-a");
    assert_eq!(value(c, env::ELEMENT_MODE), "rw");
    assert_eq!(value(c, env::ELEMENT_PRIORITY), "100");
    assert_eq!(value(c, env::CAPACITY_BYTES), (500u64 << 30).to_string());
    assert_eq!(value(c, env::MAX_FILE_BYTES), (5u64 << 30).to_string());
    assert_eq!(value(c, env::CACHE_TTL_HOURS), "48");
    assert_eq!(value(c, env::STREAM), "artstore:files");
    assert_eq!(value(c, env::STREAM_MAXLEN), "1000000");
    assert_eq!(value(c, env::BACKEND), "s3");
    assert_eq!(value(c, env::S3_BUCKET), "artstore-se-a");
    assert_eq!(value(c, env::S3_PREFIX), "files/");
    assert_eq!(value(c, env::LOG_FORMAT), "json");
    assert_eq!(value(c, env::JWT_SECRET_FILE), "/etc/artstore/jwt/secret");
    assert_eq!(
        secret(c, env::DATABASE_URL),
        ("se-a-db".into(), "url".into())
    );
    assert_eq!(secret(c, env::REDIS_URL), ("redis".into(), "url".into()));
    assert_eq!(
        secret(c, env::S3_ACCESS_KEY),
        ("se-a-s3".into(), "access-key-id".into())
    );
    assert_eq!(
        secret(c, env::S3_SECRET_KEY),
        ("se-a-s3".into(), "secret-access-key".into())
    );
    assert!(env_of(c, env::VOLUME_PATH).is_none());
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!(port.container_port, 8080);
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    // The probe outwaits the process's own readiness budget (the kubelet's default is 1 s).
    let ready_timeout = c.readiness_probe.as_ref().unwrap().timeout_seconds.unwrap();
    assert!(
        u64::try_from(ready_timeout).unwrap() > artstore_contract::paths::READY_BUDGET_SECONDS,
        "{ready_timeout}"
    );
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
}

#[test]
fn volume_element_is_a_statefulset_whose_claim_outlives_it() {
    let se: StorageElement = fixture("storageelement-volume.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let w = se_build::workload(&se, &es, &cfg()).expect("build");
    let ElementWorkload::StatefulSet(s) = &w else {
        panic!("volume backend must be a StatefulSet");
    };
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(spec.service_name.as_deref(), Some("se-archive"));
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    let cs = claim.spec.as_ref().unwrap();
    assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        cs.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "2Ti"
    );
    let policy = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(policy.when_deleted.as_deref(), Some("Retain"));
    // The image runs as a non-root user: fsGroup makes the volume writable to it.
    let security = pod_of_deployment(&w).security_context.as_ref().unwrap();
    assert_eq!(
        (security.run_as_non_root, security.fs_group),
        (Some(true), Some(65532))
    );
    let c = &pod_of_deployment(&w).containers[0];
    let container_security = c.security_context.as_ref().unwrap();
    assert_eq!(container_security.allow_privilege_escalation, Some(false));
    assert_eq!(c.image.as_deref(), Some("registry.example/artstore:1.2.3"));
    assert_eq!(value(c, env::ELEMENT_ID), "archive-1");
    assert_eq!(value(c, env::ELEMENT_MODE), "ar");
    assert_eq!(value(c, env::CAPACITY_BYTES), "2000000000000");
    assert_eq!(value(c, env::BACKEND), "volume");
    assert_eq!(value(c, env::VOLUME_PATH), "/data");
    assert!(
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/data")
    );
    // The template's own claim is used, not a second PVC volume.
    let vols = pod_of_deployment(&w).volumes.as_ref().unwrap();
    assert!(vols.iter().all(|v| v.persistent_volume_claim.is_none()));
}

#[test]
fn element_service_selects_only_server_pods() {
    let se: StorageElement = fixture("storageelement-s3.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let svc = se_build::service(&se).expect("service");
    let selector = svc.spec.as_ref().unwrap().selector.clone().unwrap();
    assert_eq!(selector["app.kubernetes.io/instance"], "se-a");
    let job = se_build::migration_job(&se, &es, &cfg()).expect("job");
    let job_pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let selects_job_pod = selector
        .iter()
        .all(|(k, v)| job_pod_labels.get(k) == Some(v));
    assert!(!selects_job_pod, "the Service must not route to Job pods");
    assert_eq!(
        se_build::endpoint(&se).unwrap(),
        "http://se-a.archive.svc:8080"
    );
}

#[test]
fn migration_job_name_follows_the_image() {
    let mut se: StorageElement = fixture("storageelement-s3.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let job = se_build::migration_job(&se, &es, &cfg()).expect("job");
    let name = job.metadata.name.clone().unwrap();
    assert!(name.starts_with("se-a-migrate-"), "{name}");
    let c = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(args(c), ["storage-element", "migrate"]);
    assert_eq!(secret(c, env::DATABASE_URL).0, "se-a-db");
    assert_eq!(
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .restart_policy
            .as_deref(),
        Some("OnFailure")
    );
    assert_eq!(
        se_build::migration_job(&se, &es, &cfg())
            .unwrap()
            .metadata
            .name
            .unwrap(),
        name
    );
    se.spec.image = Some("artstore:next".into());
    assert_ne!(
        se_build::migration_job(&se, &es, &cfg())
            .unwrap()
            .metadata
            .name
            .unwrap(),
        name
    );
}

#[test]
fn one_cronjob_per_schedule_that_never_overlaps() {
    let se: StorageElement = fixture("storageelement-s3.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let crons = se_build::cronjobs(&se, &es, &cfg()).expect("cronjobs");
    let got: Vec<(String, String, Vec<String>)> = crons
        .iter()
        .map(|c| {
            let spec = c.spec.as_ref().unwrap();
            assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
            let pod = spec
                .job_template
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap();
            (
                c.metadata.name.clone().unwrap(),
                spec.schedule.clone(),
                args(&pod.containers[0]),
            )
        })
        .collect();
    let rebuild = |m: &str| {
        vec![
            "storage-element".to_string(),
            "rebuild".into(),
            "--mode".into(),
            m.into(),
        ]
    };
    assert_eq!(
        got,
        vec![
            (
                "se-a-consistency".into(),
                "0 * * * *".into(),
                rebuild("consistency")
            ),
            (
                "se-a-incremental".into(),
                "*/30 * * * *".into(),
                rebuild("incremental")
            ),
            (
                "se-a-cleanup-expired".into(),
                "15 3 * * *".into(),
                rebuild("cleanup-expired")
            ),
        ]
    );
    let vol: StorageElement = fixture("storageelement-volume.yaml");
    assert!(se_build::cronjobs(&vol, &es, &cfg()).unwrap().is_empty());
}

/// Found on a real node: the volume element's migration mounted the StatefulSet's claim and
/// asked to run next to its pod, neither of which exists before the migration has run.
#[test]
fn a_volume_elements_migration_needs_neither_its_claim_nor_its_pod() {
    let se: StorageElement = fixture("storageelement-volume.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let job = se_build::migration_job(&se, &es, &cfg()).expect("job");
    let pod = job.spec.unwrap().template.spec.unwrap();
    let volumes = pod.volumes.unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v.persistent_volume_claim.is_none()),
        "{volumes:?}"
    );
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .all(|m| volumes.iter().any(|v| v.name == m.name)),
        "every mount has its volume: {mounts:?}"
    );
    assert!(
        pod.affinity.is_none(),
        "no affinity to a pod that does not exist yet"
    );
}

#[test]
fn rebuild_job_is_named_by_its_request_and_runs_next_to_a_volume() {
    let se: StorageElement = fixture("storageelement-volume.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let job = se_build::rebuild_job(&se, &es, &cfg(), "full").expect("job");
    let name = job.metadata.name.clone().unwrap();
    assert!(name.starts_with("se-archive-rebuild-full-"), "{name}");
    assert_eq!(se_build::rebuild_job_name(&se, "full").unwrap(), name);
    assert_ne!(se_build::rebuild_job_name(&se, "full@2").unwrap(), name);
    let pod = job.spec.as_ref().unwrap().template.spec.clone().unwrap();
    assert_eq!(
        args(&pod.containers[0]),
        ["storage-element", "rebuild", "--mode", "full"]
    );
    let claim = pod
        .volumes
        .unwrap()
        .into_iter()
        .find_map(|v| v.persistent_volume_claim)
        .unwrap();
    assert_eq!(claim.claim_name, "data-se-archive-0");
    let term = &pod
        .affinity
        .unwrap()
        .pod_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()[0];
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert_eq!(
        term.label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["app.kubernetes.io/component"],
        "storage-element"
    );
    let inc = se_build::rebuild_job(&se, &es, &cfg(), "incremental@x").unwrap();
    let inc_pod = inc.spec.unwrap().template.spec.unwrap();
    assert_eq!(args(&inc_pod.containers[0])[3], "incremental");
    assert!(se_build::rebuild_job(&se, &es, &cfg(), "everything").is_err());
    assert!(se_build::parse_rebuild_request("retention").is_err());
}

#[test]
fn query_node_waits_for_its_group_in_init_containers_and_reads_the_registry() {
    let qn: QueryNode = fixture("querynode.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let d = qn_build::deployment(&qn, &es, &cfg()).expect("deployment");
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().unwrap();
    let inits: Vec<Vec<String>> = pod
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .map(args)
        .collect();
    assert_eq!(
        inits,
        vec![
            vec!["query-node", "migrate"],
            vec!["query-node", "ensure-group"]
        ]
    );
    let c = &pod.containers[0];
    assert_eq!(args(c), ["query-node", "serve"]);
    assert_eq!(value(c, env::CONSUMER_GROUP), "query-search");
    assert_eq!(value(c, env::STREAM), "artstore:files");
    assert_eq!(value(c, env::BATCH_SIZE), "200");
    assert_eq!(value(c, env::MAX_DELIVERIES), "5");
    assert_eq!(
        value(c, env::DEAD_LETTER_STREAM),
        "artstore:files:dead-letter"
    );
    assert_eq!(
        value(c, env::REGISTRY_FILE),
        "/etc/artstore/registry/registry.json"
    );
    assert_eq!(
        secret(c, env::DATABASE_URL),
        ("query-db".into(), "url".into())
    );
    assert_eq!(
        env_of(c, env::POD_NAME)
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    let reg = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find_map(|v| v.config_map.clone())
        .unwrap();
    assert_eq!(reg.name, "search-registry");
    let job = qn_build::backfill_job(&qn, &es, &cfg()).expect("backfill");
    let jp = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        args(&jp.init_containers.as_ref().unwrap()[0]),
        ["query-node", "migrate"]
    );
    assert_eq!(args(&jp.containers[0]), ["query-node", "backfill"]);
    assert!(job.metadata.name.unwrap().starts_with("search-backfill-"));
}

#[test]
fn ingester_gets_limits_redis_and_its_registry() {
    let ing: Ingester = fixture("ingester.yaml");
    let d = ing_build::deployment(&ing, &cfg()).expect("deployment");
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let c = &spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(args(c), ["ingester", "serve"]);
    assert_eq!(value(c, env::MAX_UPLOAD_BYTES), (1u64 << 30).to_string());
    assert_eq!(value(c, env::RATE_LIMIT_PER_MINUTE), "120");
    assert_eq!(value(c, env::IDEMPOTENCY_TTL_SECONDS), "86400");
    assert_eq!(secret(c, env::REDIS_URL), ("redis".into(), "url".into()));
    assert_eq!(
        value(c, env::CORS_ALLOWED_ORIGINS),
        "https://archive.example.org,http://localhost:8081"
    );
    let svc = ing_build::service(&ing).unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8080);
}

#[test]
fn ingester_without_origins_sends_no_cors_setting() {
    let mut ing: Ingester = fixture("ingester.yaml");
    ing.spec.cors.allowed_origins.clear();
    let d = ing_build::deployment(&ing, &cfg()).expect("deployment");
    let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(env_of(c, env::CORS_ALLOWED_ORIGINS).is_none());
}

#[test]
fn query_node_console_is_on_by_default_and_knows_the_ingester() {
    let qn: QueryNode = fixture("querynode.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let d = qn_build::deployment(&qn, &es, &cfg()).expect("deployment");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let server = &pod.containers[0];
    assert_eq!(value(server, env::CONSOLE), "true");
    assert_eq!(
        value(server, env::CONSOLE_INGESTER_URL),
        "https://upload.example.org"
    );
    // Only the server serves the console.
    for init in pod.init_containers.as_ref().unwrap() {
        assert!(env_of(init, env::CONSOLE).is_none(), "{}", init.name);
    }

    // A spec without `console` gets the default: on, reads only.
    let mut tree = crate::fixture_json("querynode.yaml");
    tree["spec"].as_object_mut().unwrap().remove("console");
    let bare: QueryNode = serde_json::from_value(tree).unwrap();
    let d = qn_build::deployment(&bare, &es, &cfg()).expect("deployment");
    let server = &d.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(value(server, env::CONSOLE), "true");
    assert!(env_of(server, env::CONSOLE_INGESTER_URL).is_none());
}

#[test]
fn query_node_console_can_be_turned_off() {
    let mut qn: QueryNode = fixture("querynode.yaml");
    qn.spec.console.enabled = false;
    let es: EventStream = fixture("eventstream.yaml");
    let d = qn_build::deployment(&qn, &es, &cfg()).expect("deployment");
    let server = &d.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(value(server, env::CONSOLE), "false");
    assert!(env_of(server, env::CONSOLE_INGESTER_URL).is_none());
}

fn with_status(mut se: StorageElement, mode: Mode, used: u64) -> StorageElement {
    se.status = Some(StorageElementStatus {
        endpoint: Some(se_build::endpoint(&se).unwrap()),
        element_id: Some(se.element_id()),
        mode: Some(mode),
        priority: Some(se.spec.priority),
        capacity_bytes: Some(1000),
        used_bytes: Some(used),
        ..Default::default()
    });
    se
}

#[test]
fn registry_comes_from_statuses_in_the_contract_format() {
    let a = with_status(fixture("storageelement-s3.yaml"), Mode::Rw, 10);
    let b = with_status(fixture("storageelement-volume.yaml"), Mode::Ar, 0);
    let unobserved: StorageElement = {
        let mut s: StorageElement = fixture("storageelement-s3.yaml");
        s.metadata.name = Some("se-new".into());
        s
    };
    let all = registry::registry(&[b.clone(), a.clone(), unobserved], &[]);
    let ids: Vec<&str> = all.elements.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["archive-1", "se-a"],
        "sorted, and only elements with an observed status"
    );
    assert_eq!(all.elements[1].url, "http://se-a.archive.svc:8080");
    assert_eq!(all.elements[1].mode, ElementMode::Rw);
    assert_eq!(all.elements[1].used_bytes, 10);
    let only_a = registry::registry(&[a.clone(), b], &["se-a".to_string()]);
    assert_eq!(only_a.elements.len(), 1);
    let ing: Ingester = fixture("ingester.yaml");
    let cm = registry::config_map(&ing, "ingester", &only_a).unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some("upload-registry"));
    assert_eq!(cm.metadata.owner_references.unwrap()[0].kind, "Ingester");
    let parsed: Registry =
        serde_json::from_str(&cm.data.unwrap()["registry.json"]).expect("contract JSON");
    assert_eq!(parsed, only_a);
}

#[test]
fn builders_refuse_what_the_api_server_would_not_have_let_through() {
    let mut se: StorageElement = fixture("storageelement-s3.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    se.spec.capacity = k8s_openapi::apimachinery::pkg::api::resource::Quantity("-1".into());
    assert!(se_build::workload(&se, &es, &cfg()).is_err());
    let mut se: StorageElement = fixture("storageelement-s3.yaml");
    se.spec.backend.s3 = None;
    let err = se_build::workload(&se, &es, &cfg()).unwrap_err();
    assert!(err.to_string().contains("exactly one"), "{err}");
    let mut se: StorageElement = fixture("storageelement-s3.yaml");
    se.metadata.uid = None;
    assert!(
        se_build::service(&se).is_err(),
        "no uid, no owner reference"
    );
}
