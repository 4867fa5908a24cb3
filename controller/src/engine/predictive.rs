//! The predictive policy's proposal: replicas for the highest forecast load of the look-ahead.
//!
//! The forecast itself comes from `forecast::Predictor` (the same code in the controller and the backtest);
//! here it only becomes a vote. Through the engine's any-up / all-down rule the forecast acts as a floor: it
//! can raise replicas ahead of load, but never pull them below what a reactive policy wants.

use super::{
    format,
    policy::{MetricSpec, PredictiveMode, PredictiveRule},
    recommendation::{PolicyId, Proposal},
    snapshot::Forecast,
    target::ceil_replicas,
};

/// What the predictive rule proposes, given its forecast (None when none could be computed).
pub fn propose(rule: &PredictiveRule, metric: &MetricSpec, forecast: Option<&Forecast>) -> Proposal {
    let policy = PolicyId::Predictive(rule.metric.clone());
    let shadow = rule.mode == PredictiveMode::Shadow;
    let abstain = |reason: String| Proposal { policy: policy.clone(), replicas: None, reason, shadow, floor: None };
    match forecast {
        None => abstain("no forecast available".into()),
        Some(Forecast::Abstain { reason, .. }) => abstain(reason.clone()),
        Some(Forecast::Ready { error, .. }) if *error > rule.max_error => {
            abstain(format!("forecast error {:.0}% above maxError {:.0}%", error * 100.0, rule.max_error * 100.0))
        }
        Some(Forecast::Ready { peak, .. }) => {
            let required = required_replicas(rule, *peak);
            let reason = format!(
                "forecast {} {} within {} needs {required} at {} each",
                rule.metric,
                format::value(metric.kind, *peak),
                format::duration(rule.lookahead),
                format::value(metric.kind, rule.capacity_per_replica),
            );
            Proposal { policy, replicas: Some(required), reason, shadow, floor: None }
        }
    }
}

/// Replicas needed for a load: ceil(load / capacityPerReplica).
pub fn required_replicas(rule: &PredictiveRule, load: f64) -> u32 {
    ceil_replicas(load / rule.capacity_per_replica)
}
