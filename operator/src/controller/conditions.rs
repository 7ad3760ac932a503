//! `status.conditions` bookkeeping: a transition time changes only when the status does.

use crate::crd::Condition;

pub const READY: &str = "Ready";

/// Sets one condition in place. `status` is `True`, `False` or `Unknown`.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &str,
) {
    let message = message.into();
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

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Reason of the Ready condition when the API server refused a child the spec asks for.
pub const CHILD_REJECTED: &str = "ChildRejected";

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_a_status_change() {
        let mut c = vec![];
        set(&mut c, READY, "False", "Waiting", "m", Some(1), "t1");
        set(&mut c, READY, "False", "StillWaiting", "m2", Some(2), "t2");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, "t1");
        assert_eq!(c[0].reason, "StillWaiting");
        assert_eq!(c[0].observed_generation, Some(2));
        set(&mut c, READY, "True", "Ready", "", Some(2), "t3");
        assert_eq!(c[0].last_transition_time, "t3");
        assert!(is_true(&c, READY));
    }
}
