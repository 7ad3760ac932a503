//! `kubectl-artstore` against a real kube-apiserver with the committed CRDs: the status screen
//! of a sample archive in each condition (snapshots), rebuild, pause/resume and token. No
//! operator runs here: the test writes the status subresource the operator would write.

use std::time::Duration;

use artstore_operator::crd::{EventStream, Ingester, QueryNode, StorageElement};
use artstore_testsupport::eventually;
use artstore_testsupport::kube::KubeControlPlane;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);
const T0: &str = "2026-11-03T10:00:00Z";

struct Cluster {
    plane: KubeControlPlane,
    client: Client,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cluster {
    async fn start() -> Cluster {
        let plane = tokio::task::spawn_blocking(KubeControlPlane::start)
            .await
            .expect("join")
            .expect("control plane starts");
        artstore_operator::install_crypto_provider();
        let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("config");
        let client = Client::try_from(config).expect("client");
        let cluster = Cluster { plane, client };
        cluster.install_crds().await;
        cluster
    }

    async fn install_crds(&self) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for (_, crd) in artstore_operator::crd::all() {
            api.patch(
                &crd.name_any(),
                &PatchParams::apply("tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .expect("crd applied");
        }
        let client = self.client.clone();
        eventually(PATIENCE, "the ArtStore kinds are served", || {
            let client = client.clone();
            async move {
                Api::<EventStream>::all(client.clone())
                    .list(&Default::default())
                    .await
                    .ok()?;
                Api::<StorageElement>::all(client.clone())
                    .list(&Default::default())
                    .await
                    .ok()?;
                Api::<QueryNode>::all(client.clone())
                    .list(&Default::default())
                    .await
                    .ok()?;
                Api::<Ingester>::all(client)
                    .list(&Default::default())
                    .await
                    .ok()
            }
        })
        .await;
    }

    async fn namespace(&self, name: &str) {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
    }

    fn dynamic<K: Resource<DynamicType = ()>>(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &ApiResource::erase::<K>(&()))
    }

    /// Creates a resource and, when given, writes its status as the operator would.
    async fn put<K: Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
        spec: Value,
        status: Option<Value>,
    ) {
        let api = self.dynamic::<K>(ns);
        let obj = json!({
            "apiVersion": K::api_version(&()), "kind": K::kind(&()),
            "metadata": {"name": name}, "spec": spec,
        });
        api.patch(
            name,
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(status) = status {
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("{name} status: {e}"));
        }
    }

    async fn secret(&self, ns: &str, name: &str, key: &str, value: &str) {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": {key: value}
        }))
        .expect("secret");
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &s)
            .await
            .expect("secret");
    }

    async fn plugin(&self, args: &[&str]) -> Out {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-artstore"))
            .args(args)
            .env("KUBECONFIG", &self.plane.kubeconfig)
            .output()
            .await
            .expect("plugin runs");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn spawn_plugin(&self, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-artstore"))
            .args(args)
            .env("KUBECONFIG", &self.plane.kubeconfig)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("plugin runs")
    }

    async fn annotations<K: Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
    ) -> std::collections::BTreeMap<String, String> {
        self.dynamic::<K>(ns)
            .get(name)
            .await
            .expect("get")
            .annotations()
            .clone()
    }
}

fn ready(reason: &str, message: &str) -> Value {
    json!([{"type": "Ready", "status": "True", "reason": reason, "message": message, "lastTransitionTime": T0}])
}

fn not_ready(reason: &str, message: &str) -> Value {
    json!([{"type": "Ready", "status": "False", "reason": reason, "message": message, "lastTransitionTime": T0}])
}

fn stream_spec() -> Value {
    json!({"redis": {"urlSecretRef": {"name": "redis", "key": "url"}}, "stream": "artstore:file-events",
           "deadLetter": {"maxDeliveries": 5}})
}

fn element_spec(stream: &str, mode: &str, priority: i32, secret: &str) -> Value {
    json!({"mode": mode, "priority": priority, "capacity": "10Gi",
           "backend": {"volume": {"size": "10Gi"}},
           "database": {"urlSecretRef": {"name": "db", "key": "url"}},
           "auth": {"jwtSecretRef": {"name": secret, "key": "secret"}},
           "eventStreamRef": stream})
}

