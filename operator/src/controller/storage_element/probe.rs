//! Reading a serving element's own figures: `/api/v1/status` each time, the consistency report
//! at most every `consistency_interval`.

use artstore_contract::{ConsistencyReport, ElementStatus, paths};
use kube::ResourceExt;

use crate::controller::conditions::{self, ConditionType, Reason};
use crate::controller::context::Context;
use crate::crd::{ConditionStatus, ConsistencySummary, StorageElement, StorageElementStatus};

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
        Ok(secret) => crate::controller::token::admin_token(&secret),
        Err(e) => Err(e.to_string()),
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            reachable(
                status,
                ConditionStatus::Unknown,
                Reason::NoToken,
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
                reachable(
                    status,
                    ConditionStatus::True,
                    Reason::StatusRead,
                    String::new(),
                    generation,
                    now,
                );
            }
            Err(e) => reachable(
                status,
                ConditionStatus::False,
                Reason::BadStatus,
                e.to_string(),
                generation,
                now,
            ),
        },
        Err(e) => {
            reachable(
                status,
                ConditionStatus::False,
                Reason::Unreachable,
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
            .set_inconsistency(super::KIND, &ns, &se.name_any(), r.inconsistency_percentage);
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

fn reachable(
    status: &mut StorageElementStatus,
    value: ConditionStatus,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: &str,
) {
    let type_ = ConditionType::ElementReachable;
    conditions::set_at(
        &mut status.conditions,
        type_,
        value,
        reason,
        message,
        generation,
        now,
    );
}
