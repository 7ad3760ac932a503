//! The sample archive of `operator/tests/fixtures/`, one scenario per test so each fails on
//! its own: every scenario starts its own control plane (the harness stops one when its test
//! ends) with the operator watching one namespace and a Redis stream of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use artstore_operator::controller::conditions::HasStatus;
use artstore_operator::crd::{EventStream, Ingester, JobPhase, QueryNode, StorageElement};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::{
    Cluster, HOLD, Operator, PATIENCE, assert_owned_by, groups_of, observed_current, paused,
    reason_is, sample, set, without_annotations,
};
use artstore_testsupport::eventually;

/// One scenario's archive: a control plane, the namespace `archive` with the Redis URL
/// Secret, the operator watching it, and a stream name no other test uses.
struct Archive {
    cluster: Cluster,
    ns: String,
    stream: String,
    operator: Operator,
}

impl Archive {
    async fn start() -> Self {
        let cluster = Cluster::start(false).await;
        let ns = cluster.namespace("archive").await;
        let stream = artstore_testsupport::unique_prefix("real-apiserver");
        cluster
            .secret(
                &ns,
                "redis",
                "url",
                &artstore_testsupport::services().redis_url,
            )
            .await;
        let operator = Operator::start(&cluster.client, &ns);
        Self {
            cluster,
            ns,
            stream,
            operator,
        }
    }

    /// The sample EventStream on this scenario's stream.
    fn event_stream(&self) -> Value {
        set(
            sample("eventstream.yaml"),
            "/spec/stream",
            json!(self.stream),
        )
    }

    /// The sample archive as far as its storage elements: the stream (elements need it to
    /// exist), both elements, their migrations run.
    async fn with_migrated_elements() -> Self {
        let archive = Self::start().await;
        archive
            .cluster
            .apply::<EventStream>(&archive.ns, &archive.event_stream())
            .await
            .expect("apply stream");
        archive.migrate_elements().await;
        archive
    }

    async fn apply_element(&self, obj: &Value) {
        self.cluster
            .apply::<StorageElement>(&self.ns, obj)
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e}", obj["metadata"]["name"]));
    }

    /// Applies both sample elements and runs their migrations to completion.
    async fn migrate_elements(&self) {
        for file in ["storageelement-s3.yaml", "storageelement-volume.yaml"] {
            self.apply_element(&sample(file)).await;
        }
        for name in ["se-a", "se-archive"] {
            let (_, job) = self.migration_job(name).await;
            self.complete_migration(name, &job).await;
        }
    }

    /// Waits until `name` is Migrating; the element and its migration Job's name.
    async fn migration_job(&self, name: &str) -> (StorageElement, String) {
        let se: StorageElement = self
            .cluster
            .wait_for(
                &self.ns,
                name,
                "StorageElement Migrating",
                reason_is("Migrating"),
            )
            .await;
        let job = se
            .status
            .as_ref()
            .and_then(|s| s.migration.clone())
            .expect("migration")
            .job_name;
        (se, job)
    }

    /// Completes the migration Job and waits until the element has an endpoint at its
    /// current generation.
    async fn complete_migration(&self, name: &str, job: &str) -> StorageElement {
        self.cluster.complete_job(&self.ns, job).await;
        self.cluster
            .wait_for(
                &self.ns,
                name,
                "StorageElement migrated",
                |se: &StorageElement| {
                    se.status.as_ref().is_some_and(|s| s.endpoint.is_some()) && observed_current(se)
                },
            )
            .await
    }

    /// The Events the reconcilers published are on the server, each reason `n` times: a
    /// reconcile that starts from a cache older than the operator's own last status write
    /// must not report a finished step again (or a started one as started).
    async fn assert_events(&self, expected: &[(&str, i32)]) {
        let events: Api<Event> = self.cluster.api(&self.ns);
        let counts = eventually(PATIENCE, "Events published", || {
            let events = events.clone();
            async move {
                let list = events.list(&Default::default()).await.ok()?;
                let mut counts = BTreeMap::<String, i32>::new();
                for e in list.items {
                    let n = e.series.as_ref().map_or(1, |s| s.count);
                    *counts.entry(e.reason.unwrap_or_default()).or_default() += n;
                }
                expected
                    .iter()
                    .all(|(r, _)| counts.contains_key(*r))
                    .then_some(counts)
            }
        })
        .await;
        for (reason, n) in expected {
            assert_eq!(counts.get(*reason), Some(n), "{reason}: {counts:?}");
        }
    }

    /// Stops the operator and deletes the scenario's stream from Redis.
    async fn finish(self) {
        self.operator.stop().await;
        let mut redis = artstore_testsupport::redis_connection()
            .await
            .expect("redis");
        let _: () = redis::AsyncCommands::del(&mut redis, &self.stream)
            .await
            .expect("del");
    }
}

