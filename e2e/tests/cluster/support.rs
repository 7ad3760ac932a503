//! What every scenario needs: the stack file, clients for the archive's Services, the API
//! server and Redis, and small waits.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use artstore_e2e::{Output, repo_root, run};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

/// The archive's namespace in `examples/`.
pub const NAMESPACE: &str = "archive";
/// The operator's namespace (`scripts/node.sh`, `e2e/kind.sh`).
pub const OPERATOR_NAMESPACE: &str = "artstore-system";
/// Scenarios change shared resources (modes, replicas, the operator itself): one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

#[derive(Debug, Clone, Deserialize)]
pub struct Stack {
    pub ingester_url: String,
    pub query_url: String,
    pub storage_elements: Vec<Element>,
    pub redis_url: String,
    pub stream: String,
    pub tokens: Tokens,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Element {
    pub id: String,
    pub url: String,
    pub mode: String,
    pub priority: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub admin: String,
    pub writer: String,
    pub reader: String,
}

pub struct Cluster {
    pub stack: Stack,
    pub kube: kube::Client,
    pub http: reqwest::Client,
    pub redis: redis::Client,
    /// Unique per scenario run: names and search words of what it creates.
    pub run: String,
    kubeconfig: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

fn node_dir() -> PathBuf {
    repo_root().join("target/artstore-node")
}

/// The cluster `scripts/node.sh up` (or `e2e/kind.sh`) made; a missing one is a failure.
pub async fn cluster() -> Cluster {
    let serial = SERIAL.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stack_path = std::env::var_os("ARTSTORE_STACK")
        .map(PathBuf::from)
        .unwrap_or_else(|| node_dir().join("stack.json"));
    let kubeconfig = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| node_dir().join("kubeconfig"));
    let stack: Stack = serde_json::from_slice(&std::fs::read(&stack_path).unwrap_or_else(|e| {
        panic!(
            "no cluster: {} ({e}); bring one up with scripts/node.sh up (scripts/test.sh does) or e2e/kind.sh",
            stack_path.display()
        )
    }))
    .expect("a stack file");
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).expect("the cluster's kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("a usable kubeconfig");
    let cluster = Cluster {
        kube: kube::Client::try_from(config).expect("a Kubernetes client"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        redis: redis::Client::open(stack.redis_url.as_str()).expect("the stack's Redis URL"),
        run: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        stack,
        kubeconfig,
        _serial: serial,
    };
    cluster.restore_baseline().await;
    cluster
}

/// The Kubernetes binaries: `ARTSTORE_K8S_BIN_DIR`, else those the node was brought up with.
fn k8s_bin_dir() -> PathBuf {
    if std::env::var_os("ARTSTORE_K8S_BIN_DIR").is_some() {
        return artstore_testsupport::kube::k8s_bin_dir();
    }
    std::fs::read_to_string(node_dir().join("bin-dir"))
        .map(|dir| PathBuf::from(dir.trim()))
        .unwrap_or_else(|_| artstore_testsupport::kube::k8s_bin_dir())
}

/// Waits until `probe` gives a value, checking every second.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Bytes that compress badly and differ per seed, so a stale file cannot pass for this one.
pub fn content(len: usize, seed: u128) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

/// Every ArtStore kind this suite touches.
pub fn artstore_resource(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("artstore.io", "v1alpha1", kind),
        &plural,
    )
}

impl Cluster {
    pub fn api(&self, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.kube.clone(), NAMESPACE, &artstore_resource(kind))
    }

