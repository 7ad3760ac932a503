//! Ingester: registry ConfigMap (its allowed elements) → Deployment and Service → status with
//! the elements it can write to now.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::conditions::{self, READY};
use super::context::Context;
use super::error::{Error, Result};
use crate::build::{ingester as b, registry};
use crate::crd::{Ingester, StorageElement, is_paused};

pub const KIND: &str = "Ingester";

pub async fn reconcile(ing: Arc<Ingester>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(KIND);
    let res = reconcile_inner(&ing, &ctx).await;
    if let Err(e) = &res {
        ctx.report_rejected_child(&*ing, e).await;
    }
    timer.finish(res.as_ref().err().map(Error::reason));
    res
}

async fn reconcile_inner(ing: &Ingester, ctx: &Context) -> Result<Action> {
    let ns = ing.namespace().unwrap_or_default();
    let name = ing.name_any();
    if ing.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget(KIND, &ns, &name);
        return Ok(Action::await_change());
    }
    if is_paused(&ing.metadata) {
        tracing::info!(%ns, %name, "paused");
        return Ok(Action::await_change());
    }
    let generation = ing.metadata.generation;
    let now = conditions::now();
    let mut status = ing.status.clone().unwrap_or_default();
    status.observed_generation = generation;

    let elements = ctx
        .api::<StorageElement>(&ns)
        .list(&ListParams::default())
        .await?
        .items;
    let reg = registry::registry(&elements, &ing.spec.storage_elements);
    let built = (|| {
        Ok::<_, crate::build::BuildError>((
            registry::config_map(ing, b::COMPONENT, &reg)?,
            b::service(ing)?,
            b::deployment(ing, &ctx.config.build)?,
        ))
    })();
    let (config_map, service, deployment) = match built {
        Ok(x) => x,
        Err(e) => {
            conditions::set(
                &mut status.conditions,
                READY,
                "False",
                "InvalidSpec",
                e.to_string(),
                generation,
                &now,
            );
            ctx.metrics.set_ready(KIND, &ns, &name, false);
            ctx.event(
                ing,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                e.to_string(),
            )
            .await;
            ctx.apply_status(ing, &status).await?;
            return Ok(Action::await_change());
        }
    };
    ctx.apply(&ns, &config_map).await?;
    ctx.apply(&ns, &service).await?;
    let d: Deployment = ctx.apply(&ns, &deployment).await?;
    let ready_replicas = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    status.ready_replicas = Some(ready_replicas);
    status.writable_targets = reg
        .elements
        .iter()
        .filter(|e| e.mode.accepts_writes())
        .map(|e| e.id.clone())
        .collect();
    let (ready, reason, msg) = if status.writable_targets.is_empty() {
        (
            false,
            "NoWritableTargets",
            "no storage element in mode edit or rw is available".to_string(),
        )
    } else if ready_replicas < ing.spec.replicas {
        (
            false,
            "Starting",
            format!("{ready_replicas}/{} replicas ready", ing.spec.replicas),
        )
    } else {
        (
            true,
            "Available",
            format!("writing to {}", status.writable_targets.join(", ")),
        )
    };
    conditions::set(
        &mut status.conditions,
        READY,
        if ready { "True" } else { "False" },
        reason,
        msg,
        generation,
        &now,
    );
    ctx.metrics.set_ready(KIND, &ns, &name, ready);
    ctx.apply_status(ing, &status).await?;
    Ok(Action::requeue(if ready {
        ctx.config.resync
    } else {
        ctx.config.wait_interval
    }))
}
