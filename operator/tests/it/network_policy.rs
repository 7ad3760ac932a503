//! A storage element's NetworkPolicy, from fixtures: who its peers select is checked against
//! the labels the other builders put on the archive's pods, so a renamed label breaks here.

use std::collections::BTreeMap;

use artstore_operator::build::common::OPERATOR_APP;
use artstore_operator::build::network_policy;
use artstore_operator::build::storage_element as se_build;
use artstore_operator::build::{BuildConfig, ingester as ing_build, query_node as qn_build};
use artstore_operator::crd::{EventStream, Ingester, QueryNode, StorageElement};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use crate::fixture;

type Labels = BTreeMap<String, String>;

fn cfg() -> BuildConfig {
    BuildConfig {
        image: "artstore:test".into(),
        operator_namespace: Some("artstore-system".into()),
        ..Default::default()
    }
}

fn policy(se: &StorageElement, cfg: &BuildConfig) -> NetworkPolicy {
    network_policy::element(se, cfg)
        .expect("build")
        .expect("a policy by default")
}

/// `matchLabels` semantics (the builder uses no expressions; one here would fail the test).
fn selects(sel: &LabelSelector, labels: &Labels) -> bool {
    assert!(sel.match_expressions.is_none(), "{sel:?}");
    sel.match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Whether a pod with `labels` in the policy's own namespace may connect.
fn admits_local(p: &NetworkPolicy, labels: &Labels) -> bool {
    peers(p).iter().any(|peer| {
        peer.namespace_selector.is_none()
            && peer.ip_block.is_none()
            && peer
                .pod_selector
                .as_ref()
                .is_some_and(|sel| selects(sel, labels))
    })
}

fn peers(p: &NetworkPolicy) -> Vec<NetworkPolicyPeer> {
    let rules = p.spec.as_ref().unwrap().ingress.clone().unwrap();
    assert_eq!(rules.len(), 1, "one rule: {rules:?}");
    rules[0].from.clone().unwrap()
}

fn pod_labels_of_job(job: &k8s_openapi::api::batch::v1::Job) -> Labels {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap()
}

fn pod_labels_of_deployment(d: &k8s_openapi::api::apps::v1::Deployment) -> Labels {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap()
}

#[test]
fn the_policy_closes_the_element_to_all_but_the_archive_and_the_operator() {
    let se: StorageElement = fixture("storageelement-s3.yaml");
    let es: EventStream = fixture("eventstream.yaml");
    let p = policy(&se, &cfg());

    assert_eq!(p.metadata.name.as_deref(), Some("se-a"));
    assert_eq!(p.metadata.namespace.as_deref(), Some("archive"));
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "StorageElement");
    assert_eq!(owner.uid, "0b5d6c2e-0000-4000-8000-000000000002");
    assert_eq!(owner.controller, Some(true));
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    assert!(spec.egress.is_none());

    // It applies to the element's own pods, and only to them.
    let workload = se_build::workload(&se, &es, &cfg()).unwrap();
    let se_build::ElementWorkload::Deployment(d) = workload else {
        panic!("s3 is a Deployment");
    };
    let element_pod = pod_labels_of_deployment(&d);
    let target = spec.pod_selector.as_ref().unwrap();
    assert!(selects(target, &element_pod));
    let migration = se_build::migration_job(&se, &es, &cfg()).unwrap();
    assert!(!selects(target, &pod_labels_of_job(&migration)));

    // Only the http port, over TCP.
    let ports = spec.ingress.as_ref().unwrap()[0].ports.clone().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(IntOrString::String("http".into())));
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));

    // The archive's pods, as the other builders label them, are let in.
    let ing: Ingester = fixture("ingester.yaml");
    let qn: QueryNode = fixture("querynode.yaml");
    let ingester_pod = pod_labels_of_deployment(&ing_build::deployment(&ing, &cfg()).unwrap());
    let query_pod = pod_labels_of_deployment(&qn_build::deployment(&qn, &es, &cfg()).unwrap());
    let backfill_pod = pod_labels_of_job(&qn_build::backfill_job(&qn, &es, &cfg()).unwrap());
    let rebuild_pod = pod_labels_of_job(&se_build::rebuild_job(&se, &es, &cfg(), "full").unwrap());
    let cronjobs = se_build::cronjobs(&se, &es, &cfg()).unwrap();
    assert!(!cronjobs.is_empty(), "the fixture schedules maintenance");
    for (what, labels) in [
        ("ingester", &ingester_pod),
        ("query node", &query_pod),
        ("backfill Job", &backfill_pod),
        ("migration Job", &pod_labels_of_job(&migration)),
        ("rebuild Job", &rebuild_pod),
    ] {
        assert!(admits_local(&p, labels), "{what} {labels:?} is not let in");
    }
    for c in &cronjobs {
        let template = &c.spec.as_ref().unwrap().job_template;
        let labels = template
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap();
        let labels = labels.labels.clone().unwrap();
        assert!(
            admits_local(&p, &labels),
            "maintenance {labels:?} is not let in"
        );
    }

    // Nothing else of the namespace: another element's Jobs, another element's pods, an
    // unlabelled pod, a pod claiming a component without being the operator's.
    let mut other = se.clone();
    other.metadata.name = Some("se-other".into());
    let other_job = pod_labels_of_job(&se_build::migration_job(&other, &es, &cfg()).unwrap());
    let other_element = {
        let se_build::ElementWorkload::Deployment(d) =
            se_build::workload(&other, &es, &cfg()).unwrap()
        else {
            panic!("s3 is a Deployment");
        };
        pod_labels_of_deployment(&d)
    };
    let mut forged = ingester_pod.clone();
    forged.remove("app.kubernetes.io/managed-by");
    for (what, labels) in [
        ("another element's Job", &other_job),
        ("another element", &other_element),
        ("an unlabelled pod", &Labels::new()),
        ("a pod not made by the operator", &forged),
    ] {
        assert!(!admits_local(&p, labels), "{what} {labels:?} is let in");
    }

    // The operator: its pods (the chart's name label) in its own namespace only.
    let remote: Vec<_> = peers(&p)
        .into_iter()
        .filter(|peer| peer.namespace_selector.is_some())
        .collect();
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert_eq!(
        remote[0].namespace_selector.as_ref().unwrap().match_labels,
        Some(Labels::from([(
            "kubernetes.io/metadata.name".to_string(),
            "artstore-system".to_string()
        )]))
    );
    let operator_pod = Labels::from([
        (
            "app.kubernetes.io/name".to_string(),
            "artstore-operator".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), "ops".to_string()),
    ]);
    assert!(selects(
        remote[0].pod_selector.as_ref().unwrap(),
        &operator_pod
    ));
    assert!(
        !admits_local(&p, &operator_pod),
        "not any pod of that name elsewhere"
    );
}

