//! StorageElement: dereference its EventStream → validate/build every child → migrate (a Job,
//! gated) → apply Service, workload, CronJobs → handle the rebuild annotation once per request →
//! read the element's own status → write status.

use std::collections::BTreeSet;
use std::sync::Arc;

use artstore_contract::{ConsistencyReport, ElementStatus, paths};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::conditions::{self, READY};
use super::context::{Context, job_phase};
use super::error::{Error, Result};
use crate::build::common::{LABEL_COMPONENT, LABEL_INSTANCE, LABEL_JOB_KIND};
use crate::build::quantity;
use crate::build::storage_element::{self as b, ElementWorkload};
use crate::crd::{
    ConsistencySummary, EventStream, JobPhase, JobRecord, REBUILD_ANNOTATION, RebuildRecord,
    StorageElement, StorageElementStatus,
};

pub const KIND: &str = "StorageElement";

pub async fn reconcile(se: Arc<StorageElement>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(KIND);
    let res = reconcile_inner(&se, &ctx).await;
    if let Err(e) = &res {
        ctx.report_rejected_child(&*se, e).await;
    }
    timer.finish(res.as_ref().err().map(Error::reason));
    res
}

async fn reconcile_inner(se: &StorageElement, ctx: &Context) -> Result<Action> {
    let Some(current) = ctx.current(KIND, se).await? else {
        return Ok(Action::await_change());
    };
    let se = &current;
    let ns = se.namespace().unwrap_or_default();
    let name = se.name_any();
    let generation = se.metadata.generation;
    let now = conditions::now();
    let mut status = se.status.clone().unwrap_or_default();
    status.observed_generation = generation;

    // Dereference.
    let Some(es) = ctx
        .api::<EventStream>(&ns)
        .get_opt(&se.spec.event_stream_ref)
        .await?
    else {
        conditions::set(
            &mut status.conditions,
            READY,
            "False",
            "WaitingForStream",
            format!("EventStream {} not found", se.spec.event_stream_ref),
            generation,
            &now,
        );
        ctx.metrics.set_ready(KIND, &ns, &name, false);
        ctx.apply_status(se, &status).await?;
        return Ok(Action::requeue(ctx.config.wait_interval));
    };

    // Validate + build: every child first, so a bad spec changes nothing.
    let cfg = &ctx.config.build;
    let built = (|| {
        Ok::<_, crate::build::BuildError>((
            b::service(se)?,
            b::workload(se, &es, cfg)?,
            b::cronjobs(se, &es, cfg)?,
            b::migration_job(se, &es, cfg)?,
            b::endpoint(se)?,
            quantity::to_bytes(&se.spec.capacity).map_err(|m| {
                crate::build::BuildError::InvalidField {
                    field: "spec.capacity".into(),
                    message: m,
                }
            })?,
        ))
    })();
    let (service, workload, cronjobs, migration, endpoint, capacity) = match built {
        Ok(b) => b,
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
                se,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                e.to_string(),
            )
            .await;
            ctx.apply_status(se, &status).await?;
            return Ok(Action::await_change());
        }
    };

    // Migrations run (once per image) before the workload starts or changes.
    let migration_name = migration.metadata.name.clone().unwrap_or_default();
    let migrated = status
        .migration
        .as_ref()
        .is_some_and(|m| m.job_name == migration_name && m.phase == JobPhase::Succeeded);
    if !migrated {
        let job = ctx.ensure_job(&ns, &migration).await?;
        let phase = job_phase(&job);
        status.migration = Some(JobRecord {
            job_name: migration_name.clone(),
            phase,
        });
        match phase {
            JobPhase::Succeeded => {
                ctx.event(
                    se,
                    EventType::Normal,
                    "Migrated",
                    "Migrate",
                    format!("Job {migration_name} applied the database migrations"),
                )
                .await;
            }
            JobPhase::Running | JobPhase::Failed => {
                let (reason, msg) = if phase == JobPhase::Failed {
                    (
                        "MigrationFailed",
                        format!(
                            "Job {migration_name} failed; fix and bump the image or delete the Job"
                        ),
                    )
                } else {
                    ("Migrating", format!("waiting for Job {migration_name}"))
                };
                conditions::set(
                    &mut status.conditions,
                    READY,
                    "False",
                    reason,
                    msg,
                    generation,
                    &now,
                );
                ctx.metrics.set_ready(KIND, &ns, &name, false);
                ctx.apply_status(se, &status).await?;
                return Ok(Action::requeue(ctx.config.wait_interval));
            }
        }
    }

    // Apply.
    ctx.apply(&ns, &service).await?;
    // A backend switch leaves the other kind behind: remove it (the volume's PVC is retained).
    let ready_replicas = match &workload {
        ElementWorkload::Deployment(d) => {
            let d: Deployment = ctx.apply(&ns, d.as_ref()).await?;
            delete_if_present::<StatefulSet>(ctx, &ns, &name).await?;
            d.status.and_then(|s| s.ready_replicas).unwrap_or(0)
        }
        ElementWorkload::StatefulSet(s) => {
            let s: StatefulSet = ctx.apply(&ns, s.as_ref()).await?;
            delete_if_present::<Deployment>(ctx, &ns, &name).await?;
            s.status.and_then(|s| s.ready_replicas).unwrap_or(0)
        }
    };
    let wanted: BTreeSet<String> = cronjobs
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    for c in &cronjobs {
        ctx.apply(&ns, c).await?;
    }
    prune_cronjobs(ctx, &ns, &name, &wanted).await?;

    // The rebuild annotation.
    let rebuild_requeue = handle_rebuild(se, &es, ctx, &mut status, &now).await?;

    // Observe.
    status.endpoint = Some(endpoint.clone());
    status.element_id = Some(se.element_id());
    status.mode = Some(se.spec.mode);
    status.priority = Some(se.spec.priority);
    status.capacity_bytes = Some(capacity);
    if ctx.config.probe_elements && ready_replicas > 0 {
        probe(se, ctx, &endpoint, &mut status, &now).await;
    }
    let ready = ready_replicas > 0;
    if ready {
        conditions::set(
            &mut status.conditions,
            READY,
            "True",
            "Available",
            format!("{endpoint} is serving"),
            generation,
            &now,
        );
    } else {
        conditions::set(
            &mut status.conditions,
            READY,
            "False",
            "Starting",
            "waiting for the element's pod to become ready",
            generation,
            &now,
        );
    }
    ctx.metrics.set_ready(KIND, &ns, &name, ready);
    ctx.apply_status(se, &status).await?;
    let next = if ready && !rebuild_requeue {
        ctx.config.resync
    } else {
        ctx.config.wait_interval
    };
    Ok(Action::requeue(next))
}

