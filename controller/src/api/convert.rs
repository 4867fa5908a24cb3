//! From the CRD spec to the engine's policy: defaults applied, durations parsed, cross-field rules checked.
//!
//! The API server already enforces these rules through the CRD's schema and CEL validations; they are checked
//! again here because a policy can reach the controller without them (an older CRD installed, a cluster
//! without CEL, the backtest reading a file). A failure here is reported in the `Ready` condition.

use std::time::Duration;

use super::spec::{self, ScalingPolicySpec};
use crate::engine::policy::{
    Amount, Bound, DemandRule, DirectionRules, Fallback, MetricKind, MetricSpec, Policy, PredictiveMode,
    PredictiveRule, RateLimit, SeasonalitySpec, Select, TargetKind, TargetRule, ThresholdRule,
};

/// Default coverage of the predictive policy's margin.
pub const DEFAULT_COVERAGE: f64 = 0.95;
/// Default look-ahead of a predictive policy without a start-up delay.
pub const DEFAULT_LOOKAHEAD: Duration = Duration::from_secs(15 * 60);

/// The predictive look-ahead: replicas ordered now are ready a start-up delay later and serve until those of the
/// next evaluation are, so the forecast must cover at least `[now, now + startupDelay + interval]`. Without a
/// start-up delay, the given look-ahead or 15 minutes.
fn lookahead(given: Option<Duration>, startup_delay: Option<Duration>, interval: Duration) -> Duration {
    match (given, startup_delay) {
        (given, Some(delay)) => given.unwrap_or(Duration::ZERO).max(delay + interval),
        (Some(given), None) => given,
        (None, None) => DEFAULT_LOOKAHEAD,
    }
}

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
    #[error("at least one policy (threshold, target, demand or predictive) is required")]
    NoPolicy,
    #[error("threshold policy for {metric:?}: scaleUpAbove ({up}) must be greater than scaleDownBelow ({down})")]
    ThresholdOrder { metric: String, up: f64, down: f64 },
    #[error("threshold policy for {metric:?}: set scaleUpAbove, scaleDownBelow or both")]
    ThresholdEmpty { metric: String },
    #[error("{field} must be a finite number greater than 0, got {value}")]
    NotPositive { field: String, value: f64 },
    #[error("latency quantile of metric {metric:?} must be between 0 and 1 (exclusive), got {value}")]
    Quantile { metric: String, value: f64 },
    #[error("predictive coverage must be between 0.5 and 0.999, got {0}")]
    Coverage(f64),
    #[error("interval must be at least 1s")]
    IntervalTooShort,
    #[error("{field} {value:?} is not {expected}")]
    InvalidName { field: &'static str, value: String, expected: &'static str },
    #[error("predictive step ({step}) must not be longer than its history ({history})")]
    StepLongerThanHistory { step: String, history: String },
}

const DNS_SUBDOMAIN: &str = "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253)";
const DNS_LABEL: &str = "a DNS-1123 label (lowercase letters, digits and '-', at most 63)";

/// Whether `s` is a DNS-1123 label: what Kubernetes requires of most object names.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS-1123 subdomain (dot-separated labels, at most 253 bytes): a name that is safe as one
/// segment of a request path.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_prometheus_name(s: &str, colons: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colons && c == ':') || (!first && c.is_ascii_digit())
    };
    !s.is_empty() && s.len() <= 200 && s.chars().enumerate().all(|(i, c)| ok(c, i == 0))
}

fn is_kind(s: &str) -> bool {
    s.len() <= 63 && s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_api_version(s: &str) -> bool {
    let (group, version) = match s.split_once('/') {
        Some((g, v)) => (Some(g), v),
        None => (None, s),
    };
    let Some(rest) = version.strip_prefix('v') else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let tail = &rest[digits..];
    let tail_ok = tail.is_empty()
        || ["alpha", "beta"]
            .iter()
            .any(|p| tail.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())));
    digits > 0 && tail_ok && group.is_none_or(is_dns_subdomain)
}