/// The storage elements: migrations first, then the workloads (a Deployment and its
/// CronJobs for the S3 element, a StatefulSet with its claim for the volume one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_elements_migrate_before_their_workloads_start() {
    let archive = Archive::start().await;
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    cluster
        .apply::<EventStream>(ns, &archive.event_stream())
        .await
        .expect("apply stream");
    for file in ["storageelement-s3.yaml", "storageelement-volume.yaml"] {
        archive.apply_element(&sample(file)).await;
    }
    for (name, volume) in [("se-a", false), ("se-archive", true)] {
        let (se, job_name) = archive.migration_job(name).await;
        let job: Job = cluster.get(ns, &job_name).await.expect("migration Job");
        assert_owned_by(&job, &se);
        assert!(
            cluster.get::<Deployment>(ns, name).await.is_none(),
            "{name}: no workload before migrating"
        );
        assert!(
            cluster.get::<StatefulSet>(ns, name).await.is_none(),
            "{name}: no workload before migrating"
        );
        let se = archive.complete_migration(name, &job_name).await;
        if volume {
            let sts: StatefulSet = cluster.get(ns, name).await.expect("StatefulSet");
            assert_owned_by(&sts, &se);
            let claims = sts
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.clone())
                .unwrap_or_default();
            assert_eq!(claims.len(), 1, "one data claim");
            assert!(cluster.get::<Deployment>(ns, name).await.is_none());
        } else {
            let d: Deployment = cluster.get(ns, name).await.expect("Deployment");
            assert_owned_by(&d, &se);
            let cronjobs = cluster
                .api::<CronJob>(ns)
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
                .await
                .expect("cronjobs");
            assert_eq!(
                cronjobs.items.len(),
                3,
                "one CronJob per schedule of the sample"
            );
            for c in &cronjobs.items {
                assert_owned_by(c, &se);
            }
        }
        let svc: Service = cluster.get(ns, name).await.expect("Service");
        assert_owned_by(&svc, &se);
    }
    archive.assert_events(&[("Migrated", 2)]).await;
    archive.finish().await;
}

/// The node first, and its stream paused: the node waits, whatever the order. Unpausing the
/// stream makes it Ready; the node's gate opens: group, then the backfill, then the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_node_starts_its_consumer_only_after_its_stream_and_backfill() {
    let archive = Archive::start().await;
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    cluster
        .apply::<QueryNode>(ns, &sample("querynode.yaml"))
        .await
        .expect("apply query node");
    let es_obj = archive.event_stream();
    cluster
        .apply::<EventStream>(ns, &paused(es_obj.clone()))
        .await
        .expect("apply paused stream");
    assert_node_waits_for_stream(&archive).await;
    // The registry checked below names both elements.
    archive.migrate_elements().await;

    cluster
        .apply::<EventStream>(ns, &without_annotations(es_obj))
        .await
        .expect("unpause stream");
    let es: EventStream = cluster
        .wait_for(ns, "files", "EventStream Ready", |es: &EventStream| {
            observed_current(es) && reason_is("StreamReady")(es)
        })
        .await;
    // The node's own group may already be there too: it races the stream's status write.
    assert!(
        es.status
            .as_ref()
            .is_some_and(|s| s.groups.iter().any(|g| g.name == "audit")),
        "{:?}",
        es.status
    );
    let (qn, backfill) = assert_backfill_before_consumer(&archive).await;
    cluster.complete_job(ns, &backfill).await;
    assert_consumer_started(cluster, ns, &qn).await;
    archive
        .assert_events(&[
            ("WaitingForStream", 1),
            ("Migrated", 2),
            ("Backfilling", 1),
            ("BackfillComplete", 1),
        ])
        .await;
    archive.finish().await;
}

/// A spec change of a started node: a new generation, observed by status and condition, and
/// applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_node_spec_change_is_observed_and_applied() {
    let archive = Archive::with_migrated_elements().await;
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    let qn_obj = sample("querynode.yaml");
    cluster
        .apply::<QueryNode>(ns, &qn_obj)
        .await
        .expect("apply query node");
    let (qn, backfill) = assert_backfill_before_consumer(&archive).await;
    cluster.complete_job(ns, &backfill).await;
    let qn = assert_consumer_started(cluster, ns, &qn).await;

    let generation = qn.metadata.generation.expect("generation");
    cluster
        .apply::<QueryNode>(ns, &set(qn_obj, "/spec/replicas", json!(2)))
        .await
        .expect("scale query node");
    let qn: QueryNode = cluster
        .wait_for(
            ns,
            "search",
            "QueryNode observed generation 2",
            |q: &QueryNode| q.metadata.generation > Some(generation) && observed_current(q),
        )
        .await;
    assert_eq!(qn.ready().map(|c| c.reason.as_str()), Some("Starting"));
    cluster
        .wait_for(ns, "search", "Deployment scaled to 2", |d: &Deployment| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(2)
        })
        .await;
    archive.finish().await;
}

