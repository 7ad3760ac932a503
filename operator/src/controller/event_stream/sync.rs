//! The Redis side of one EventStream pass: create the stream and its groups, trim by age,
//! read the figures into status.

use kube::ResourceExt;
use kube::runtime::events::EventType;
use redis::aio::MultiplexedConnection;

use crate::build::BuildError;
use crate::controller::conditions::{EventAction, Reason};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::crd::{EventStream, EventStreamStatus, GroupStatus};
use crate::stream;

/// What the spec asks of Redis, checked before anything is written.
pub struct Plan {
    /// Declared groups and the id each starts from.
    groups: Vec<(String, String)>,
    /// `spec.retention.maxAge` in milliseconds.
    max_age_ms: Option<u64>,
}

impl Plan {
    pub fn of(es: &EventStream) -> Result<Plan, BuildError> {
        let max_age_ms = es
            .spec
            .retention
            .max_age
            .as_deref()
            .map(stream::parse_duration_ms)
            .transpose()
            .map_err(|message| BuildError::InvalidField {
                field: "spec.retention.maxAge".into(),
                message,
            })?;
        let groups = es
            .spec
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.start_id.clone()))
            .collect();
        Ok(Plan { groups, max_age_ms })
    }
}

/// Connects (through the stream's Secret) and carries out the plan.
pub async fn run(
    es: &EventStream,
    ctx: &Context,
    plan: &Plan,
    status: &mut EventStreamStatus,
) -> Result<()> {
    let ns = es.namespace().unwrap_or_default();
    let url = ctx.secret_value(&ns, &es.spec.redis.url_secret_ref).await?;
    ctx.with_redis(&url, |mut conn| async move {
        with_connection(es, ctx, &mut conn, plan, status)
            .await
            .map_err(Error::stream(&es.spec.stream))
    })
    .await
}

async fn with_connection(
    es: &EventStream,
    ctx: &Context,
    conn: &mut MultiplexedConnection,
    plan: &Plan,
    status: &mut EventStreamStatus,
) -> Result<(), stream::StreamError> {
    let key = &es.spec.stream;
    let created = stream::ensure_stream_and_groups(conn, key, &plan.groups).await?;
    for g in created {
        let note = format!("created consumer group {g} on {key}");
        let (t, a) = (EventType::Normal, EventAction::EnsureGroups);
        ctx.event(es, t, Reason::GroupCreated, a, note).await;
    }
    if let Some(max_age_ms) = plan.max_age_ms {
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let outcome = stream::trim_by_age(conn, key, max_age_ms, now_ms).await?;
        status.last_trimmed = Some(outcome.removed);
        status.trim_min_id = Some(outcome.min_id.to_string());
        // Dead letters age out with the same retention (a group reading them still holds them).
        let dead_letters = es.dead_letter_stream();
        let exists: bool = redis::cmd("EXISTS")
            .arg(&dead_letters)
            .query_async(conn)
            .await?;
        if exists {
            stream::trim_by_age(conn, &dead_letters, max_age_ms, now_ms).await?;
        }
    }
    let stats = stream::stats(conn, key).await?;
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
