//! The run-once Job gate shared by migration, backfill and rebuild: a Job named after what it
//! does is created once, then only read; a recorded success is never looked at again.

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;

use super::context::Context;
use super::error::Result;
use crate::crd::{ConditionStatus, JobPhase};

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
            .any(|c| c.type_ == "Failed" && c.status == ConditionStatus::True.as_str())
    });
    if failed {
        JobPhase::Failed
    } else {
        JobPhase::Running
    }
}

/// A run-once Job as the gate saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRun {
    pub name: String,
    pub phase: JobPhase,
}

/// Passes `job` through the gate: `None` when `recorded` already says this very Job
/// succeeded (no API call); otherwise creates it if absent and reads its phase.
pub async fn run_once(
    ctx: &Context,
    job: &Job,
    recorded: Option<(&str, JobPhase)>,
) -> Result<Option<JobRun>> {
    let name = job.name_any();
    let passed = recorded.is_some_and(|(n, p)| n == name && p == JobPhase::Succeeded);
    if passed {
        return Ok(None);
    }
    let ns = job.namespace().unwrap_or_default();
    let phase = job_phase(&ctx.ensure_job(&ns, job).await?);
    Ok(Some(JobRun { name, phase }))
}

/// Reads the phase of a Job started earlier; a Job that is gone counts as failed.
pub async fn phase_of(ctx: &Context, ns: &str, name: &str) -> Result<JobPhase> {
    Ok(ctx
        .get::<Job>(ns, name)
        .await?
        .as_ref()
        .map_or(JobPhase::Failed, job_phase))
}
