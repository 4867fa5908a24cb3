//! The engine's answer: the desired replicas, every policy's proposal, and why the result is what it is.
//!
//! One value carries the whole story so that status, events, logs and the backtest all tell the same one.

use std::{fmt, time::Duration};

use jiff::Timestamp;

use super::snapshot::RecommendationRecord;

/// The direction of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    ScaleUp,
    ScaleDown,
    Hold,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::ScaleUp => "ScaleUp",
            Decision::ScaleDown => "ScaleDown",
            Decision::Hold => "Hold",
        }
    }
}

/// Up or down, for limits that apply to one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// Why a metric has no usable value.
#[derive(Clone, Debug, PartialEq)]
pub enum Missing {
    /// The query returned no series or no samples.
    Empty,
    /// The latest value is NaN or infinite.
    NotANumber,
    /// The latest sample is older than the staleness bound.
    Stale { age: Duration },
    /// The query failed.
    QueryFailed(String),
    /// A value this source cannot have (a negative CPU, latency, rate...): not believed.
    Negative { value: f64 },
    /// A latency or error rate over a window with no requests (Prometheus answers 0/0 = NaN). Not an outage:
    /// it neither blocks a scale-down nor asks for a scale-up.
    NoRequests,
}

impl Missing {
    /// A CamelCase word for status and condition reasons.
    pub fn state(&self) -> &'static str {
        match self {
            Missing::Empty => "Empty",
            Missing::NotANumber => "NotANumber",
            Missing::Stale { .. } => "Stale",
            Missing::QueryFailed(_) => "QueryFailed",
            Missing::Negative { .. } => "Negative",
            Missing::NoRequests => "NoRequests",
        }
    }

    /// Whether this absence blocks scale-down (everything but "no requests": zero traffic is not missing data).
    pub fn blocks(&self) -> bool {
        !matches!(self, Missing::NoRequests)
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Empty => f.write_str("no data"),
            Missing::NotANumber => f.write_str("value is NaN or infinite"),
            Missing::Stale { age } => write!(f, "latest sample is {}s old", age.as_secs()),
            Missing::QueryFailed(why) => write!(f, "query failed: {why}"),
            Missing::Negative { value } => write!(
                f,
                "value {value} is negative, which this source cannot be (a query metric may set allowNegative)"
            ),
            Missing::NoRequests => f.write_str("no requests in the window"),
        }
    }
}

/// A metric's latest value, or why there is none.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub metric: String,
    pub value: Result<f64, Missing>,
}

/// Which policy a proposal comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyId {
    Threshold(String),
    Target(String),
    Demand(String),
    Predictive(String),
    Fallback,
}

impl PolicyId {
    pub fn metric(&self) -> Option<&str> {
        match self {
            PolicyId::Threshold(m) | PolicyId::Target(m) | PolicyId::Demand(m) | PolicyId::Predictive(m) => Some(m),
            PolicyId::Fallback => None,
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyId::Threshold(m) => write!(f, "threshold/{m}"),
            PolicyId::Target(m) => write!(f, "target/{m}"),
            PolicyId::Demand(m) => write!(f, "demand/{m}"),
            PolicyId::Predictive(m) => write!(f, "predictive/{m}"),
            PolicyId::Fallback => f.write_str("fallback"),
        }
    }
}

/// What one policy proposed. `replicas: None` means it abstained (missing data, or no opinion).
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub policy: PolicyId,
    pub replicas: Option<u32>,
    pub reason: String,
    /// The proposal is recorded but takes no part in the decision (a shadow-mode forecast).
    pub shadow: bool,
    /// A hold that does not stand in the way of a scale-down: the rule is inside its tolerance band, so it
    /// starts no change itself, but another rule may scale down to this many replicas (the rule's own count
    /// without the band, at which its metric stays inside the band). `None`: `replicas` is what the rule needs.
    pub floor: Option<u32>,
}

/// Why the result differs from what the policies asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum LimitedBy {
    /// Clamped to spec.maxReplicas.
    MaxReplicas,
    /// Clamped to spec.minReplicas.
    MinReplicas,
    /// Held back by a rate limit (behavior.*.policies).
    RateLimit { direction: Direction, limit: u32 },
    /// A cooldown after the last change is still running.
    Cooldown { direction: Direction, until: Timestamp },
    /// The stabilization window holds an earlier recommendation (`held`), until `until` at the earliest.
    Stabilized { direction: Direction, window: Duration, held: u32, until: Option<Timestamp> },
    /// Scale-down blocked because these metrics are missing.
    MissingMetrics { metrics: Vec<String> },
    /// Scale-down blocked by a metric's vetoScaleDown bound (value and bound in the metric's unit).
    Vetoed { metric: String, value: String, bound: String },
    /// The direction is disabled (selectPolicy: Disabled).
    Disabled { direction: Direction },
    /// The target has 0 replicas: autoscaling is off until someone scales it up.
    ScalingDisabled,
}

