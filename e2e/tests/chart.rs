//! CI checks of the Helm chart and `examples/`: helm lint and template, the values schema, the
//! chart's CRDs against the generated ones, the alerts and dashboard against the metrics the
//! code registers, and a server-side dry-run of everything against a real kube-apiserver.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result};
use artstore_e2e::{
    ALL_OPTIONAL, PROMETHEUS_OPERATOR_KINDS, chart_dir, client_for, dry_run_apply, helm_bin,
    helm_template, install_crds, kind_of, name_of, parse_documents, read_manifest_dir, render,
    repo_root, run,
};
use artstore_testsupport::kube::KubeControlPlane;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::discovery::Discovery;
use serde_json::{Value, json};

const RELEASE: &str = "artstore";
const NAMESPACE: &str = "artstore-system";

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| kind_of(d).to_string()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn helm_lint(sets: &[&str]) -> artstore_e2e::Output {
    let mut cmd = Command::new(helm_bin());
    cmd.arg("lint").arg(chart_dir()).arg("--strict");
    for set in sets {
        cmd.args(["--set", set]);
    }
    run(&mut cmd).expect("helm runs")
}

#[test]
fn helm_lint_passes_with_default_values() {
    let out = helm_lint(&[]);
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn helm_lint_passes_with_every_optional_template_and_one_watched_namespace() {
    let mut sets = ALL_OPTIONAL.to_vec();
    sets.push("watchNamespace=archive");
    let out = helm_lint(&sets);
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn default_render_is_the_operator_and_its_least_privilege_rbac() {
    let docs = render(RELEASE, NAMESPACE, &[]).unwrap();
    let expected: BTreeSet<String> = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds(&docs), expected);

    let role = one(&docs, "ClusterRole");
    let mut grants: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                let verbs = rule["verbs"].as_array().unwrap();
                grants
                    .entry((
                        group.as_str().unwrap().to_string(),
                        resource.as_str().unwrap().to_string(),
                    ))
                    .or_default()
                    .extend(verbs.iter().map(|v| v.as_str().unwrap().to_string()));
            }
        }
    }
    let verbs = |g: &str, r: &str| -> BTreeSet<String> {
        grants
            .get(&(g.to_string(), r.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    // Secrets are read by name only: no list/watch of every Secret in the cluster.
    assert_eq!(verbs("", "secrets"), BTreeSet::from(["get".to_string()]));
    assert!(verbs("", "pods").is_empty());
    assert!(verbs("", "persistentvolumeclaims").is_empty());
    for (g, r) in [
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("", "services"),
        ("", "configmaps"),
    ] {
        let v = verbs(g, r);
        for needed in ["get", "list", "watch", "patch", "delete"] {
            assert!(v.contains(needed), "{g}/{r} lacks {needed}");
        }
        assert!(!v.contains("*"));
    }
    for kind in ["eventstreams", "storageelements", "querynodes", "ingesters"] {
        let v = verbs("artstore.io", kind);
        for needed in ["get", "list", "watch", "patch", "update"] {
            assert!(v.contains(needed), "{kind} lacks {needed}");
        }
        assert!(!v.contains("delete"), "the operator never deletes {kind}");
        assert!(verbs("artstore.io", &format!("{kind}/status")).contains("patch"));
    }
    // The Lease is granted in the release namespace only.
    let lease_role = one(&docs, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(lease_role["rules"][0]["resources"], json!(["leases"]));
}

#[test]
fn one_watched_namespace_gets_a_role_instead_of_a_cluster_role() {
    let docs = render(RELEASE, NAMESPACE, &["watchNamespace=archive"]).unwrap();
    assert!(find(&docs, "ClusterRole").is_empty());
    assert!(find(&docs, "ClusterRoleBinding").is_empty());
    let roles = find(&docs, "Role");
    assert!(roles.iter().any(
        |r| r["metadata"]["namespace"] == "archive" && r["rules"].as_array().unwrap().len() > 3
    ));
    let binding = find(&docs, "RoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["namespace"] == "archive")
        .expect("a RoleBinding in the watched namespace");
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
    let deployment = one(&docs, "Deployment");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let watch = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "WATCH_NAMESPACE")
        .unwrap();
    assert_eq!(watch["value"], "archive");
}

/// The `env = "…"` names of the operator's command line, read from its source.
fn operator_env_names() -> BTreeSet<String> {
    let main = std::fs::read_to_string(repo_root().join("operator/src/main.rs")).unwrap();
    main.split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(String::from)
        .collect()
}

#[test]
fn deployment_sets_every_operator_flag_and_runs_hardened() {
    let docs = render(
        RELEASE,
        NAMESPACE,
        &[
            "workloadImage=registry.example/artstore:9",
            "workloadImagePullPolicy=Always",
        ],
    )
    .unwrap();
    let deployment = one(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["command"],
        json!(["/usr/local/bin/artstore-operator"])
    );

    let env: BTreeMap<String, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e))
        .collect();
    let flags = operator_env_names();
    assert!(
        flags.len() >= 9,
        "operator flags not found in main.rs: {flags:?}"
    );
    for name in &flags {
        assert!(env.contains_key(name), "the Deployment does not set {name}");
    }
    for name in env.keys() {
        assert!(
            flags.contains(name) || name == "RUST_LOG",
            "{name} is not a variable the operator reads"
        );
    }
    assert_eq!(
        env["ARTSTORE_OPERATOR_IMAGE"]["value"],
        "registry.example/artstore:9"
    );
    assert_eq!(
        env["ARTSTORE_OPERATOR_IMAGE_PULL_POLICY"]["value"],
        "Always"
    );
    assert_eq!(env["ARTSTORE_OPERATOR_LISTEN"]["value"], "0.0.0.0:8080");
    assert_eq!(env["ARTSTORE_OPERATOR_LEADER_ELECTION"]["value"], "true");
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["ports"][0]["name"], "http");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );

    // The operator's own image defaults to the chart's appVersion.
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    let app_version = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .unwrap()
        .trim()
        .trim_matches('"');
    assert_eq!(
        container["image"],
        format!("ghcr.io/artstore/artstore:{app_version}")
    );
}

