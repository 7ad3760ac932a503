//! An archive as one picture: the EventStream and every StorageElement, QueryNode and Ingester
//! that uses it. Built from the custom resources alone (pure), so the screens can be tested
//! without a cluster; `-o json|yaml` prints this model.

use std::collections::BTreeMap;

use artstore_operator::crd::{Condition, EventStream, Ingester, QueryNode, StorageElement};
use kube::ResourceExt;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Archive {
    pub namespace: String,
    /// Name of the EventStream the archive is built around.
    pub event_stream: String,
    /// Components that are not Ready, with their condition's reason and message.
    pub problems: Vec<Problem>,
    pub stream: Option<StreamView>,
    pub storage_elements: Vec<ElementView>,
    pub query_nodes: Vec<QueryNodeView>,
    pub ingesters: Vec<IngesterView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub kind: String,
    pub name: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub ready: bool,
    pub paused: bool,
    /// `True`, `False`, `Unknown`, or `Pending` before the operator wrote any status.
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamView {
    pub name: String,
    pub stream: String,
    pub readiness: Readiness,
    pub length: Option<u64>,
    pub pending: Option<u64>,
    pub lag: Option<u64>,
    pub groups: Vec<GroupView>,
    pub dead_letter_stream: String,
    pub max_deliveries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub name: String,
    pub consumers: u64,
    pub pending: u64,
    pub lag: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ElementView {
    pub name: String,
    pub element_id: String,
    pub readiness: Readiness,
    pub mode: String,
    pub priority: i32,
    pub used_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub file_count: Option<u64>,
    pub inconsistency_percentage: Option<f64>,
    pub last_rebuild: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryNodeView {
    pub name: String,
    pub readiness: Readiness,
    pub replicas: i32,
    pub ready_replicas: Option<i32>,
    pub lag: Option<u64>,
    pub indexed_files: Option<u64>,
    pub backfill: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngesterView {
    pub name: String,
    pub readiness: Readiness,
    pub replicas: i32,
    pub ready_replicas: Option<i32>,
    pub writable_targets: Vec<String>,
}

fn readiness(meta: &kube::api::ObjectMeta, conditions: Option<&[Condition]>) -> Readiness {
    let paused = artstore_operator::crd::is_paused(meta);
    let ready = conditions.and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) => Readiness {
            ready: c.status == "True",
            paused,
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
        None => Readiness {
            ready: false,
            paused,
            status: "Pending".into(),
            reason: "NoStatus".into(),
            message: "the operator has not reported on it yet".into(),
        },
    }
}

fn ns_of<K: ResourceExt>(o: &K) -> String {
    o.namespace().unwrap_or_default()
}

/// Groups the resources into archives, one per EventStream (and one per missing EventStream
/// that something refers to). Not-ready components come first in each list.
pub fn archives(
    streams: &[EventStream],
    elements: &[StorageElement],
    nodes: &[QueryNode],
    ingesters: &[Ingester],
) -> Vec<Archive> {
    let mut by_key: BTreeMap<(String, String), Archive> = BTreeMap::new();
    let mut entry = |ns: String, es: String| -> (String, String) {
        let key = (ns.clone(), es.clone());
        by_key.entry(key.clone()).or_insert_with(|| Archive {
            namespace: ns,
            event_stream: es,
            problems: Vec::new(),
            stream: None,
            storage_elements: Vec::new(),
            query_nodes: Vec::new(),
            ingesters: Vec::new(),
        });
        key
    };
    let mut keys = Vec::new();
    for es in streams {
        keys.push((entry(ns_of(es), es.name_any()), es));
    }
    let mut se_keys = Vec::new();
    for se in elements {
        se_keys.push((entry(ns_of(se), se.spec.event_stream_ref.clone()), se));
    }
    let mut qn_keys = Vec::new();
    for qn in nodes {
        qn_keys.push((entry(ns_of(qn), qn.spec.event_stream_ref.clone()), qn));
    }
    // An ingester belongs to the archive of the storage elements it writes to (all of the
    // namespace's when it names none).
    let mut ing_keys = Vec::new();
    for ing in ingesters {
        let ns = ns_of(ing);
        let key = elements
            .iter()
            .filter(|se| ns_of(*se) == ns)
            .find(|se| {
                ing.spec.storage_elements.is_empty()
                    || ing.spec.storage_elements.contains(&se.name_any())
            })
            .map(|se| (ns.clone(), se.spec.event_stream_ref.clone()))
            .or_else(|| {
                streams
                    .iter()
                    .find(|es| ns_of(*es) == ns)
                    .map(|es| (ns.clone(), es.name_any()))
            })
            .unwrap_or_else(|| (ns.clone(), String::new()));
        ing_keys.push((entry(key.0, key.1), ing));
    }

    for (key, es) in keys {
        let a = by_key.get_mut(&key).expect("entry");
        let st = es.status.clone().unwrap_or_default();
        a.stream = Some(StreamView {
            name: es.name_any(),
            stream: es.spec.stream.clone(),
            readiness: readiness(
                &es.metadata,
                es.status.as_ref().map(|s| s.conditions.as_slice()),
            ),
            length: st.length,
            pending: st.pending,
            lag: st.lag,
            groups: st
                .groups
                .iter()
                .map(|g| GroupView {
                    name: g.name.clone(),
                    consumers: g.consumers,
                    pending: g.pending,
                    lag: g.lag,
                })
                .collect(),
            dead_letter_stream: es.dead_letter_stream(),
            max_deliveries: es.spec.dead_letter.as_ref().map(|d| d.max_deliveries),
        });
    }
    for (key, se) in se_keys {
        let st = se.status.clone().unwrap_or_default();
        let view = ElementView {
            name: se.name_any(),
            element_id: st.element_id.clone().unwrap_or_else(|| se.element_id()),
            readiness: readiness(
                &se.metadata,
                se.status.as_ref().map(|s| s.conditions.as_slice()),
            ),
            mode: serde_json::to_value(se.spec.mode)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            priority: se.spec.priority,
            used_bytes: st.used_bytes,
            capacity_bytes: st.capacity_bytes,
            file_count: st.file_count,
            inconsistency_percentage: st
                .last_consistency_report
                .as_ref()
                .map(|r| r.inconsistency_percentage),
            last_rebuild: st.last_rebuild.as_ref().map(|r| {
                format!(
                    "{} {:?} {}",
                    r.mode,
                    r.phase,
                    r.completed_at.as_deref().unwrap_or(&r.started_at)
                )
            }),
        };
        if let Some(a) = by_key.get_mut(&key) {
            a.storage_elements.push(view);
        }
    }
    for (key, qn) in qn_keys {
        let st = qn.status.clone().unwrap_or_default();
        let view = QueryNodeView {
            name: qn.name_any(),
            readiness: readiness(
                &qn.metadata,
                qn.status.as_ref().map(|s| s.conditions.as_slice()),
            ),
            replicas: qn.spec.replicas,
            ready_replicas: st.ready_replicas,
            lag: st.lag,
            indexed_files: st.indexed_files,
            backfill: st.backfill.as_ref().map(|b| format!("{:?}", b.phase)),
        };
        if let Some(a) = by_key.get_mut(&key) {
            a.query_nodes.push(view);
        }
    }
    for (key, ing) in ing_keys {
        let st = ing.status.clone().unwrap_or_default();
        let view = IngesterView {
            name: ing.name_any(),
            readiness: readiness(
                &ing.metadata,
                ing.status.as_ref().map(|s| s.conditions.as_slice()),
            ),
            replicas: ing.spec.replicas,
            ready_replicas: st.ready_replicas,
            writable_targets: st.writable_targets.clone(),
        };
        if let Some(a) = by_key.get_mut(&key) {
            a.ingesters.push(view);
        }
    }

    let mut out: Vec<Archive> = by_key.into_values().collect();
    for a in &mut out {
        if a.stream.is_none() && !a.event_stream.is_empty() {
            a.problems.push(Problem {
                kind: "EventStream".into(),
                name: a.event_stream.clone(),
                reason: "NotFound".into(),
                message: "referenced by the components below but does not exist".into(),
            });
        }
        let mut push = |kind: &str, name: &str, r: &Readiness| {
            if !r.ready || r.paused {
                a_problem(&mut a.problems, kind, name, r);
            }
        };
        if let Some(s) = &a.stream {
            push("EventStream", &s.name, &s.readiness);
        }
        for v in &a.storage_elements {
            push("StorageElement", &v.name, &v.readiness);
        }
        for v in &a.query_nodes {
            push("QueryNode", &v.name, &v.readiness);
        }
        for v in &a.ingesters {
            push("Ingester", &v.name, &v.readiness);
        }
        a.storage_elements
            .sort_by_key(|v| (v.readiness.ready, v.name.clone()));
        a.query_nodes
            .sort_by_key(|v| (v.readiness.ready, v.name.clone()));
        a.ingesters
            .sort_by_key(|v| (v.readiness.ready, v.name.clone()));
    }
    out
}

fn a_problem(problems: &mut Vec<Problem>, kind: &str, name: &str, r: &Readiness) {
    let (reason, message) = if r.paused && r.ready {
        (
            "Paused".to_string(),
            "artstore.io/reconcile=paused: the operator leaves it alone (`kubectl artstore resume`)".to_string(),
        )
    } else {
        (r.reason.clone(), r.message.clone())
    };
    problems.push(Problem {
        kind: kind.into(),
        name: name.into(),
        reason,
        message,
    });
}
