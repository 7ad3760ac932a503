//! QueryNode: the stream and the group come first, then the backfill, and only then the
//! Deployment. Until the EventStream is ready and the group exists, the Ready condition says
//! `WaitingForStream` and the reconcile is retried; no consumer starts early.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::conditions::{self, READY};
use super::context::{Context, job_phase};
use super::error::{Error, Result};
use super::event_stream;
use crate::build::{query_node as b, registry};
use crate::crd::{
    BackfillRecord, EventStream, JobPhase, QueryNode, QueryNodeStatus, StorageElement,
};
use crate::stream;

pub const KIND: &str = "QueryNode";
pub const WAITING_FOR_STREAM: &str = "WaitingForStream";

pub async fn reconcile(qn: Arc<QueryNode>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(KIND);
    let res = reconcile_inner(&qn, &ctx).await;
    if let Err(e) = &res {
        ctx.report_rejected_child(&*qn, e).await;
    }
    timer.finish(res.as_ref().err().map(Error::reason));
    res
}

async fn wait(
    qn: &QueryNode,
    ctx: &Context,
    mut status: QueryNodeStatus,
    reason: &str,
    message: String,
) -> Result<Action> {
    let ns = qn.namespace().unwrap_or_default();
    let now = conditions::now();
    let first = conditions::find(&status.conditions, READY).is_none_or(|c| c.reason != reason);
    conditions::set(
        &mut status.conditions,
        READY,
        "False",
        reason,
        message.clone(),
        qn.metadata.generation,
        &now,
    );
    status.observed_generation = qn.metadata.generation;
    ctx.metrics.set_ready(KIND, &ns, &qn.name_any(), false);
    if first {
        ctx.event(qn, EventType::Normal, reason, "Gate", message)
            .await;
    }
    ctx.apply_status(qn, &status).await?;
    Ok(Action::requeue(ctx.config.wait_interval))
}

