//! The engine's view of a policy: validated, defaulted, with durations parsed.
//!
//! The CRD types are what users write; these are what the engine computes with. `api::convert` builds them
//! (with the defaults documented on the CRD), so the engine never sees an `Option` that means "default".

use std::time::Duration;

/// What kind of signal a metric is. It decides how values are written in reasons ("86%", "520ms", "6.0%").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Percent of requests (0-100+).
    Cpu,
    /// Percent of requests (0-100+).
    Memory,
    /// Seconds.
    Latency,
    /// A fraction (0-1).
    ErrorRate,
    /// Requests per second.
    RequestRate,
    /// Unitless.
    Query,
}

/// A metric the policy watches.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub kind: MetricKind,
    /// Block scale-down while the metric is above this bound.
    pub veto_above: Option<f64>,
    /// Negative values are meaningful (only a raw query can say so; no built-in source can be negative).
    pub allow_negative: bool,
}

/// A step size or a rate limit's amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Pods(u32),
    Percent(u32),
}

/// One side of a threshold rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub value: f64,
    pub for_: Duration,
    pub step: Amount,
}

/// Scale up while a metric stays above a bound, down while it stays below another.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdRule {
    pub metric: String,
    pub up: Option<Bound>,
    pub down: Option<Bound>,
}

/// How a target value relates to replicas (as the HPA's Value / AverageValue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// The metric is a per-pod average or ratio: desired = ceil(current x value / target).
    Value,
    /// The metric is a total: desired = ceil(value / target).
    AverageValue,
}

/// HPA-style target tracking.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetRule {
    pub metric: String,
    pub target: f64,
    pub kind: TargetKind,
    pub tolerance: f64,
}

/// Demand scaling with a Knative-style panic mode (see `engine::demand`).
#[derive(Clone, Debug, PartialEq)]
pub struct DemandRule {
    pub metric: String,
    /// The metric one replica should carry: the per-replica target times the target utilization.
    pub target: f64,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Panic when the panic window asks for at least this multiple of the ready replicas (2.0 = 200 %).
    pub panic_threshold: f64,
    /// At most this multiple of the ready replicas in one decision.
    pub max_scale_up_rate: f64,
    /// At least the ready replicas divided by this in one decision.
    pub max_scale_down_rate: f64,
}

/// Whether the forecast acts or is only recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictiveMode {
    Scale,
    Shadow,
}

/// Seasonal terms of the forecast model; `Auto` picks by history length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeasonalitySpec {
    Auto,
    None,
    Daily,
    Weekly,
    DailyWeekly,
}

/// The predictive policy's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictiveRule {
    pub metric: String,
    pub capacity_per_replica: f64,
    pub lookahead: Duration,
    pub history: Duration,
    pub step: Duration,
    pub seasonality: SeasonalitySpec,
    pub min_samples: usize,
    pub max_error: f64,
    pub mode: PredictiveMode,
    /// The fraction of look-ahead windows whose highest load the provisioned forecast should cover, in (0, 1).
    pub coverage: f64,
    /// The target's pods' start-up time, when the policy gives it (`lookahead` already covers it).
    pub startup_delay: Option<Duration>,
}

/// Which rate limit applies when several are given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// A rate limit: at most `amount` change per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub amount: Amount,
    pub period: Duration,
}

/// Cooldown, stabilization and rate limits of one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectionRules {
    pub cooldown: Duration,
    pub stabilization: Duration,
    pub limits: Vec<RateLimit>,
    pub select: Select,
}

impl DirectionRules {
    /// The HPA v2 default for scale-up, with no cooldown: max(100 %, 4 pods) per 15 s, no stabilization.
    pub fn default_up() -> Self {
        DirectionRules {
            cooldown: Duration::ZERO,
            stabilization: Duration::ZERO,
            limits: vec![
                RateLimit { amount: Amount::Percent(100), period: Duration::from_secs(15) },
                RateLimit { amount: Amount::Pods(4), period: Duration::from_secs(15) },
            ],
            select: Select::Max,
        }
    }

    /// The HPA v2 default for scale-down (100 % per 15 s, 300 s stabilization) with a 5-minute cooldown.
    pub fn default_down() -> Self {
        DirectionRules {
            cooldown: Duration::from_secs(300),
            stabilization: Duration::from_secs(300),
            limits: vec![RateLimit { amount: Amount::Percent(100), period: Duration::from_secs(15) }],
            select: Select::Max,
        }
    }
}

/// What to do when no metric can be read.
#[derive(Clone, Debug, PartialEq)]
pub struct Fallback {
    pub failure_threshold: u32,
    /// A floor to scale to; `None` holds replicas.
    pub replicas: Option<u32>,
}

/// A validated policy, ready for the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub interval: Duration,
    pub metrics: Vec<MetricSpec>,
    pub thresholds: Vec<ThresholdRule>,
    pub targets: Vec<TargetRule>,
    pub demand: Vec<DemandRule>,
    pub predictive: Option<PredictiveRule>,
    pub up: DirectionRules,
    pub down: DirectionRules,
    pub fallback: Fallback,
    /// A sample older than this is stale, i.e. missing.
    pub staleness: Duration,
}

impl Policy {
    pub fn metric(&self, name: &str) -> Option<&MetricSpec> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// How far back the engine needs samples: the longest threshold duration (or a demand rule's stable window
    /// plus its panic window, to judge the panics of the last stable window), plus one interval so that the
    /// sample at the window's start is included.
    pub fn lookback(&self) -> Duration {
        let longest = self
            .thresholds
            .iter()
            .flat_map(|t| [t.up.as_ref(), t.down.as_ref()])
            .flatten()
            .map(|b| b.for_)
            .chain(self.demand.iter().map(|d| d.stable_window + d.panic_window))
            .max()
            .unwrap_or(Duration::ZERO);
        longest + self.interval
    }
}
