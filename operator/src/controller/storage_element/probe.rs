//! Reading a serving element's own figures: `/api/v1/status` each time, the consistency report
//! at most every `consistency_interval`.

use std::time::Duration;

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
    let mut reachable = ReachableCondition {
        status,
        generation: se.metadata.generation,
        now,
    };
    let token = match admin_token(se, ctx, &ns).await {
        Ok(token) => token,
        Err(e) => {
            reachable.set(ConditionStatus::Unknown, Reason::NoToken, e);
            return;
        }
    };
    let element = ElementApi {
        ctx,
        endpoint,
        token: &token,
    };
    if read_status(&element, &mut reachable).await == Answer::Unreachable {
        return;
    }
    let status = reachable.status;
    if !consistency_due(status, ctx.config.consistency_interval) {
        return;
    }
    if let Some(report) = element.consistency_report().await {
        ctx.metrics.set_inconsistency(
            super::KIND,
            &ns,
            &se.name_any(),
            report.inconsistency_percentage,
        );
        status.last_consistency_report = Some(summary(&report, now));
    }
}

/// A short-lived admin token signed by the element's JWT secret.
async fn admin_token(se: &StorageElement, ctx: &Context, ns: &str) -> Result<String, String> {
    match ctx.secret_value(ns, &se.spec.auth.jwt_secret_ref).await {
        Ok(secret) => crate::controller::token::admin_token(&secret),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether the element answered `/api/v1/status` at all (a body that does not parse still
/// counts as an answer: the consistency report is read anyway).
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Answered,
    Unreachable,
}

/// Reads `/api/v1/status` into `used_bytes`, `file_count` and `capacity_bytes` and sets
/// `ElementReachable` from the outcome.
async fn read_status(element: &ElementApi<'_>, reachable: &mut ReachableCondition<'_>) -> Answer {
    let resp = match element.get(paths::STATUS).await {
        Ok(resp) => resp,
        Err(e) => {
            reachable.set(ConditionStatus::False, Reason::Unreachable, e.to_string());
            return Answer::Unreachable;
        }
    };
    match resp.json::<ElementStatus>().await {
        Ok(st) => {
            let status = &mut *reachable.status;
            status.used_bytes = Some(st.used_bytes);
            status.file_count = Some(st.file_count);
            status.capacity_bytes = Some(st.capacity_bytes);
            reachable.set(ConditionStatus::True, Reason::StatusRead, String::new());
        }
        Err(e) => reachable.set(ConditionStatus::False, Reason::BadStatus, e.to_string()),
    }
    Answer::Answered
}

/// True when no consistency report was recorded, its time does not parse, or it is at least
/// `interval` old.
fn consistency_due(status: &StorageElementStatus, interval: Duration) -> bool {
    status.last_consistency_report.as_ref().is_none_or(|r| {
        chrono::DateTime::parse_from_rfc3339(&r.checked_at).map_or(true, |t| {
            chrono::Utc::now()
                .signed_duration_since(t)
                .to_std()
                .unwrap_or_default()
                >= interval
        })
    })
}

/// The part of a consistency report kept in the status, stamped with `now`.
fn summary(report: &ConsistencyReport, now: &str) -> ConsistencySummary {
    ConsistencySummary {
        checked_at: now.to_string(),
        is_consistent: report.is_consistent,
        inconsistency_percentage: report.inconsistency_percentage,
        orphan_cache_count: report.orphan_cache_count,
        orphan_attr_count: report.orphan_attr_count,
        expired_cache_count: report.expired_cache_count,
    }
}

/// The element's admin API at `endpoint`, called with one admin token.
struct ElementApi<'a> {
    ctx: &'a Context,
    endpoint: &'a str,
    token: &'a str,
}

impl ElementApi<'_> {
    /// GET `path`; a non-2xx answer is an error.
    async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.ctx
            .http
            .get(format!("{}{path}", self.endpoint))
            .bearer_auth(self.token)
            .send()
            .await?
            .error_for_status()
    }

    /// The consistency report, or `None` when it cannot be fetched or parsed (the previous
    /// summary stays and the next probe retries).
    async fn consistency_report(&self) -> Option<ConsistencyReport> {
        let resp = self.get(paths::CONSISTENCY).await.ok()?;
        resp.json::<ConsistencyReport>().await.ok()
    }
}

/// Sets `ElementReachable` on one status, for one generation, at one time.
struct ReachableCondition<'a> {
    status: &'a mut StorageElementStatus,
    generation: Option<i64>,
    now: &'a str,
}

impl ReachableCondition<'_> {
    fn set(&mut self, value: ConditionStatus, reason: Reason, message: String) {
        conditions::set_at(
            &mut self.status.conditions,
            ConditionType::ElementReachable,
            value,
            reason,
            message,
            self.generation,
            self.now,
        );
    }
}
