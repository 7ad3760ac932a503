//! A storage element's NetworkPolicy: its pods accept connections on the `http` port only from
//! the archive's own pods (the namespace's ingesters and query nodes, the element's Jobs, the
//! query nodes' backfill Jobs), the operator, and the peers the spec adds. Listing any ingress
//! rule isolates the pods for ingress, so everything else is refused (where the network
//! plugin enforces NetworkPolicies).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{
    APP, HTTP_PORT_NAME, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME,
    LABEL_NAMESPACE_NAME, MANAGED_BY, OPERATOR_APP, child_meta, label_selector, labels, name_ns,
};
use super::{BuildConfig, BuildError, ingester, query_node, storage_element};
use crate::crd::StorageElement;

/// Pods the operator made of `component`: of one `instance`, or every one in the namespace.
fn archive_pods(component: &str, instance: Option<&str>) -> NetworkPolicyPeer {
    let mut l = BTreeMap::from([
        (LABEL_NAME.to_string(), APP.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ]);
    if let Some(instance) = instance {
        l.insert(LABEL_INSTANCE.into(), instance.into());
    }
    pods(l)
}

fn pods(match_labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(match_labels),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The operator's pods, in its own namespace when known.
fn operator(cfg: &BuildConfig) -> NetworkPolicyPeer {
    let namespaces = match &cfg.operator_namespace {
        Some(ns) => LabelSelector {
            match_labels: Some(BTreeMap::from([(
                LABEL_NAMESPACE_NAME.to_string(),
                ns.clone(),
            )])),
            ..Default::default()
        },
        None => LabelSelector::default(),
    };
    NetworkPolicyPeer {
        namespace_selector: Some(namespaces),
        ..pods(BTreeMap::from([(
            LABEL_NAME.to_string(),
            OPERATOR_APP.to_string(),
        )]))
    }
}

/// The element's NetworkPolicy (named like the element), or `None` when the spec opts out.
pub fn element(
    se: &StorageElement,
    cfg: &BuildConfig,
) -> Result<Option<NetworkPolicy>, BuildError> {
    let policy = &se.spec.network_policy;
    if !policy.enabled {
        return Ok(None);
    }
    let (name, _) = name_ns(se)?;
    let mut from = vec![
        archive_pods(ingester::COMPONENT, None),
        archive_pods(query_node::COMPONENT, None),
        archive_pods(query_node::JOB_COMPONENT, None),
        archive_pods(storage_element::JOB_COMPONENT, Some(&name)),
        operator(cfg),
    ];
    from.extend(policy.allow_from.iter().cloned());
    Ok(Some(NetworkPolicy {
        metadata: child_meta(se, name.clone(), labels(storage_element::COMPONENT, &name))?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(label_selector(storage_element::COMPONENT, &name)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    }))
}