#[test]
fn values_schema_and_template_guards_reject_bad_values() {
    let cases: &[(&[&str], &str)] = &[
        (&["logFormat=xml"], "logFormat"),
        (&["replicaCount=-1"], "replicaCount"),
        (&["metrics.port=70000"], "port"),
        (&["image.pullPolicy=Sometimes"], "pullPolicy"),
        (&["watchNamespace=Not_A_Namespace"], "watchNamespace"),
        (
            &["workloadImagePullPolicy=Sometimes"],
            "workloadImagePullPolicy",
        ),
        (&["metrics.serviceMonitor.interval=soon"], "interval"),
        (&["unknownSetting=1"], "unknownSetting"),
        (
            &["replicaCount=2", "leaderElection.enabled=false"],
            "leaderElection",
        ),
    ];
    for (sets, mentions) in cases {
        let out = helm_template(RELEASE, NAMESPACE, sets).unwrap();
        assert!(!out.success, "{sets:?} was accepted");
        assert!(
            out.stderr.contains(mentions),
            "{sets:?}: the error does not name {mentions}: {}",
            out.stderr
        );
    }
    // The same keys with good values render.
    render(
        RELEASE,
        NAMESPACE,
        &[
            "logFormat=text",
            "replicaCount=2",
            "metrics.port=9090",
            "image.pullPolicy=Always",
            "watchNamespace=archive",
        ],
    )
    .unwrap();
}

#[test]
fn chart_crds_equal_the_generated_crds() {
    let read = |dir: std::path::PathBuf| -> BTreeMap<String, String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    };
    let generated = read(repo_root().join("crds"));
    let chart = read(chart_dir().join("crds"));
    assert_eq!(generated.len(), 4);
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "run charts/sync-crds.sh"
    );
    for (file, text) in &generated {
        assert!(
            chart[file] == *text,
            "charts/artstore-operator/crds/{file} differs from crds/{file}: run charts/sync-crds.sh"
        );
    }
}

