//! The operator against a real kube-apiserver (and, where a test needs it,
//! kube-controller-manager): the committed CRDs are accepted, the server enforces their rules,
//! and `artstore_operator::run` builds, gates, pauses and cleans up on it.
//!
//! There is no scheduler and no kubelet: Pods stay Pending, so a test plays the Job
//! controller's part by writing a Job's status subresource when it needs a Job to succeed.
//! Each test starts one control plane and keeps its scenarios in their own namespaces.

use std::time::Duration;

use artstore_operator::build::BuildConfig;
use artstore_operator::controller::Config;
use artstore_operator::controller::conditions::{HasStatus, ObjectStatus};
use artstore_operator::crd::{EventStream, Ingester, QueryNode, StorageElement};
use artstore_operator::process::{OperatorConfig, RunError};
use artstore_testsupport::eventually;
use artstore_testsupport::kube::KubeControlPlane;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

mod lease;
mod network_policy;
mod sample_archive;

/// Field manager of what the tests write (the user's `kubectl apply`, the kubelet's part).
const TESTER: &str = "artstore-tests";
/// The namespace the in-process operator says it runs in (its NetworkPolicy peer).
const OPERATOR_NAMESPACE: &str = "artstore-system";
/// How long anything the operator or the control plane does may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long a negative check (nothing happens to a paused object) keeps looking; longer than
/// the operator's wait interval, so a re-check would have happened within it.
const HOLD: Duration = Duration::from_secs(4);

/// A control plane with the committed CRDs installed, and an admin client.
struct Cluster {
    plane: KubeControlPlane,
    client: Client,
}

impl Cluster {
    /// A control plane with the CRDs; with `controllers`, kube-controller-manager is started
    /// after them, so its garbage collector watches the custom resources from the start.
    async fn start(controllers: bool) -> Self {
        let plane = tokio::task::spawn_blocking(KubeControlPlane::start)
            .await
            .expect("join")
            .expect("control plane starts");
        artstore_operator::install_crypto_provider();
        let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("client config");
        let client = Client::try_from(config).expect("client");
        let mut cluster = Self { plane, client };
        cluster.install_crds().await;
        if controllers {
            cluster
                .plane
                .start_controllers()
                .expect("kube-controller-manager starts");
        }
        cluster
    }

    /// Applies every file of `crds/` with server-side apply and waits until each is Established.
    async fn install_crds(&self) -> Vec<String> {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut names = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("crds dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).expect("read crd");
            let crd: CustomResourceDefinition =
                serde_saphyr::from_str(&text).expect("parse committed crd");
            let name = crd.name_any();
            api.patch(&name, &apply_params(), &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("the server refuses {}: {e}", path.display()));
            names.push(name);
        }
        for name in &names {
            tokio::time::timeout(
                PATIENCE,
                await_condition(api.clone(), name, conditions::is_crd_established()),
            )
            .await
            .unwrap_or_else(|_| panic!("{name} not Established"))
            .expect("watch crd");
        }
        // Discovery can lag Established by a moment: wait until the kinds are served.
        for name in &names {
            let plural = name.split('.').next().unwrap_or_default().to_string();
            let client = self.client.clone();
            eventually(PATIENCE, &format!("{plural} served"), || {
                let client = client.clone();
                let plural = plural.clone();
                async move {
                    let req =
                        http::Request::get(format!("/apis/artstore.io/v1alpha1/{plural}?limit=1"))
                            .body(Vec::new())
                            .ok()?;
                    client.request::<Value>(req).await.ok()
                }
            })
            .await;
        }
        names
    }

    async fn namespace(&self, name: &str) -> String {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        name.to_string()
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// `kubectl apply --server-side` of a raw object.
    async fn apply<K>(&self, ns: &str, obj: &Value) -> Result<K, kube::Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        self.api::<K>(ns)
            .patch(&name, &apply_params(), &Patch::Apply(obj))
            .await
    }