impl LimitedBy {
    /// A CamelCase word for status, conditions and events.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitedBy::MaxReplicas => "MaxReplicas",
            LimitedBy::MinReplicas => "MinReplicas",
            LimitedBy::RateLimit { .. } => "RateLimit",
            LimitedBy::Cooldown { .. } => "Cooldown",
            LimitedBy::Stabilized { .. } => "Stabilized",
            LimitedBy::MissingMetrics { .. } => "MissingMetrics",
            LimitedBy::Vetoed { .. } => "Vetoed",
            LimitedBy::Disabled { .. } => "Disabled",
            LimitedBy::ScalingDisabled => "ScalingDisabled",
        }
    }
}

impl LimitedBy {
    /// The reason of the `ScalingLimited` condition, in the HPA's vocabulary where it has one.
    pub fn condition_reason(&self) -> &'static str {
        match self {
            LimitedBy::MaxReplicas => "TooManyReplicas",
            LimitedBy::MinReplicas => "TooFewReplicas",
            LimitedBy::RateLimit { direction: Direction::Up, .. } => "ScaleUpLimit",
            LimitedBy::RateLimit { direction: Direction::Down, .. } => "ScaleDownLimit",
            LimitedBy::Cooldown { .. } => "CooldownActive",
            LimitedBy::Stabilized { direction: Direction::Up, .. } => "ScaleUpStabilized",
            LimitedBy::Stabilized { direction: Direction::Down, .. } => "ScaleDownStabilized",
            LimitedBy::MissingMetrics { .. } => "FailedGetMetric",
            LimitedBy::Vetoed { .. } => "ScaleDownVetoed",
            LimitedBy::Disabled { .. } => "ScalingPolicyDisabled",
            LimitedBy::ScalingDisabled => "ScalingDisabled",
        }
    }
}

impl fmt::Display for LimitedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitedBy::MaxReplicas => f.write_str("capped at maxReplicas"),
            LimitedBy::MinReplicas => f.write_str("raised to minReplicas"),
            LimitedBy::RateLimit { direction, limit } => write!(f, "scale-{direction} rate limit allows {limit}"),
            LimitedBy::Cooldown { direction, until } => write!(f, "scale-{direction} cooldown until {until}"),
            LimitedBy::Stabilized { direction, window, held, until } => {
                let which = if *direction == Direction::Up { "lowest" } else { "highest" };
                write!(
                    f,
                    "scale-{direction} stabilization holds {held} ({which} recommendation of the last {})",
                    super::format::duration(*window)
                )?;
                match until {
                    Some(t) => write!(f, " until {t}"),
                    None => Ok(()),
                }
            }
            LimitedBy::MissingMetrics { metrics } => {
                write!(f, "no scale-down while metrics are missing: {}", metrics.join(", "))
            }
            LimitedBy::Vetoed { metric, value, bound } => write!(f, "{metric} {value} > {bound} blocks scale-down"),
            LimitedBy::Disabled { direction } => write!(f, "scale-{direction} is disabled"),
            LimitedBy::ScalingDisabled => f.write_str("target has 0 replicas; autoscaling is disabled"),
        }
    }
}

/// The engine's decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub current: u32,
    pub desired: u32,
    pub decision: Decision,
    /// Every metric's latest value, in spec order.
    pub readings: Vec<Reading>,
    /// Every policy's proposal, in spec order (thresholds, targets, demand, predictive).
    pub proposals: Vec<Proposal>,
    /// The policy whose proposal decided a scale, if any.
    pub winner: Option<PolicyId>,
    pub limited_by: Vec<LimitedBy>,
    /// The decision in words, for status, events and logs.
    pub reason: String,
    /// The stabilization records to store for the next evaluation (oldest first).
    pub recommendations: Vec<RecommendationRecord>,
    /// Evaluations in a row with no usable metric, including this one.
    pub consecutive_failures: u32,
    /// The fallback decided this evaluation.
    pub fallback_active: bool,
}

impl Recommendation {
    /// When the timed waits (cooldowns, stabilization) that limited this decision have all passed: the earliest
    /// time the next change can happen, when more than one of them stacks.
    pub fn earliest_change(&self) -> Option<Timestamp> {
        let untils: Vec<Timestamp> = self
            .limited_by
            .iter()
            .filter_map(|l| match l {
                LimitedBy::Cooldown { until, .. } => Some(*until),
                LimitedBy::Stabilized { until, .. } => *until,
                _ => None,
            })
            .collect();
        (untils.len() > 1).then(|| untils.into_iter().max()).flatten()
    }

    /// The metrics that had no usable value (not counting those that saw no requests).
    pub fn missing_metrics(&self) -> impl Iterator<Item = (&str, &Missing)> {
        self.readings
            .iter()
            .filter_map(|r| r.value.as_ref().err().filter(|m| m.blocks()).map(|m| (r.metric.as_str(), m)))
    }

    /// The metrics whose window had no requests.
    pub fn idle_metrics(&self) -> impl Iterator<Item = &str> {
        self.readings.iter().filter(|r| r.value == Err(Missing::NoRequests)).map(|r| r.metric.as_str())
    }

    /// The forecast raised replicas: the winner of a scale-up is the predictive policy.
    pub fn is_predictive_scale_up(&self) -> bool {
        self.decision == Decision::ScaleUp && matches!(self.winner, Some(PolicyId::Predictive(_)))
    }
}