    pub fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.kube.clone(), namespace)
    }

    pub fn element(&self, name: &str) -> &Element {
        self.stack
            .storage_elements
            .iter()
            .find(|e| e.id == name)
            .unwrap_or_else(|| panic!("no storage element {name} in the stack file"))
    }

    pub async fn merge_patch(&self, kind: &str, name: &str, patch: Value) {
        self.api(kind)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patching {kind}/{name}: {e}"));
    }

    pub async fn get(&self, kind: &str, name: &str) -> Value {
        let object = self
            .api(kind)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{kind}/{name}: {e}"));
        serde_json::to_value(object).unwrap()
    }

    /// Waits until the resource's Ready condition is True for its current generation.
    pub async fn wait_ready(&self, kind: &str, name: &str, timeout: Duration) -> Value {
        eventually(&format!("{kind}/{name} Ready"), timeout, || async {
            let object = self.api(kind).get(name).await.ok()?;
            let object = serde_json::to_value(object).unwrap();
            let ready = object["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let current =
                object["status"]["observedGeneration"] == object["metadata"]["generation"];
            (ready && current).then_some(object)
        })
        .await
    }

    /// `POST /api/v1/files/upload` through the ingester Service with an Idempotency-Key; `None`
    /// when the connection is refused or cut (a Service has no endpoint while its only pod is not
    /// ready).
    async fn try_upload(
        &self,
        filename: &str,
        body: Vec<u8>,
        description: &str,
        key: &str,
    ) -> Option<(u16, Value)> {
        let form = upload_form(filename, body, description);
        let response = self
            .http
            .post(format!("{}/api/v1/files/upload", self.stack.ingester_url))
            .bearer_auth(&self.stack.tokens.writer)
            .header("Idempotency-Key", key)
            .multipart(form)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Uploads and returns the stored record. A 5xx or a failed connection is retried with the
    /// same key for up to two minutes, as a client would: the registry reaches the ingester's pod
    /// through a ConfigMap volume, which the kubelet refreshes on its own period, so a change of
    /// elements shows there with a delay; and the Service refuses connections while its pod is
    /// not ready.
    pub async fn upload_ok(&self, filename: &str, body: &[u8], description: &str) -> Value {
        let key = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let answer = self
                .try_upload(filename, body.to_vec(), description, &key)
                .await;
            let (status, record) = answer.unwrap_or((0, Value::Null));
            if status == 201 || status == 200 {
                return record;
            }
            assert!(
                (status == 0 || status >= 500) && Instant::now() < deadline,
                "upload {filename}: {status} {record}"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Puts back what a scenario that failed half-way may have left changed (every element in
    /// its examples/ mode, one query node replica) and waits until uploads land on the
    /// highest-priority writable element again.
    async fn restore_baseline(&self) {
        for element in &self.stack.storage_elements {
            let current = self.get("StorageElement", &element.id).await;
            if current["spec"]["mode"] != json!(element.mode) {
                self.merge_patch(
                    "StorageElement",
                    &element.id,
                    json!({"spec": {"mode": element.mode}}),
                )
                .await;
                self.wait_ready("StorageElement", &element.id, Duration::from_secs(120))
                    .await;
            }
        }
        if self.get("QueryNode", "search").await["spec"]["replicas"] != json!(1) {
            self.merge_patch("QueryNode", "search", json!({"spec": {"replicas": 1}}))
                .await;
        }
        self.wait_rollout("search", NAMESPACE, 1).await;
        let first = self
            .stack
            .storage_elements
            .iter()
            .filter(|e| e.mode == "rw" || e.mode == "edit")
            .max_by_key(|e| e.priority)
            .expect("a writable element")
            .id
            .clone();
        eventually(
            &format!("uploads land on {first}"),
            Duration::from_secs(150),
            || async {
                let record = self
                    .upload_ok(
                        &format!("baseline-{}.txt", self.run),
                        b"baseline",
                        "baseline",
                    )
                    .await;
                (record["storage_element_id"] == json!(first)).then_some(())
            },
        )
        .await;
    }

    pub async fn search(&self, body: Value) -> Option<Value> {
        let response = self
            .http
            .post(format!("{}/api/v1/search", self.stack.query_url))
            .bearer_auth(&self.stack.tokens.reader)
            .json(&body)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Waits until a search for `words` finds exactly the files `expected`.
    pub async fn wait_searchable(&self, words: &str, expected: &[String], timeout: Duration) {
        let mut want: Vec<&String> = expected.iter().collect();
        want.sort();
        eventually(
            &format!("search for {words:?} finds {} files", want.len()),
            timeout,
            || async {
                let answer = self.search(json!({"query": words, "limit": 100})).await?;
                let mut found: Vec<String> = answer["results"]
                    .as_array()?
                    .iter()
                    .filter_map(|r| r["file_id"].as_str().map(str::to_string))
                    .collect();
                found.sort();
                (found.iter().collect::<Vec<_>>() == want).then_some(())
            },
        )
        .await
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis
            .get_multiplexed_async_connection()
            .await
            .expect("Redis of the cluster answers")
    }

    /// Entries delivered to the group and not yet acknowledged.
    pub async fn pending(&self, group: &str) -> u64 {
        let mut redis = self.redis().await;
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(&self.stack.stream)
            .arg(group)
            .query_async(&mut redis)
            .await
            .expect("XPENDING");
        match reply {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                other => panic!("XPENDING count: {other:?}"),
            },
            other => panic!("XPENDING: {other:?}"),
        }
    }

    /// `kubectl` of the pinned build, against this cluster.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(k8s_bin_dir().join("kubectl"));
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo_root())
            .args(args);
        with_stdin(command, stdin)
    }

    pub fn helm(&self, args: &[&str]) -> Output {
        let mut command = Command::new(k8s_bin_dir().join("helm"));
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo_root())
            .args(args);
        run(&mut command).unwrap()
    }

    /// The pods a Deployment's selector picks, but those already terminating.
    pub async fn pods_of(
        &self,
        deployment: &str,
        namespace: &str,
    ) -> Vec<k8s_openapi::api::core::v1::Pod> {
        use k8s_openapi::api::apps::v1::Deployment;
        let deploy = self
            .namespaced::<Deployment>(namespace)
            .get(deployment)
            .await
            .unwrap_or_else(|e| panic!("deployment {deployment}: {e}"));
        let selector = deploy
            .spec
            .expect("a Deployment has a spec")
            .selector
            .match_labels
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        self.namespaced::<k8s_openapi::api::core::v1::Pod>(namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Waits until a ready pod other than `old` runs for the Deployment; returns its name.
    /// (Right after a pod is deleted the Deployment's status still counts it as ready.)
    pub async fn wait_replacement(&self, deployment: &str, namespace: &str, old: &str) -> String {
        eventually(
            &format!("a new ready pod of {deployment}"),
            Duration::from_secs(240),
            || async {
                self.pods_of(deployment, namespace)
                    .await
                    .into_iter()
                    .find_map(|pod| {
                        let name = pod.metadata.name?;
                        let ready = pod
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True");
                        (ready && name != old).then_some(name)
                    })
            },
        )
        .await
    }

    /// Waits until a Deployment has `replicas` up-to-date, ready pods and nothing else.
    pub async fn wait_rollout(&self, deployment: &str, namespace: &str, replicas: i32) {
        use k8s_openapi::api::apps::v1::Deployment;
        let api = self.namespaced::<Deployment>(namespace);
        eventually(
            &format!("deployment {deployment} at {replicas} ready"),
            Duration::from_secs(240),
            || async {
                let d = api.get(deployment).await.ok()?;
                let status = d.status?;
                let done = d.metadata.generation == status.observed_generation
                    && status.ready_replicas.unwrap_or(0) == replicas
                    && status.updated_replicas.unwrap_or(0) == replicas
                    && status.replicas.unwrap_or(0) == replicas;
                done.then_some(())
            },
        )
        .await
    }
}

fn with_stdin(mut command: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let Some(input) = stdin else {
        return run(&mut command).unwrap();
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The multipart form of one upload, tagged `e2e`.
fn upload_form(filename: &str, body: Vec<u8>, description: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(body)
                .file_name(filename.to_string())
                .mime_str("application/octet-stream")
                .unwrap(),
        )
        .text("description", description.to_string())
        .text("tags", "e2e")
}