    async fn get<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>(ns).get_opt(name).await.expect("get")
    }

    /// Waits until `name` exists and `check` holds for it; a timeout shows the last version.
    async fn wait_for<K>(&self, ns: &str, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>(ns);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut last = None;
        loop {
            if let Ok(Some(o)) = api.get_opt(name).await {
                if check(&o) {
                    return o;
                }
                last = Some(o);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last seen: {last:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_gone<K>(&self, ns: &str, name: &str, what: &str)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>(ns);
        eventually(PATIENCE, what, || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
        })
        .await
    }

    /// A Secret with one key, as a user would create it.
    async fn secret(&self, ns: &str, name: &str, key: &str, value: &str) {
        self.apply::<Secret>(
            ns,
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name},
                "stringData": {key: value},
            }),
        )
        .await
        .expect("apply secret");
    }

    /// Plays the Job controller's part: the Job ran to completion. The 1.34 validation wants
    /// `SuccessCriteriaMet` before `Complete`, a start and a completion time, and `succeeded`.
    /// Where kube-controller-manager runs, its Job controller may already have set `startTime`
    /// (which then may neither change nor go) and may write between our read and our write:
    /// keep its start time and try again until the write is accepted.
    async fn complete_job(&self, ns: &str, name: &str) {
        let api = self.api::<Job>(ns);
        let what = format!("complete Job {ns}/{name}");
        eventually(PATIENCE, &what, || {
            let api = api.clone();
            async move {
                let current = api.get(name).await.ok()?;
                let status = completed_job_status(name, &current);
                match api
                    .patch_status(name, &apply_params(), &Patch::Apply(&status))
                    .await
                {
                    Ok(_) => Some(()),
                    Err(e) => {
                        eprintln!("complete Job {name}: {e}; trying again");
                        None
                    }
                }
            }
        })
        .await;
    }
}

/// The status of `current` as the Job controller writes it when its one pod succeeded.
fn completed_job_status(name: &str, current: &Job) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let start = current
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| json!(now));
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "status": {
            "startTime": start,
            "completionTime": now,
            "succeeded": 1,
            "active": 0,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods",
                 "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods",
                 "lastProbeTime": now, "lastTransitionTime": now},
            ],
        },
    })
}

fn apply_params() -> PatchParams {
    PatchParams::apply(TESTER).force()
}

/// A fixture as a user would apply it in `ns`: without the fields only the server sets.
fn sample(file: &str) -> Value {
    let mut obj = crate::fixture_json(file);
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    for k in ["uid", "generation", "namespace"] {
        meta.remove(k);
    }
    obj
}

/// The operator, in-process, watching one namespace; stopped on `stop`.
struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), RunError>>,
}