fn query_spec(stream: &str) -> Value {
    json!({"replicas": 2, "database": {"urlSecretRef": {"name": "qdb", "key": "url"}},
           "auth": {"jwtSecretRef": {"name": "artstore-jwt", "key": "secret"}},
           "eventStreamRef": stream})
}

fn ingester_spec(elements: &[&str]) -> Value {
    json!({"replicas": 1, "storageElements": elements,
           "auth": {"jwtSecretRef": {"name": "artstore-jwt", "key": "secret"}},
           "redis": {"urlSecretRef": {"name": "redis", "key": "url"}}})
}

/// A healthy archive in `ns`.
async fn healthy_archive(c: &Cluster, ns: &str) {
    c.namespace(ns).await;
    c.put::<EventStream>(ns, "files", stream_spec(), Some(json!({
        "conditions": ready("StreamReady", "stream and 1 group exist"),
        "length": 1204, "pending": 3, "lag": 0,
        "groups": [{"name": "query-search", "consumers": 2, "pending": 3, "lag": 0, "lastDeliveredId": "1762164000000-0"}]
    }))).await;
    c.put::<StorageElement>(ns, "se-a", element_spec("files", "rw", 100, "artstore-jwt"), Some(json!({
        "conditions": ready("Serving", "1 replica ready"),
        "endpoint": "http://se-a.archive.svc:8080", "elementId": "se-a", "mode": "rw", "priority": 100,
        "capacityBytes": 10737418240u64, "usedBytes": 6442450944u64, "fileCount": 1204,
        "lastConsistencyReport": {"checkedAt": T0, "isConsistent": true, "inconsistencyPercentage": 0.0,
                                  "orphanCacheCount": 0, "orphanAttrCount": 0, "expiredCacheCount": 0},
        "lastRebuild": {"request": "full@1", "mode": "full", "jobName": "se-a-rebuild-full-1", "phase": "Succeeded",
                        "startedAt": "2026-11-02T09:00:00Z", "completedAt": "2026-11-02T09:05:00Z"}
    }))).await;
    c.put::<QueryNode>(
        ns,
        "search",
        query_spec("files"),
        Some(json!({
            "conditions": ready("Serving", "2 replicas ready"), "consumerGroup": "query-search",
            "backfill": {"jobName": "search-backfill", "phase": "Succeeded", "completedAt": T0},
            "lag": 0, "pending": 3, "indexedFiles": 1204, "readyReplicas": 2
        })),
    )
    .await;
    c.put::<Ingester>(ns, "upload", ingester_spec(&["se-a"]), Some(json!({
        "conditions": ready("Serving", "1 replica ready"), "writableTargets": ["se-a"], "readyReplicas": 1
    }))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_archive_with_what_is_not_ready_first() {
    let c = Cluster::start().await;
    healthy_archive(&c, "healthy").await;

    // A degraded archive: an element the operator cannot reach, a query node still
    // backfilling, a paused ingester, and an element the operator has not seen yet.
    let ns = "degraded";
    c.namespace(ns).await;
    c.put::<EventStream>(ns, "files", stream_spec(), Some(json!({
        "conditions": ready("StreamReady", "stream and 1 group exist"), "length": 90, "pending": 0, "lag": 40,
        "groups": [{"name": "query-search", "consumers": 1, "pending": 0, "lag": 40, "lastDeliveredId": "0-0"}]
    }))).await;
    c.put::<StorageElement>(ns, "se-a", element_spec("files", "edit", 20, "artstore-jwt"), Some(json!({
        "conditions": not_ready("Unreachable", "GET /api/v1/status: connection refused"),
        "mode": "edit", "priority": 20, "capacityBytes": 1073741824u64, "usedBytes": 1063004405u64, "fileCount": 90,
        "lastConsistencyReport": {"checkedAt": T0, "isConsistent": false, "inconsistencyPercentage": 2.5,
                                  "orphanCacheCount": 1, "orphanAttrCount": 1, "expiredCacheCount": 0}
    }))).await;
    c.put::<StorageElement>(
        ns,
        "se-new",
        element_spec("files", "ro", 5, "artstore-jwt"),
        None,
    )
    .await;
    c.put::<QueryNode>(ns, "search", query_spec("files"), Some(json!({
        "conditions": not_ready("BackfillRunning", "Job search-backfill runs; consumers start after it"),
        "consumerGroup": "query-search", "backfill": {"jobName": "search-backfill", "phase": "Running"},
        "lag": 40, "readyReplicas": 0
    }))).await;
    c.put::<Ingester>(ns, "upload", ingester_spec(&[]), Some(json!({
        "conditions": ready("Serving", "1 replica ready"), "writableTargets": ["se-a"], "readyReplicas": 1
    }))).await;
    c.plugin(&["pause", "ingester/upload", "-n", ns]).await;

    // Parts that name an EventStream that does not exist.
    c.namespace("orphaned").await;
    c.put::<StorageElement>(
        "orphaned",
        "lonely",
        element_spec("gone", "rw", 1, "artstore-jwt"),
        None,
    )
    .await;

    let healthy = c.plugin(&["status", "-n", "healthy"]).await;
    assert_eq!(healthy.code, 0, "{}", healthy.stderr);
    insta::assert_snapshot!("status_healthy", healthy.stdout);
    let degraded = c.plugin(&["status", "-n", "degraded"]).await;
    assert_eq!(degraded.code, 0, "{}", degraded.stderr);
    insta::assert_snapshot!("status_degraded", degraded.stdout);
    let orphaned = c.plugin(&["status", "-n", "orphaned"]).await;
    insta::assert_snapshot!("status_orphaned", orphaned.stdout);

    let all = c.plugin(&["status", "-A", "-o", "json"]).await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    let archives: Value = serde_json::from_str(&all.stdout).expect("json");
    let names: Vec<String> = archives
        .as_array()
        .expect("list")
        .iter()
        .map(|a| {
            format!(
                "{}/{}",
                a["namespace"].as_str().unwrap_or(""),
                a["eventStream"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(names, ["degraded/files", "healthy/files", "orphaned/gone"]);
    let problems: Vec<&str> = archives[0]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["reason"].as_str())
        .collect();
    assert_eq!(
        problems,
        ["Unreachable", "NoStatus", "BackfillRunning", "Paused"]
    );
    assert!(
        archives[1]["problems"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    let yaml = c.plugin(&["status", "-n", "healthy", "-o", "yaml"]).await;
    assert!(
        yaml.stdout.contains("eventStream: files"),
        "{}",
        yaml.stdout
    );

    let empty = c.plugin(&["status", "-n", "default"]).await;
    assert_eq!(
        empty.stdout.trim(),
        "No ArtStore resources in namespace default."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_pause_resume_and_token() {
    let c = Cluster::start().await;
    let ns = "archive";
    healthy_archive(&c, ns).await;
    c.secret(ns, "artstore-jwt", "secret", "s3cret-value\n")
        .await;

    // rebuild sets one request; --wait follows the operator's record of it to the end.
    let waiting = c.spawn_plugin(&[
        "rebuild",
        "se-a",
        "--mode",
        "incremental",
        "--wait",
        "-n",
        ns,
    ]);
    let request = eventually(PATIENCE, "the rebuild annotation is set", || async {
        c.annotations::<StorageElement>(ns, "se-a")
            .await
            .get("artstore.io/rebuild")
            .cloned()
    })
    .await;
    assert!(request.starts_with("incremental@"), "{request}");
    let record = |phase: &str| {
        json!({"status": {"lastRebuild": {
        "request": request, "mode": "incremental", "jobName": "se-a-rebuild-incremental-x",
        "phase": phase, "startedAt": T0}}})
    };
    let api = c.dynamic::<StorageElement>(ns);
    api.patch_status(
        "se-a",
        &PatchParams::default(),
        &Patch::Merge(&record("Running")),
    )
    .await
    .expect("status");
    api.patch_status(
        "se-a",
        &PatchParams::default(),
        &Patch::Merge(&record("Succeeded")),
    )
    .await
    .expect("status");
    let done = tokio::time::timeout(PATIENCE, waiting.wait_with_output())
        .await
        .expect("--wait returns once the rebuild finished")
        .expect("output");
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        stdout.contains("Job se-a-rebuild-incremental-x: Succeeded"),
        "{stdout}"
    );
    assert_eq!(
        c.annotations::<StorageElement>(ns, "se-a")
            .await
            .get("artstore.io/rebuild"),
        Some(&request),
        "the request is set once and left as the operator's record of it"
    );
    let second = c.plugin(&["rebuild", "se-a", "-n", ns]).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    let next = c.annotations::<StorageElement>(ns, "se-a").await["artstore.io/rebuild"].clone();
    assert!(next.starts_with("full@") && next != request, "{next}");
    let missing = c.plugin(&["rebuild", "nope", "-n", ns]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("storageelement nope not found"),
        "{}",
        missing.stderr
    );

    // pause / resume, idempotent, by any spelling of the kind.
    let paused = c.plugin(&["pause", "storageelement/se-a", "-n", ns]).await;
    assert_eq!(paused.code, 0, "{}", paused.stderr);
    assert_eq!(
        c.annotations::<StorageElement>(ns, "se-a")
            .await
            .get("artstore.io/reconcile")
            .map(String::as_str),
        Some("paused")
    );
    let again = c.plugin(&["pause", "ase/se-a", "-n", ns]).await;
    assert!(again.stdout.contains("already paused"), "{}", again.stdout);
    let status = c.plugin(&["status", "-n", ns]).await;
    assert!(
        status.stdout.contains("Ready (paused)"),
        "{}",
        status.stdout
    );
    let resumed = c.plugin(&["resume", "se/se-a", "-n", ns]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        !c.annotations::<StorageElement>(ns, "se-a")
            .await
            .contains_key("artstore.io/reconcile")
    );
    let bad_kind = c.plugin(&["pause", "pod/x", "-n", ns]).await;
    assert_eq!(bad_kind.code, 2, "{}", bad_kind.stderr);

    // token: signed with the archive's Secret, in the contract's claims.
    let out = c
        .plugin(&[
            "token", "--role", "writer", "--sub", "alice", "--ttl", "2h", "-n", ns,
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = true;
    let claims = jsonwebtoken::decode::<artstore_contract::token::Claims>(
        out.stdout.trim(),
        &jsonwebtoken::DecodingKey::from_secret(b"s3cret-value"),
        &validation,
    )
    .expect("the token verifies with the archive's secret")
    .claims;
    assert_eq!(
        (claims.sub.as_str(), claims.role.as_str()),
        ("alice", "writer")
    );
    assert_eq!(claims.exp - claims.iat, 7200);

    // Two secrets in one namespace: the plugin asks which.
    c.put::<StorageElement>(
        ns,
        "se-other",
        element_spec("files", "rw", 1, "other-jwt"),
        None,
    )
    .await;
    c.secret(ns, "other-jwt", "secret", "other").await;
    let ambiguous = c
        .plugin(&["token", "--role", "reader", "--sub", "bob", "-n", ns])
        .await;
    assert_eq!(ambiguous.code, 1);
    assert!(
        ambiguous.stderr.contains("--from KIND/NAME"),
        "{}",
        ambiguous.stderr
    );
    let chosen = c
        .plugin(&[
            "token",
            "--role",
            "reader",
            "--sub",
            "bob",
            "--from",
            "se/se-other",
            "-n",
            ns,
        ])
        .await;
    assert_eq!(chosen.code, 0, "{}", chosen.stderr);
    assert!(
        jsonwebtoken::decode::<artstore_contract::token::Claims>(
            chosen.stdout.trim(),
            &jsonwebtoken::DecodingKey::from_secret(b"other"),
            &validation,
        )
        .is_ok()
    );
}
