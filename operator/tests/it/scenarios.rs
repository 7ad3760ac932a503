//! Reconcile scenarios against the scripted API server (and the real Redis where a reconciler
//! talks to Redis): the QueryNode gate, the rebuild annotation, finalizers, pause, bad specs.

use std::sync::Arc;

use artstore_operator::build::BuildConfig;
use artstore_operator::controller::conditions::HasStatus;
use artstore_operator::controller::{
    Config, Context, event_stream, ingester, query_node, storage_element,
};
use artstore_operator::crd::{EventStream, Ingester, JobPhase, QueryNode, StorageElement};
use artstore_operator::metrics::Metrics;
use kube::runtime::controller::Action;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::apiserver::{ApiServer, path};
use crate::fixture_json;

const NS: &str = "archive";
const GV: &str = "artstore.io/v1alpha1";

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Config {
            build: BuildConfig {
                image: "artstore:test".into(),
                ..Default::default()
            },
            probe_elements: false,
            ..Default::default()
        },
        Arc::new(Metrics::default()),
    ))
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn insert_redis_secret(server: &ApiServer) {
    let url = &artstore_testsupport::services().redis_url;
    server.insert(
        "v1",
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "redis", "namespace": NS},
            "data": {"url": base64(url.as_bytes())},
        }),
    );
}

/// The EventStream fixture on a stream key of its own.
fn event_stream_json(stream: &str) -> Value {
    let mut es = fixture_json("eventstream.yaml");
    es["spec"]["stream"] = json!(stream);
    es
}

fn es_path() -> String {
    path(GV, "eventstreams", NS, "files")
}

fn mark_job(server: &ApiServer, name: &str, phase: JobPhase) {
    server.update(&path("batch/v1", "jobs", NS, name), |job| {
        job["status"] = match phase {
            JobPhase::Succeeded => json!({"succeeded": 1}),
            JobPhase::Failed => {
                json!({"failed": 7, "conditions": [{"type": "Failed", "status": "True"}]})
            }
            JobPhase::Running => json!({"active": 1}),
        };
    });
}

