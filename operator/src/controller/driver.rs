//! The one reconcile driver. It owns what every kind shares — the preamble (deleting, paused,
//! fresh read), timing and metrics, InvalidSpec and ChildRejected reporting, the Ready
//! condition, Events, the requeue policy — and runs each kind's [`Pipeline`]:
//! dereference → build (pure: the validated children) → apply → observe.

use std::future::Future;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::conditions::{ConditionType, EventAction, HasStatus, ObjectStatus, Reason, set};
use super::context::{Context, Namespaced};
use super::error::{Error, Result};
use crate::build::{BuildConfig, BuildError};
use crate::crd::{ConditionStatus, is_paused};

/// When to look again.
#[derive(Debug)]
pub enum Requeue {
    /// Healthy: the regular re-check.
    Resync,
    /// Waiting for something else (a stream, a Job, a pod).
    Wait,
    /// The EventStream interval (trim and figures).
    Stream,
    /// Only when the resource changes (a bad spec).
    AwaitChange,
    /// Failed: the status says why; the error goes to the controller's error policy.
    Fail(Error),
}

/// Whether the Ready condition is announced with an Event too.
#[derive(Clone, Copy, Debug)]
pub enum Announce {
    Never,
    /// Each time this outcome is reached.
    Always(EventType, EventAction),
    /// Only when the Ready reason changes to this one.
    OnChange(EventType, EventAction),
}

/// What a reconcile concluded: the Ready condition, whether to say so in an Event, and when
/// to look again.
#[derive(Debug)]
pub struct Outcome {
    pub ready: bool,
    pub reason: Reason,
    pub message: String,
    pub announce: Announce,
    pub requeue: Requeue,
}

impl Outcome {
    /// Ready, re-checked at `requeue`.
    pub fn ready(reason: Reason, message: impl Into<String>, requeue: Requeue) -> Self {
        Self {
            ready: true,
            reason,
            message: message.into(),
            announce: Announce::Never,
            requeue,
        }
    }

    /// Not ready yet; re-checked after the wait interval.
    pub fn waiting(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
            announce: Announce::Never,
            requeue: Requeue::Wait,
        }
    }

    /// A spec the builders refuse: nothing is applied until it changes.
    pub fn invalid_spec(e: &BuildError) -> Self {
        Self {
            ready: false,
            reason: Reason::InvalidSpec,
            message: e.to_string(),
            announce: Announce::Always(EventType::Warning, EventAction::Validate),
            requeue: Requeue::AwaitChange,
        }
    }

    /// A failed step, reported on the resource and in a Warning Event, then returned.
    pub fn failed(e: Error, action: EventAction) -> Self {
        Self {
            ready: false,
            reason: e.reason(),
            message: e.to_string(),
            announce: Announce::Always(EventType::Warning, action),
            requeue: Requeue::Fail(e),
        }
    }

    pub fn announce(mut self, announce: Announce) -> Self {
        self.announce = announce;
        self
    }

    /// Re-check soon even when ready (something the resource started is still running).
    pub fn sooner(mut self, yes: bool) -> Self {
        if yes && matches!(self.requeue, Requeue::Resync) {
            self.requeue = Requeue::Wait;
        }
        self
    }
}

/// How a step ends: go on with its product, stop and report, or stop with nothing to report.
#[derive(Debug)]
pub enum Flow<T> {
    Next(T),
    Report(Outcome),
    Done(Action),
}

/// `let x = step!(flow)`: the product of a step, or return its stop to the driver.
macro_rules! step {
    ($flow:expr) => {
        match $flow {
            $crate::controller::driver::Flow::Next(x) => x,
            $crate::controller::driver::Flow::Report(o) => {
                return Ok($crate::controller::driver::Flow::Report(o));
            }
            $crate::controller::driver::Flow::Done(a) => {
                return Ok($crate::controller::driver::Flow::Done(a));
            }
        }
    };
}
pub(crate) use step;

/// One kind's reconcile, as typed steps. `build` is pure and runs before anything is written,
/// so a bad spec changes nothing.
pub trait Pipeline: Namespaced + HasStatus {
    const KIND: &'static str;
    /// Whether the kind holds a finalizer (then a deleting resource goes to [`Self::finalize`]).
    const FINALIZES: bool = false;
    /// The objects it refers to, read from the API server (or Redis).
    type Refs: Send + Sync;
    /// Its validated children.
    type Children: Send;
    /// What applying them returned (ready replicas, …).
    type Applied: Send;

    fn dereference(
        &self,
        ctx: &Context,
        status: &mut Self::Status,
    ) -> impl Future<Output = Result<Flow<Self::Refs>>> + Send;

    fn build(&self, refs: &Self::Refs, cfg: &BuildConfig) -> Result<Self::Children, BuildError>;

    fn apply(
        &self,
        ctx: &Context,
        refs: &Self::Refs,
        children: Self::Children,
        status: &mut Self::Status,
    ) -> impl Future<Output = Result<Flow<Self::Applied>>> + Send;

    /// Fills the observed part of the status and says whether the resource is ready.
    fn observe(
        &self,
        ctx: &Context,
        refs: &Self::Refs,
        applied: Self::Applied,
        status: &mut Self::Status,
    ) -> impl Future<Output = Outcome> + Send;

    /// Cleanup of a deleting resource that holds a finalizer.
    fn finalize(&self, ctx: &Context) -> impl Future<Output = Result<Action>> + Send {
        async move {
            forget(self, ctx);
            Ok(Action::await_change())
        }
    }
}