/// The node waits for its paused stream at its current generation: no consumer, no backfill
/// Job, and the stream untouched in Redis.
async fn assert_node_waits_for_stream(archive: &Archive) {
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    let qn: QueryNode = cluster
        .wait_for(
            ns,
            "search",
            "QueryNode WaitingForStream",
            reason_is("WaitingForStream"),
        )
        .await;
    assert!(observed_current(&qn), "{:?}", qn.status);
    assert!(cluster.get::<Deployment>(ns, "search").await.is_none());
    assert!(
        cluster
            .api::<Job>(ns)
            .list(&Default::default())
            .await
            .expect("jobs")
            .items
            .is_empty(),
        "no backfill before the stream is ready"
    );
    assert!(
        groups_of(&archive.stream).await.is_empty(),
        "a paused stream is not touched"
    );
}

/// With the stream Ready the node is Backfilling: both groups exist in Redis, the backfill
/// Job is the node's, and no consumer runs yet. The node and its backfill Job's name.
async fn assert_backfill_before_consumer(archive: &Archive) -> (QueryNode, String) {
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    let qn: QueryNode = cluster
        .wait_for(
            ns,
            "search",
            "QueryNode Backfilling",
            reason_is("Backfilling"),
        )
        .await;
    let groups = groups_of(&archive.stream).await;
    assert!(
        groups.contains(&"audit".to_string()) && groups.contains(&"query-search".to_string()),
        "{groups:?}"
    );
    let backfill = qn
        .status
        .as_ref()
        .and_then(|s| s.backfill.clone())
        .expect("backfill")
        .job_name;
    let job: Job = cluster.get(ns, &backfill).await.expect("backfill Job");
    assert_owned_by(&job, &qn);
    assert!(
        cluster.get::<Deployment>(ns, "search").await.is_none(),
        "no consumer before the backfill"
    );
    (qn, backfill)
}

/// After the backfill: the node's Deployment, Service and registry (both elements), Ready
/// reason Starting with its consumer group.
async fn assert_consumer_started(cluster: &Cluster, ns: &str, qn: &QueryNode) -> QueryNode {
    let d: Deployment = cluster
        .wait_for(
            ns,
            "search",
            "query Deployment after the backfill",
            |_: &Deployment| true,
        )
        .await;
    assert_owned_by(&d, qn);
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let svc: Service = cluster.get(ns, "search").await.expect("query Service");
    assert_owned_by(&svc, qn);
    let cm: ConfigMap = cluster
        .wait_for(
            ns,
            "search-registry",
            "registry with both elements",
            |cm: &ConfigMap| {
                let text = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get("registry.json"))
                    .cloned()
                    .unwrap_or_default();
                text.contains("\"se-a\"") && text.contains("\"archive-1\"")
            },
        )
        .await;
    assert_owned_by(&cm, qn);
    let qn: QueryNode = cluster
        .wait_for(ns, "search", "QueryNode Starting", reason_is("Starting"))
        .await;
    assert!(observed_current(&qn), "{:?}", qn.status);
    assert_eq!(
        qn.status
            .as_ref()
            .and_then(|s| s.consumer_group.clone())
            .as_deref(),
        Some("query-search")
    );
    qn
}

/// The ingester: its registry holds only the elements it names, writable ones counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingester_registry_holds_only_the_elements_it_names() {
    let archive = Archive::with_migrated_elements().await;
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    cluster
        .secret(ns, "artstore-jwt", "secret", "a-test-signing-secret")
        .await;
    cluster
        .apply::<Ingester>(ns, &sample("ingester.yaml"))
        .await
        .expect("apply ingester");
    let ing: Ingester = cluster
        .wait_for(ns, "upload", "Ingester status", |i: &Ingester| {
            observed_current(i)
        })
        .await;
    assert_eq!(
        ing.status.as_ref().map(|s| s.writable_targets.clone()),
        Some(vec!["se-a".to_string()]),
        "{:?}",
        ing.status
    );
    let d: Deployment = cluster
        .get(ns, "upload")
        .await
        .expect("ingester Deployment");
    assert_owned_by(&d, &ing);
    let s: Service = cluster.get(ns, "upload").await.expect("ingester Service");
    assert_owned_by(&s, &ing);
    let cm: ConfigMap = cluster
        .get(ns, "upload-registry")
        .await
        .expect("ingester registry");
    let text = cm
        .data
        .and_then(|d| d.get("registry.json").cloned())
        .unwrap_or_default();
    assert!(
        text.contains("\"se-a\"") && !text.contains("archive-1"),
        "{text}"
    );
    archive.finish().await;
}

