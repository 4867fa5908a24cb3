//! Standard `meta/v1` conditions, computed purely from the old list and what this evaluation found.
//!
//! `lastTransitionTime` moves only when a condition's status really changes; reason, message and
//! `observedGeneration` are refreshed every time. Conditions this evaluation says nothing about (for example the
//! metric conditions when the target is missing) are kept as they were.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
pub const SCALING_ACTIVE: &str = "ScalingActive";
pub const SCALING_LIMITED: &str = "ScalingLimited";
pub const REPLICA_FIGHT: &str = "ReplicaFight";
/// Another ScalingPolicy, an HPA or a KEDA ScaledObject targets the same workload (see `conflicts`).
pub const CONFLICT: &str = "Conflict";

/// The order conditions are written in, so that status diffs stay small and readable.
const ORDER: [&str; 6] = [READY, METRICS_AVAILABLE, SCALING_ACTIVE, SCALING_LIMITED, REPLICA_FIGHT, CONFLICT];

/// What one evaluation says about one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Observed { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// The new condition list: `observed` merged into `old`, transition times kept unless the status flipped.
pub fn compute(old: &[Condition], observed: &[Observed], generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let mut out: Vec<Condition> = old.to_vec();
    for o in observed {
        let status = if o.status { "True" } else { "False" };
        let previous = old.iter().find(|c| c.type_ == o.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Time(now),
        };
        let condition = Condition {
            type_: o.type_.to_string(),
            status: status.to_string(),
            reason: o.reason.clone(),
            message: o.message.clone(),
            observed_generation: generation,
            last_transition_time,
        };
        match out.iter_mut().find(|c| c.type_ == o.type_) {
            Some(slot) => *slot = condition,
            None => out.push(condition),
        }
    }
    out.sort_by_key(|c| ORDER.iter().position(|t| *t == c.type_).unwrap_or(ORDER.len()));
    out
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition of that type is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).expect("valid")
    }

    #[test]
    fn a_new_condition_starts_its_transition_now() {
        let out = compute(&[], &[Observed::new(READY, true, "Evaluated", "ok")], Some(3), at(10));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "True");
        assert_eq!(out[0].last_transition_time, Time(at(10)));
        assert_eq!(out[0].observed_generation, Some(3));
    }

    #[test]
    fn same_status_keeps_the_transition_time_but_refreshes_the_rest() {
        let old = compute(&[], &[Observed::new(SCALING_LIMITED, true, "MaxReplicas", "capped")], Some(1), at(0));
        let out = compute(&old, &[Observed::new(SCALING_LIMITED, true, "Cooldown", "cooling")], Some(2), at(60));
        assert_eq!(out[0].last_transition_time, Time(at(0)));
        assert_eq!((out[0].reason.as_str(), out[0].message.as_str()), ("Cooldown", "cooling"));
        assert_eq!(out[0].observed_generation, Some(2));
    }

    #[test]
    fn a_flip_moves_the_transition_time() {
        let old = compute(&[], &[Observed::new(METRICS_AVAILABLE, true, "MetricsRead", "")], Some(1), at(0));
        let out = compute(&old, &[Observed::new(METRICS_AVAILABLE, false, "NoMetrics", "cpu")], Some(1), at(30));
        assert_eq!(out[0].status, "False");
        assert_eq!(out[0].last_transition_time, Time(at(30)));
    }

    #[test]
    fn conditions_not_observed_are_kept_and_order_is_stable() {
        let old = compute(
            &[],
            &[
                Observed::new(REPLICA_FIGHT, false, "NoFight", ""),
                Observed::new(METRICS_AVAILABLE, true, "MetricsRead", ""),
                Observed::new(READY, true, "Evaluated", ""),
            ],
            Some(1),
            at(0),
        );
        let types: Vec<&str> = old.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, METRICS_AVAILABLE, REPLICA_FIGHT]);
        let out = compute(&old, &[Observed::new(READY, false, "TargetNotFound", "gone")], Some(1), at(5));
        assert_eq!(out.len(), 3);
        assert_eq!(find(&out, METRICS_AVAILABLE), find(&old, METRICS_AVAILABLE));
        assert!(!is_true(&out, READY));
        assert_eq!(find(&out, READY).map(|c| c.last_transition_time.clone()), Some(Time(at(5))));
    }

    #[test]
    fn recomputing_the_same_observation_changes_nothing() {
        let obs = [Observed::new(READY, true, "Evaluated", "ok"), Observed::new(SCALING_ACTIVE, false, "DryRun", "")];
        let first = compute(&[], &obs, Some(1), at(0));
        assert_eq!(compute(&first, &obs, Some(1), at(99)), first);
    }
}