/// Deletes an object of ours by name; absent is fine.
async fn delete_if_present<K>(ctx: &Context, ns: &str, name: &str) -> Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = ctx.api::<K>(ns);
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(());
    };
    let managed = obj
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::build::common::LABEL_MANAGED_BY))
        .is_some_and(|v| v == crate::build::common::MANAGED_BY);
    if managed {
        api.delete(name, &DeleteParams::background()).await?;
    }
    Ok(())
}

/// Deletes this element's maintenance CronJobs whose schedule was removed from the spec.
async fn prune_cronjobs(
    ctx: &Context,
    ns: &str,
    name: &str,
    wanted: &BTreeSet<String>,
) -> Result<()> {
    let api = ctx.api::<CronJob>(ns);
    let lp = ListParams::default().labels(&format!(
        "{LABEL_INSTANCE}={name},{LABEL_COMPONENT}={},{LABEL_JOB_KIND}=maintenance",
        b::COMPONENT
    ));
    for c in api.list(&lp).await? {
        let cname = c.name_any();
        if !wanted.contains(&cname) {
            api.delete(&cname, &DeleteParams::background()).await?;
        }
    }
    Ok(())
}

/// Runs one Job per distinct `artstore.io/rebuild` value, one at a time, and records it in
/// status. The Job's name is derived from the value, so even a lost status write cannot start
/// the same request twice. Returns whether something is still running (re-check soon).
async fn handle_rebuild(
    se: &StorageElement,
    es: &EventStream,
    ctx: &Context,
    status: &mut StorageElementStatus,
    now: &str,
) -> Result<bool> {
    let ns = se.namespace().unwrap_or_default();
    let generation = se.metadata.generation;
    // Refresh the phase of the last rebuild while it runs.
    if let Some(last) = status
        .last_rebuild
        .as_mut()
        .filter(|l| !l.phase.is_finished())
    {
        let job = ctx
            .api::<k8s_openapi::api::batch::v1::Job>(&ns)
            .get_opt(&last.job_name)
            .await?;
        last.phase = job.as_ref().map_or(JobPhase::Failed, job_phase);
        if last.phase.is_finished() {
            last.completed_at = Some(now.to_string());
            let (t, reason) = if last.phase == JobPhase::Succeeded {
                (EventType::Normal, "RebuildSucceeded")
            } else {
                (EventType::Warning, "RebuildFailed")
            };
            let note = format!(
                "{} rebuild ({}) finished: {:?}",
                last.mode, last.job_name, last.phase
            );
            ctx.event(se, t, reason, "Rebuild", note).await;
        }
    }
    let Some(request) = se.annotations().get(REBUILD_ANNOTATION).cloned() else {
        return Ok(status
            .last_rebuild
            .as_ref()
            .is_some_and(|l| !l.phase.is_finished()));
    };
    if status
        .last_rebuild
        .as_ref()
        .is_some_and(|l| l.request == request)
    {
        return Ok(status
            .last_rebuild
            .as_ref()
            .is_some_and(|l| !l.phase.is_finished()));
    }
    let mode = match b::parse_rebuild_request(&request) {
        Ok(m) => m.to_string(),
        Err(msg) => {
            conditions::set(
                &mut status.conditions,
                "RebuildRequest",
                "False",
                "InvalidRebuildRequest",
                msg.clone(),
                generation,
                now,
            );
            ctx.event(
                se,
                EventType::Warning,
                "InvalidRebuildRequest",
                "Rebuild",
                msg,
            )
            .await;
            return Ok(false);
        }
    };
    if status
        .last_rebuild
        .as_ref()
        .is_some_and(|l| !l.phase.is_finished())
    {
        // Two rebuilds never interleave: this request waits for the running one.
        conditions::set(
            &mut status.conditions,
            "RebuildRequest",
            "False",
            "RebuildQueued",
            format!("{request} waits for the running rebuild"),
            generation,
            now,
        );
        return Ok(true);
    }
    let job = b::rebuild_job(se, es, &ctx.config.build, &request)?;
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let applied = ctx.ensure_job(&ns, &job).await?;
    let phase = job_phase(&applied);
    status.last_rebuild = Some(RebuildRecord {
        request: request.clone(),
        mode: mode.clone(),
        job_name: job_name.clone(),
        phase,
        started_at: now.to_string(),
        completed_at: phase.is_finished().then(|| now.to_string()),
    });
    conditions::set(
        &mut status.conditions,
        "RebuildRequest",
        "True",
        "RebuildStarted",
        format!("{mode} rebuild in Job {job_name}"),
        generation,
        now,
    );
    ctx.event(
        se,
        EventType::Normal,
        "RebuildStarted",
        "Rebuild",
        format!("{mode} rebuild requested by {REBUILD_ANNOTATION}={request}: Job {job_name}"),
    )
    .await;
    Ok(!phase.is_finished())
}