fn ready_reason<K: HasStatus>(obj: &K) -> (String, String) {
    obj.ready()
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn query_node_starts_consumers_only_after_stream_group_and_backfill() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    insert_redis_secret(&server);
    let stream = artstore_testsupport::unique_prefix("qn-gate");
    server.insert(GV, "querynodes", fixture_json("querynode.yaml"));
    let qn_path = path(GV, "querynodes", NS, "search");

    // No stream: wait, and say why.
    let action = query_node::reconcile(Arc::new(server.typed(&qn_path)), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(ctx.config.wait_interval));
    let qn: QueryNode = server.typed(&qn_path);
    assert_eq!(
        ready_reason(&qn),
        ("False".into(), "WaitingForStream".into())
    );
    assert_eq!(qn.status.as_ref().unwrap().observed_generation, Some(2));
    assert!(
        server
            .event_reasons()
            .contains(&"WaitingForStream".to_string())
    );

    // The stream resource exists but has not been reconciled: still waiting.
    server.insert(GV, "eventstreams", event_stream_json(&stream));
    query_node::reconcile(Arc::new(server.typed(&qn_path)), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(
        ready_reason(&server.typed::<QueryNode>(&qn_path)).1,
        "WaitingForStream"
    );
    assert!(
        server.writes_to("/deployments").is_empty(),
        "no consumer before the stream is ready"
    );
    assert!(
        server.writes_to("/jobs").is_empty(),
        "no backfill before the stream is ready"
    );

    // The stream becomes ready (its own reconciler, against the real Redis).
    event_stream::reconcile(Arc::new(server.typed(&es_path())), ctx.clone())
        .await
        .expect("stream reconcile");
    assert_eq!(
        ready_reason(&server.typed::<EventStream>(&es_path())).0,
        "True"
    );

    // Now the group exists in Redis and the backfill runs, but still no Deployment.
    query_node::reconcile(Arc::new(server.typed(&qn_path)), ctx.clone())
        .await
        .expect("reconcile");
    let mut redis = artstore_testsupport::redis_connection()
        .await
        .expect("redis");
    let groups: redis::streams::StreamInfoGroupsReply =
        redis.xinfo_groups(&stream).await.expect("xinfo");
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert!(names.contains(&"query-search"), "{names:?}");
    assert!(names.contains(&"audit"), "declared group too: {names:?}");
    let qn: QueryNode = server.typed(&qn_path);
    assert_eq!(ready_reason(&qn).1, "Backfilling");
    let backfill = qn
        .status
        .as_ref()
        .unwrap()
        .backfill
        .clone()
        .expect("backfill recorded");
    assert_eq!(backfill.phase, JobPhase::Running);
    assert!(
        server.writes_to("/deployments").is_empty(),
        "no consumer before the backfill is done"
    );
    assert!(
        server
            .get(&path("v1", "configmaps", NS, "search-registry"))
            .is_some()
    );

    // Backfill done: now the consumers, once.
    mark_job(&server, &backfill.job_name, JobPhase::Succeeded);
    query_node::reconcile(Arc::new(server.typed(&qn_path)), ctx.clone())
        .await
        .expect("reconcile");
    let deployment = server
        .get(&path("apps/v1", "deployments", NS, "search"))
        .expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(server.get(&path("v1", "services", NS, "search")).is_some());
    let qn: QueryNode = server.typed(&qn_path);
    assert_eq!(
        qn.status.as_ref().unwrap().backfill.as_ref().unwrap().phase,
        JobPhase::Succeeded
    );
    assert_eq!(
        qn.status.as_ref().unwrap().consumer_group.as_deref(),
        Some("query-search")
    );
    assert_eq!(ready_reason(&qn), ("False".into(), "Starting".into()));
    assert!(
        server
            .event_reasons()
            .contains(&"BackfillComplete".to_string())
    );

    // The backfill is not run again.
    let job_writes = server.writes_to("/jobs").len();
    query_node::reconcile(Arc::new(server.typed(&qn_path)), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(server.writes_to("/jobs").len(), job_writes);
    let _: () = redis.del(&stream).await.expect("cleanup");
}

fn se_ready_world(server: &ApiServer, maintenance: bool) -> String {
    server.insert(GV, "eventstreams", event_stream_json("unused:stream"));
    let mut se = fixture_json("storageelement-s3.yaml");
    if !maintenance {
        se["spec"].as_object_mut().unwrap().remove("maintenance");
    }
    server.insert(GV, "storageelements", se);
    path(GV, "storageelements", NS, "se-a")
}

async fn reconcile_se(server: &ApiServer, ctx: &Arc<Context>, p: &str) -> StorageElement {
    storage_element::reconcile(Arc::new(server.typed(p)), ctx.clone())
        .await
        .expect("reconcile");
    server.typed(p)
}

#[tokio::test]
async fn storage_element_migrates_before_its_workload_then_serves() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    let p = se_ready_world(&server, true);

    let se = reconcile_se(&server, &ctx, &p).await;
    assert_eq!(ready_reason(&se).1, "Migrating");
    let migration = se
        .status
        .as_ref()
        .unwrap()
        .migration
        .clone()
        .expect("migration recorded");
    assert!(
        server.writes_to("/deployments").is_empty(),
        "no workload before migrations"
    );

    mark_job(&server, &migration.job_name, JobPhase::Succeeded);
    let se = reconcile_se(&server, &ctx, &p).await;
    assert!(
        server
            .get(&path("apps/v1", "deployments", NS, "se-a"))
            .is_some()
    );
    assert!(server.get(&path("v1", "services", NS, "se-a")).is_some());
    for mode in ["consistency", "incremental", "cleanup-expired"] {
        assert!(
            server
                .get(&path("batch/v1", "cronjobs", NS, &format!("se-a-{mode}")))
                .is_some(),
            "{mode}"
        );
    }
    let st = se.status.as_ref().unwrap();
    assert_eq!(st.endpoint.as_deref(), Some("http://se-a.archive.svc:8080"));
    assert_eq!(st.capacity_bytes, Some(500 << 30));
    assert_eq!(ready_reason(&se), ("False".into(), "Starting".into()));

    // The pod becomes ready.
    server.update(&path("apps/v1", "deployments", NS, "se-a"), |d| {
        d["status"] = json!({"readyReplicas": 1})
    });
    let se = reconcile_se(&server, &ctx, &p).await;
    assert_eq!(ready_reason(&se), ("True".into(), "Available".into()));

    // A schedule removed from the spec removes its CronJob.
    server.update(&p, |o| {
        o["spec"]["maintenance"]
            .as_object_mut()
            .unwrap()
            .remove("cleanupExpired");
    });
    reconcile_se(&server, &ctx, &p).await;
    assert!(
        server
            .get(&path("batch/v1", "cronjobs", NS, "se-a-cleanup-expired"))
            .is_none()
    );
    assert!(
        server
            .get(&path("batch/v1", "cronjobs", NS, "se-a-consistency"))
            .is_some()
    );
}

#[tokio::test]
async fn rebuild_annotation_runs_once_per_request_and_never_two_at_a_time() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    let p = se_ready_world(&server, false);
    let se = reconcile_se(&server, &ctx, &p).await;
    mark_job(
        &server,
        &se.status.unwrap().migration.unwrap().job_name,
        JobPhase::Succeeded,
    );
    reconcile_se(&server, &ctx, &p).await;
    let rebuild_writes = |s: &ApiServer| s.writes_to("-rebuild-").len();
    assert_eq!(rebuild_writes(&server), 0);

    let annotate = |value: &str| {
        let value = value.to_string();
        server.update(&p, move |o| {
            o["metadata"]["annotations"] = json!({"artstore.io/rebuild": value})
        });
    };
    annotate("full");
    let se = reconcile_se(&server, &ctx, &p).await;
    let full = se
        .status
        .as_ref()
        .unwrap()
        .last_rebuild
        .clone()
        .expect("rebuild recorded");
    assert_eq!(
        (full.request.as_str(), full.mode.as_str(), full.phase),
        ("full", "full", JobPhase::Running)
    );
    let job = server
        .get(&path("batch/v1", "jobs", NS, &full.job_name))
        .expect("rebuild job");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["storage-element", "rebuild", "--mode", "full"])
    );
    assert!(
        server
            .event_reasons()
            .contains(&"RebuildStarted".to_string())
    );
    assert_eq!(rebuild_writes(&server), 1);

    // The same request again (another resync) starts nothing.
    reconcile_se(&server, &ctx, &p).await;
    assert_eq!(rebuild_writes(&server), 1);

    // A new request while the first runs waits for it.
    annotate("incremental");
    let se = reconcile_se(&server, &ctx, &p).await;
    assert_eq!(rebuild_writes(&server), 1, "two rebuilds never interleave");
    let c = se
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "RebuildRequest")
        .unwrap();
    assert_eq!(c.reason, "RebuildQueued");

    // The first finishes: it is recorded, and the queued one starts.
    mark_job(&server, &full.job_name, JobPhase::Succeeded);
    let se = reconcile_se(&server, &ctx, &p).await;
    let inc = se.status.as_ref().unwrap().last_rebuild.clone().unwrap();
    assert_eq!(
        (inc.request.as_str(), inc.mode.as_str()),
        ("incremental", "incremental")
    );
    assert_ne!(inc.job_name, full.job_name);
    assert!(
        server
            .event_reasons()
            .contains(&"RebuildSucceeded".to_string())
    );
    assert_eq!(rebuild_writes(&server), 2);

    // Finished, annotation unchanged: nothing more; the same mode again needs a new token.
    mark_job(&server, &inc.job_name, JobPhase::Succeeded);
    reconcile_se(&server, &ctx, &p).await;
    reconcile_se(&server, &ctx, &p).await;
    assert_eq!(rebuild_writes(&server), 2);
    annotate("incremental@2");
    let se = reconcile_se(&server, &ctx, &p).await;
    assert_eq!(rebuild_writes(&server), 3);
    assert_eq!(
        se.status.unwrap().last_rebuild.unwrap().request,
        "incremental@2"
    );

    // Garbage is reported, not run.
    annotate("everything");
    let se = reconcile_se(&server, &ctx, &p).await;
    assert_eq!(rebuild_writes(&server), 3);
    let c = se
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "RebuildRequest")
        .unwrap();
    assert_eq!(c.reason, "InvalidRebuildRequest");
}