#[test]
fn the_operator_label_is_the_charts_name() {
    let chart = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/artstore-operator/Chart.yaml"),
    )
    .expect("Chart.yaml");
    let chart: serde_json::Value = serde_saphyr::from_str(&chart).expect("parse Chart.yaml");
    // The chart labels its pods app.kubernetes.io/name: {{ .Chart.Name }} (_helpers.tpl).
    assert_eq!(chart["name"], OPERATOR_APP);
}

#[test]
fn without_the_operators_namespace_any_namespace_may_hold_the_operator() {
    let se: StorageElement = fixture("storageelement-s3.yaml");
    let cfg = BuildConfig {
        operator_namespace: None,
        ..cfg()
    };
    let p = policy(&se, &cfg);
    let remote: Vec<_> = peers(&p)
        .into_iter()
        .filter_map(|peer| peer.namespace_selector)
        .collect();
    assert_eq!(remote, vec![LabelSelector::default()]);
}

#[test]
fn allow_from_adds_peers_and_opting_out_builds_no_policy() {
    let mut se: StorageElement = fixture("storageelement-s3.yaml");
    let prometheus: NetworkPolicyPeer = serde_json::from_value(json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }))
    .unwrap();
    se.spec.network_policy.allow_from = vec![prometheus.clone()];
    let with_extra = policy(&se, &cfg());
    let all = peers(&with_extra);
    assert_eq!(all.last(), Some(&prometheus));
    assert_eq!(
        all.len(),
        peers(&policy(&fixture("storageelement-s3.yaml"), &cfg())).len() + 1
    );

    let mut se: StorageElement = fixture("storageelement-s3.yaml");
    assert!(se.spec.network_policy.enabled, "on by default");
    se.spec.network_policy.enabled = false;
    assert_eq!(network_policy::element(&se, &cfg()), Ok(None));
}
