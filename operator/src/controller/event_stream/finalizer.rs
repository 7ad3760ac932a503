//! The EventStream's finalizer: present exactly while `deletionPolicy: Delete`; on deletion
//! the stream and its dead-letter stream go first.

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::controller::conditions::{EventAction, Reason};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::crd::{DeletionPolicy, EventStream};
use crate::stream;

pub const FINALIZER: &str = "artstore.io/stream-cleanup";

fn has_finalizer(es: &EventStream) -> bool {
    es.finalizers().iter().any(|f| f == FINALIZER)
}

fn without_ours(es: &EventStream) -> Vec<String> {
    es.finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect()
}

async fn write(ctx: &Context, es: &EventStream, finalizers: Vec<String>) -> Result<()> {
    let ns = es.namespace().unwrap_or_default();
    // resourceVersion makes this an optimistic write: a concurrent change fails and retries.
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": es.resource_version()}
    });
    ctx.api::<EventStream>(&ns)
        .patch(
            &es.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
        .map_err(|source| Error::Finalizer {
            name: format!("{ns}/{}", es.name_any()),
            source,
        })
}

/// Adds or removes the finalizer to match the deletion policy; `true` when it wrote.
pub async fn sync(es: &EventStream, ctx: &Context) -> Result<bool> {
    match (es.spec.deletion_policy, has_finalizer(es)) {
        (DeletionPolicy::Delete, false) => {
            let mut f = es.finalizers().to_vec();
            f.push(FINALIZER.into());
            write(ctx, es, f).await?;
            Ok(true)
        }
        (DeletionPolicy::Retain, true) => {
            write(ctx, es, without_ours(es)).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Deletion: with policy `Delete`, the stream and its dead-letter stream go; then the finalizer.
pub async fn cleanup(es: &EventStream, ctx: &Context) -> Result<Action> {
    let ns = es.namespace().unwrap_or_default();
    ctx.metrics.forget(super::KIND, &ns, &es.name_any());
    if !has_finalizer(es) {
        return Ok(Action::await_change());
    }
    if es.spec.deletion_policy == DeletionPolicy::Delete {
        let (t, reason, note) = match ctx.secret_value(&ns, &es.spec.redis.url_secret_ref).await {
            Ok(url) => {
                let keys = vec![es.spec.stream.clone(), es.dead_letter_stream()];
                let to_delete = &keys;
                ctx.with_redis(&url, |mut conn| async move {
                    stream::delete_streams(&mut conn, to_delete)
                        .await
                        .map_err(Error::stream(&es.spec.stream))
                })
                .await?;
                let note = format!("deleted {keys:?} (deletionPolicy Delete)");
                (EventType::Normal, Reason::StreamDeleted, note)
            }
            // Without the Secret the stream can never be reached: keep the data, do not block
            // deletion forever, and say so.
            Err(Error::Secret(m)) => {
                let note = format!("stream kept: {m}");
                (EventType::Warning, Reason::CleanupSkipped, note)
            }
            Err(e) => return Err(e),
        };
        ctx.event(es, t, reason, EventAction::Cleanup, note).await;
    }
    write(ctx, es, without_ours(es)).await?;
    Ok(Action::await_change())
}
