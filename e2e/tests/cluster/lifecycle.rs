//! Resources coming and going: garbage collection of a QueryNode's children, an EventStream's
//! deletion policy, admission of an invalid resource, and the chart's upgrade and uninstall.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};

use crate::support::{Cluster, NAMESPACE, OPERATOR_NAMESPACE, cluster, eventually};

const READY: Duration = Duration::from_secs(240);

async fn create(c: &Cluster, kind: &str, object: Value) {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    c.api(kind)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating a {kind}: {e}"));
}

async fn stream_exists(c: &Cluster, stream: &str) -> bool {
    let mut redis = c.redis().await;
    let n: i64 = redis::cmd("EXISTS")
        .arg(stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    n == 1
}

#[tokio::test]
async fn deleting_a_query_node_collects_its_children() {
    let c = cluster().await;
    let name = format!("gc-{}", &c.run[..6]);
    // A database of its own (scripts/node.sh and e2e/manifests make `query_extra`).
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-db")},
        "stringData": {"url": "postgres://artstore:artstore@postgres.artstore-deps.svc.cluster.local:5432/query_extra"}
    }))
    .unwrap();
    c.namespaced::<Secret>(NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    create(
        &c,
        "QueryNode",
        json!({
            "apiVersion": "artstore.io/v1alpha1", "kind": "QueryNode",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "database": {"urlSecretRef": {"name": format!("{name}-db"), "key": "url"}},
                "auth": {"jwtSecretRef": {"name": "artstore-jwt", "key": "secret"}},
                "eventStreamRef": "files",
                "storageElements": []
            }
        }),
    )
    .await;
    let qn = c.wait_ready("QueryNode", &name, READY).await;
    let uid = qn["metadata"]["uid"].as_str().unwrap().to_string();
    let owned = |items: Vec<Value>| -> Vec<String> {
        items
            .into_iter()
            .filter(|o| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["uid"] == json!(uid)))
            })
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let children = |c: &Cluster| {
        let owned = &owned;
        let deployments = c.namespaced::<Deployment>(NAMESPACE);
        let services = c.namespaced::<Service>(NAMESPACE);
        async move {
            let d = deployments
                .list(&ListParams::default())
                .await
                .unwrap()
                .items;
            let s = services.list(&ListParams::default()).await.unwrap().items;
            let mut names = owned(
                d.into_iter()
                    .map(|x| serde_json::to_value(x).unwrap())
                    .collect(),
            );
            names.extend(owned(
                s.into_iter()
                    .map(|x| serde_json::to_value(x).unwrap())
                    .collect(),
            ));
            names
        }
    };
    let before = children(&c).await;
    assert!(
        before.len() >= 2,
        "a Deployment and a Service owned by {name}: {before:?}"
    );

    c.api("QueryNode")
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the QueryNode's children are collected", READY, || async {
        children(&c).await.is_empty().then_some(())
    })
    .await;
    c.namespaced::<Secret>(NAMESPACE)
        .delete(&format!("{name}-db"), &DeleteParams::default())
        .await
        .unwrap();
}