impl Operator {
    fn start(client: &Client, ns: &str) -> Self {
        let config = OperatorConfig::new(Config {
            build: BuildConfig {
                image: "registry.example/artstore:test".into(),
                operator_namespace: Some(OPERATOR_NAMESPACE.into()),
                ..Default::default()
            },
            namespace: Some(ns.to_string()),
            // No pods run here: nothing to probe.
            probe_elements: false,
            resync: Duration::from_secs(30),
            stream_interval: Duration::from_secs(5),
            wait_interval: Duration::from_secs(2),
            instance: format!("operator-{ns}"),
            ..Default::default()
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(artstore_operator::run(client.clone(), config, async move {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            handle,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(PATIENCE, &mut self.handle)
            .await
            .expect("operator stops")
            .expect("join");
        assert!(result.is_ok(), "{result:?}");
    }
}

/// The message of an API error, or a panic saying the server accepted what it should not.
fn rejection<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{what}: {status:?}");
            status.message
        }
        other => panic!("{what}: expected the server to reject it, got {other:?}"),
    }
}

fn set(mut obj: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    obj.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent")
        .insert(key.to_string(), value);
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_accepts_every_crd_and_enforces_its_rules() {
    let cluster = Cluster::start(false).await;
    let ns = cluster.namespace("rules").await;

    // Every sample is valid on the server too.
    for (file, kind) in [
        ("eventstream.yaml", "EventStream"),
        ("storageelement-s3.yaml", "StorageElement"),
        ("storageelement-volume.yaml", "StorageElement"),
        ("querynode.yaml", "QueryNode"),
        ("ingester.yaml", "Ingester"),
    ] {
        let obj = sample(file);
        let res = match kind {
            "EventStream" => cluster.apply::<EventStream>(&ns, &obj).await.map(|_| ()),
            "StorageElement" => cluster.apply::<StorageElement>(&ns, &obj).await.map(|_| ()),
            "QueryNode" => cluster.apply::<QueryNode>(&ns, &obj).await.map(|_| ()),
            _ => cluster.apply::<Ingester>(&ns, &obj).await.map(|_| ()),
        };
        res.unwrap_or_else(|e| panic!("{file} rejected: {e}"));
    }

    let se = set(
        sample("storageelement-s3.yaml"),
        "/metadata/name",
        json!("se-bad"),
    );
    let volume = sample("storageelement-volume.yaml")["spec"]["backend"]["volume"].clone();
    let cases = [
        (
            set(se.clone(), "/spec/backend/volume", volume),
            "exactly one backend",
        ),
        (
            set(se.clone(), "/spec/capacity", json!("0")),
            "capacity must be a quantity greater than 0",
        ),
        (
            set(se.clone(), "/spec/mode", json!("rwx")),
            "Unsupported value: \"rwx\"",
        ),
        (
            set(se.clone(), "/spec/database/urlSecretRef/name", json!("")),
            "secret name must not be empty",
        ),
        (
            set(
                se.clone(),
                "/spec/database/urlSecretRef/name",
                json!("SE_A_DB"),
            ),
            "secret name must be a DNS subdomain",
        ),
        (
            set(se.clone(), "/spec/database/urlSecretRef/key", json!("url?")),
            "secret key may hold only",
        ),
        (
            set(
                se.clone(),
                "/spec/maintenance/consistencyCheck",
                json!("hourly"),
            ),
            "five-field cron",
        ),
    ];
    for (obj, message) in cases {
        let msg = rejection(cluster.apply::<StorageElement>(&ns, &obj).await, message);
        assert!(msg.contains(message), "want {message:?} in {msg}");
    }
    assert!(
        cluster.get::<StorageElement>(&ns, "se-bad").await.is_none(),
        "nothing of a rejected object is stored"
    );

    let es = set(
        sample("eventstream.yaml"),
        "/metadata/name",
        json!("es-bad"),
    );
    let msg = rejection(
        cluster
            .apply::<EventStream>(
                &ns,
                &set(
                    es.clone(),
                    "/spec/groups",
                    json!([{"name": "a"}, {"name": "a"}]),
                ),
            )
            .await,
        "duplicate groups",
    );
    assert!(msg.contains("group names must be unique"), "{msg}");
    let qn = set(sample("querynode.yaml"), "/spec/replicas", json!(101));
    let msg = rejection(cluster.apply::<QueryNode>(&ns, &qn).await, "101 replicas");
    assert!(msg.contains("replicas"), "{msg}");

    // Immutable fields: the transition rules see the stored object as oldSelf.
    let renamed = set(sample("eventstream.yaml"), "/spec/stream", json!("other"));
    let msg = rejection(
        cluster.apply::<EventStream>(&ns, &renamed).await,
        "stream renamed",
    );
    assert!(msg.contains("stream is immutable"), "{msg}");
    let vol = sample("storageelement-volume.yaml");
    let msg = rejection(
        cluster
            .apply::<StorageElement>(&ns, &set(vol, "/spec/elementId", json!("archive-2")))
            .await,
        "elementId changed",
    );
    assert!(msg.contains("elementId is immutable"), "{msg}");
    let vol = sample("storageelement-volume.yaml");
    let msg = rejection(
        cluster
            .apply::<StorageElement>(&ns, &set(vol, "/spec/backend/volume/size", json!("3Ti")))
            .await,
        "volume grown",
    );
    assert!(msg.contains("volume.size is immutable"), "{msg}");
    let stored: EventStream = cluster.get(&ns, "files").await.expect("stored stream");
    assert_eq!(
        stored.spec.stream, "artstore:files",
        "the stored spec is unchanged"
    );
}

/// The controller owner reference of a child points at `owner`.
fn assert_owned_by<C: Resource, O: Resource>(child: &C, owner: &O) {
    let refs = child.meta().owner_references.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().expect("owner uid");
    assert!(
        refs.iter()
            .any(|r| r.uid == uid && r.controller == Some(true)),
        "{} not owned by {}: {refs:?}",
        child.meta().name.clone().unwrap_or_default(),
        owner.meta().name.clone().unwrap_or_default()
    );
}

fn reason_is<K: HasStatus>(reason: &'static str) -> impl Fn(&K) -> bool {
    move |o: &K| o.ready().is_some_and(|c| c.reason == reason)
}

/// Status and Ready condition both observed the object's current generation.
fn observed_current<K: Resource + HasStatus>(o: &K) -> bool {
    let generation = o.meta().generation;
    o.status()
        .is_some_and(|s| s.observed_generation() == generation)
        && o.ready()
            .is_some_and(|c| c.observed_generation == generation)
}

async fn groups_of(stream: &str) -> Vec<String> {
    let mut redis = artstore_testsupport::redis_connection()
        .await
        .expect("redis");
    let reply: redis::streams::StreamInfoGroupsReply =
        redis::AsyncCommands::xinfo_groups(&mut redis, stream)
            .await
            .unwrap_or_default();
    reply.groups.into_iter().map(|g| g.name).collect()
}

async fn stream_exists(stream: &str) -> bool {
    let mut redis = artstore_testsupport::redis_connection()
        .await
        .expect("redis");
    redis::AsyncCommands::exists(&mut redis, stream)
        .await
        .expect("exists")
}

fn without_annotations(mut obj: Value) -> Value {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("annotations");
    }
    obj
}

fn paused(mut obj: Value) -> Value {
    obj["metadata"]["annotations"] = json!({"artstore.io/reconcile": "paused"});
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_cleans_up_redis_by_policy_and_the_garbage_collector_removes_children() {
    let cluster = Cluster::start(true).await;
    let ns = cluster.namespace("cleanup").await;
    cluster
        .secret(
            &ns,
            "redis",
            "url",
            &artstore_testsupport::services().redis_url,
        )
        .await;
    let operator = Operator::start(&cluster.client, &ns);

    let doomed_key = artstore_testsupport::unique_prefix("real-apiserver-delete");
    let kept_key = artstore_testsupport::unique_prefix("real-apiserver-retain");
    let doomed = set(
        set(
            set(
                sample("eventstream.yaml"),
                "/metadata/name",
                json!("doomed"),
            ),
            "/spec/stream",
            json!(doomed_key),
        ),
        "/spec/deletionPolicy",
        json!("Delete"),
    );
    let kept = set(
        set(sample("eventstream.yaml"), "/metadata/name", json!("kept")),
        "/spec/stream",
        json!(kept_key),
    );
    for es in [&doomed, &kept] {
        cluster
            .apply::<EventStream>(&ns, es)
            .await
            .expect("apply stream");
    }
    let ready = |es: &EventStream| observed_current(es) && reason_is("StreamReady")(es);
    let es: EventStream = cluster
        .wait_for(&ns, "doomed", "doomed stream Ready", ready)
        .await;
    assert!(
        es.finalizers()
            .iter()
            .any(|f| f == "artstore.io/stream-cleanup"),
        "deletionPolicy Delete adds the finalizer: {:?}",
        es.finalizers()
    );
    let es: EventStream = cluster
        .wait_for(&ns, "kept", "kept stream Ready", ready)
        .await;
    assert!(es.finalizers().is_empty(), "Retain needs no finalizer");
    assert!(stream_exists(&doomed_key).await && stream_exists(&kept_key).await);

    // An element and an ingester with their children; the kube-controller-manager runs, so a
    // Deployment gets its ReplicaSet and the Job controller competes with the test's writes.
    cluster
        .apply::<StorageElement>(
            &ns,
            &set(
                sample("storageelement-s3.yaml"),
                "/spec/eventStreamRef",
                json!("kept"),
            ),
        )
        .await
        .expect("apply element");
    let se: StorageElement = cluster
        .wait_for(&ns, "se-a", "element Migrating", reason_is("Migrating"))
        .await;
    let migration = se
        .status
        .as_ref()
        .and_then(|s| s.migration.clone())
        .expect("migration")
        .job_name;
    cluster.complete_job(&ns, &migration).await;
    let d: Deployment = cluster
        .wait_for(&ns, "se-a", "element Deployment", |_: &Deployment| true)
        .await;
    let rs_api = cluster.api::<k8s_openapi::api::apps::v1::ReplicaSet>(&ns);
    let d_uid = d.metadata.uid.clone().expect("uid");
    eventually(PATIENCE, "ReplicaSet of the element", || {
        let rs_api = rs_api.clone();
        let d_uid = d_uid.clone();
        async move {
            let list = rs_api.list(&Default::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|rs| rs.owner_references().iter().any(|r| r.uid == d_uid))
        }
    })
    .await;
    let job: Job = cluster.get(&ns, &migration).await.expect("migration Job");
    assert!(
        job.status.as_ref().and_then(|s| s.succeeded) == Some(1),
        "the Job controller left the completed Job alone: {:?}",
        job.status
    );
    cluster
        .secret(&ns, "artstore-jwt", "secret", "a-test-signing-secret")
        .await;
    cluster
        .apply::<Ingester>(&ns, &sample("ingester.yaml"))
        .await
        .expect("apply ingester");
    cluster
        .wait_for(&ns, "upload", "ingester Deployment", |_: &Deployment| true)
        .await;

    // Policy Delete: the stream goes from Redis, then the finalizer lets the object go.
    cluster
        .api::<EventStream>(&ns)
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete doomed");
    cluster
        .wait_gone::<EventStream>(&ns, "doomed", "doomed stream deleted")
        .await;
    assert!(
        !stream_exists(&doomed_key).await,
        "policy Delete removes the stream"
    );

    // Deleting the owners: the garbage collector removes every child.
    cluster
        .api::<StorageElement>(&ns)
        .delete("se-a", &DeleteParams::default())
        .await
        .expect("delete element");
    cluster
        .api::<Ingester>(&ns)
        .delete("upload", &DeleteParams::default())
        .await
        .expect("delete ingester");
    cluster
        .wait_gone::<Deployment>(&ns, "se-a", "element Deployment collected")
        .await;
    cluster
        .wait_gone::<Service>(&ns, "se-a", "element Service collected")
        .await;
    cluster
        .wait_gone::<Job>(&ns, &migration, "migration Job collected")
        .await;
    for mode in ["consistency", "incremental", "cleanup-expired"] {
        let name = artstore_operator::build::storage_element::cronjob_name("se-a", mode);
        cluster
            .wait_gone::<CronJob>(&ns, &name, "CronJob collected")
            .await;
    }
    eventually(PATIENCE, "ReplicaSets collected", || {
        let rs_api = rs_api.clone();
        let d_uid = d_uid.clone();
        async move {
            let list = rs_api.list(&Default::default()).await.ok()?;
            (!list
                .items
                .iter()
                .any(|rs| rs.owner_references().iter().any(|r| r.uid == d_uid)))
            .then_some(())
        }
    })
    .await;
    cluster
        .wait_gone::<Deployment>(&ns, "upload", "ingester Deployment collected")
        .await;
    cluster
        .wait_gone::<Service>(&ns, "upload", "ingester Service collected")
        .await;
    cluster
        .wait_gone::<ConfigMap>(&ns, "upload-registry", "ingester registry collected")
        .await;

    // Policy Retain: the object goes at once, the stream stays.
    cluster
        .api::<EventStream>(&ns)
        .delete("kept", &DeleteParams::default())
        .await
        .expect("delete kept");
    cluster
        .wait_gone::<EventStream>(&ns, "kept", "kept stream deleted")
        .await;
    assert!(
        stream_exists(&kept_key).await,
        "policy Retain keeps the stream"
    );

    operator.stop().await;
    drop(cluster.plane);
    let mut redis = artstore_testsupport::redis_connection()
        .await
        .expect("redis");
    let _: () = redis::AsyncCommands::del(&mut redis, &kept_key)
        .await
        .expect("del");
}