#[tokio::test]
async fn event_stream_finalizer_only_with_delete_policy_and_delete_removes_the_stream() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    insert_redis_secret(&server);
    let stream = artstore_testsupport::unique_prefix("es-final");
    let mut redis = artstore_testsupport::redis_connection()
        .await
        .expect("redis");

    // Retain: no finalizer, stream and groups created, status filled.
    server.insert(GV, "eventstreams", event_stream_json(&stream));
    let p = es_path();
    event_stream::reconcile(Arc::new(server.typed(&p)), ctx.clone())
        .await
        .expect("reconcile");
    let es: EventStream = server.typed(&p);
    assert!(
        es.metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .is_empty()
    );
    let st = es.status.clone().unwrap();
    assert_eq!(ready_reason(&es), ("True".into(), "StreamReady".into()));
    assert_eq!(st.length, Some(0));
    assert_eq!(
        st.groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["audit"]
    );
    assert_eq!(st.observed_generation, Some(1));
    assert!(server.event_reasons().contains(&"GroupCreated".to_string()));
    // Idempotent: a second pass creates nothing (BUSYGROUP is success).
    server.clear_log();
    event_stream::reconcile(Arc::new(server.typed(&p)), ctx.clone())
        .await
        .expect("again");
    assert!(!server.event_reasons().contains(&"GroupCreated".to_string()));

    // Delete: the finalizer goes on first.
    server.update(&p, |o| o["spec"]["deletionPolicy"] = json!("Delete"));
    event_stream::reconcile(Arc::new(server.typed(&p)), ctx.clone())
        .await
        .expect("reconcile");
    let es: EventStream = server.typed(&p);
    assert_eq!(
        es.metadata.finalizers.clone().unwrap(),
        ["artstore.io/stream-cleanup"]
    );

    // Deleting the resource deletes the stream, then lets the resource go.
    let _: String = redis
        .xadd(&stream, "*", &[("type", "file.created")])
        .await
        .expect("xadd");
    server.update(&p, |o| {
        o["metadata"]["deletionTimestamp"] = json!("2026-11-23T00:00:00Z")
    });
    event_stream::reconcile(Arc::new(server.typed(&p)), ctx.clone())
        .await
        .expect("cleanup");
    let exists: bool = redis.exists(&stream).await.expect("exists");
    assert!(!exists, "deletionPolicy Delete removes the stream");
    assert!(server.get(&p).is_none(), "finalizer removed, object gone");
    assert!(
        server
            .event_reasons()
            .contains(&"StreamDeleted".to_string())
    );

    // Retain on delete: the stream stays.
    let kept = artstore_testsupport::unique_prefix("es-keep");
    server.insert(GV, "eventstreams", event_stream_json(&kept));
    event_stream::reconcile(Arc::new(server.typed(&p)), ctx.clone())
        .await
        .expect("reconcile");
    server.update(&p, |o| {
        o["metadata"]["deletionTimestamp"] = json!("2026-11-23T00:00:00Z")
    });
    event_stream::reconcile(Arc::new(server.typed(&p)), ctx.clone())
        .await
        .expect("delete");
    let exists: bool = redis.exists(&kept).await.expect("exists");
    assert!(exists, "Retain keeps the stream");
    let _: () = redis.del(&kept).await.expect("cleanup");
}

