//! What every reconciler shares: the client, settings, metrics, events, connections; and the
//! small API verbs they all use (server-side apply with one field manager, status, events).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::conditions::{EventAction, Reason};
use super::error::{Error, Result};
use crate::build::BuildConfig;
use crate::build::common::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::crd::SecretKeyRef;
use crate::metrics::Metrics;

/// What the API verbs below ask of a namespaced kind.
pub trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "artstore-operator";

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Config {
    pub build: BuildConfig,
    /// Namespace to watch; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Read `/api/v1/status` (and the consistency report) from storage elements and query nodes.
    pub probe_elements: bool,
    /// Regular re-check of healthy resources.
    pub resync: Duration,
    /// Re-check of an EventStream (trim and status figures).
    pub stream_interval: Duration,
    /// Re-check while waiting for something else (stream, Job).
    pub wait_interval: Duration,
    /// How often a storage element's consistency report is fetched.
    pub consistency_interval: Duration,
    /// Name of this controller in Events.
    pub reporter: String,
    /// This replica's identity (pod name) in Events and the Lease.
    pub instance: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            build: BuildConfig::default(),
            namespace: None,
            probe_elements: true,
            resync: Duration::from_secs(300),
            stream_interval: Duration::from_secs(60),
            wait_interval: Duration::from_secs(10),
            consistency_interval: Duration::from_secs(3600),
            reporter: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "artstore-operator".into()),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    /// One Recorder for the process: it keeps the event cache that turns a repeated Event into
    /// a series (a count on one object) instead of a new object each time.
    recorder: Recorder,
    redis: Mutex<HashMap<String, redis::aio::MultiplexedConnection>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: config.reporter.clone(),
                instance: Some(config.instance.clone()),
            },
        );
        Self {
            client,
            config,
            metrics,
            http,
            recorder,
            redis: Mutex::new(HashMap::new()),
        }
    }

    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// One object by name; `None` when absent.
    pub async fn get<K: Namespaced>(&self, ns: &str, name: &str) -> Result<Option<K>> {
        self.api::<K>(ns)
            .get_opt(name)
            .await
            .map_err(|source| Error::Read {
                kind: kind::<K>(),
                name: format!("{ns}/{name}"),
                source,
            })
    }

    /// Every object of a kind in `ns` (matching `params`).
    pub async fn list<K: Namespaced>(&self, ns: &str, params: &ListParams) -> Result<Vec<K>> {
        self.api::<K>(ns)
            .list(params)
            .await
            .map(|l| l.items)
            .map_err(|source| Error::List {
                kind: kind::<K>(),
                source,
            })
    }

    /// Server-side apply of a child, forced: the operator owns these fields.
    pub async fn apply<K: Namespaced>(&self, ns: &str, obj: &K) -> Result<K> {
        let name = obj.meta().name.clone().unwrap_or_default();
        self.api::<K>(ns)
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(|source| Error::ApplyChild {
                kind: kind::<K>(),
                name,
                source,
            })
    }

    /// A Job is created once and then only read: its pod template is immutable, and a Job
    /// that ran must not be replaced because the spec or the operator's image moved on.
    pub async fn ensure_job(
        &self,
        ns: &str,
        job: &k8s_openapi::api::batch::v1::Job,
    ) -> Result<k8s_openapi::api::batch::v1::Job> {
        let name = job.metadata.name.clone().unwrap_or_default();
        match self.get(ns, &name).await? {
            Some(existing) => Ok(existing),
            None => self.apply(ns, job).await,
        }
    }

    /// Deletes a child of ours by name; absent, or not ours, is left alone.
    pub async fn delete_owned<K: Namespaced>(&self, ns: &str, name: &str) -> Result<()> {
        let Some(obj) = self.get::<K>(ns, name).await? else {
            return Ok(());
        };
        let managed = obj
            .meta()
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_MANAGED_BY))
            .is_some_and(|v| v == MANAGED_BY);
        if managed {
            self.delete::<K>(ns, name).await?;
        }
        Ok(())
    }

    /// Deletes an object by name (in the background: its dependents follow).
    pub async fn delete<K: Namespaced>(&self, ns: &str, name: &str) -> Result<()> {
        self.api::<K>(ns)
            .delete(name, &DeleteParams::background())
            .await
            .map(drop)
            .map_err(|source| Error::DeleteChild {
                kind: kind::<K>(),
                name: name.to_string(),
                source,
            })
    }

    /// The object as stored now. The controller's cache can lag the operator's own last
    /// status write (the watch event of an owned Job may arrive first); a reconcile that
    /// started from it would redo or re-report a run-once step (migration, backfill, rebuild)
    /// and write an older status back. `None` when it is gone.
    pub async fn fresh<K: Namespaced>(&self, obj: &K) -> Result<Option<K>> {
        self.get(&obj.namespace().unwrap_or_default(), &obj.name_any())
            .await
    }

    /// Server-side apply of `status` on the status subresource.
    pub async fn apply_status<K, S>(&self, obj: &K, status: &S) -> Result<()>
    where
        K: Namespaced,
        S: Serialize,
    {
        let ns = obj.namespace().unwrap_or_default();
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        self.api::<K>(&ns)
            .patch_status(
                &obj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map(drop)
            .map_err(|source| Error::WriteStatus {
                kind: kind::<K>(),
                name: format!("{ns}/{}", obj.name_any()),
                source,
            })
    }

    /// Publishes a Kubernetes Event about `obj`; a failure is logged, never fatal.
    pub async fn event<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: Reason,
        action: EventAction,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_,
            reason: reason.as_str().into(),
            note: Some(note),
            action: action.as_str().into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, %reason, "could not publish event");
        }
    }

    /// One key of a Secret in `ns`, as UTF-8.
    pub async fn secret_value(&self, ns: &str, r: &SecretKeyRef) -> Result<String> {
        let secret = self
            .get::<Secret>(ns, &r.name)
            .await?
            .ok_or_else(|| Error::Secret(format!("{ns}/{} not found", r.name)))?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| Error::Secret(format!("{ns}/{} has no key {:?}", r.name, r.key)))?;
        String::from_utf8(bytes)
            .map(|s| s.trim().to_string())
            .map_err(|_| Error::Secret(format!("{ns}/{} key {:?} is not UTF-8", r.name, r.key)))
    }

    /// A Redis connection for `url`, reused across reconciles.
    pub async fn redis(&self, url: &str) -> Result<redis::aio::MultiplexedConnection> {
        let mut cache = self.redis.lock().await;
        if let Some(c) = cache.get(url) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(url).map_err(|e| Error::RedisConnect(e.to_string()))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| Error::RedisConnect("timed out".into()))?
        .map_err(|e| Error::RedisConnect(e.to_string()))?;
        cache.insert(url.to_string(), conn.clone());
        Ok(conn)
    }

    /// Runs `work` on the Redis connection of `url`; a stream error drops the cached
    /// connection, so the next reconcile reconnects.
    pub async fn with_redis<T, F, Fut>(&self, url: &str, work: F) -> Result<T>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let conn = self.redis(url).await?;
        let result = work(conn).await;
        if matches!(result, Err(Error::Stream { .. })) {
            self.redis.lock().await.remove(url);
        }
        result
    }
}

/// A kind's name for messages (`Deployment`, `StorageElement`).
fn kind<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}
