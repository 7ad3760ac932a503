//! The `artstore.io/rebuild` annotation: one Job per distinct value, one at a time, recorded
//! in status. The Job's name is derived from the value, so even a lost status write cannot
//! start the same request twice.

use kube::ResourceExt;
use kube::runtime::events::EventType;

use crate::build::storage_element::{self as b, RebuildRequest};
use crate::controller::conditions::{self, ConditionType, EventAction, Reason};
use crate::controller::context::Context;
use crate::controller::error::Result;
use crate::controller::job_gate;
use crate::crd::{
    ConditionStatus, EventStream, JobPhase, REBUILD_ANNOTATION, RebuildRecord, StorageElement,
    StorageElementStatus,
};

/// Refreshes the running rebuild and starts a new request; returns whether one is still
/// running (re-check soon).
pub async fn handle(
    se: &StorageElement,
    es: &EventStream,
    ctx: &Context,
    status: &mut StorageElementStatus,
) -> Result<bool> {
    refresh_running(se, ctx, status).await?;
    let running = |s: &StorageElementStatus| {
        s.last_rebuild
            .as_ref()
            .is_some_and(|l| !l.phase.is_finished())
    };
    let Some(value) = se.annotations().get(REBUILD_ANNOTATION) else {
        return Ok(running(status));
    };
    if status
        .last_rebuild
        .as_ref()
        .is_some_and(|l| &l.request == value)
    {
        return Ok(running(status));
    }
    let request = match RebuildRequest::parse(value) {
        Ok(r) => r,
        Err(msg) => {
            set_request(
                se,
                status,
                ConditionStatus::False,
                Reason::InvalidRebuildRequest,
                &msg,
            );
            let (t, a) = (EventType::Warning, EventAction::Rebuild);
            ctx.event(se, t, Reason::InvalidRebuildRequest, a, msg)
                .await;
            return Ok(false);
        }
    };
    if running(status) {
        // Two rebuilds never interleave: this request waits for the running one.
        let msg = format!("{value} waits for the running rebuild");
        set_request(
            se,
            status,
            ConditionStatus::False,
            Reason::RebuildQueued,
            &msg,
        );
        return Ok(true);
    }
    start(se, es, ctx, status, &request).await
}

/// The phase of the last rebuild while it runs, announced when it finishes.
async fn refresh_running(
    se: &StorageElement,
    ctx: &Context,
    status: &mut StorageElementStatus,
) -> Result<()> {
    let Some(last) = status
        .last_rebuild
        .as_mut()
        .filter(|l| !l.phase.is_finished())
    else {
        return Ok(());
    };
    let ns = se.namespace().unwrap_or_default();
    last.phase = job_gate::phase_of(ctx, &ns, &last.job_name).await?;
    if last.phase.is_finished() {
        last.completed_at = Some(conditions::now());
        let (t, reason) = if last.phase == JobPhase::Succeeded {
            (EventType::Normal, Reason::RebuildSucceeded)
        } else {
            (EventType::Warning, Reason::RebuildFailed)
        };
        let note = format!(
            "{} rebuild ({}) finished: {:?}",
            last.mode, last.job_name, last.phase
        );
        ctx.event(se, t, reason, EventAction::Rebuild, note).await;
    }
    Ok(())
}

async fn start(
    se: &StorageElement,
    es: &EventStream,
    ctx: &Context,
    status: &mut StorageElementStatus,
    request: &RebuildRequest,
) -> Result<bool> {
    let job = b::request_job(se, es, &ctx.config.build, request)?;
    let Some(run) = job_gate::run_once(ctx, &job, None).await? else {
        return Ok(false);
    };
    let now = conditions::now();
    let mode = request.mode;
    status.last_rebuild = Some(RebuildRecord {
        request: request.value.clone(),
        mode: mode.to_string(),
        job_name: run.name.clone(),
        phase: run.phase,
        started_at: now.clone(),
        completed_at: run.phase.is_finished().then_some(now),
    });
    let msg = format!("{mode} rebuild in Job {}", run.name);
    set_request(
        se,
        status,
        ConditionStatus::True,
        Reason::RebuildStarted,
        &msg,
    );
    let note = format!(
        "{mode} rebuild requested by {REBUILD_ANNOTATION}={}: Job {}",
        request.value, run.name
    );
    let (t, a) = (EventType::Normal, EventAction::Rebuild);
    ctx.event(se, t, Reason::RebuildStarted, a, note).await;
    Ok(!run.phase.is_finished())
}

fn set_request(
    se: &StorageElement,
    status: &mut StorageElementStatus,
    value: ConditionStatus,
    reason: Reason,
    message: &str,
) {
    conditions::set(
        &mut status.conditions,
        ConditionType::RebuildRequest,
        value,
        reason,
        message,
        se.metadata.generation,
    );
}