#[tokio::test]
async fn paused_resources_are_not_touched() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    let p = se_ready_world(&server, true);
    server.update(
        &p,
        |o| {
            o["metadata"]["annotations"] =
                json!({"artstore.io/reconcile": "paused", "artstore.io/rebuild": "full"})
        },
    );
    server.clear_log();
    let action = storage_element::reconcile(Arc::new(server.typed(&p)), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    let mut qn = fixture_json("querynode.yaml");
    qn["metadata"]["annotations"] = json!({"artstore.io/reconcile": "paused"});
    server.insert(GV, "querynodes", qn);
    query_node::reconcile(
        Arc::new(server.typed(&path(GV, "querynodes", NS, "search"))),
        ctx,
    )
    .await
    .expect("reconcile");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn ingester_registry_lists_only_its_writable_observed_elements() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    let mut a = fixture_json("storageelement-s3.yaml");
    a["status"] = json!({"endpoint": "http://se-a.archive.svc:8080", "elementId": "se-a", "mode": "rw",
        "priority": 100, "capacityBytes": 1000, "usedBytes": 10});
    server.insert(GV, "storageelements", a);
    let mut b = fixture_json("storageelement-volume.yaml");
    b["status"] = json!({"endpoint": "http://se-archive.archive.svc:8080", "elementId": "archive-1", "mode": "ar",
        "priority": 10, "capacityBytes": 1000});
    server.insert(GV, "storageelements", b);
    let mut ing = fixture_json("ingester.yaml");
    ing["spec"]["storageElements"] = json!([]);
    server.insert(GV, "ingesters", ing);
    let p = path(GV, "ingesters", NS, "upload");
    ingester::reconcile(Arc::new(server.typed(&p)), ctx)
        .await
        .expect("reconcile");
    let cm = server
        .get(&path("v1", "configmaps", NS, "upload-registry"))
        .expect("registry");
    let reg: artstore_contract::Registry =
        serde_json::from_str(cm["data"]["registry.json"].as_str().unwrap()).expect("contract JSON");
    assert_eq!(reg.elements.len(), 2);
    let ing: Ingester = server.typed(&p);
    assert_eq!(ing.status.as_ref().unwrap().writable_targets, ["se-a"]);
    assert_eq!(ready_reason(&ing).1, "Starting");
    let d = server
        .get(&path("apps/v1", "deployments", NS, "upload"))
        .expect("deployment");
    assert_eq!(d["metadata"]["ownerReferences"][0]["kind"], "Ingester");
    // Every write used server-side apply with the one field manager, or a status/finalizer patch.
    for r in server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
    {
        assert!(
            r.query.contains("fieldManager=artstore-operator"),
            "{} {}",
            r.path,
            r.query
        );
    }
}