/// Metric names the code registers: `Registry::with_prefix` / `sub_registry_with_prefix`
/// joined with each `register("…")` name; counters get `_total` on the wire.
fn registered_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let root = repo_root();
    for file in [
        "operator/src/metrics.rs",
        "workloads/query/src/metrics.rs",
        "workloads/element/src/metrics.rs",
        "workloads/ingester/src/metrics.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let prefix = text
            .split("with_prefix(\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(|p| format!("{p}_"))
            .unwrap_or_default();
        for rest in text.split(".register(").skip(1) {
            if let Some(name) = rest.split('"').nth(1) {
                names.insert(format!("{prefix}{name}"));
            }
        }
    }
    names
}

/// `artstore_…` identifiers in a text.
fn metric_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("artstore_") {
        let start = i + pos;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric());
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok {
            found.insert(text[start..end].to_string());
        }
        i = end;
    }
    found
}

#[test]
fn alerts_and_dashboard_use_only_metrics_that_exist() {
    let registered = registered_metrics();
    assert!(
        registered.contains("artstore_query_group_lag"),
        "{registered:?}"
    );
    assert!(registered.contains("artstore_operator_resource_ready"));
    assert!(registered.contains("artstore_element_outbox_pending"));
    assert!(registered.contains("artstore_operator_storage_element_inconsistency_percent"));
    // Figures kube-state-metrics derives from status with the chart's config.
    let ksm =
        std::fs::read_to_string(chart_dir().join("kube-state-metrics/artstore.yaml")).unwrap();
    let ksm_metrics: BTreeSet<String> = ksm
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .map(|n| format!("artstore_{}", n.trim()))
        .collect();
    assert!(ksm_metrics.contains("artstore_storageelement_inconsistency_percentage"));

    let exists = |name: &str| {
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        registered.contains(base) || ksm_metrics.contains(base)
    };

    let docs = render(RELEASE, NAMESPACE, ALL_OPTIONAL).unwrap();
    let rule = one(&docs, "PrometheusRule");
    let mut alerts = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            alerts.insert(r["alert"].as_str().unwrap().to_string());
            let expr = r["expr"].as_str().unwrap();
            let refs = metric_references(expr);
            assert!(!refs.is_empty(), "{expr}");
            for m in refs {
                assert!(
                    exists(&m),
                    "alert {} uses {m}, which nothing exports",
                    r["alert"]
                );
            }
        }
    }
    for needed in [
        "ArtStoreConsumerLagHigh",
        "ArtStorePendingEntriesHigh",
        "ArtStoreDeadLetters",
        "ArtStoreCacheInconsistent",
    ] {
        assert!(alerts.contains(needed), "missing alert {needed}");
    }

    let dashboard_cm = find(&docs, "ConfigMap")
        .into_iter()
        .find(|c| name_of(c).ends_with("-dashboard"))
        .expect("dashboard ConfigMap");
    assert_eq!(dashboard_cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value =
        serde_json::from_str(dashboard_cm["data"]["artstore.json"].as_str().unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            exprs += 1;
            for m in metric_references(expr) {
                assert!(
                    exists(&m),
                    "panel {} uses {m}, which nothing exports",
                    panel["title"]
                );
            }
        }
    }
    assert!(exprs > 10);

    let pod_monitor = one(&docs, "PodMonitor");
    assert_eq!(
        pod_monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/managed-by"],
        "artstore-operator"
    );
    assert_eq!(
        pod_monitor["spec"]["podMetricsEndpoints"][0]["port"],
        "http"
    );
    let service_monitor = one(&docs, "ServiceMonitor");
    assert_eq!(
        service_monitor["spec"]["endpoints"][0]["port"],
        "http-metrics"
    );
}