async fn event_stream_deleted_with_policy(c: &Cluster, policy: &str) -> bool {
    let name = format!("es-{}-{}", policy.to_lowercase(), &c.run[..6]);
    let stream = format!("artstore:e2e:{}:{}", c.run, policy.to_lowercase());
    create(
        c,
        "EventStream",
        json!({
            "apiVersion": "artstore.io/v1alpha1", "kind": "EventStream",
            "metadata": {"name": name},
            "spec": {
                "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
                "stream": stream,
                "retention": {"maxLength": 1000, "maxAge": "1h"},
                "deletionPolicy": policy
            }
        }),
    )
    .await;
    c.wait_ready("EventStream", &name, READY).await;
    assert!(
        stream_exists(c, &stream).await,
        "the operator created {stream}"
    );
    c.api("EventStream")
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the EventStream is gone", READY, || async {
        c.api("EventStream")
            .get_opt(&name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let exists = stream_exists(c, &stream).await;
    let mut redis = c.redis().await;
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    exists
}

#[tokio::test]
async fn an_event_stream_deletion_policy_keeps_or_removes_the_stream() {
    let c = cluster().await;
    assert!(
        !event_stream_deleted_with_policy(&c, "Delete").await,
        "Delete removes the stream"
    );
    assert!(
        event_stream_deleted_with_policy(&c, "Retain").await,
        "Retain keeps the stream"
    );
}

#[tokio::test]
async fn an_invalid_resource_is_refused_with_the_rules_message() {
    let c = cluster().await;
    let manifest = format!(
        r#"apiVersion: artstore.io/v1alpha1
kind: StorageElement
metadata: {{name: invalid-{run}, namespace: {NAMESPACE}}}
spec:
  mode: rw
  priority: 2000000
  capacity: 1Gi
  backend: {{volume: {{size: 1Gi}}}}
  database: {{urlSecretRef: {{name: se-volume-db, key: url}}}}
  auth: {{jwtSecretRef: {{name: artstore-jwt, key: secret}}}}
  eventStreamRef: files
"#,
        run = c.run
    );
    let out = c.kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(
        !out.success,
        "an invalid StorageElement was accepted: {}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("priority must be between 0 and 1000000"),
        "kubectl says why: {}",
        out.stderr
    );
    assert!(
        c.api("StorageElement")
            .get_opt(&format!("invalid-{}", c.run))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_chart_upgrades_and_uninstalls_without_touching_the_archive() {
    let c = cluster().await;
    let word = format!("helm{}", c.run);
    let record = c
        .upload_ok(&format!("helm-{}.txt", c.run), b"kept across helm", &word)
        .await;
    let file_id = record["file_id"].as_str().unwrap().to_string();
    c.wait_searchable(&word, std::slice::from_ref(&file_id), READY)
        .await;

    // The documented upgrade: CRDs first (helm never upgrades crds/), then the release.
    let out = c.kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "charts/artstore-operator/crds/",
        ],
        None,
    );
    assert!(out.success, "CRD step: {}", out.stderr);
    let values = c.helm(&[
        "get",
        "values",
        "artstore-operator",
        "-n",
        OPERATOR_NAMESPACE,
        "-o",
        "json",
    ]);
    assert!(values.success, "{}", values.stderr);
    let values_file = std::env::temp_dir().join(format!("artstore-values-{}.json", c.run));
    std::fs::write(&values_file, &values.stdout).unwrap();
    let values_path = values_file.to_str().unwrap();
    let out = c.helm(&[
        "upgrade",
        "artstore-operator",
        "charts/artstore-operator",
        "-n",
        OPERATOR_NAMESPACE,
        "-f",
        values_path,
        "--set",
        &format!("podAnnotations.e2e-upgrade={}", c.run),
        "--wait",
        "--timeout",
        "5m",
    ]);
    assert!(out.success, "helm upgrade: {}", out.stderr);
    for (kind, name) in [
        ("EventStream", "files"),
        ("StorageElement", "se-s3"),
        ("StorageElement", "se-volume"),
        ("QueryNode", "search"),
        ("Ingester", "upload"),
    ] {
        c.wait_ready(kind, name, READY).await;
    }

    // Uninstall removes the operator, never the archive: resources, workloads and data stay.
    let out = c.helm(&[
        "uninstall",
        "artstore-operator",
        "-n",
        OPERATOR_NAMESPACE,
        "--wait",
    ]);
    assert!(out.success, "helm uninstall: {}", out.stderr);
    let operator = c
        .namespaced::<Deployment>(OPERATOR_NAMESPACE)
        .get_opt("artstore-operator")
        .await
        .unwrap();
    assert!(operator.is_none(), "the operator's Deployment is gone");
    assert!(
        c.api("EventStream")
            .get_opt("files")
            .await
            .unwrap()
            .is_some(),
        "the EventStream stays"
    );
    assert!(
        stream_exists(&c, &c.stack.stream).await,
        "the Retain stream keeps its data"
    );
    let element = c
        .element(record["storage_element_id"].as_str().unwrap())
        .clone();
    for base in [element.url.as_str(), c.stack.query_url.as_str()] {
        let response = c
            .http
            .get(format!("{base}/api/v1/files/{file_id}/download"))
            .bearer_auth(&c.stack.tokens.reader)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "download from {base} after uninstall"
        );
        assert_eq!(&response.bytes().await.unwrap()[..], b"kept across helm");
    }

    // Installed again, the operator adopts the archive as it is.
    let out = c.helm(&[
        "install",
        "artstore-operator",
        "charts/artstore-operator",
        "-n",
        OPERATOR_NAMESPACE,
        "-f",
        values_path,
        "--wait",
        "--timeout",
        "5m",
    ]);
    std::fs::remove_file(&values_file).ok();
    assert!(out.success, "helm install: {}", out.stderr);
    for (kind, name) in [
        ("EventStream", "files"),
        ("StorageElement", "se-s3"),
        ("StorageElement", "se-volume"),
        ("QueryNode", "search"),
        ("Ingester", "upload"),
    ] {
        c.wait_ready(kind, name, READY).await;
    }
}
