//! One reconcile driver, one pipeline per kind, and the Controllers that run them.

pub mod conditions;
pub mod context;
pub mod driver;
pub mod error;
pub mod event_stream;
pub mod ingester;
pub mod job_gate;
pub mod query_node;
pub mod storage_element;
mod token;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

pub use context::{Config, Context, FIELD_MANAGER};
pub use error::Error;

use crate::build::common::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::crd::{EventStream, Ingester, QueryNode, StorageElement};

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy<K>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource,
{
    tracing::warn!(name = %obj.name_any(), namespace = ?obj.namespace(), error = %err, reason = %err.reason(), "reconcile failed");
    Action::requeue(ctx.config.wait_interval * 3)
}

async fn drain<S, T, E>(stream: S, kind: &'static str)
where
    S: futures::Stream<Item = Result<T, E>>,
    T: std::fmt::Debug,
    E: std::fmt::Display,
{
    stream
        .for_each(|r| async move {
            match r {
                Ok(o) => tracing::debug!(kind, object = ?o, "reconciled"),
                Err(e) => tracing::debug!(kind, error = %e, "reconcile error"),
            }
        })
        .await;
}

/// The objects among `candidates` (a controller's store) in `changed`'s namespace whose
/// `reference` names it: which QueryNodes to re-check when an EventStream changes.
pub fn referencing<K, O>(
    candidates: Vec<Arc<K>>,
    changed: &O,
    reference: impl Fn(&K) -> &str,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
    O: Resource,
{
    candidates
        .into_iter()
        .filter(|c| c.namespace() == changed.namespace() && reference(c) == changed.name_any())
        .map(|c| ObjectRef::from_obj(&*c))
        .collect()
}

/// Every object among `candidates` in `changed`'s namespace: which registries to refresh when
/// a StorageElement changes.
pub fn same_namespace<K, O>(candidates: Vec<Arc<K>>, changed: &O) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
    O: Resource,
{
    candidates
        .into_iter()
        .filter(|c| c.namespace() == changed.namespace())
        .map(|c| ObjectRef::from_obj(&*c))
        .collect()
}

/// Runs the four controllers until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run_controllers<F>(ctx: Arc<Context>, shutdown: F)
where
    F: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = ctx.client.clone();
    let ns = ctx.config.namespace.clone();
    let wc = watcher::Config::default();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));

    let streams = Controller::new(api::<EventStream>(&client, &ns), wc.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(event_stream::reconcile, error_policy, ctx.clone());

    let se = Controller::new(api::<StorageElement>(&client, &ns), wc.clone());
    let se_store = se.store();
    let elements = se
        .owns(api::<Deployment>(&client, &ns), owned.clone())
        .owns(api::<StatefulSet>(&client, &ns), owned.clone())
        .owns(api::<Service>(&client, &ns), owned.clone())
        .owns(api::<Job>(&client, &ns), owned.clone())
        .owns(api::<CronJob>(&client, &ns), owned.clone())
        .owns(api::<NetworkPolicy>(&client, &ns), owned.clone())
        .watches(api::<EventStream>(&client, &ns), wc.clone(), move |es| {
            referencing(se_store.state(), &es, |se| {
                se.spec.event_stream_ref.as_str()
            })
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(storage_element::reconcile, error_policy, ctx.clone());

    let qn = Controller::new(api::<QueryNode>(&client, &ns), wc.clone());
    let qn_store_es = qn.store();
    let qn_store_se = qn.store();
    let queries = qn
        .owns(api::<Deployment>(&client, &ns), owned.clone())
        .owns(api::<Service>(&client, &ns), owned.clone())
        .owns(api::<Job>(&client, &ns), owned.clone())
        .owns(api::<ConfigMap>(&client, &ns), owned.clone())
        // A stream becoming ready (or changing) re-runs the gate of every node on it.
        .watches(api::<EventStream>(&client, &ns), wc.clone(), move |es| {
            referencing(qn_store_es.state(), &es, |q| {
                q.spec.event_stream_ref.as_str()
            })
        })
        // Element statuses feed each node's registry.
        .watches(api::<StorageElement>(&client, &ns), wc.clone(), move |se| {
            same_namespace(qn_store_se.state(), &se)
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(query_node::reconcile, error_policy, ctx.clone());

    let ing = Controller::new(api::<Ingester>(&client, &ns), wc.clone());
    let ing_store = ing.store();
    let ingesters = ing
        .owns(api::<Deployment>(&client, &ns), owned.clone())
        .owns(api::<Service>(&client, &ns), owned.clone())
        .owns(api::<ConfigMap>(&client, &ns), owned)
        .watches(api::<StorageElement>(&client, &ns), wc, move |se| {
            same_namespace(ing_store.state(), &se)
        })
        .graceful_shutdown_on(shutdown)
        .run(ingester::reconcile, error_policy, ctx);

    tokio::join!(
        drain(streams, event_stream::KIND),
        drain(elements, storage_element::KIND),
        drain(queries, query_node::KIND),
        drain(ingesters, ingester::KIND),
    );
}
