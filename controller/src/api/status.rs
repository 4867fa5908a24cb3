//! The `ScalingPolicy` status: what Foresight saw, decided and did.
//!
//! Status is also Foresight's memory. Cooldowns and rate limits are computed from `history`, stabilization from
//! `recommendations`, and the fallback from `consecutiveMetricFailures`, so a restarted (or newly elected)
//! controller continues exactly where the last one stopped.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a ScalingPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::spec::unwrap_descriptions)]
pub struct ScalingPolicyStatus {
    /// The metadata.generation of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas of the target at the last evaluation (its /scale spec.replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// Replicas Foresight wants after the last evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When Foresight last changed the target's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// The most recent evaluation, with every metric value and every policy's proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation: Option<Evaluation>,
    /// Ready, MetricsAvailable, ScalingActive, ScalingLimited, ReplicaFight and Conflict (another autoscaler on
    /// the same target), as standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Changes of the target's replicas, newest first, by Foresight or by someone else (external).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// A change of replicas Foresight is making: written before the /scale patch and moved into history
    /// after it. It outlives that moment only if the controller stopped in between; the next evaluation then
    /// records it as Foresight's scale if the target has the announced replicas, and drops it otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_scale: Option<HistoryEntry>,
    /// Recent replica recommendations (one entry per change of value), used by the stabilization windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<RecommendationRecord>,
    /// Evaluations in a row in which no metric could be read; drives spec.fallback.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_metric_failures: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// One evaluation of the policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// When the evaluation ran.
    pub time: Time,
    /// Every metric's latest value (absent when missing) and its state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricValue>,
    /// What each policy proposed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proposals: Vec<Proposal>,
    /// The predictive policy's forecast, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// ScaleUp, ScaleDown or Hold.
    pub decision: String,
    /// The decision in words, e.g. "cpu 86% > 70% for 2m".
    pub reason: String,
    /// Why the result differs from what the policies asked for (MaxReplicas, RateLimit, Cooldown, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limited_by: Vec<String>,
}

/// A metric's value at an evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// The metric's name from spec.metrics.
    pub name: String,
    /// The latest value; absent when the metric is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The value in its unit next to the targets and bounds that use it, for people: "153% / target 70%",
    /// "310ms > 300ms (scale-up bound)", or why it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Ok, or why the value is missing: Empty (no series), NotFound (no series at any evaluation since the spec
    /// was applied), NotANumber, Stale, QueryFailed, Negative, NoRequests.
    pub state: String,
    /// The replicas the policies using this metric proposed (the largest), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<i32>,
}

/// One policy's proposal at an evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    /// The policy, e.g. threshold/cpu, target/rps or predictive/rps.
    pub policy: String,
    /// The replicas it proposed; absent when it abstained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Why, in words.
    pub reason: String,
}

/// The predictive policy's view at an evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// The highest forecast of the load metric within the horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<f64>,
    /// How far ahead the forecast looks.
    pub horizon: String,
    /// Replicas needed for the forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_replicas: Option<i32>,
    /// History samples the model was fitted on.
    pub samples: i32,
    /// The model's error on the most recent held-out history (a fraction; 0.1 = 10 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<f64>,
    /// The periods the model repeats, shortest first, e.g. ["1h", "1d"] (with seasonality Auto, the ones found
    /// in the history).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub periods: Vec<String>,
    /// The headroom included in forecast above the model's own peak, in the metric's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// How the margin was set, e.g. "95.0% quantile of 190 out-of-sample peak errors".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_basis: Option<String>,
    /// Whether the forecast took part in the decision (false in Shadow mode or when it abstained).
    pub used: bool,
    /// Why it was used or not.
    pub reason: String,
}

/// A change of the target's replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When the change happened (or, for an external change, when Foresight noticed it).
    pub time: Time,
    /// Replicas before.
    pub from: i32,
    /// Replicas after.
    pub to: i32,
    /// Why, in words.
    pub reason: String,
    /// The policy that won (e.g. threshold/cpu), or "external" for a change made by someone else.
    pub policy: String,
    /// The metric values the decision was based on, as "name=value" pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
}

/// A past recommendation, kept for the stabilization windows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendationRecord {
    /// From when this recommendation held.
    pub time: Time,
    /// The recommended replicas.
    pub replicas: i32,
}

/// The `policy` value of a history entry that records a change made by someone else.
pub const EXTERNAL: &str = "external";

/// Converts a status time to the engine's timestamp.
pub fn timestamp(t: &Time) -> Timestamp {
    t.0
}
