//! From the CRD spec to the engine's policy: defaults applied, durations parsed, cross-field rules checked.
//!
//! The API server already enforces these rules through the CRD's schema and CEL validations; they are checked
//! again here because a policy can reach the controller without them (an older CRD installed, a cluster
//! without CEL, the backtest reading a file). A failure here is reported in the `Ready` condition.

use std::time::Duration;

use super::spec::{self, ScalingPolicySpec};
use crate::engine::policy::{
    Amount, Bound, DirectionRules, Fallback, MetricKind, MetricSpec, Policy, PredictiveMode, PredictiveRule, RateLimit,
    SeasonalitySpec, Select, TargetKind, TargetRule, ThresholdRule,
};

/// Default evaluation interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Default number of history entries kept in status.
pub const DEFAULT_HISTORY_LIMIT: usize = 20;

/// Why a policy spec cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidPolicy {
    #[error("minReplicas ({min}) must not be greater than maxReplicas ({max})")]
    MinAboveMax { min: i32, max: i32 },
    #[error("{field} must be at least {least}, got {value}")]
    TooSmall { field: String, least: i64, value: i64 },
    #[error(
        "metric {metric:?} needs exactly one source (cpu, memory, latency, errorRate, requestRate or query), found {found}"
    )]
    MetricSources { metric: String, found: usize },
    #[error("metric name {0:?} is used twice")]
    DuplicateMetric(String),
    #[error("{policy} refers to metric {metric:?}, which is not in spec.metrics")]
    UnknownMetric { policy: String, metric: String },
    #[error("at least one policy (threshold, target or predictive) is required")]
    NoPolicy,
    #[error("threshold policy for {metric:?}: scaleUpAbove ({up}) must be greater than scaleDownBelow ({down})")]
    ThresholdOrder { metric: String, up: f64, down: f64 },
    #[error("threshold policy for {metric:?}: set scaleUpAbove, scaleDownBelow or both")]
    ThresholdEmpty { metric: String },
    #[error("{field} must be a finite number greater than 0, got {value}")]
    NotPositive { field: String, value: f64 },
    #[error("latency quantile of metric {metric:?} must be between 0 and 1 (exclusive), got {value}")]
    Quantile { metric: String, value: f64 },
    #[error("interval must be at least 1s")]
    IntervalTooShort,
}

impl TryFrom<&ScalingPolicySpec> for Policy {
    type Error = InvalidPolicy;

    fn try_from(spec: &ScalingPolicySpec) -> Result<Self, Self::Error> {
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        at_least("minReplicas", min.into(), 0)?;
        at_least("maxReplicas", max.into(), 1)?;
        if min > max {
            return Err(InvalidPolicy::MinAboveMax { min, max });
        }
        let interval = spec.interval.map(|d| d.std()).unwrap_or(DEFAULT_INTERVAL);
        if interval < Duration::from_secs(1) {
            return Err(InvalidPolicy::IntervalTooShort);
        }

        let mut metrics: Vec<MetricSpec> = Vec::with_capacity(spec.metrics.len());
        for m in &spec.metrics {
            if metrics.iter().any(|x| x.name == m.name) {
                return Err(InvalidPolicy::DuplicateMetric(m.name.clone()));
            }
            let kind = metric_kind(m)?;
            if let Some(l) = &m.latency
                && !(l.quantile > 0.0 && l.quantile < 1.0)
            {
                return Err(InvalidPolicy::Quantile { metric: m.name.clone(), value: l.quantile });
            }
            metrics.push(MetricSpec {
                name: m.name.clone(),
                kind,
                veto_above: m.veto_scale_down.as_ref().map(|v| v.above),
                allow_negative: m.query.as_ref().is_some_and(|q| q.allow_negative),
            });
        }
        let known = |policy: &str, metric: &str| {
            if metrics.iter().any(|m| m.name == metric) {
                Ok(())
            } else {
                Err(InvalidPolicy::UnknownMetric { policy: policy.into(), metric: metric.into() })
            }
        };

        let mut thresholds = Vec::new();
        for t in &spec.policies.threshold {
            known("threshold policy", &t.metric)?;
            if t.scale_up_above.is_none() && t.scale_down_below.is_none() {
                return Err(InvalidPolicy::ThresholdEmpty { metric: t.metric.clone() });
            }
            if let (Some(up), Some(down)) = (t.scale_up_above, t.scale_down_below)
                && up <= down
            {
                return Err(InvalidPolicy::ThresholdOrder { metric: t.metric.clone(), up, down });
            }
            let bound =
                |value: Option<f64>, for_: Option<super::Duration>, default_for: u64, step: &Option<spec::Step>| {
                    value.map(|value| Bound {
                        value,
                        for_: for_.map(|d| d.std()).unwrap_or(Duration::from_secs(default_for)),
                        step: step.as_ref().map(|s| amount(s.type_, s.value)).unwrap_or(Amount::Pods(1)),
                    })
                };
            thresholds.push(ThresholdRule {
                metric: t.metric.clone(),
                up: bound(t.scale_up_above, t.scale_up_for, 120, &t.scale_up_step),
                down: bound(t.scale_down_below, t.scale_down_for, 300, &t.scale_down_step),
            });
        }

        let mut targets = Vec::new();
        for t in &spec.policies.target {
            known("target policy", &t.metric)?;
            positive(&format!("target value of {:?}", t.metric), t.value)?;
            targets.push(TargetRule {
                metric: t.metric.clone(),
                target: t.value,
                kind: match t.type_.unwrap_or_default() {
                    spec::TargetType::Value => TargetKind::Value,
                    spec::TargetType::AverageValue => TargetKind::AverageValue,
                },
                tolerance: t.tolerance.unwrap_or(0.1).clamp(0.0, 0.99),
            });
        }

        let predictive = match &spec.policies.predictive {
            None => None,
            Some(p) => {
                known("predictive policy", &p.metric)?;
                positive("capacityPerReplica", p.capacity_per_replica)?;
                Some(PredictiveRule {
                    metric: p.metric.clone(),
                    capacity_per_replica: p.capacity_per_replica,
                    lookahead: p.lookahead.map(|d| d.std()).unwrap_or(Duration::from_secs(15 * 60)),
                    history: p.history.map(|d| d.std()).unwrap_or(Duration::from_secs(7 * 86_400)),
                    step: p.step.map(|d| d.std()).unwrap_or(Duration::from_secs(300)).max(Duration::from_secs(1)),
                    seasonality: match p.seasonality {
                        None => SeasonalitySpec::Auto,
                        Some(spec::Seasonality::None) => SeasonalitySpec::None,
                        Some(spec::Seasonality::Daily) => SeasonalitySpec::Daily,
                        Some(spec::Seasonality::Weekly) => SeasonalitySpec::Weekly,
                        Some(spec::Seasonality::DailyWeekly) => SeasonalitySpec::DailyWeekly,
                    },
                    min_samples: p.min_samples.unwrap_or(10).max(3) as usize,
                    max_error: p.max_error.unwrap_or(0.5),
                    mode: match p.mode.unwrap_or_default() {
                        spec::PredictiveMode::Scale => PredictiveMode::Scale,
                        spec::PredictiveMode::Shadow => PredictiveMode::Shadow,
                    },
                })
            }
        };
        if thresholds.is_empty() && targets.is_empty() && predictive.is_none() {
            return Err(InvalidPolicy::NoPolicy);
        }

        let behavior = spec.behavior.clone().unwrap_or_default();
        let up = direction(behavior.scale_up.as_ref(), DirectionRules::default_up());
        let down = direction(behavior.scale_down.as_ref(), DirectionRules::default_down());
        let fallback = Fallback {
            failure_threshold: spec.fallback.as_ref().and_then(|f| f.failure_threshold).unwrap_or(3).max(1) as u32,
            replicas: spec.fallback.as_ref().and_then(|f| f.replicas).map(|r| r.clamp(1, max) as u32),
        };

        Ok(Policy {
            min_replicas: min as u32,
            max_replicas: max as u32,
            interval,
            metrics,
            thresholds,
            targets,
            predictive,
            up,
            down,
            fallback,
            // Four missed evaluations, but never less than 2 minutes: one slow scrape is not "stale".
            staleness: (interval * 4).max(Duration::from_secs(120)),
        })
    }
}