/// A paused element's spec change is not acted on while its unpaused sibling's is; unpaused,
/// it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_element_is_not_reconciled_until_unpaused() {
    let archive = Archive::with_migrated_elements().await;
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    let se_a = sample("storageelement-s3.yaml");
    let before: StorageElement = cluster.get(ns, "se-a").await.expect("se-a");
    archive
        .apply_element(&paused(set(se_a.clone(), "/spec/priority", json!(50))))
        .await;
    // The sibling's change is the sync point: both are on one watch.
    archive
        .apply_element(&set(
            sample("storageelement-volume.yaml"),
            "/spec/priority",
            json!(20),
        ))
        .await;
    cluster
        .wait_for(
            ns,
            "se-archive",
            "se-archive priority 20",
            |se: &StorageElement| {
                observed_current(se) && se.status.as_ref().and_then(|s| s.priority) == Some(20)
            },
        )
        .await;
    // A reconcile of se-a may still be in flight at the sync point: hold the check a while.
    let deadline = tokio::time::Instant::now() + HOLD;
    while tokio::time::Instant::now() < deadline {
        let held: StorageElement = cluster.get(ns, "se-a").await.expect("se-a");
        assert!(held.metadata.generation > before.metadata.generation);
        assert_eq!(
            held.status, before.status,
            "a paused element is not reconciled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    archive
        .apply_element(&set(se_a, "/spec/priority", json!(50)))
        .await;
    cluster
        .wait_for(
            ns,
            "se-a",
            "se-a priority 50 once unpaused",
            |se: &StorageElement| {
                observed_current(se) && se.status.as_ref().and_then(|s| s.priority) == Some(50)
            },
        )
        .await;
    archive.finish().await;
}

/// The rebuild annotation on the volume element: one Job (with its pod affinity and claim, as
/// the server validates them), recorded in status, run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_request_runs_one_job_recorded_in_status() {
    let archive = Archive::with_migrated_elements().await;
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    let mut rebuild = sample("storageelement-volume.yaml");
    rebuild["metadata"]["annotations"] = json!({"artstore.io/rebuild": "full@first"});
    archive.apply_element(&rebuild).await;
    let se: StorageElement = cluster
        .wait_for(
            ns,
            "se-archive",
            "rebuild started",
            |se: &StorageElement| {
                se.status
                    .as_ref()
                    .and_then(|s| s.last_rebuild.as_ref())
                    .is_some_and(|r| r.request == "full@first")
            },
        )
        .await;
    let rebuild_job = se
        .status
        .as_ref()
        .and_then(|s| s.last_rebuild.clone())
        .expect("rebuild record")
        .job_name;
    let job: Job = cluster.get(ns, &rebuild_job).await.expect("rebuild Job");
    assert_owned_by(&job, &se);
    cluster.complete_job(ns, &rebuild_job).await;
    cluster
        .wait_for(
            ns,
            "se-archive",
            "rebuild succeeded",
            |se: &StorageElement| {
                se.status
                    .as_ref()
                    .and_then(|s| s.last_rebuild.as_ref())
                    .is_some_and(|r| r.phase == JobPhase::Succeeded)
            },
        )
        .await;
    archive
        .assert_events(&[
            ("Migrated", 2),
            ("RebuildStarted", 1),
            ("RebuildSucceeded", 1),
        ])
        .await;
    archive.finish().await;
}

/// A child the server refuses: a Deployment of the element's name already exists with another
/// selector (selectors are immutable). The element says so, at its generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_the_server_refuses_is_reported_on_the_element() {
    let archive = Archive::start().await;
    let (cluster, ns) = (&archive.cluster, archive.ns.as_str());
    cluster
        .apply::<EventStream>(ns, &archive.event_stream())
        .await
        .expect("apply stream");
    cluster
        .apply::<Deployment>(
            ns,
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "se-b"},
                "spec": {
                    "selector": {"matchLabels": {"app": "legacy"}},
                    "template": {
                        "metadata": {"labels": {"app": "legacy"}},
                        "spec": {"containers": [{"name": "legacy", "image": "legacy:1"}]},
                    },
                },
            }),
        )
        .await
        .expect("a leftover Deployment");
    let se_b = set(
        set(
            sample("storageelement-s3.yaml"),
            "/metadata/name",
            json!("se-b"),
        ),
        "/spec/maintenance",
        json!({}),
    );
    archive.apply_element(&se_b).await;
    let (_, job) = archive.migration_job("se-b").await;
    cluster.complete_job(ns, &job).await;
    let se: StorageElement = cluster
        .wait_for(ns, "se-b", "ChildRejected", |se: &StorageElement| {
            observed_current(se) && reason_is("ChildRejected")(se)
        })
        .await;
    let message = se
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("immutable"), "{message}");
    archive.finish().await;
}