/// Checks every name that goes into a request path or a query, whatever the schema let through: the
/// controller holds cluster-wide /scale rights, so a name like "../../other/deployments/x" must never reach a
/// URL.
pub fn check_names(spec: &ScalingPolicySpec) -> Result<(), InvalidPolicy> {
    let name = |field, value: &str, valid: bool, expected| {
        if valid { Ok(()) } else { Err(InvalidPolicy::InvalidName { field, value: value.into(), expected }) }
    };
    let t = &spec.target_ref;
    name("targetRef.name", &t.name, is_dns_subdomain(&t.name), DNS_SUBDOMAIN)?;
    name("targetRef.kind", &t.kind, is_kind(&t.kind), "a CamelCase kind such as Deployment")?;
    name("targetRef.apiVersion", &t.api_version, is_api_version(&t.api_version), "an API version such as apps/v1")?;
    for m in &spec.metrics {
        for r in [&m.cpu, &m.memory].into_iter().flatten() {
            if let Some(c) = &r.container {
                name("container", c, is_dns_label(c), DNS_LABEL)?;
            }
        }
        if let Some(h) = m.latency.as_ref().and_then(|l| l.histogram.as_ref()) {
            name("histogram", h, is_prometheus_name(h, true), "a Prometheus metric name")?;
        }
        for c in [&m.error_rate, &m.request_rate].into_iter().flatten() {
            if let Some(counter) = &c.counter {
                name("counter", counter, is_prometheus_name(counter, true), "a Prometheus metric name")?;
            }
            if let Some(label) = &c.code_label {
                name("codeLabel", label, is_prometheus_name(label, false), "a Prometheus label name")?;
            }
        }
    }
    Ok(())
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
        check_names(spec)?;

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

        let mut demand = Vec::new();
        for d in &spec.policies.demand {
            known("demand policy", &d.metric)?;
            positive(&format!("demand target of {:?}", d.metric), d.target)?;
            let utilization = d.target_utilization_percentage.unwrap_or(70.0);
            positive("targetUtilizationPercentage", utilization)?;
            let stable_window = d.stable_window.map(|w| w.std()).unwrap_or(Duration::from_secs(60));
            let panic_percentage = d.panic_window_percentage.unwrap_or(10.0);
            positive("panicWindowPercentage", panic_percentage)?;
            let panic_threshold = d.panic_threshold_percentage.unwrap_or(200.0);
            positive("panicThresholdPercentage", panic_threshold)?;
            let rate = |field: &str, v: Option<f64>, default: f64| match v {
                Some(v) if !(v.is_finite() && v >= 1.0) => {
                    Err(InvalidPolicy::NotPositive { field: field.into(), value: v })
                }
                v => Ok(v.unwrap_or(default)),
            };
            demand.push(DemandRule {
                metric: d.metric.clone(),
                target: d.target * utilization.min(100.0) / 100.0,
                stable_window,
                panic_window: stable_window.mul_f64(panic_percentage.min(100.0) / 100.0).max(Duration::from_secs(1)),
                panic_threshold: panic_threshold / 100.0,
                max_scale_up_rate: rate("maxScaleUpRate", d.max_scale_up_rate, 1000.0)?,
                max_scale_down_rate: rate("maxScaleDownRate", d.max_scale_down_rate, 2.0)?,
            });
        }

        let predictive = match &spec.policies.predictive {
            None => None,
            Some(p) => {
                known("predictive policy", &p.metric)?;
                positive("capacityPerReplica", p.capacity_per_replica)?;
                let history = p.history.map(|d| d.std()).unwrap_or(Duration::from_secs(7 * 86_400));
                let step = p.step.map(|d| d.std()).unwrap_or(Duration::from_secs(300)).max(Duration::from_secs(1));
                if step > history {
                    return Err(InvalidPolicy::StepLongerThanHistory {
                        step: super::Duration::from(step).to_string(),
                        history: super::Duration::from(history).to_string(),
                    });
                }
                let startup_delay = p.startup_delay.map(|d| d.std());
                Some(PredictiveRule {
                    metric: p.metric.clone(),
                    capacity_per_replica: p.capacity_per_replica,
                    lookahead: lookahead(p.lookahead.map(|d| d.std()), startup_delay, interval),
                    history,
                    step,
                    seasonality: match p.seasonality {
                        None | Some(spec::Seasonality::Auto) => SeasonalitySpec::Auto,
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
                    coverage: match p.coverage {
                        None => DEFAULT_COVERAGE,
                        Some(c) if (0.5..=0.999).contains(&c) => c,
                        Some(c) => return Err(InvalidPolicy::Coverage(c)),
                    },
                    startup_delay,
                })
            }
        };
        if thresholds.is_empty() && targets.is_empty() && demand.is_empty() && predictive.is_none() {
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
            demand,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_can_reach_a_path() {
        for good in ["web", "web-1", "a.b-c.d", "0"] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in
            ["", "../../team-b/deployments/victim", "Web", "-web", "web-", "a..b", "a/b", "web%2F..", &"a".repeat(254)]
        {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        for good in ["apps/v1", "v1", "example.com/v1alpha1", "argoproj.io/v1beta2"] {
            assert!(is_api_version(good), "{good}");
        }
        for bad in ["", "apps/", "/v1", "apps/v1/x", "../v1", "apps/V1", "apps/v1gamma1", "apps/valpha1"] {
            assert!(!is_api_version(bad), "{bad}");
        }
        assert!(is_kind("StatefulSet") && !is_kind("deployments") && !is_kind("Deploy/ment") && !is_kind(""));
        assert!(is_prometheus_name("http:requests_total", true) && !is_prometheus_name("http:requests", false));
        assert!(!is_prometheus_name("1xx", true) && !is_prometheus_name("a-b", true) && !is_prometheus_name("", true));
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    fn spec(extra: serde_json::Value) -> ScalingPolicySpec {
        let mut base = serde_json::json!({
            "targetRef": {"name": "web"},
            "maxReplicas": 10,
            "metrics": [{"name": "rps", "requestRate": {}}],
            "policies": {"predictive": {"metric": "rps", "capacityPerReplica": 100}}
        });
        merge(&mut base, extra);
        serde_json::from_value(base).expect("spec")
    }

    #[test]
    fn a_path_traversal_target_name_is_an_invalid_policy() {
        let error =
            Policy::try_from(&spec(serde_json::json!({"targetRef": {"name": "../../team-b/deployments/victim"}})))
                .expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!("targetRef.name \"../../team-b/deployments/victim\" is not {DNS_SUBDOMAIN}")
        );
        let error = Policy::try_from(&spec(
            serde_json::json!({"metrics": [{"name": "rps", "requestRate": {"codeLabel": "code\"}"}}]}),
        ))
        .expect_err("refused");
        assert!(error.to_string().starts_with("codeLabel"), "{error}");
        assert!(Policy::try_from(&spec(serde_json::json!({}))).is_ok());
    }

    #[test]
    fn a_step_longer_than_the_history_is_an_invalid_policy() {
        let error =
            Policy::try_from(&spec(serde_json::json!({"policies": {"predictive": {"history": "1h", "step": "2h"}}})))
                .expect_err("refused");
        assert_eq!(error.to_string(), "predictive step (2h) must not be longer than its history (1h)");
    }
}
