//! EventStream: its finalizer (only while `deletionPolicy: Delete`, because only then is there
//! Redis state to clean up) → the stream's plan from the spec (pure) → create stream and
//! groups, trim by age (never past what a group still needs), read the figures → Ready.

mod finalizer;
mod sync;

use std::sync::Arc;

use kube::runtime::controller::Action;

pub use finalizer::FINALIZER;
use sync::Plan;

use super::conditions::{self, ConditionType, EventAction, Reason};
use super::context::Context;
use super::driver::{self, Flow, Outcome, Pipeline, Requeue};
use super::error::Result;
use crate::build::{BuildConfig, BuildError};
use crate::crd::{EventStream, EventStreamStatus};

pub const KIND: &str = "EventStream";

pub async fn reconcile(es: Arc<EventStream>, ctx: Arc<Context>) -> Result<Action> {
    driver::reconcile(es, ctx).await
}

impl Pipeline for EventStream {
    const KIND: &'static str = KIND;
    const FINALIZES: bool = true;
    type Refs = ();
    type Children = Plan;
    type Applied = ();

    async fn dereference(&self, ctx: &Context, _: &mut EventStreamStatus) -> Result<Flow<()>> {
        // A finalizer write triggers the next reconcile with a fresh object.
        Ok(match finalizer::sync(self, ctx).await? {
            true => Flow::Done(Action::await_change()),
            false => Flow::Next(()),
        })
    }

    fn build(&self, _: &(), _: &BuildConfig) -> Result<Plan, BuildError> {
        Plan::of(self)
    }

    async fn apply(
        &self,
        ctx: &Context,
        _: &(),
        plan: Plan,
        status: &mut EventStreamStatus,
    ) -> Result<Flow<()>> {
        Ok(match sync::run(self, ctx, &plan, status).await {
            Ok(()) => Flow::Next(()),
            Err(e) => Flow::Report(Outcome::failed(e, EventAction::SyncStream)),
        })
    }

    async fn observe(&self, _: &Context, _: &(), _: (), status: &mut EventStreamStatus) -> Outcome {
        let msg = format!(
            "stream {} and {} group(s) exist",
            self.spec.stream,
            status.groups.len()
        );
        Outcome::ready(Reason::StreamReady, msg, Requeue::Stream)
    }

    async fn finalize(&self, ctx: &Context) -> Result<Action> {
        finalizer::cleanup(self, ctx).await
    }
}

/// Whether an EventStream is ready for consumers: Ready and observed at its generation.
pub fn is_ready(es: &EventStream) -> bool {
    es.status.as_ref().is_some_and(|s| {
        s.observed_generation == es.metadata.generation
            && conditions::is_true(&s.conditions, ConditionType::Ready)
    })
}