#[test]
fn argocd_patch_embeds_the_health_check() {
    let dir = chart_dir().join("argocd");
    let lua = std::fs::read_to_string(dir.join("health.lua")).unwrap();
    let patch = std::fs::read_to_string(dir.join("argocd-cm-patch.yaml")).unwrap();
    let docs = parse_documents(&patch).unwrap();
    let embedded = docs[0]["data"]["resource.customizations.health.artstore.io_*"]
        .as_str()
        .expect("the health key");
    assert_eq!(
        embedded.trim_end(),
        lua.trim_end(),
        "regenerate argocd-cm-patch.yaml"
    );
    for needle in [
        "observedGeneration",
        "\"Ready\"",
        "Healthy",
        "Degraded",
        "Progressing",
    ] {
        assert!(lua.contains(needle), "health.lua does not handle {needle}");
    }
}

async fn create_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

async fn access_allowed(
    client: &kube::Client,
    user: &str,
    namespace: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                verb: Some(verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[tokio::test]
async fn rendered_chart_and_examples_pass_a_server_side_dry_run() {
    let plane = tokio::task::spawn_blocking(KubeControlPlane::start)
        .await
        .unwrap()
        .expect("control plane starts");
    let client = client_for(&plane.kubeconfig).await.unwrap();
    let crds = install_crds(&client, &chart_dir().join("crds"))
        .await
        .unwrap();
    assert_eq!(crds.len(), 4);
    let discovery = Discovery::new(client.clone()).run().await.unwrap();

    // Namespaces are created for real: a dry-run create of a Namespace does not make objects
    // in it possible.
    for ns in [NAMESPACE, "archive"] {
        create_namespace(&client, ns).await.unwrap();
    }

    // The chart with default values, and with every optional template the API server can
    // serve (Prometheus operator kinds are not installed here) and one watched namespace.
    let optional: Vec<&str> = [
        "metrics.grafanaDashboard.enabled=true",
        "watchNamespace=archive",
    ]
    .to_vec();
    for sets in [Vec::new(), optional] {
        let docs = render(RELEASE, NAMESPACE, &sets).unwrap();
        assert!(!docs.is_empty());
        for doc in &docs {
            assert!(
                !PROMETHEUS_OPERATOR_KINDS.contains(&kind_of(doc)),
                "{sets:?} rendered {}",
                kind_of(doc)
            );
            dry_run_apply(&client, &discovery, doc, NAMESPACE)
                .await
                .unwrap_or_else(|e| panic!("{sets:?}: {e:#}"));
        }
    }

    // Every example, CRD validation and CEL rules included.
    let examples = read_manifest_dir(&repo_root().join("examples")).unwrap();
    let example_kinds = kinds(&examples);
    for kind in [
        "EventStream",
        "StorageElement",
        "QueryNode",
        "Ingester",
        "Secret",
    ] {
        assert!(example_kinds.contains(kind), "examples/ has no {kind}");
    }
    let elements = find(&examples, "StorageElement");
    assert_eq!(elements.len(), 2);
    assert!(
        elements
            .iter()
            .any(|e| e["spec"]["backend"]["s3"].is_object())
    );
    assert!(
        elements
            .iter()
            .any(|e| e["spec"]["backend"]["volume"].is_object())
    );
    assert_ne!(
        elements[0]["spec"]["priority"],
        elements[1]["spec"]["priority"]
    );
    for doc in &examples {
        dry_run_apply(&client, &discovery, doc, "archive")
            .await
            .unwrap_or_else(|e| panic!("examples/: {e:#}"));
    }
    // Every Secret an example references is among the examples, with the key asked for.
    let secrets: BTreeMap<&str, &Value> = find(&examples, "Secret")
        .into_iter()
        .map(|s| (name_of(s), &s["stringData"]))
        .collect();
    let mut refs = Vec::new();
    collect_secret_refs(&Value::Array(examples.clone()), &mut refs);
    assert!(refs.len() >= 8, "{refs:?}");
    for (name, key) in refs {
        let data = secrets
            .get(name.as_str())
            .unwrap_or_else(|| panic!("Secret {name} is not in examples/"));
        assert!(data[&key].is_string(), "Secret {name} has no key {key}");
    }

    // The dry-run is not a formality: the server refuses what the CRDs forbid.
    let mut both_backends = elements[0].clone();
    both_backends["spec"]["backend"]["volume"] = json!({"size": "1Gi"});
    let refused = dry_run_apply(&client, &discovery, &both_backends, "archive").await;
    assert!(
        refused.is_err(),
        "a StorageElement with two backends was accepted"
    );
    let mut bad_mode = elements[0].clone();
    bad_mode["spec"]["mode"] = json!("write");
    assert!(
        dry_run_apply(&client, &discovery, &bad_mode, "archive")
            .await
            .is_err()
    );
    // A misspelt field is an error, not silently pruned (fieldValidation=Strict).
    let mut misspelt = elements[0].clone();
    misspelt["spec"]["cacheTTLHours"] = json!(12);
    let refused = dry_run_apply(&client, &discovery, &misspelt, "archive").await;
    assert!(
        format!("{refused:?}").contains("cacheTTLHours"),
        "a misspelt field was accepted: {refused:?}"
    );

    // The RBAC grants what docs/operator.md lists, and no more: apply it for real and ask
    // the API server what the operator's ServiceAccount may do.
    let docs = render(RELEASE, NAMESPACE, &[]).unwrap();
    for doc in docs.iter().filter(|d| {
        matches!(
            kind_of(d),
            "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
        )
    }) {
        artstore_e2e::apply(&client, &discovery, doc, NAMESPACE)
            .await
            .unwrap();
    }
    let sa_name = name_of(one(&docs, "ServiceAccount"));
    let user = format!("system:serviceaccount:{NAMESPACE}:{sa_name}");
    let allowed: &[(&str, &str, &str)] = &[
        ("artstore.io", "storageelements", "watch"),
        ("artstore.io", "querynodes/status", "patch"),
        ("artstore.io", "eventstreams", "update"),
        ("apps", "deployments", "patch"),
        ("apps", "statefulsets", "delete"),
        ("batch", "jobs", "list"),
        ("batch", "cronjobs", "delete"),
        ("", "services", "patch"),
        ("", "configmaps", "watch"),
        ("", "secrets", "get"),
        ("events.k8s.io", "events", "create"),
    ];
    for (group, resource, verb) in allowed {
        assert!(
            access_allowed(&client, &user, "archive", group, resource, verb)
                .await
                .unwrap(),
            "the operator may not {verb} {group}/{resource}"
        );
    }
    assert!(
        access_allowed(
            &client,
            &user,
            NAMESPACE,
            "coordination.k8s.io",
            "leases",
            "update"
        )
        .await
        .unwrap()
    );
    let denied: &[(&str, &str, &str, &str)] = &[
        ("archive", "", "secrets", "list"),
        ("archive", "", "secrets", "create"),
        ("archive", "", "pods", "delete"),
        ("archive", "artstore.io", "storageelements", "delete"),
        ("archive", "coordination.k8s.io", "leases", "update"),
        ("archive", "rbac.authorization.k8s.io", "roles", "create"),
    ];
    for (ns, group, resource, verb) in denied {
        assert!(
            !access_allowed(&client, &user, ns, group, resource, verb)
                .await
                .unwrap(),
            "the operator may {verb} {group}/{resource} in {ns}"
        );
    }
    drop(plane);
}

/// `{name, key}` pairs of every `…SecretRef`/`…IdRef`/`…KeyRef` in the examples.
fn collect_secret_refs(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k.ends_with("Ref")
                    && let (Some(name), Some(key)) = (v["name"].as_str(), v["key"].as_str())
                {
                    out.push((name.to_string(), key.to_string()));
                    continue;
                }
                collect_secret_refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_secret_refs(v, out)),
        _ => {}
    }
}

