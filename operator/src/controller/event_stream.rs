//! EventStream: dereference the Redis Secret → connect → create stream and groups → trim by age
//! (never past what a group still needs) → report figures in status. A finalizer exists only
//! while `deletionPolicy: Delete`, because only then is there Redis state to clean up.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::conditions::{self, READY};
use super::context::Context;
use super::error::{Error, Result};
use crate::crd::{DeletionPolicy, EventStream, EventStreamStatus, GroupStatus, is_paused};
use crate::stream;

pub const KIND: &str = "EventStream";
pub const FINALIZER: &str = "artstore.io/stream-cleanup";

pub async fn reconcile(es: Arc<EventStream>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(KIND);
    let res = reconcile_inner(&es, &ctx).await;
    timer.finish(res.as_ref().err().map(Error::reason));
    res
}

fn has_finalizer(es: &EventStream) -> bool {
    es.finalizers().iter().any(|f| f == FINALIZER)
}

async fn set_finalizers(ctx: &Context, es: &EventStream, finalizers: Vec<String>) -> Result<()> {
    let ns = es.namespace().unwrap_or_default();
    let api = ctx.api::<EventStream>(&ns);
    // resourceVersion makes this an optimistic write: a concurrent change fails and retries.
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": es.resource_version()}
    });
    api.patch(
        &es.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn reconcile_inner(es: &EventStream, ctx: &Context) -> Result<Action> {
    let ns = es.namespace().unwrap_or_default();
    let name = es.name_any();
    if es.metadata.deletion_timestamp.is_none() && is_paused(&es.metadata) {
        tracing::info!(%ns, %name, "paused");
        return Ok(Action::await_change());
    }
    // The finalizer writes below carry a resourceVersion: start from the stored object, not a
    // watch-cache copy that may lag the operator's own last write (that would be a 409 and a
    // slow retry).
    let Some(fresh) = ctx.fresh(es).await? else {
        return Ok(Action::await_change());
    };
    let es = &fresh;
    if es.metadata.deletion_timestamp.is_some() {
        return cleanup(es, ctx).await;
    }
    if is_paused(&es.metadata) {
        return Ok(Action::await_change());
    }
    let policy = es.spec.deletion_policy;
    match (policy, has_finalizer(es)) {
        (DeletionPolicy::Delete, false) => {
            let mut f = es.finalizers().to_vec();
            f.push(FINALIZER.into());
            set_finalizers(ctx, es, f).await?;
            // The finalizer write triggers the next reconcile with a fresh object.
            return Ok(Action::await_change());
        }
        (DeletionPolicy::Retain, true) => {
            let f = es
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            set_finalizers(ctx, es, f).await?;
            return Ok(Action::await_change());
        }
        _ => {}
    }

    let mut status = es.status.clone().unwrap_or_default();
    let generation = es.metadata.generation;
    let now = conditions::now();
    match sync_redis(es, ctx, &mut status).await {
        Ok(()) => {
            conditions::set(
                &mut status.conditions,
                READY,
                "True",
                "StreamReady",
                format!(
                    "stream {} and {} group(s) exist",
                    es.spec.stream,
                    status.groups.len()
                ),
                generation,
                &now,
            );
            status.observed_generation = generation;
            ctx.apply_status(es, &status).await?;
            ctx.metrics.set_ready(KIND, &ns, &name, true);
            Ok(Action::requeue(ctx.config.stream_interval))
        }
        Err(e) => {
            conditions::set(
                &mut status.conditions,
                READY,
                "False",
                e.reason(),
                e.to_string(),
                generation,
                &now,
            );
            status.observed_generation = generation;
            ctx.metrics.set_ready(KIND, &ns, &name, false);
            ctx.event(
                es,
                EventType::Warning,
                e.reason(),
                "SyncStream",
                e.to_string(),
            )
            .await;
            ctx.apply_status(es, &status).await?;
            Err(e)
        }
    }
}

async fn sync_redis(es: &EventStream, ctx: &Context, status: &mut EventStreamStatus) -> Result<()> {
    let ns = es.namespace().unwrap_or_default();
    let url = ctx.secret_value(&ns, &es.spec.redis.url_secret_ref).await?;
    let mut conn = ctx.redis(&url).await?;
    let result = sync_with(es, ctx, &mut conn, status).await;
    if matches!(result, Err(Error::Stream(_))) {
        ctx.forget_redis(&url).await;
    }
    result
}

async fn sync_with(
    es: &EventStream,
    ctx: &Context,
    conn: &mut redis::aio::MultiplexedConnection,
    status: &mut EventStreamStatus,
) -> Result<()> {
    let stream_key = &es.spec.stream;
    let groups: Vec<(String, String)> = es
        .spec
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.start_id.clone()))
        .collect();
    let created = stream::ensure_stream_and_groups(conn, stream_key, &groups).await?;
    for g in created {
        ctx.event(
            es,
            EventType::Normal,
            "GroupCreated",
            "EnsureGroups",
            format!("created consumer group {g} on {stream_key}"),
        )
        .await;
    }
    if let Some(max_age) = &es.spec.retention.max_age {
        let max_age_ms = stream::parse_duration_ms(max_age).map_err(|m| {
            Error::Build(crate::build::BuildError::InvalidField {
                field: "spec.retention.maxAge".into(),
                message: m,
            })
        })?;
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let outcome = stream::trim_by_age(conn, stream_key, max_age_ms, now_ms).await?;
        status.last_trimmed = Some(outcome.removed);
        status.trim_min_id = Some(outcome.min_id.to_string());
        // Dead letters age out with the same retention (a group reading them still holds them).
        let dead_letters = es.dead_letter_stream();
        let exists: bool = redis::cmd("EXISTS")
            .arg(&dead_letters)
            .query_async(conn)
            .await
            .map_err(stream::StreamError::from)?;
        if exists {
            stream::trim_by_age(conn, &dead_letters, max_age_ms, now_ms).await?;
        }
    }
    let stats = stream::stats(conn, stream_key).await?;
    status.length = Some(stats.length);
    status.pending = Some(stats.groups.iter().map(|g| g.pending).sum());
    status.lag = stats.groups.iter().filter_map(|g| g.lag).max().or(Some(0));
    status.groups = stats
        .groups
        .into_iter()
        .map(|g| GroupStatus {
            name: g.name,
            consumers: g.consumers,
            pending: g.pending,
            lag: g.lag,
            last_delivered_id: g.last_delivered_id,
        })
        .collect();
    Ok(())
}