#[tokio::test]
async fn invalid_spec_is_reported_and_changes_nothing() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    let p = se_ready_world(&server, true);
    server.update(&p, |o| o["spec"]["capacity"] = json!("-1"));
    server.clear_log();
    let action = storage_element::reconcile(Arc::new(server.typed(&p)), ctx)
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    let se: StorageElement = server.typed(&p);
    assert_eq!(ready_reason(&se), ("False".into(), "InvalidSpec".into()));
    let child_writes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| {
            r.method != "GET" && !r.path.contains("/events") && !r.path.ends_with("/status")
        })
        .collect();
    assert!(child_writes.is_empty(), "{child_writes:?}");
}

#[test]
fn a_changed_event_stream_maps_to_the_query_nodes_that_use_it() {
    use artstore_operator::controller::{referencing, same_namespace};
    let qn = |name: &str, ns: &str, stream: &str| {
        let mut q: QueryNode = crate::fixture("querynode.yaml");
        q.metadata.name = Some(name.into());
        q.metadata.namespace = Some(ns.into());
        q.spec.event_stream_ref = stream.into();
        Arc::new(q)
    };
    let nodes = vec![
        qn("a", NS, "files"),
        qn("b", NS, "other"),
        qn("c", "elsewhere", "files"),
    ];
    let es: EventStream = crate::fixture("eventstream.yaml");
    let refs = referencing(nodes.clone(), &es, |q| q.spec.event_stream_ref.as_str());
    let names: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["a"], "same namespace and the same stream only");
    let se: StorageElement = crate::fixture("storageelement-s3.yaml");
    let names: Vec<String> = same_namespace(nodes, &se)
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn switching_backend_replaces_the_deployment_with_a_statefulset() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    let p = se_ready_world(&server, false);
    let se = reconcile_se(&server, &ctx, &p).await;
    mark_job(
        &server,
        &se.status.unwrap().migration.unwrap().job_name,
        JobPhase::Succeeded,
    );
    reconcile_se(&server, &ctx, &p).await;
    let deployment = path("apps/v1", "deployments", NS, "se-a");
    assert!(server.get(&deployment).is_some());
    let volume = fixture_json("storageelement-volume.yaml")["spec"]["backend"].clone();
    server.update(&p, |o| o["spec"]["backend"] = volume);
    reconcile_se(&server, &ctx, &p).await;
    assert!(
        server
            .get(&path("apps/v1", "statefulsets", NS, "se-a"))
            .is_some()
    );
    assert!(
        server.get(&deployment).is_none(),
        "the old Deployment is removed"
    );
}

#[tokio::test]
async fn an_existing_job_is_read_never_rewritten() {
    let (client, server) = ApiServer::start();
    let ctx = context(client);
    let p = se_ready_world(&server, false);
    let se = reconcile_se(&server, &ctx, &p).await;
    let job = se.status.unwrap().migration.unwrap().job_name;
    assert_eq!(server.writes_to(&job).len(), 1);
    // Still running: the spec changes meanwhile (a Job's template is immutable).
    server.update(&p, |o| o["spec"]["cacheTtlHours"] = json!(12));
    let se = reconcile_se(&server, &ctx, &p).await;
    assert_eq!(
        server.writes_to(&job).len(),
        1,
        "the running Job is left as it is"
    );
    assert_eq!(ready_reason(&se).1, "Migrating");
}

/// A context whose namespace holds the `artstore-jwt` Secret the workloads' tokens are signed with.
fn context_with_jwt_secret() -> Arc<Context> {
    let (client, server) = ApiServer::start();
    server.insert(
        "v1",
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "artstore-jwt", "namespace": NS},
            "data": {"secret": base64(b"jwt-secret")},
        }),
    );
    context(client)
}

