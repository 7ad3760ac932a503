//! Ingester: the storage elements → registry ConfigMap (its allowed elements), Deployment and
//! Service → status with the elements it can write to now.

use std::sync::Arc;

use artstore_contract::Registry;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::ListParams;
use kube::runtime::controller::Action;

use super::conditions::Reason;
use super::context::Context;
use super::driver::{self, Flow, Outcome, Pipeline, Requeue};
use super::error::Result;
use crate::build::{BuildConfig, BuildError, ingester as b, registry};
use crate::crd::{Ingester, IngesterStatus, StorageElement};

pub const KIND: &str = "Ingester";

pub async fn reconcile(ing: Arc<Ingester>, ctx: Arc<Context>) -> Result<Action> {
    driver::reconcile(ing, ctx).await
}

pub struct Children {
    registry: Registry,
    config_map: ConfigMap,
    service: Service,
    deployment: Deployment,
}

impl Pipeline for Ingester {
    const KIND: &'static str = KIND;
    type Refs = Vec<StorageElement>;
    type Children = Children;
    type Applied = i32;

    async fn dereference(
        &self,
        ctx: &Context,
        _: &mut IngesterStatus,
    ) -> Result<Flow<Vec<StorageElement>>> {
        let ns = self.namespace().unwrap_or_default();
        Ok(Flow::Next(ctx.list(&ns, &ListParams::default()).await?))
    }

    fn build(
        &self,
        elements: &Vec<StorageElement>,
        cfg: &BuildConfig,
    ) -> Result<Children, BuildError> {
        let registry = registry::registry(elements, &self.spec.storage_elements);
        Ok(Children {
            config_map: registry::config_map(self, b::COMPONENT, &registry)?,
            registry,
            service: b::service(self)?,
            deployment: b::deployment(self, cfg)?,
        })
    }

    async fn apply(
        &self,
        ctx: &Context,
        _: &Vec<StorageElement>,
        children: Children,
        status: &mut IngesterStatus,
    ) -> Result<Flow<i32>> {
        let ns = self.namespace().unwrap_or_default();
        ctx.apply(&ns, &children.config_map).await?;
        ctx.apply(&ns, &children.service).await?;
        let d = ctx.apply(&ns, &children.deployment).await?;
        status.writable_targets = children
            .registry
            .elements
            .iter()
            .filter(|e| e.mode.accepts_writes())
            .map(|e| e.id.clone())
            .collect();
        Ok(Flow::Next(
            d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
        ))
    }

    async fn observe(
        &self,
        _: &Context,
        _: &Vec<StorageElement>,
        ready_replicas: i32,
        status: &mut IngesterStatus,
    ) -> Outcome {
        status.ready_replicas = Some(ready_replicas);
        if status.writable_targets.is_empty() {
            let msg = "no storage element in mode edit or rw is available";
            Outcome::waiting(Reason::NoWritableTargets, msg)
        } else if ready_replicas < self.spec.replicas {
            let msg = format!("{ready_replicas}/{} replicas ready", self.spec.replicas);
            Outcome::waiting(Reason::Starting, msg)
        } else {
            let msg = format!("writing to {}", status.writable_targets.join(", "));
            Outcome::ready(Reason::Available, msg, Requeue::Resync)
        }
    }
}
