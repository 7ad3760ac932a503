//! What every reconciler shares: the client, settings, metrics, events, connections; and the
//! small API verbs they all use (server-side apply with one field manager, status, events).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::conditions;
use super::error::{Error, Result};
use crate::build::BuildConfig;
use crate::crd::{Condition, JobPhase, SecretKeyRef, is_paused};
use crate::metrics::Metrics;

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
    redis: Mutex<HashMap<String, redis::aio::MultiplexedConnection>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            client,
            config,
            metrics,
            http,
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

    /// Server-side apply of a child (or any object), forced: the operator owns these fields.
    pub async fn apply<K>(&self, ns: &str, obj: &K) -> Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let api: Api<K> = self.api(ns);
        Ok(api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?)
    }

    /// The object as stored now. The controller's cache can lag the operator's own last
    /// status write (the watch event of an owned Job may arrive first); a reconcile that
    /// started from it would redo or re-report a run-once step (migration, backfill, rebuild)
    /// and write an older status back. `None` when it is gone.
    pub async fn fresh<K>(&self, obj: &K) -> Result<Option<K>>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let ns = obj.namespace().unwrap_or_default();
        Ok(self.api::<K>(&ns).get_opt(&obj.name_any()).await?)
    }

    /// The first step of a reconcile that must not act on a stale copy: `None` when there is
    /// nothing to do now — the object is being deleted (its metrics are dropped), paused (no
    /// API call at all), gone, or its stored version is deleted or paused (the watch brings
    /// it next); otherwise the object as stored now (see [`Context::fresh`]).
    pub async fn current<K>(&self, kind: &str, obj: &K) -> Result<Option<K>>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        if obj.meta().deletion_timestamp.is_some() {
            self.metrics.forget(kind, &ns, &name);
            return Ok(None);
        }
        if is_paused(obj.meta()) {
            tracing::info!(%ns, %name, "paused");
            return Ok(None);
        }
        Ok(self
            .fresh(obj)
            .await?
            .filter(|f| f.meta().deletion_timestamp.is_none() && !is_paused(f.meta())))
    }

    /// When the API server refused to store a child (400/422: an immutable field of it, a value
    /// its own validation rejects), the spec asks for something that cannot happen. Say so on
    /// the resource (Ready=False `ChildRejected` with the server's message, observed at this
    /// generation) and in a Warning Event, not only in the operator's log.
    pub async fn report_rejected_child<K>(&self, obj: &K, err: &Error)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let Error::Kube(kube::Error::Api(rejection)) = err else {
            return;
        };
        if !matches!(rejection.code, 400 | 422) {
            return;
        }
        let Ok(Some(fresh)) = self.fresh(obj).await else {
            return;
        };
        let generation = fresh.meta().generation;
        let mut status = serde_json::to_value(&fresh)
            .ok()
            .and_then(|v| v.get("status").cloned())
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        let mut conds: Vec<Condition> =
            serde_json::from_value(status["conditions"].take()).unwrap_or_default();
        conditions::set(
            &mut conds,
            conditions::READY,
            "False",
            conditions::CHILD_REJECTED,
            rejection.message.clone(),
            generation,
            &conditions::now(),
        );
        status["conditions"] = serde_json::to_value(conds).unwrap_or_default();
        status["observedGeneration"] = serde_json::json!(generation);
        self.event(
            &fresh,
            EventType::Warning,
            conditions::CHILD_REJECTED,
            "Apply",
            rejection.message.clone(),
        )
        .await;
        if let Err(e) = self.apply_status(&fresh, &status).await {
            tracing::warn!(error = %e, "could not record the rejected child");
        }
    }

    /// A Job is created once and then only read: its pod template is immutable, and a Job
    /// that ran must not be replaced because the spec or the operator's image moved on.
    pub async fn ensure_job(&self, ns: &str, job: &Job) -> Result<Job> {
        let name = job.metadata.name.clone().unwrap_or_default();
        if let Some(existing) = self.api::<Job>(ns).get_opt(&name).await? {
            return Ok(existing);
        }
        self.apply(ns, job).await
    }

    /// Server-side apply of `status` on the status subresource.
    pub async fn apply_status<K, S>(&self, obj: &K, status: &S) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        S: Serialize,
    {
        let ns = obj.namespace().unwrap_or_default();
        let api: Api<K> = self.api(&ns);
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(())
    }

    /// Publishes a Kubernetes Event about `obj`; a failure is logged, never fatal.
    pub async fn event<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: self.config.reporter.clone(),
                instance: Some(self.config.instance.clone()),
            },
        );
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// One key of a Secret in `ns`, as UTF-8.
    pub async fn secret_value(&self, ns: &str, r: &SecretKeyRef) -> Result<String> {
        let api: Api<Secret> = self.api(ns);
        let secret = api
            .get_opt(&r.name)
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

    /// Drops a cached connection after an error, so the next reconcile reconnects.
    pub async fn forget_redis(&self, url: &str) {
        self.redis.lock().await.remove(url);
    }
}

/// What became of a Job, from its status.
pub fn job_phase(job: &Job) -> JobPhase {
    let Some(st) = job.status.as_ref() else {
        return JobPhase::Running;
    };
    if st.succeeded.unwrap_or(0) >= 1 {
        return JobPhase::Succeeded;
    }
    let failed = st.conditions.as_ref().is_some_and(|cs| {
        cs.iter()
            .any(|c| (c.type_ == "Failed") && c.status == "True")
    });
    if failed {
        JobPhase::Failed
    } else {
        JobPhase::Running
    }
}