#[test]
fn kind_script_and_sync_script_parse() {
    let root = repo_root();
    let scripts = [root.join("e2e/kind.sh"), root.join("charts/sync-crds.sh")];
    for script in &scripts {
        let out = run(Command::new("bash").arg("-n").arg(script)).unwrap();
        assert!(out.success, "{}: {}", script.display(), out.stderr);
    }
    // shellcheck is optional on a development machine; CI images with it get the full check.
    match Command::new("shellcheck").arg("--version").output() {
        Ok(_) => {
            let out = run(Command::new("shellcheck")
                .args(["-x", "-P", "SCRIPTDIR/.."])
                .args(&scripts))
            .unwrap();
            assert!(out.success, "{}", out.stdout);
        }
        Err(_) => eprintln!("shellcheck not installed: only `bash -n` ran"),
    }
}

/// Runs `argocd/health.lua` the way Argo CD does (the resource as the global `obj`, the
/// chunk returns `{status, message}`), on Lua 5.1 like Argo CD's gopher-lua.
fn argocd_health(obj: Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let script = std::fs::read_to_string(chart_dir().join("argocd/health.lua")).unwrap();
    let lua = mlua::Lua::new();
    lua.globals()
        .set("obj", lua.to_value(&obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(&script).eval().expect("health.lua runs");
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

fn resource(generation: i64, status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "artstore.io/v1alpha1",
        "kind": "QueryNode",
        "metadata": {"name": "search", "namespace": "archive", "generation": generation},
        "spec": {"eventStreamRef": "files"},
    });
    if let Some(status) = status {
        obj["status"] = status;
    }
    obj
}

fn ready(status: &str, reason: &str, generation: i64) -> Value {
    json!({"type": "Ready", "status": status, "reason": reason, "message": "m",
           "lastTransitionTime": "2026-11-01T00:00:00Z", "observedGeneration": generation})
}

#[test]
fn argocd_health_check_reads_ready_and_observed_generation() {
    let (status, _) = argocd_health(resource(1, None));
    assert_eq!(status, "Progressing");

    let healthy = resource(
        2,
        Some(json!({"observedGeneration": 2, "conditions": [ready("True", "Ready", 2)]})),
    );
    assert_eq!(argocd_health(healthy).0, "Healthy");

    // A spec change the operator has not seen yet.
    let stale = resource(
        3,
        Some(json!({"observedGeneration": 2, "conditions": [ready("True", "Ready", 2)]})),
    );
    assert_eq!(argocd_health(stale).0, "Progressing");
    let stale_condition = resource(
        3,
        Some(json!({"observedGeneration": 3, "conditions": [ready("True", "Ready", 2)]})),
    );
    assert_eq!(argocd_health(stale_condition).0, "Progressing");

    let (status, message) = argocd_health(resource(
        1,
        Some(json!({"observedGeneration": 1, "conditions": [
            {"type": "ElementReachable", "status": "True"},
            ready("False", "InvalidSpec", 1)]})),
    ));
    assert_eq!(status, "Degraded");
    assert!(message.contains("InvalidSpec"), "{message}");
    for reason in ["MigrationFailed", "BackfillFailed", "NoWritableTargets"] {
        let obj = resource(
            1,
            Some(json!({"observedGeneration": 1, "conditions": [ready("False", reason, 1)]})),
        );
        assert_eq!(argocd_health(obj).0, "Degraded", "{reason}");
    }
    for reason in ["WaitingForStream", "Migrating", "Backfilling"] {
        let obj = resource(
            1,
            Some(json!({"observedGeneration": 1, "conditions": [ready("False", reason, 1)]})),
        );
        assert_eq!(argocd_health(obj).0, "Progressing", "{reason}");
    }
    let no_conditions = resource(1, Some(json!({"observedGeneration": 1})));
    assert_eq!(argocd_health(no_conditions).0, "Progressing");
}
