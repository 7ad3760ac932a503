//! Writing a storage element's children: its NetworkPolicy, the migration gate, then Service,
//! workload and maintenance CronJobs.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::ListParams;
use kube::runtime::events::EventType;

use crate::build::common::{LABEL_COMPONENT, LABEL_INSTANCE, LABEL_JOB_KIND};
use crate::build::storage_element::{self as b, ElementWorkload};
use crate::controller::conditions::{EventAction, Reason};
use crate::controller::context::Context;
use crate::controller::driver::{Flow, Outcome};
use crate::controller::error::Result;
use crate::controller::job_gate;
use crate::crd::{JobPhase, JobRecord, StorageElement, StorageElementStatus};

/// Applies the element's NetworkPolicy, or deletes the operator's one when the spec opted out.
pub async fn network_policy(
    se: &StorageElement,
    ctx: &Context,
    policy: Option<NetworkPolicy>,
) -> Result<()> {
    let ns = se.namespace().unwrap_or_default();
    match policy {
        Some(p) => ctx.apply(&ns, &p).await.map(drop),
        None => ctx.delete_owned::<NetworkPolicy>(&ns, &se.name_any()).await,
    }
}

/// The migration Job for this image, run once; the workload waits for it.
pub async fn migrate(
    se: &StorageElement,
    ctx: &Context,
    migration: &Job,
    status: &mut StorageElementStatus,
) -> Result<Flow<()>> {
    let recorded = status
        .migration
        .as_ref()
        .map(|m| (m.job_name.as_str(), m.phase));
    let Some(run) = job_gate::run_once(ctx, migration, recorded).await? else {
        return Ok(Flow::Next(()));
    };
    status.migration = Some(JobRecord {
        job_name: run.name.clone(),
        phase: run.phase,
    });
    let name = run.name;
    Ok(match run.phase {
        JobPhase::Succeeded => {
            let note = format!("Job {name} applied the database migrations");
            ctx.event(
                se,
                EventType::Normal,
                Reason::Migrated,
                EventAction::Migrate,
                note,
            )
            .await;
            Flow::Next(())
        }
        JobPhase::Running => Flow::Report(Outcome::waiting(
            Reason::Migrating,
            format!("waiting for Job {name}"),
        )),
        JobPhase::Failed => Flow::Report(Outcome::waiting(
            Reason::MigrationFailed,
            format!("Job {name} failed; fix and bump the image or delete the Job"),
        )),
    })
}

/// Applies Service, workload and CronJobs; returns the workload's ready replicas.
pub async fn children(
    se: &StorageElement,
    ctx: &Context,
    service: Service,
    workload: ElementWorkload,
    cronjobs: Vec<CronJob>,
) -> Result<i32> {
    let ns = se.namespace().unwrap_or_default();
    let name = se.name_any();
    ctx.apply(&ns, &service).await?;
    // A backend switch leaves the other kind behind: remove it (the volume's PVC is retained).
    let ready_replicas = match &workload {
        ElementWorkload::Deployment(d) => {
            let d: Deployment = ctx.apply(&ns, d.as_ref()).await?;
            ctx.delete_owned::<StatefulSet>(&ns, &name).await?;
            d.status.and_then(|s| s.ready_replicas)
        }
        ElementWorkload::StatefulSet(s) => {
            let s: StatefulSet = ctx.apply(&ns, s.as_ref()).await?;
            ctx.delete_owned::<Deployment>(&ns, &name).await?;
            s.status.and_then(|s| s.ready_replicas)
        }
    };
    let wanted: BTreeSet<String> = cronjobs.iter().map(ResourceExt::name_any).collect();
    for c in &cronjobs {
        ctx.apply(&ns, c).await?;
    }
    prune_cronjobs(ctx, &ns, &name, &wanted).await?;
    Ok(ready_replicas.unwrap_or(0))
}

/// Deletes this element's maintenance CronJobs whose schedule was removed from the spec.
async fn prune_cronjobs(
    ctx: &Context,
    ns: &str,
    name: &str,
    wanted: &BTreeSet<String>,
) -> Result<()> {
    let lp = ListParams::default().labels(&format!(
        "{LABEL_INSTANCE}={name},{LABEL_COMPONENT}={},{LABEL_JOB_KIND}=maintenance",
        b::COMPONENT
    ));
    for c in ctx.list::<CronJob>(ns, &lp).await? {
        let cname = c.name_any();
        if !wanted.contains(&cname) {
            ctx.delete::<CronJob>(ns, &cname).await?;
        }
    }
    Ok(())
}