async fn reconcile_inner(qn: &QueryNode, ctx: &Context) -> Result<Action> {
    let Some(current) = ctx.current(KIND, qn).await? else {
        return Ok(Action::await_change());
    };
    let qn = &current;
    let ns = qn.namespace().unwrap_or_default();
    let name = qn.name_any();
    let generation = qn.metadata.generation;
    let mut status = qn.status.clone().unwrap_or_default();
    let group = qn.consumer_group();

    // Dereference and gate: the stream must exist and be ready.
    let stream_ref = &qn.spec.event_stream_ref;
    let Some(es) = ctx.api::<EventStream>(&ns).get_opt(stream_ref).await? else {
        return wait(
            qn,
            ctx,
            status,
            WAITING_FOR_STREAM,
            format!("EventStream {stream_ref} not found"),
        )
        .await;
    };
    if !event_stream::is_ready(&es) {
        return wait(
            qn,
            ctx,
            status,
            WAITING_FOR_STREAM,
            format!("EventStream {stream_ref} is not ready"),
        )
        .await;
    }
    // Validate + build before touching anything.
    let cfg = &ctx.config.build;
    let built = (|| {
        Ok::<_, crate::build::BuildError>((
            b::service(qn)?,
            b::deployment(qn, &es, cfg)?,
            b::backfill_job(qn, &es, cfg)?,
        ))
    })();
    let (service, deployment, backfill) = match built {
        Ok(x) => x,
        Err(e) => {
            ctx.event(
                qn,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                e.to_string(),
            )
            .await;
            return wait(qn, ctx, status, "InvalidSpec", e.to_string())
                .await
                .map(|_| Action::await_change());
        }
    };

    // The group: created on the stream's Redis (idempotent), so the consumers find it.
    let ensured = async {
        let url = ctx.secret_value(&ns, &es.spec.redis.url_secret_ref).await?;
        let mut conn = ctx.redis(&url).await?;
        let r = stream::ensure_stream_and_groups(
            &mut conn,
            &es.spec.stream,
            &[(group.clone(), "0".into())],
        )
        .await;
        if r.is_err() {
            ctx.forget_redis(&url).await;
        }
        Ok::<_, Error>(r?)
    }
    .await;
    match ensured {
        Ok(created) => {
            if !created.is_empty() {
                ctx.event(
                    qn,
                    EventType::Normal,
                    "GroupCreated",
                    "EnsureGroup",
                    format!("created consumer group {group} on {}", es.spec.stream),
                )
                .await;
            }
        }
        Err(e) => {
            return wait(
                qn,
                ctx,
                status,
                WAITING_FOR_STREAM,
                format!("consumer group {group}: {e}"),
            )
            .await;
        }
    }
    status.consumer_group = Some(group.clone());

    // The registry this node serves from.
    let elements = ctx
        .api::<StorageElement>(&ns)
        .list(&ListParams::default())
        .await?
        .items;
    let reg = registry::registry(&elements, &qn.spec.storage_elements);
    ctx.apply(&ns, &registry::config_map(qn, b::COMPONENT, &reg)?)
        .await?;

    // Backfill once per group, before any consumer.
    let job_name = backfill.metadata.name.clone().unwrap_or_default();
    let done = status
        .backfill
        .as_ref()
        .is_some_and(|r| r.job_name == job_name && r.phase == JobPhase::Succeeded);
    if !done {
        let job = ctx.ensure_job(&ns, &backfill).await?;
        let phase = job_phase(&job);
        status.backfill = Some(BackfillRecord {
            job_name: job_name.clone(),
            phase,
            completed_at: phase.is_finished().then(conditions::now),
        });
        match phase {
            JobPhase::Running => {
                return wait(
                    qn,
                    ctx,
                    status,
                    "Backfilling",
                    format!("waiting for Job {job_name}"),
                )
                .await;
            }
            JobPhase::Failed => {
                ctx.event(
                    qn,
                    EventType::Warning,
                    "BackfillFailed",
                    "Backfill",
                    format!("Job {job_name} failed"),
                )
                .await;
                return wait(
                    qn,
                    ctx,
                    status,
                    "BackfillFailed",
                    format!("Job {job_name} failed; delete it to retry"),
                )
                .await;
            }
            JobPhase::Succeeded => {
                ctx.event(
                    qn,
                    EventType::Normal,
                    "BackfillComplete",
                    "Backfill",
                    format!("Job {job_name} indexed the storage elements"),
                )
                .await;
            }
        }
    }

    // Only now the consumers.
    ctx.apply(&ns, &service).await?;
    let d: Deployment = ctx.apply(&ns, &deployment).await?;
    let ready_replicas = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    status.ready_replicas = Some(ready_replicas);
    if ctx.config.probe_elements
        && ready_replicas > 0
        && let Some(count) = indexed_files(qn, ctx, &b::endpoint(qn)?).await
    {
        status.indexed_files = Some(count);
    }
    if let Some(g) = es
        .status
        .as_ref()
        .and_then(|s| s.groups.iter().find(|g| g.name == group))
    {
        status.lag = g.lag;
        status.pending = Some(g.pending);
    }
    let now = conditions::now();
    let ready = ready_replicas >= qn.spec.replicas;
    if ready {
        conditions::set(
            &mut status.conditions,
            READY,
            "True",
            "Available",
            format!("{ready_replicas} replica(s) consuming {group}"),
            generation,
            &now,
        );
    } else {
        conditions::set(
            &mut status.conditions,
            READY,
            "False",
            "Starting",
            format!("{ready_replicas}/{} replicas ready", qn.spec.replicas),
            generation,
            &now,
        );
    }
    status.observed_generation = generation;
    ctx.metrics.set_ready(KIND, &ns, &name, ready);
    ctx.apply_status(qn, &status).await?;
    Ok(Action::requeue(if ready {
        ctx.config.resync
    } else {
        ctx.config.wait_interval
    }))
}

/// The node's own count of indexed files (`GET /api/v1/status` through its Service, with a
/// short-lived admin token); `None` when it does not answer, so the last figure stays.
pub async fn indexed_files(qn: &QueryNode, ctx: &Context, endpoint: &str) -> Option<u64> {
    let ns = qn.namespace().unwrap_or_default();
    let secret = ctx
        .secret_value(&ns, &qn.spec.auth.jwt_secret_ref)
        .await
        .ok()?;
    let token = super::token::admin_token(&secret).ok()?;
    let response = ctx
        .http
        .get(format!("{endpoint}{}", artstore_contract::paths::STATUS))
        .bearer_auth(&token)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    response
        .json::<artstore_contract::QueryNodeStatus>()
        .await
        .ok()
        .map(|s| s.indexed_files)
}