fn forget<K: Pipeline>(obj: &K, ctx: &Context) {
    let ns = obj.namespace().unwrap_or_default();
    ctx.metrics.forget(K::KIND, &ns, &obj.name_any());
}

/// The Controller's reconcile function for every kind.
#[tracing::instrument(skip_all, fields(kind = K::KIND, namespace = ?obj.namespace(), name = %obj.name_any()))]
pub async fn reconcile<K: Pipeline>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.start(K::KIND);
    let res = run(&*obj, &ctx).await;
    if let Err(e) = &res {
        report_rejected_child(&*obj, &ctx, e).await;
    }
    timer.finish(res.as_ref().err().map(|e| e.reason().as_str()));
    res
}

async fn run<K: Pipeline>(obj: &K, ctx: &Context) -> Result<Action> {
    let current = match preamble(obj, ctx).await? {
        Flow::Next(current) => current,
        Flow::Report(_) | Flow::Done(_) => return Ok(Action::await_change()),
    };
    let mut status = current.status().cloned().unwrap_or_default();
    let outcome = match steps(&current, ctx, &mut status).await? {
        Flow::Next(outcome) | Flow::Report(outcome) => outcome,
        Flow::Done(action) => return Ok(action),
    };
    finish(&current, ctx, status, outcome).await
}

/// Nothing to do for a deleting (unless it finalizes), paused or vanished resource; otherwise
/// the resource as stored now (see [`Context::fresh`]). A paused resource costs no API call.
async fn preamble<K: Pipeline>(obj: &K, ctx: &Context) -> Result<Flow<K>> {
    let deleting = |o: &K| o.meta().deletion_timestamp.is_some();
    if deleting(obj) && !K::FINALIZES {
        forget(obj, ctx);
        return Ok(Flow::Done(Action::await_change()));
    }
    if !deleting(obj) && is_paused(obj.meta()) {
        tracing::info!("paused");
        return Ok(Flow::Done(Action::await_change()));
    }
    let Some(fresh) = ctx.fresh(obj).await? else {
        return Ok(Flow::Done(Action::await_change()));
    };
    if deleting(&fresh) {
        if K::FINALIZES {
            fresh.finalize(ctx).await?;
        }
        return Ok(Flow::Done(Action::await_change()));
    }
    if is_paused(fresh.meta()) {
        return Ok(Flow::Done(Action::await_change()));
    }
    Ok(Flow::Next(fresh))
}

async fn steps<K: Pipeline>(
    obj: &K,
    ctx: &Context,
    status: &mut K::Status,
) -> Result<Flow<Outcome>> {
    let refs = step!(obj.dereference(ctx, status).await?);
    let children = match obj.build(&refs, &ctx.config.build) {
        Ok(children) => children,
        Err(e) => return Ok(Flow::Report(Outcome::invalid_spec(&e))),
    };
    let applied = step!(obj.apply(ctx, &refs, children, status).await?);
    Ok(Flow::Next(obj.observe(ctx, &refs, applied, status).await))
}

/// Writes the outcome: Ready condition, observed generation, ready metric, Event; then the
/// requeue.
async fn finish<K: Pipeline>(
    obj: &K,
    ctx: &Context,
    mut status: K::Status,
    outcome: Outcome,
) -> Result<Action> {
    let generation = obj.meta().generation;
    let changed = status
        .condition(ConditionType::Ready)
        .is_none_or(|c| c.reason != outcome.reason.as_str());
    set(
        status.conditions_mut(),
        ConditionType::Ready,
        ConditionStatus::from(outcome.ready),
        outcome.reason,
        outcome.message.clone(),
        generation,
    );
    status.set_observed_generation(generation);
    let ns = obj.namespace().unwrap_or_default();
    ctx.metrics
        .set_ready(K::KIND, &ns, &obj.name_any(), outcome.ready);
    let event = match outcome.announce {
        Announce::Always(t, a) => Some((t, a)),
        Announce::OnChange(t, a) if changed => Some((t, a)),
        _ => None,
    };
    if let Some((type_, action)) = event {
        ctx.event(obj, type_, outcome.reason, action, outcome.message)
            .await;
    }
    ctx.apply_status(obj, &status).await?;
    Ok(match outcome.requeue {
        Requeue::Resync => Action::requeue(ctx.config.resync),
        Requeue::Wait => Action::requeue(ctx.config.wait_interval),
        Requeue::Stream => Action::requeue(ctx.config.stream_interval),
        Requeue::AwaitChange => Action::await_change(),
        Requeue::Fail(e) => return Err(e),
    })
}

/// When the API server refused to store a child, the spec asks for something that cannot
/// happen. Say so on the resource (Ready=False `ChildRejected` with the server's message,
/// observed at this generation) and in a Warning Event, not only in the operator's log.
async fn report_rejected_child<K: Pipeline>(obj: &K, ctx: &Context, err: &Error) {
    let Some(rejection) = err.rejected_child() else {
        return;
    };
    let Ok(Some(fresh)) = ctx.fresh(obj).await else {
        return;
    };
    let outcome = Outcome {
        ready: false,
        reason: Reason::ChildRejected,
        message: rejection.message.clone(),
        announce: Announce::Always(EventType::Warning, EventAction::Apply),
        requeue: Requeue::AwaitChange,
    };
    let status = fresh.status().cloned().unwrap_or_default();
    if let Err(e) = finish(&fresh, ctx, status, outcome).await {
        tracing::warn!(error = %e, "could not record the rejected child");
    }
}
