//! `kubectl artstore`: a kubectl plugin for ArtStore archives. It knows the custom resources
//! (the operator's CRD types) and the contract, never workload code.
//!
//! Exit status: 0 on success, 1 when the cluster refused or a rebuild failed, 2 for usage errors.

mod kind;
mod render;
mod token;
mod view;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use artstore_operator::crd::{
    EventStream, Ingester, PAUSE_ANNOTATION, PAUSE_VALUE, QueryNode, REBUILD_ANNOTATION,
    StorageElement,
};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use kind::Target;

#[derive(Parser)]
#[command(
    name = "kubectl-artstore",
    bin_name = "kubectl artstore",
    version,
    about = "Status and operations of ArtStore archives"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Health of each archive: stream, storage elements, query nodes, ingesters.
    Status {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Machine-readable output instead of the screen.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
    /// Ask the operator to rebuild a storage element's cache (sets artstore.io/rebuild).
    Rebuild {
        /// The StorageElement's name.
        element: String,
        #[arg(long, default_value = "full", value_parser = ["full", "incremental"])]
        mode: String,
        /// Follow the rebuild to its end; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 30m, 2h).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Stop the operator from changing a resource's children (artstore.io/reconcile=paused).
    Pause { target: Target },
    /// Hand a paused resource back to the operator.
    Resume { target: Target },
    /// Print a bearer token signed with the archive's JWT Secret.
    Token {
        #[arg(long, value_parser = ["admin", "writer", "reader"])]
        role: String,
        /// Who the token names (the `sub` claim; rate limits count per subject).
        #[arg(long)]
        sub: String,
        /// Validity (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The resource whose auth.jwtSecretRef to use, when the namespace has several.
        #[arg(long)]
        from: Option<Target>,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    artstore_operator::install_crypto_provider();
    let client = Client::try_default()
        .await
        .context("no cluster: check KUBECONFIG or `kubectl config current-context`")?;
    let ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    match cli.command {
        Command::Status {
            all_namespaces,
            output,
        } => status(&client, (!all_namespaces).then_some(ns.as_str()), output).await,
        Command::Rebuild {
            element,
            mode,
            wait,
            timeout,
        } => rebuild(&client, &ns, &element, &mode, wait.then_some(timeout)).await,
        Command::Pause { target } => annotate_pause(&client, &ns, &target, true).await,
        Command::Resume { target } => annotate_pause(&client, &ns, &target, false).await,
        Command::Token {
            role,
            sub,
            ttl,
            from,
        } => {
            println!(
                "{}",
                mint_token(&client, &ns, &role, &sub, ttl, from.as_ref()).await?
            );
            Ok(0)
        }
    }
}

async fn list<K>(client: &Client, ns: Option<&str>) -> Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let kind = K::kind(&K::DynamicType::default()).to_string();
    Ok(api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {kind}s (are the ArtStore CRDs installed?)"))?
        .items)
}

async fn status(client: &Client, ns: Option<&str>, output: Option<Format>) -> Result<i32> {
    let archives = view::archives(
        &list::<EventStream>(client, ns).await?,
        &list::<StorageElement>(client, ns).await?,
        &list::<QueryNode>(client, ns).await?,
        &list::<Ingester>(client, ns).await?,
    );
    match output {
        Some(Format::Json) => println!("{}", serde_json::to_string_pretty(&archives)?),
        Some(Format::Yaml) => print!("{}", serde_saphyr::to_string(&archives)?),
        None if archives.is_empty() => println!(
            "No ArtStore resources in {}.",
            ns.map_or("any namespace".to_string(), |n| format!("namespace {n}"))
        ),
        None => print!("{}", render::screens(&archives)),
    }
    Ok(0)
}

/// A request value unique to this call, so the operator runs it exactly once.
fn rebuild_request(mode: &str) -> String {
    format!("{mode}@{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ"))
}

