//! StorageElement: dereference its EventStream → build every child (pure) → its NetworkPolicy
//! (first, so no pod of it is ever open) → migrate (a run-once Job) → apply Service, workload,
//! CronJobs → the rebuild annotation, once per
//! request → read the element's own status ([`probe`]) → Ready.

mod apply;
mod probe;
mod rebuild;

use std::sync::Arc;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::runtime::controller::Action;

pub use probe::probe;

use super::conditions::Reason;
use super::context::Context;
use super::driver::{self, Flow, Outcome, Pipeline, Requeue, step};
use super::error::Result;
use crate::build::storage_element::{self as b, ElementWorkload};
use crate::build::{BuildConfig, BuildError, network_policy};
use crate::crd::{EventStream, StorageElement, StorageElementStatus};

pub const KIND: &str = "StorageElement";

pub async fn reconcile(se: Arc<StorageElement>, ctx: Arc<Context>) -> Result<Action> {
    driver::reconcile(se, ctx).await
}

/// Every child of an element, validated before anything is written.
pub struct Children {
    /// `None`: the spec opted out.
    network_policy: Option<NetworkPolicy>,
    service: Service,
    workload: ElementWorkload,
    cronjobs: Vec<CronJob>,
    migration: Job,
    endpoint: String,
    capacity_bytes: u64,
}

/// What applying the children returned.
pub struct Applied {
    ready_replicas: i32,
    rebuild_running: bool,
}

impl Pipeline for StorageElement {
    const KIND: &'static str = KIND;
    type Refs = EventStream;
    type Children = Children;
    type Applied = Applied;

    async fn dereference(
        &self,
        ctx: &Context,
        _: &mut StorageElementStatus,
    ) -> Result<Flow<EventStream>> {
        let name = &self.spec.event_stream_ref;
        Ok(
            match ctx.get(&self.namespace().unwrap_or_default(), name).await? {
                Some(es) => Flow::Next(es),
                None => Flow::Report(Outcome::waiting(
                    Reason::WaitingForStream,
                    format!("EventStream {name} not found"),
                )),
            },
        )
    }

    fn build(&self, es: &EventStream, cfg: &BuildConfig) -> Result<Children, BuildError> {
        Ok(Children {
            network_policy: network_policy::element(self, cfg)?,
            service: b::service(self)?,
            workload: b::workload(self, es, cfg)?,
            cronjobs: b::cronjobs(self, es, cfg)?,
            migration: b::migration_job(self, es, cfg)?,
            endpoint: b::endpoint(self)?,
            capacity_bytes: b::capacity_bytes(self)?,
        })
    }

    async fn apply(
        &self,
        ctx: &Context,
        es: &EventStream,
        children: Children,
        status: &mut StorageElementStatus,
    ) -> Result<Flow<Applied>> {
        apply::network_policy(self, ctx, children.network_policy).await?;
        // Migrations run (once per image) before the workload starts or changes.
        step!(apply::migrate(self, ctx, &children.migration, status).await?);
        status.endpoint = Some(children.endpoint);
        status.capacity_bytes = Some(children.capacity_bytes);
        let ready_replicas = apply::children(
            self,
            ctx,
            children.service,
            children.workload,
            children.cronjobs,
        )
        .await?;
        let rebuild_running = rebuild::handle(self, es, ctx, status).await?;
        Ok(Flow::Next(Applied {
            ready_replicas,
            rebuild_running,
        }))
    }

    async fn observe(
        &self,
        ctx: &Context,
        _: &EventStream,
        applied: Applied,
        status: &mut StorageElementStatus,
    ) -> Outcome {
        status.element_id = Some(self.element_id());
        status.mode = Some(self.spec.mode);
        status.priority = Some(self.spec.priority);
        let endpoint = status.endpoint.clone().unwrap_or_default();
        let ready = applied.ready_replicas > 0;
        if ctx.config.probe_elements && ready {
            probe(self, ctx, &endpoint, status, &super::conditions::now()).await;
        }
        let outcome = if ready {
            Outcome::ready(
                Reason::Available,
                format!("{endpoint} is serving"),
                Requeue::Resync,
            )
        } else {
            Outcome::waiting(
                Reason::Starting,
                "waiting for the element's pod to become ready",
            )
        };
        outcome.sooner(applied.rebuild_running)
    }
}
