//! A storage element's NetworkPolicy on a real API server: the server accepts it, it selects
//! the element's pods and the archive's peers, follows the opt-out both ways, comes back when
//! deleted by hand and goes with its element (garbage collector). The node of
//! scripts/node.sh uses the bridge CNI plugin, which enforces no policy: objects only.

use std::collections::BTreeMap;

use artstore_operator::crd::{EventStream, StorageElement};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::DeleteParams;
use serde_json::json;

use super::{Cluster, OPERATOR_NAMESPACE, Operator, assert_owned_by, sample, set};

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

const NAME: &str = "app.kubernetes.io/name";
const COMPONENT: &str = "app.kubernetes.io/component";
const INSTANCE: &str = "app.kubernetes.io/instance";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_element_gets_a_network_policy_that_follows_its_spec_and_its_life() {
    let cluster = Cluster::start(true).await;
    let ns = cluster.namespace("netpol").await;
    let operator = Operator::start(&cluster.client, &ns);
    // The element only needs its stream to exist for its children to be built.
    cluster
        .apply::<EventStream>(&ns, &sample("eventstream.yaml"))
        .await
        .expect("apply stream");
    let applied: StorageElement = cluster
        .apply(&ns, &sample("storageelement-s3.yaml"))
        .await
        .expect("apply element");
    assert!(
        applied.spec.network_policy.enabled,
        "the server defaults networkPolicy.enabled to true"
    );

    // Written before the migration Job has run, so the element's pods never start open.
    let policy: NetworkPolicy = cluster
        .wait_for(
            &ns,
            "se-a",
            "the element's NetworkPolicy",
            |_: &NetworkPolicy| true,
        )
        .await;
    assert_owned_by(&policy, &applied);
    let spec = policy.spec.clone().expect("spec");
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels),
        labels(&[
            (NAME, "artstore"),
            (COMPONENT, "storage-element"),
            (INSTANCE, "se-a")
        ])
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let rules = spec.ingress.expect("ingress");
    assert_eq!(rules.len(), 1);
    let ports = rules[0].ports.clone().expect("ports");
    assert_eq!(
        serde_json::to_value(&ports).unwrap(),
        json!([{"port": "http", "protocol": "TCP"}])
    );
    let from: Vec<_> = rules[0]
        .from
        .clone()
        .expect("from")
        .into_iter()
        .map(|p| {
            (
                p.namespace_selector.map(|s| s.match_labels),
                p.pod_selector.and_then(|s| s.match_labels),
            )
        })
        .collect();
    let archive = |component: &str, instance: Option<&str>| {
        let mut l = vec![
            (NAME, "artstore"),
            (COMPONENT, component),
            (MANAGED_BY, "artstore-operator"),
        ];
        l.extend(instance.map(|i| (INSTANCE, i)));
        (None, labels(&l))
    };
    assert_eq!(
        from,
        vec![
            archive("ingester", None),
            archive("query-node", None),
            archive("query-node-job", None),
            archive("storage-element-job", Some("se-a")),
            (
                Some(labels(&[(
                    "kubernetes.io/metadata.name",
                    OPERATOR_NAMESPACE
                )])),
                labels(&[(NAME, "artstore-operator")])
            ),
        ]
    );

    // Deleted by hand: the operator puts it back (it watches the policies it owns).
    let uid = policy.metadata.uid.clone();
    cluster
        .api::<NetworkPolicy>(&ns)
        .delete("se-a", &DeleteParams::default())
        .await
        .expect("delete policy");
    cluster
        .wait_for(&ns, "se-a", "the policy re-created", |p: &NetworkPolicy| {
            p.metadata.uid != uid
        })
        .await;

    // Opt-out removes it; opting in again brings it back.
    let off = set(
        sample("storageelement-s3.yaml"),
        "/spec/networkPolicy",
        json!({"enabled": false}),
    );
    cluster
        .apply::<StorageElement>(&ns, &off)
        .await
        .expect("opt out");
    cluster
        .wait_gone::<NetworkPolicy>(&ns, "se-a", "policy deleted on opt-out")
        .await;
    let extra = json!({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}});
    let on = set(
        sample("storageelement-s3.yaml"),
        "/spec/networkPolicy",
        json!({"enabled": true, "allowFrom": [extra]}),
    );
    cluster
        .apply::<StorageElement>(&ns, &on)
        .await
        .expect("opt in");
    let policy: NetworkPolicy = cluster
        .wait_for(
            &ns,
            "se-a",
            "policy with the extra peer",
            |p: &NetworkPolicy| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.ingress.as_ref())
                    .and_then(|r| r[0].from.as_ref())
                    .is_some_and(|f| f.len() == 6)
            },
        )
        .await;
    let last = policy.spec.unwrap().ingress.unwrap()[0]
        .from
        .clone()
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(serde_json::to_value(last).unwrap(), extra);

    // The element goes: the garbage collector takes its policy with it.
    cluster
        .api::<StorageElement>(&ns)
        .delete("se-a", &DeleteParams::default())
        .await
        .expect("delete element");
    cluster
        .wait_gone::<NetworkPolicy>(&ns, "se-a", "policy collected with its element")
        .await;

    operator.stop().await;
}