async fn rebuild(
    client: &Client,
    ns: &str,
    element: &str,
    mode: &str,
    wait: Option<Duration>,
) -> Result<i32> {
    let api: Api<StorageElement> = Api::namespaced(client.clone(), ns);
    api.get_opt(element)
        .await?
        .with_context(|| format!("storageelement {element} not found in namespace {ns}"))?;
    let request = rebuild_request(mode);
    let patch = json!({"metadata": {"annotations": {REBUILD_ANNOTATION: request}}});
    api.patch(element, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating storageelement {element}"))?;
    println!("storageelement/{element}: {mode} rebuild requested ({REBUILD_ANNOTATION}={request})");
    let Some(timeout) = wait else {
        return Ok(0);
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let se = api.get(element).await?;
        let st = se.status.clone().unwrap_or_default();
        let mine = st.last_rebuild.as_ref().filter(|r| r.request == request);
        let line = match mine {
            Some(r) => format!("Job {}: {:?}", r.job_name, r.phase),
            None => st
                .conditions
                .iter()
                .find(|c| c.type_ == "RebuildRequest" && c.message.contains(&request))
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "waiting for the operator to start the Job".into()),
        };
        if line != last {
            println!("{line}");
            last = line;
        }
        if let Some(r) = mine
            && r.phase.is_finished()
        {
            return Ok(if r.phase == artstore_operator::crd::JobPhase::Succeeded {
                0
            } else {
                eprintln!(
                    "error: the rebuild failed: see `kubectl -n {ns} logs job/{}`",
                    r.job_name
                );
                1
            });
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the rebuild did not finish within {}: it goes on; check with `kubectl artstore status`",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn annotate_pause(client: &Client, ns: &str, target: &Target, pause: bool) -> Result<i32> {
    let api = target.kind.api(client, ns);
    let kind = target.kind.name();
    let obj = api
        .get_opt(&target.name)
        .await?
        .with_context(|| format!("{kind} {} not found in namespace {ns}", target.name))?;
    let paused = artstore_operator::crd::is_paused(&obj.metadata);
    if paused == pause {
        println!(
            "{kind}/{} is already {}",
            target.name,
            if pause { "paused" } else { "reconciled" }
        );
        return Ok(0);
    }
    let value = if pause {
        json!(PAUSE_VALUE)
    } else {
        serde_json::Value::Null
    };
    let patch = json!({"metadata": {"annotations": {PAUSE_ANNOTATION: value}}});
    api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating {kind} {}", target.name))?;
    println!(
        "{kind}/{} {}",
        target.name,
        if pause {
            "paused: the operator leaves its children alone"
        } else {
            "resumed"
        }
    );
    Ok(0)
}

/// The `auth.jwtSecretRef` of the named resource, or the one every resource of the namespace
/// shares.
async fn secret_ref(client: &Client, ns: &str, from: Option<&Target>) -> Result<(String, String)> {
    let refs: Vec<(String, String, String)> = match from {
        Some(t) => {
            let obj = t
                .kind
                .api(client, ns)
                .get_opt(&t.name)
                .await?
                .with_context(|| {
                    format!("{} {} not found in namespace {ns}", t.kind.name(), t.name)
                })?;
            let r = &obj.data["spec"]["auth"]["jwtSecretRef"];
            match (r["name"].as_str(), r["key"].as_str()) {
                (Some(n), Some(k)) => {
                    vec![(format!("{}/{}", t.kind.name(), t.name), n.into(), k.into())]
                }
                _ => bail!("{} {} has no spec.auth.jwtSecretRef", t.kind.name(), t.name),
            }
        }
        None => {
            let mut refs = Vec::new();
            for i in list::<Ingester>(client, Some(ns)).await? {
                let r = &i.spec.auth.jwt_secret_ref;
                refs.push((
                    format!("ingester/{}", i.name_any()),
                    r.name.clone(),
                    r.key.clone(),
                ));
            }
            for s in list::<StorageElement>(client, Some(ns)).await? {
                let r = &s.spec.auth.jwt_secret_ref;
                refs.push((
                    format!("storageelement/{}", s.name_any()),
                    r.name.clone(),
                    r.key.clone(),
                ));
            }
            for q in list::<QueryNode>(client, Some(ns)).await? {
                let r = &q.spec.auth.jwt_secret_ref;
                refs.push((
                    format!("querynode/{}", q.name_any()),
                    r.name.clone(),
                    r.key.clone(),
                ));
            }
            refs
        }
    };
    let mut distinct: Vec<(String, String)> = refs
        .iter()
        .map(|(_, n, k)| (n.clone(), k.clone()))
        .collect();
    distinct.sort();
    distinct.dedup();
    match distinct.as_slice() {
        [] => bail!(
            "no ArtStore ingester, storage element or query node in namespace {ns}: pass -n NAMESPACE"
        ),
        [one] => Ok(one.clone()),
        _ => bail!(
            "the resources of namespace {ns} use different JWT Secrets ({}): pick one with --from KIND/NAME",
            refs.iter()
                .map(|(o, n, k)| format!("{o} uses {n}/{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn mint_token(
    client: &Client,
    ns: &str,
    role: &str,
    sub: &str,
    ttl: Duration,
    from: Option<&Target>,
) -> Result<String> {
    let (name, key) = secret_ref(client, ns, from).await?;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&name)
        .await?
        .with_context(|| format!("Secret {name} not found in namespace {ns}"))?;
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .with_context(|| format!("Secret {name} has no key {key}"))?;
    let bytes = token::secret_bytes(&raw.0).with_context(|| format!("Secret {name} key {key}"))?;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    Ok(token::mint(bytes, role, sub, ttl, now)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_requests_are_valid_and_distinct() {
        let a = rebuild_request("full");
        assert!(
            artstore_operator::build::storage_element::parse_rebuild_request(&a) == Ok("full"),
            "{a}"
        );
        assert!(a.starts_with("full@"));
    }
}
