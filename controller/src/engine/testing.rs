//! Builders for engine tests: a test reads as the scenario it checks.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use super::{
    policy::*,
    snapshot::{Sample, ScaleEvent, Series},
};

/// A fixed epoch plus `secs` seconds, so tests read in seconds from the start of the scenario.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("valid test timestamp")
}

/// Samples every `step` seconds in [from, to], valued by `f(seconds since the epoch of the scenario)`.
pub fn samples_every(from: Timestamp, to: Timestamp, step: i64, f: impl Fn(i64) -> f64) -> Vec<Sample> {
    let base = at(0).as_second();
    let mut out = Vec::new();
    let mut t = from.as_second();
    while t <= to.as_second() {
        out.push(Sample::new(Timestamp::from_second(t).expect("valid"), f(t - base)));
        t += step;
    }
    out
}

/// A constant series at 15 s steps.
pub fn steady(from: Timestamp, to: Timestamp, step: i64, value: f64) -> Series {
    Series::Samples(samples_every(from, to, step, |_| value))
}

/// A linear ramp `start + slope * t`.
pub fn ramp_samples(from: Timestamp, to: Timestamp, step: i64, start: f64, slope: f64) -> Vec<Sample> {
    samples_every(from, to, step, |t| start + slope * t as f64)
}

/// A change of replicas made by Foresight.
pub fn ours(time: Timestamp, from: u32, to: u32) -> ScaleEvent {
    ScaleEvent { time, from, to, external: false }
}

/// A target rule with the default tolerance.
pub fn target_rule(metric: &str, target: f64) -> TargetRule {
    TargetRule { metric: metric.into(), target, kind: TargetKind::Value, tolerance: 0.1 }
}

/// A demand rule with Knative's defaults: `target` per replica at 70 % utilization, stable window 60 s, panic
/// window 6 s, panic threshold 200 %, scale-up at most 1000x and scale-down at most 2x per decision.
pub fn demand_rule(metric: &str, target: f64) -> DemandRule {
    DemandRule {
        metric: metric.into(),
        target: target * 0.7,
        stable_window: Duration::from_secs(60),
        panic_window: Duration::from_secs(6),
        panic_threshold: 2.0,
        max_scale_up_rate: 1000.0,
        max_scale_down_rate: 2.0,
    }
}

/// A metric map from (name, series) pairs.
pub fn metrics(pairs: impl IntoIterator<Item = (&'static str, Series)>) -> BTreeMap<String, Series> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A policy builder with the documented defaults (min 1, interval 15 s, HPA default rates, 5 m down cooldown).
#[derive(Clone, Debug)]
pub struct PolicyBuilder(pub Policy);

impl PolicyBuilder {
    pub fn new(min: u32, max: u32) -> Self {
        PolicyBuilder(Policy {
            min_replicas: min,
            max_replicas: max,
            interval: Duration::from_secs(15),
            metrics: vec![],
            thresholds: vec![],
            targets: vec![],
            demand: vec![],
            predictive: None,
            up: DirectionRules::default_up(),
            down: DirectionRules::default_down(),
            fallback: Fallback { failure_threshold: 3, replicas: None },
            staleness: Duration::from_secs(120),
        })
    }

    pub fn metric(mut self, name: &str, kind: MetricKind) -> Self {
        self.0.metrics.push(MetricSpec { name: name.into(), kind, veto_above: None, allow_negative: false });
        self
    }

    pub fn veto(mut self, name: &str, kind: MetricKind, above: f64) -> Self {
        self.0.metrics.push(MetricSpec { name: name.into(), kind, veto_above: Some(above), allow_negative: false });
        self
    }

    /// The seed's CPU rule: up above 70 % for 2 m by one pod, down below 30 % for 5 m by one pod.
    pub fn cpu_threshold(self) -> Self {
        self.metric("cpu", MetricKind::Cpu).threshold("cpu", Some((70.0, 120)), Some((30.0, 300)))
    }

    pub fn threshold(mut self, metric: &str, up: Option<(f64, u64)>, down: Option<(f64, u64)>) -> Self {
        let bound = |(value, secs): (f64, u64)| Bound { value, for_: Duration::from_secs(secs), step: Amount::Pods(1) };
        self.0.thresholds.push(ThresholdRule { metric: metric.into(), up: up.map(bound), down: down.map(bound) });
        self
    }

    pub fn target(mut self, metric: &str, kind: MetricKind, value: f64) -> Self {
        if self.0.metric(metric).is_none() {
            self = self.metric(metric, kind);
        }
        self.0.targets.push(target_rule(metric, value));
        self
    }

    /// A Knative-style demand rule (see `demand_rule`) on a request rate.
    pub fn demand(mut self, metric: &str, target: f64) -> Self {
        if self.0.metric(metric).is_none() {
            self = self.metric(metric, MetricKind::RequestRate);
        }
        self.0.demand.push(demand_rule(metric, target));
        self
    }

    pub fn predictive(mut self, metric: &str, capacity: f64, mode: PredictiveMode) -> Self {
        if self.0.metric(metric).is_none() {
            self = self.metric(metric, MetricKind::RequestRate);
        }
        self.0.predictive = Some(PredictiveRule {
            metric: metric.into(),
            capacity_per_replica: capacity,
            lookahead: Duration::from_secs(900),
            history: Duration::from_secs(7 * 86_400),
            step: Duration::from_secs(300),
            seasonality: SeasonalitySpec::Auto,
            min_samples: 10,
            max_error: 0.5,
            mode,
            coverage: 0.95,
            startup_delay: None,
        });
        self
    }

    pub fn no_cooldowns(mut self) -> Self {
        self.0.up.cooldown = Duration::ZERO;
        self.0.down.cooldown = Duration::ZERO;
        self
    }

    pub fn no_stabilization(mut self) -> Self {
        self.0.up.stabilization = Duration::ZERO;
        self.0.down.stabilization = Duration::ZERO;
        self
    }

    pub fn fallback(mut self, threshold: u32, replicas: Option<u32>) -> Self {
        self.0.fallback = Fallback { failure_threshold: threshold, replicas };
        self
    }

    pub fn build(self) -> Policy {
        self.0
    }
}
