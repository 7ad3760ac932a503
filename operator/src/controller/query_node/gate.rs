//! The two gates before a node's consumers: its consumer group exists on the stream, and the
//! backfill Job (run once per group) succeeded.

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::wait;
use crate::controller::conditions::{self, EventAction, Reason};
use crate::controller::context::Context;
use crate::controller::driver::Flow;
use crate::controller::error::{Error, Result};
use crate::controller::job_gate;
use crate::crd::{BackfillRecord, EventStream, JobPhase, QueryNode, QueryNodeStatus};
use crate::stream;

/// Creates the node's group on the stream's Redis (idempotent), so the consumers find it.
pub async fn consumer_group(
    qn: &QueryNode,
    ctx: &Context,
    es: &EventStream,
    status: &mut QueryNodeStatus,
) -> Result<Flow<()>> {
    let group = qn.consumer_group();
    let key = &es.spec.stream;
    let wanted = [(group.clone(), "0".to_string())];
    let ensured = async {
        let ns = qn.namespace().unwrap_or_default();
        let url = ctx.secret_value(&ns, &es.spec.redis.url_secret_ref).await?;
        let wanted = &wanted;
        ctx.with_redis(&url, |mut conn| async move {
            stream::ensure_stream_and_groups(&mut conn, key, wanted)
                .await
                .map_err(Error::stream(key))
        })
        .await
    }
    .await;
    let created = match ensured {
        Ok(created) => created,
        Err(e) => {
            let msg = format!("consumer group {group}: {e}");
            return Ok(Flow::Report(wait(Reason::WaitingForStream, msg)));
        }
    };
    if !created.is_empty() {
        let note = format!("created consumer group {group} on {key}");
        let (t, a) = (EventType::Normal, EventAction::EnsureGroup);
        ctx.event(qn, t, Reason::GroupCreated, a, note).await;
    }
    status.consumer_group = Some(group);
    Ok(Flow::Next(()))
}

/// The backfill, once per group, before any consumer.
pub async fn backfill(
    qn: &QueryNode,
    ctx: &Context,
    job: &Job,
    status: &mut QueryNodeStatus,
) -> Result<Flow<()>> {
    let recorded = status
        .backfill
        .as_ref()
        .map(|r| (r.job_name.as_str(), r.phase));
    let Some(run) = job_gate::run_once(ctx, job, recorded).await? else {
        return Ok(Flow::Next(()));
    };
    status.backfill = Some(BackfillRecord {
        job_name: run.name.clone(),
        phase: run.phase,
        completed_at: run.phase.is_finished().then(conditions::now),
    });
    let name = run.name;
    Ok(match run.phase {
        JobPhase::Running => {
            Flow::Report(wait(Reason::Backfilling, format!("waiting for Job {name}")))
        }
        JobPhase::Failed => Flow::Report(
            wait(
                Reason::BackfillFailed,
                format!("Job {name} failed; delete it to retry"),
            )
            .announce(crate::controller::driver::Announce::Always(
                EventType::Warning,
                EventAction::Backfill,
            )),
        ),
        JobPhase::Succeeded => {
            let note = format!("Job {name} indexed the storage elements");
            let (t, a) = (EventType::Normal, EventAction::Backfill);
            ctx.event(qn, t, Reason::BackfillComplete, a, note).await;
            Flow::Next(())
        }
    })
}
