//! Shared pieces of the chart checks (`tests/chart.rs`) and the kind end-to-end test
//! (`tests/kind.rs`): where the chart and manifests are, running helm, reading multi-document
//! YAML, and applying objects of any kind to a real API server through discovery.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{GroupVersionKind, TypeMeta};
use kube::discovery::{Discovery, Scope};
use serde_json::Value;

/// Field manager of every apply these checks make.
pub const FIELD_MANAGER: &str = "artstore-e2e";

/// Values that turn on every optional template of the chart.
pub const ALL_OPTIONAL: &[&str] = &[
    "metrics.serviceMonitor.enabled=true",
    "metrics.podMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.grafanaDashboard.enabled=true",
];

/// Optional templates whose kinds exist only where the Prometheus operator is installed.
pub const PROMETHEUS_OPERATOR_KINDS: &[&str] = &["ServiceMonitor", "PodMonitor", "PrometheusRule"];

/// Kubernetes version helm renders for (`Chart.yaml` asks for ≥ 1.30).
pub const KUBE_VERSION: &str = "1.33.0";

pub fn repo_root() -> PathBuf {
    artstore_testsupport::workspace_root()
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/artstore-operator")
}

/// The helm binary built by `scripts/install-k8s-tools.sh`.
pub fn helm_bin() -> PathBuf {
    artstore_testsupport::kube::k8s_bin_dir().join("helm")
}

/// What a command printed and whether it succeeded.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(command: &mut Command) -> Result<Output> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `helm template <release> charts/artstore-operator -n <namespace> --set …`, as it ran.
pub fn helm_template(release: &str, namespace: &str, sets: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(helm_bin());
    cmd.arg("template").arg(release).arg(chart_dir()).args([
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    run(&mut cmd)
}

/// Renders the chart and fails with helm's message when it does not render.
pub fn render(release: &str, namespace: &str, sets: &[&str]) -> Result<Vec<Value>> {
    let out = helm_template(release, namespace, sets)?;
    if !out.success {
        bail!("helm template failed: {}", out.stderr);
    }
    parse_documents(&out.stdout)
}

/// Every non-empty document of a multi-document YAML text.
pub fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Option<Value>> =
        serde_saphyr::from_multiple(text).context("parsing multi-document YAML")?;
    Ok(docs
        .into_iter()
        .flatten()
        .filter(|d| !d.is_null())
        .collect())
}

/// The documents of every `*.yaml` file in a folder, files in name order.
pub fn read_manifest_dir(dir: &Path) -> Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        docs.extend(parse_documents(&text).with_context(|| format!("in {}", file.display()))?);
    }
    Ok(docs)
}

pub fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// A client for the kubeconfig the test control plane wrote.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    // ring is the workspace's one rustls provider; installing it keeps the client from
    // panicking should another provider ever be compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Applies (for real) every CRD in `dir` and waits until the API server serves them.
pub async fn install_crds(client: &kube::Client, dir: &Path) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for doc in read_manifest_dir(dir)? {
        let crd: CustomResourceDefinition = serde_json::from_value(doc)?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("installing CRD {name}"))?;
        names.push(name);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in &names {
        loop {
            let crd = api.get(name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(names)
}

/// The API of an object's kind, found by discovery; namespaced kinds use the object's
/// namespace, else `default_namespace`.
pub fn api_for(
    client: &kube::Client,
    discovery: &Discovery,
    doc: &Value,
    default_namespace: &str,
) -> Result<(Api<DynamicObject>, DynamicObject)> {
    let obj: DynamicObject = serde_json::from_value(doc.clone())
        .with_context(|| format!("{} {} is not an object", kind_of(doc), name_of(doc)))?;
    let types: &TypeMeta = obj
        .types
        .as_ref()
        .context("object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(types)?;
    let (resource, caps) = discovery.resolve_gvk(&gvk).with_context(|| {
        format!(
            "the API server does not serve {}/{} {}",
            gvk.group, gvk.version, gvk.kind
        )
    })?;
    let api = match caps.scope {
        Scope::Namespaced => {
            let ns = obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_string());
            Api::namespaced_with(client.clone(), &ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    Ok((api, obj))
}

/// Server-side apply with `dryRun=All` and `fieldValidation=Strict`: admission, schema (an
/// unknown or misspelt field is an error, not silently pruned) and CEL validation run, nothing
/// is stored.
pub async fn dry_run_apply(
    client: &kube::Client,
    discovery: &Discovery,
    doc: &Value,
    default_namespace: &str,
) -> Result<()> {
    let (api, obj) = api_for(client, discovery, doc, default_namespace)?;
    let name = obj.metadata.name.clone().context("object without a name")?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict()
            .dry_run(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("dry-run of {} {name}", kind_of(doc)))?;
    Ok(())
}

/// Server-side apply for real.
pub async fn apply(
    client: &kube::Client,
    discovery: &Discovery,
    doc: &Value,
    default_namespace: &str,
) -> Result<()> {
    let (api, obj) = api_for(client, discovery, doc, default_namespace)?;
    let name = obj.metadata.name.clone().context("object without a name")?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("apply of {} {name}", kind_of(doc)))?;
    Ok(())
}
