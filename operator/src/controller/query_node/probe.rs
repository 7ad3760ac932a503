//! The node's own figures, read from its `/api/v1/status`.

use kube::ResourceExt;

use crate::controller::context::Context;
use crate::crd::QueryNode;

/// The node's own count of indexed files (`GET /api/v1/status` through its Service, with a
/// short-lived admin token); `None` when it does not answer, so the last figure stays.
pub async fn indexed_files(qn: &QueryNode, ctx: &Context, endpoint: &str) -> Option<u64> {
    let ns = qn.namespace().unwrap_or_default();
    let secret = ctx
        .secret_value(&ns, &qn.spec.auth.jwt_secret_ref)
        .await
        .ok()?;
    let token = crate::controller::token::admin_token(&secret).ok()?;
    let response = ctx
        .http
        .get(format!("{endpoint}{}", artstore_contract::paths::STATUS))
        .bearer_auth(&token)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    response
        .json::<artstore_contract::QueryNodeStatus>()
        .await
        .ok()
        .map(|s| s.indexed_files)
}