/// Whether a stand-in workload's caller sent an admin token signed with that Secret.
fn bearer_is_admin(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| {
            jsonwebtoken::decode::<artstore_contract::token::Claims>(
                token,
                &jsonwebtoken::DecodingKey::from_secret(b"jwt-secret"),
                &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
            )
            .ok()
        })
        .is_some_and(|d| d.claims.role == "admin")
}

/// Serves a stand-in workload on a free port; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    endpoint
}

#[tokio::test]
async fn element_status_and_consistency_report_are_read_with_an_admin_token() {
    use artstore_operator::crd::StorageElementStatus;
    use axum::http::HeaderMap;

    let ctx = context_with_jwt_secret();
    // The element's two contract endpoints, refusing calls without a valid admin token.
    let authorised = bearer_is_admin;
    let app = axum::Router::new()
        .route(
            "/api/v1/status",
            axum::routing::get(move |h: HeaderMap| async move {
                if !authorised(&h) {
                    return Err(axum::http::StatusCode::UNAUTHORIZED);
                }
                Ok(axum::Json(
                    json!({"id": "se-a", "mode": "rw", "priority": 100, "capacity_bytes": 5000,
                "used_bytes": 1234, "file_count": 7, "backend": "s3"}),
                ))
            }),
        )
        .route(
            "/api/v1/cache/consistency",
            axum::routing::get(move |h: HeaderMap| async move {
                if !authorised(&h) {
                    return Err(axum::http::StatusCode::UNAUTHORIZED);
                }
                Ok(axum::Json(
                    json!({"total_attr_files": 7, "total_cache_entries": 8, "orphan_cache_count": 1,
                "orphan_attr_count": 0, "expired_cache_count": 2, "is_consistent": false,
                "inconsistency_percentage": 12.5, "details": {}}),
                ))
            }),
        );
    let endpoint = serve(app).await;

    let se: StorageElement = crate::fixture("storageelement-s3.yaml");
    let mut status = StorageElementStatus::default();
    storage_element::probe(&se, &ctx, &endpoint, &mut status, "2026-11-23T00:00:00Z").await;
    assert_eq!(
        (status.used_bytes, status.file_count, status.capacity_bytes),
        (Some(1234), Some(7), Some(5000))
    );
    let report = status.last_consistency_report.clone().expect("report");
    assert!(!report.is_consistent);
    assert_eq!(
        (report.orphan_cache_count, report.expired_cache_count),
        (1, 2)
    );
    // The report is also a metric, so alerts need nothing but the operator's /metrics.
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("artstore_operator_storage_element_inconsistency_percent{")
            && l.ends_with(" 12.5")),
        "{metrics}"
    );
    let reachable = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ElementReachable")
        .unwrap();
    assert_eq!(reachable.status, "True");

    // Within the interval the (expensive) consistency report is not fetched again.
    status.last_consistency_report.as_mut().unwrap().checked_at = chrono::Utc::now().to_rfc3339();
    let before = status.last_consistency_report.clone();
    storage_element::probe(&se, &ctx, &endpoint, &mut status, "later").await;
    assert_eq!(status.last_consistency_report, before);

    // Unreachable element: condition says so, figures stay.
    storage_element::probe(&se, &ctx, "http://127.0.0.1:1", &mut status, "later").await;
    let reachable = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ElementReachable")
        .unwrap();
    assert_eq!(
        (reachable.status.as_str(), reachable.reason.as_str()),
        ("False", "Unreachable")
    );
    assert_eq!(status.used_bytes, Some(1234));
}

#[tokio::test]
async fn query_node_indexed_files_are_read_with_an_admin_token() {
    use axum::http::HeaderMap;

    let ctx = context_with_jwt_secret();
    let app = axum::Router::new().route(
        "/api/v1/status",
        axum::routing::get(move |h: HeaderMap| async move {
            if !bearer_is_admin(&h) {
                return Err(axum::http::StatusCode::UNAUTHORIZED);
            }
            Ok(axum::Json(json!({"indexed_files": 4321, "tombstones": 9})))
        }),
    );
    let endpoint = serve(app).await;

    let qn: QueryNode = crate::fixture("querynode.yaml");
    assert_eq!(
        query_node::indexed_files(&qn, &ctx, &endpoint).await,
        Some(4321)
    );
    // Nothing listens: no figure (the reconciler keeps the last one).
    let gone = format!("http://127.0.0.1:{}", artstore_testsupport::free_port());
    assert_eq!(query_node::indexed_files(&qn, &ctx, &gone).await, None);
}