/// The kind of a metric, from its single source.
fn metric_kind(m: &spec::Metric) -> Result<MetricKind, InvalidPolicy> {
    let kinds = [
        m.cpu.as_ref().map(|_| MetricKind::Cpu),
        m.memory.as_ref().map(|_| MetricKind::Memory),
        m.latency.as_ref().map(|_| MetricKind::Latency),
        m.error_rate.as_ref().map(|_| MetricKind::ErrorRate),
        m.request_rate.as_ref().map(|_| MetricKind::RequestRate),
        m.query.as_ref().map(|_| MetricKind::Query),
    ];
    let found: Vec<MetricKind> = kinds.into_iter().flatten().collect();
    match found[..] {
        [kind] => Ok(kind),
        _ => Err(InvalidPolicy::MetricSources { metric: m.name.clone(), found: found.len() }),
    }
}

fn amount(t: spec::StepType, value: i32) -> Amount {
    let v = value.max(1) as u32;
    match t {
        spec::StepType::Pods => Amount::Pods(v),
        spec::StepType::Percent => Amount::Percent(v),
    }
}

/// Applies a user's rules over the direction's defaults, field by field, as the HPA does.
fn direction(rules: Option<&spec::ScalingRules>, default: DirectionRules) -> DirectionRules {
    let Some(r) = rules else { return default };
    DirectionRules {
        cooldown: r.cooldown.map(|d| d.std()).unwrap_or(default.cooldown),
        stabilization: r.stabilization_window.map(|d| d.std()).unwrap_or(default.stabilization),
        limits: match &r.policies {
            Some(p) => p
                .iter()
                .map(|p| RateLimit {
                    amount: amount(p.type_, p.value),
                    period: Duration::from_secs(p.period_seconds.clamp(1, 1800) as u64),
                })
                .collect(),
            None => default.limits,
        },
        select: match r.select_policy {
            None => default.select,
            Some(spec::SelectPolicy::Max) => Select::Max,
            Some(spec::SelectPolicy::Min) => Select::Min,
            Some(spec::SelectPolicy::Disabled) => Select::Disabled,
        },
    }
}

fn at_least(field: &str, value: i64, least: i64) -> Result<(), InvalidPolicy> {
    if value < least { Err(InvalidPolicy::TooSmall { field: field.into(), least, value }) } else { Ok(()) }
}

fn positive(field: &str, value: f64) -> Result<(), InvalidPolicy> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(InvalidPolicy::NotPositive { field: field.into(), value })
    }
}