/// Deletion: with policy `Delete`, the stream and its dead-letter stream go; then the finalizer.
async fn cleanup(es: &EventStream, ctx: &Context) -> Result<Action> {
    let ns = es.namespace().unwrap_or_default();
    ctx.metrics.forget(KIND, &ns, &es.name_any());
    if !has_finalizer(es) {
        return Ok(Action::await_change());
    }
    if es.spec.deletion_policy == DeletionPolicy::Delete {
        match ctx.secret_value(&ns, &es.spec.redis.url_secret_ref).await {
            Ok(url) => {
                let mut conn = ctx.redis(&url).await?;
                let keys = vec![es.spec.stream.clone(), es.dead_letter_stream()];
                stream::delete_streams(&mut conn, &keys).await?;
                ctx.event(
                    es,
                    EventType::Normal,
                    "StreamDeleted",
                    "Cleanup",
                    format!("deleted {keys:?} (deletionPolicy Delete)"),
                )
                .await;
            }
            // Without the Secret the stream can never be reached: keep the data, do not block
            // deletion forever, and say so.
            Err(Error::Secret(m)) => {
                ctx.event(
                    es,
                    EventType::Warning,
                    "CleanupSkipped",
                    "Cleanup",
                    format!("stream kept: {m}"),
                )
                .await;
            }
            Err(e) => return Err(e),
        }
    }
    let f = es
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(ctx, es, f).await?;
    Ok(Action::await_change())
}

/// Whether an EventStream is ready for consumers: Ready and observed at its generation.
pub fn is_ready(es: &EventStream) -> bool {
    es.status.as_ref().is_some_and(|s| {
        s.observed_generation == es.metadata.generation && conditions::is_true(&s.conditions, READY)
    })
}
