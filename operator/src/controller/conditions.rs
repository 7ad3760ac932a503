//! Typed `status.conditions`: condition types, reasons and Event actions are enums, a
//! condition's status is a [`ConditionStatus`]; the strings exist only where they are written.
//! A transition time changes only when the status does.

use crate::crd::{
    Condition, ConditionStatus, EventStream, EventStreamStatus, Ingester, IngesterStatus,
    QueryNode, QueryNodeStatus, StorageElement, StorageElementStatus,
};

/// Declares a fieldless enum whose variants are written as their own names.
macro_rules! named {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => stringify!($v)),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(
    /// The conditions the operator sets.
    ConditionType {
        /// The resource does what its spec asks.
        Ready,
        /// StorageElement: what became of the last `artstore.io/rebuild` value.
        RebuildRequest,
        /// StorageElement: whether the operator could read the element's own status.
        ElementReachable,
    }
);

named!(
    /// Reasons of conditions and of Events (one namespace, as in Kubernetes).
    Reason {
        // Shared by every kind.
        InvalidSpec,
        ChildRejected,
        Available,
        Starting,
        WaitingForStream,
        // Failures, by what failed (also the `reason` label of the error metric).
        KubeApiError,
        RedisError,
        SecretUnavailable,
        RedisUnavailable,
        // StorageElement.
        Migrating,
        Migrated,
        MigrationFailed,
        RebuildStarted,
        RebuildQueued,
        RebuildSucceeded,
        RebuildFailed,
        InvalidRebuildRequest,
        StatusRead,
        BadStatus,
        Unreachable,
        NoToken,
        // QueryNode.
        GroupCreated,
        Backfilling,
        BackfillComplete,
        BackfillFailed,
        // Ingester.
        NoWritableTargets,
        // EventStream.
        StreamReady,
        StreamDeleted,
        CleanupSkipped,
    }
);

named!(
    /// The `action` of an Event: which step of a reconcile it reports.
    EventAction {
        Validate,
        Apply,
        Gate,
        Migrate,
        Backfill,
        Rebuild,
        EnsureGroup,
        EnsureGroups,
        SyncStream,
        Cleanup,
    }
);

/// Sets one condition in place.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    set_at(
        conditions,
        type_,
        status,
        reason,
        message,
        generation,
        &now(),
    );
}

/// [`set`] at a given time (tests pin it).
pub fn set_at(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &str,
) {
    let message = message.into();
    let (type_, status, reason) = (type_.as_str(), status.as_str(), reason.as_str());
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now.to_string();
        }
        c.status = status.to_string();
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: now.to_string(),
        observed_generation: generation,
    });
}

pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find(conditions, type_).is_some_and(|c| c.is(ConditionStatus::True))
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The status of a kind, as the driver (and tests) see it: its conditions and the generation
/// they describe.
pub trait ObjectStatus: Default + Clone + serde::Serialize + Send + Sync {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observed_generation(&self) -> Option<i64>;
    fn set_observed_generation(&mut self, generation: Option<i64>);

    fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        find(self.conditions(), type_)
    }
}

/// A kind with a status subresource of type `Status`.
pub trait HasStatus {
    type Status: ObjectStatus;
    fn status(&self) -> Option<&Self::Status>;

    /// The Ready condition, if set.
    fn ready(&self) -> Option<&Condition> {
        self.status()
            .and_then(|s| s.condition(ConditionType::Ready))
    }
}

macro_rules! status_of {
    ($kind:ty, $status:ty) => {
        impl ObjectStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }

        impl HasStatus for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
        }
    };
}

status_of!(StorageElement, StorageElementStatus);
status_of!(QueryNode, QueryNodeStatus);
status_of!(Ingester, IngesterStatus);
status_of!(EventStream, EventStreamStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_a_status_change() {
        let mut c = vec![];
        let ready = ConditionType::Ready;
        let f = ConditionStatus::False;
        set_at(&mut c, ready, f, Reason::Starting, "m", Some(1), "t1");
        set_at(&mut c, ready, f, Reason::Migrating, "m2", Some(2), "t2");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, "t1");
        assert_eq!(c[0].reason, "Migrating");
        assert_eq!(c[0].observed_generation, Some(2));
        let t = ConditionStatus::True;
        set_at(&mut c, ready, t, Reason::Available, "", Some(2), "t3");
        assert_eq!(c[0].last_transition_time, "t3");
        assert!(is_true(&c, ready));
    }

    #[test]
    fn names_are_written_as_declared() {
        assert_eq!(Reason::WaitingForStream.as_str(), "WaitingForStream");
        assert_eq!(ConditionType::RebuildRequest.to_string(), "RebuildRequest");
        assert_eq!(EventAction::SyncStream.as_str(), "SyncStream");
    }
}
