//! Pods that go away: the query node's during a burst of uploads, more query node replicas,
//! and the operator's own pod.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

use crate::support::{Cluster, NAMESPACE, OPERATOR_NAMESPACE, cluster, eventually};

const QUERY_NODE: &str = "search";
const SYNC: Duration = Duration::from_secs(180);

async fn consumer_group(c: &Cluster) -> String {
    let qn = c.get("QueryNode", QUERY_NODE).await;
    qn["status"]["consumerGroup"]
        .as_str()
        .expect("status.consumerGroup")
        .to_string()
}

/// Uploads `count` small files, four at a time; returns their ids.
async fn burst(c: &Cluster, count: usize, word: &str) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(0..count)
        .map(|i| async move {
            let record = c
                .upload_ok(
                    &format!("burst-{word}-{i}.txt"),
                    format!("{word} {i}").as_bytes(),
                    &format!("burst {word}"),
                )
                .await;
            record["file_id"].as_str().unwrap().to_string()
        })
        .buffer_unordered(4)
        .collect()
        .await
}

#[tokio::test]
async fn the_query_node_pod_deleted_during_a_burst_resumes_its_group() {
    let c = cluster().await;
    let group = consumer_group(&c).await;
    let pods = c.pods_of(QUERY_NODE, NAMESPACE).await;
    assert_eq!(pods.len(), 1, "one query node pod before the burst");
    let old_pod = pods[0].metadata.name.clone().unwrap();

    let word = format!("burst{}", c.run);
    let uploads = burst(&c, 60, &word);
    let kill = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.namespaced::<Pod>(NAMESPACE)
            .delete(&old_pod, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    };
    let (ids, ()) = tokio::join!(uploads, kill);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        60,
        "every upload stored once"
    );

    c.wait_replacement(QUERY_NODE, NAMESPACE, &old_pod).await;
    c.wait_rollout(QUERY_NODE, NAMESPACE, 1).await;
    c.wait_searchable(&word, &ids, SYNC).await;
    eventually("nothing pending in the group", SYNC, || async {
        (c.pending(&group).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_query_node_replicas_both_consume_and_search_stays_complete() {
    let c = cluster().await;
    let group = consumer_group(&c).await;
    c.merge_patch("QueryNode", QUERY_NODE, json!({"spec": {"replicas": 2}}))
        .await;
    c.wait_rollout(QUERY_NODE, NAMESPACE, 2).await;
    let pods: BTreeSet<String> = c
        .pods_of(QUERY_NODE, NAMESPACE)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(pods.len(), 2);

    let word = format!("scaled{}", c.run);
    let ids = burst(&c, 20, &word).await;
    c.wait_searchable(&word, &ids, SYNC).await;
    // Each replica reads as a consumer named after its pod (stable across restarts of it).
    let consumers = eventually(
        "both pods are consumers of the group",
        Duration::from_secs(60),
        || async {
            let mut redis = c.redis().await;
            let reply: Vec<redis::Value> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&c.stack.stream)
                .arg(&group)
                .query_async(&mut redis)
                .await
                .ok()?;
            let names: BTreeSet<String> = reply.iter().filter_map(consumer_name).collect();
            pods.is_subset(&names).then_some(names)
        },
    )
    .await;
    assert!(pods.is_subset(&consumers));
    eventually("nothing pending in the group", SYNC, || async {
        (c.pending(&group).await == 0).then_some(())
    })
    .await;

    c.merge_patch("QueryNode", QUERY_NODE, json!({"spec": {"replicas": 1}}))
        .await;
    c.wait_rollout(QUERY_NODE, NAMESPACE, 1).await;
    c.wait_ready("QueryNode", QUERY_NODE, SYNC).await;
}

/// The `name` field of one XINFO CONSUMERS entry (RESP2 flat array or RESP3 map).
fn consumer_name(entry: &redis::Value) -> Option<String> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match entry {
        redis::Value::Array(fields) => fields
            .chunks(2)
            .find(|kv| text(&kv[0]).as_deref() == Some("name"))
            .and_then(|kv| text(&kv[1])),
        redis::Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some("name"))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}

/// Jobs the operator started itself (not those of the maintenance CronJobs).
async fn operator_jobs(c: &Cluster) -> BTreeSet<String> {
    c.namespaced::<Job>(NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| {
            !j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "CronJob")
        })
        .filter_map(|j| j.metadata.name)
        .collect()
}

#[tokio::test]
async fn a_new_operator_leader_takes_over_without_duplicates() {
    let c = cluster().await;
    let jobs_before = operator_jobs(&c).await;
    let status_before = c.get("StorageElement", "se-s3").await["status"].clone();
    let leases = c.namespaced::<Lease>(OPERATOR_NAMESPACE);
    let holder = |leases: Vec<Lease>| {
        leases
            .into_iter()
            .find_map(|l| l.spec.and_then(|s| s.holder_identity))
    };
    let old_holder = holder(leases.list(&ListParams::default()).await.unwrap().items)
        .expect("a leader holds the Lease");
    let pods = c.pods_of("artstore-operator", OPERATOR_NAMESPACE).await;
    assert_eq!(pods.len(), 1);
    let old_pod = pods[0].metadata.name.clone().unwrap();
    assert_eq!(old_holder, old_pod, "the leader is the operator's pod");

    c.namespaced::<Pod>(OPERATOR_NAMESPACE)
        .delete(&old_pod, &DeleteParams::default())
        .await
        .unwrap();
    let new_pod = c
        .wait_replacement("artstore-operator", OPERATOR_NAMESPACE, &old_pod)
        .await;
    eventually(
        "the new pod holds the Lease",
        Duration::from_secs(120),
        || async {
            let now = holder(leases.list(&ListParams::default()).await.ok()?.items)?;
            (now == new_pod).then_some(())
        },
    )
    .await;

    // The new leader reconciles: a change made now is handled, and nothing ran twice.
    c.merge_patch("QueryNode", QUERY_NODE, json!({"spec": {"batchSize": 200}}))
        .await;
    c.wait_ready("QueryNode", QUERY_NODE, Duration::from_secs(120))
        .await;
    c.merge_patch("QueryNode", QUERY_NODE, json!({"spec": {"batchSize": 256}}))
        .await;
    for (kind, name) in [
        ("StorageElement", "se-s3"),
        ("StorageElement", "se-volume"),
        ("Ingester", "upload"),
        ("EventStream", "files"),
    ] {
        c.wait_ready(kind, name, Duration::from_secs(120)).await;
    }
    assert_eq!(
        operator_jobs(&c).await,
        jobs_before,
        "no Job started again by the new leader"
    );
    let status_after = c.get("StorageElement", "se-s3").await["status"].clone();
    for field in ["migration", "endpoint", "elementId"] {
        assert_eq!(
            status_after[field], status_before[field],
            "status.{field} kept"
        );
    }
}
