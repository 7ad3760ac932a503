//! QueryNode: the stream and the group come first, then the backfill, and only then the
//! Deployment. Until the EventStream is ready and the group exists, the Ready condition says
//! `WaitingForStream` and the reconcile is retried; no consumer starts early.

mod gate;
mod probe;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

pub use probe::indexed_files;

use super::conditions::{EventAction, Reason};
use super::context::Context;
use super::driver::{self, Announce, Flow, Outcome, Pipeline, Requeue, step};
use super::error::Result;
use super::event_stream;
use crate::build::{BuildConfig, BuildError, query_node as b, registry};
use crate::crd::{EventStream, QueryNode, QueryNodeStatus, StorageElement};

pub const KIND: &str = "QueryNode";

pub async fn reconcile(qn: Arc<QueryNode>, ctx: Arc<Context>) -> Result<Action> {
    driver::reconcile(qn, ctx).await
}

/// A gate the node waits at, announced once per reason.
fn wait(reason: Reason, message: String) -> Outcome {
    Outcome::waiting(reason, message)
        .announce(Announce::OnChange(EventType::Normal, EventAction::Gate))
}

/// What a node reads: its stream (ready) and the elements its registry lists.
pub struct Refs {
    stream: EventStream,
    elements: Vec<StorageElement>,
}

pub struct Children {
    registry: ConfigMap,
    backfill: Job,
    service: Service,
    deployment: Deployment,
}

impl Pipeline for QueryNode {
    const KIND: &'static str = KIND;
    type Refs = Refs;
    type Children = Children;
    type Applied = i32;

    async fn dereference(&self, ctx: &Context, _: &mut QueryNodeStatus) -> Result<Flow<Refs>> {
        let ns = self.namespace().unwrap_or_default();
        let name = &self.spec.event_stream_ref;
        let Some(stream) = ctx.get::<EventStream>(&ns, name).await? else {
            let msg = format!("EventStream {name} not found");
            return Ok(Flow::Report(wait(Reason::WaitingForStream, msg)));
        };
        if !event_stream::is_ready(&stream) {
            let msg = format!("EventStream {name} is not ready");
            return Ok(Flow::Report(wait(Reason::WaitingForStream, msg)));
        }
        let elements = ctx.list(&ns, &ListParams::default()).await?;
        Ok(Flow::Next(Refs { stream, elements }))
    }

    fn build(&self, refs: &Refs, cfg: &BuildConfig) -> Result<Children, BuildError> {
        let reg = registry::registry(&refs.elements, &self.spec.storage_elements);
        Ok(Children {
            registry: registry::config_map(self, b::COMPONENT, &reg)?,
            backfill: b::backfill_job(self, &refs.stream, cfg)?,
            service: b::service(self)?,
            deployment: b::deployment(self, &refs.stream, cfg)?,
        })
    }

    async fn apply(
        &self,
        ctx: &Context,
        refs: &Refs,
        children: Children,
        status: &mut QueryNodeStatus,
    ) -> Result<Flow<i32>> {
        let ns = self.namespace().unwrap_or_default();
        step!(gate::consumer_group(self, ctx, &refs.stream, status).await?);
        ctx.apply(&ns, &children.registry).await?;
        step!(gate::backfill(self, ctx, &children.backfill, status).await?);
        // Only now the consumers.
        ctx.apply(&ns, &children.service).await?;
        let d = ctx.apply(&ns, &children.deployment).await?;
        Ok(Flow::Next(
            d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
        ))
    }

    async fn observe(
        &self,
        ctx: &Context,
        refs: &Refs,
        ready_replicas: i32,
        status: &mut QueryNodeStatus,
    ) -> Outcome {
        status.ready_replicas = Some(ready_replicas);
        if ctx.config.probe_elements
            && ready_replicas > 0
            && let Ok(endpoint) = b::endpoint(self)
            && let Some(count) = indexed_files(self, ctx, &endpoint).await
        {
            status.indexed_files = Some(count);
        }
        let group = self.consumer_group();
        let figures = refs
            .stream
            .status
            .as_ref()
            .and_then(|s| s.groups.iter().find(|g| g.name == group));
        if let Some(g) = figures {
            status.lag = g.lag;
            status.pending = Some(g.pending);
        }
        if ready_replicas >= self.spec.replicas {
            let msg = format!("{ready_replicas} replica(s) consuming {group}");
            Outcome::ready(Reason::Available, msg, Requeue::Resync)
        } else {
            let msg = format!("{ready_replicas}/{} replicas ready", self.spec.replicas);
            Outcome::waiting(Reason::Starting, msg)
        }
    }
}