/// Reads `/api/v1/status` (each time) and the consistency report (at most every
/// `consistency_interval`) with a short-lived admin token signed by the element's JWT secret.
pub async fn probe(
    se: &StorageElement,
    ctx: &Context,
    endpoint: &str,
    status: &mut StorageElementStatus,
    now: &str,
) {
    let ns = se.namespace().unwrap_or_default();
    let generation = se.metadata.generation;
    let token = match ctx.secret_value(&ns, &se.spec.auth.jwt_secret_ref).await {
        Ok(secret) => super::token::admin_token(&secret),
        Err(e) => Err(e.to_string()),
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            conditions::set(
                &mut status.conditions,
                "ElementReachable",
                "Unknown",
                "NoToken",
                e,
                generation,
                now,
            );
            return;
        }
    };
    let get = |path: &str| {
        ctx.http
            .get(format!("{endpoint}{path}"))
            .bearer_auth(&token)
            .send()
    };
    match get(paths::STATUS).await.and_then(|r| r.error_for_status()) {
        Ok(resp) => match resp.json::<ElementStatus>().await {
            Ok(st) => {
                status.used_bytes = Some(st.used_bytes);
                status.file_count = Some(st.file_count);
                status.capacity_bytes = Some(st.capacity_bytes);
                conditions::set(
                    &mut status.conditions,
                    "ElementReachable",
                    "True",
                    "StatusRead",
                    "",
                    generation,
                    now,
                );
            }
            Err(e) => conditions::set(
                &mut status.conditions,
                "ElementReachable",
                "False",
                "BadStatus",
                e.to_string(),
                generation,
                now,
            ),
        },
        Err(e) => {
            conditions::set(
                &mut status.conditions,
                "ElementReachable",
                "False",
                "Unreachable",
                e.to_string(),
                generation,
                now,
            );
            return;
        }
    }
    let due = status.last_consistency_report.as_ref().is_none_or(|r| {
        chrono::DateTime::parse_from_rfc3339(&r.checked_at).map_or(true, |t| {
            chrono::Utc::now()
                .signed_duration_since(t)
                .to_std()
                .unwrap_or_default()
                >= ctx.config.consistency_interval
        })
    });
    if !due {
        return;
    }
    let report = match get(paths::CONSISTENCY)
        .await
        .and_then(|r| r.error_for_status())
    {
        Ok(resp) => resp.json::<ConsistencyReport>().await.ok(),
        Err(_) => None,
    };
    if let Some(r) = report {
        ctx.metrics
            .set_inconsistency(KIND, &ns, &se.name_any(), r.inconsistency_percentage);
        status.last_consistency_report = Some(ConsistencySummary {
            checked_at: now.to_string(),
            is_consistent: r.is_consistent,
            inconsistency_percentage: r.inconsistency_percentage,
            orphan_cache_count: r.orphan_cache_count,
            orphan_attr_count: r.orphan_attr_count,
            expired_cache_count: r.expired_cache_count,
        });
    }
}
