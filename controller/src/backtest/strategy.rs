//! The strategies a backtest compares, and the replay loop that runs each against the simulated cluster.
//!
//! - `Policy`: the user's policy through `engine::recommend`, with status history, stabilization records and
//!   failure counts carried between evaluations exactly as the controller carries them.
//! - `Hpa`: the Kubernetes HPA v2 on CPU (target 70 %, tolerance 0.1, 15 s sync, default behavior), built as
//!   an engine policy with one target rule, since the engine implements the HPA algorithm.
//! - `Kpa`: the Knative Pod Autoscaler on offered load (target 70 %, stable window 60 s, panic window 6 s,
//!   panic threshold 200 %, scale-down at most 2x per decision), built as an engine policy with one demand
//!   rule and no other behavior, since the engine's demand rule implements the KPA algorithm.
//! - `Static`: the fewest replicas that are never under capacity, fixed.
//! - `Oracle`: perfect foresight with the same start-up delay: at `t` it requests the most replicas needed
//!   anywhere in `[t, t + delay]`, so its pods are ready in time and it pays for nothing more. The lower
//!   bound on cost for a cluster that never drops load.

use std::{collections::VecDeque, time::Duration};

use jiff::Timestamp;

use super::{
    cluster::Cluster,
    score::{Scorer, Scores},
    signals::{History, Observation, Signals},
};
use crate::{
    engine::{
        self, Forecast, RecommendationRecord, ScaleEvent, Snapshot,
        policy::{
            DemandRule, DirectionRules, Fallback, MetricKind, MetricSpec, Policy, Select, TargetKind, TargetRule,
        },
        target::ceil_replicas,
    },
    forecast::{FitCache, Predictor},
};

/// Status keeps this many scale events (the CRD's default historyLimit).
pub const HISTORY_LIMIT: usize = crate::api::convert::DEFAULT_HISTORY_LIMIT;
/// The HPA's sync period.
pub const HPA_SYNC: Duration = Duration::from_secs(15);

/// One strategy to replay.
#[derive(Clone, Debug)]
pub enum Strategy {
    Policy {
        name: String,
        policy: Box<Policy>,
        /// Average CPU and memory over every requested pod, starting ones at 0 % (as a Prometheus average
        /// over the target's pods would), instead of over ready pods only.
        starting_pods_at_zero: bool,
        /// Every target and the predictive capacity multiplied by this (1: as written; see `sweep`). Request
        /// rates stay in the units of the policy as written.
        headroom: f64,
    },
    /// The HPA at `target` % CPU within [min, max] (the policy's own range).
    Hpa {
        target: f64,
        min: u32,
        max: u32,
    },
    /// The KPA at `target` % of a replica's capacity within [min, max] (the policy's own range).
    Kpa {
        target: f64,
        min: u32,
        max: u32,
    },
    Static,
    Oracle,
}

impl Strategy {
    pub fn name(&self) -> &str {
        match self {
            Strategy::Policy { name, .. } => name,
            Strategy::Hpa { .. } => "hpa",
            Strategy::Kpa { .. } => "kpa",
            Strategy::Static => "static",
            Strategy::Oracle => "oracle",
        }
    }

    /// How often the strategy decides.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            Strategy::Policy { policy, .. } => Some(policy.interval),
            Strategy::Hpa { .. } | Strategy::Kpa { .. } => Some(HPA_SYNC),
            Strategy::Static | Strategy::Oracle => None,
        }
    }
}

/// The Kubernetes HPA v2 on CPU utilization with its default behavior, as an engine policy: tolerance 0.1,
/// scale-up max(100 %, 4 pods) per 15 s without stabilization, scale-down 100 % per 15 s after a 300 s
/// stabilization window, no cooldowns.
pub fn hpa_policy(target: f64, min: u32, max: u32) -> Policy {
    let mut down = DirectionRules::default_down();
    down.cooldown = Duration::ZERO;
    Policy {
        min_replicas: min,
        max_replicas: max.max(min),
        interval: HPA_SYNC,
        metrics: vec![MetricSpec {
            name: "cpu".into(),
            kind: MetricKind::Cpu,
            veto_above: None,
            allow_negative: false,
        }],
        thresholds: vec![],
        targets: vec![TargetRule { metric: "cpu".into(), target, kind: TargetKind::Value, tolerance: 0.1 }],
        demand: vec![],
        predictive: None,
        up: DirectionRules::default_up(),
        down,
        fallback: Fallback { failure_threshold: 3, replicas: None },
        staleness: Duration::from_secs(120),
    }
}

/// The Knative Pod Autoscaler with its defaults on the offered load (request rate, `per_replica` per second
/// at 100 %), as an engine policy: one demand rule at `target` % (Knative's target-utilization-percentage,
/// default 70), stable window 60 s, panic window 10 % of it (6 s), panic threshold 200 %, max scale-up rate
/// 1000, max scale-down rate 2, and no HPA behavior on top (no stabilization, cooldown or rate limit: the KPA
/// has none besides its own rates). It decides every 15 s (Knative ticks every 2 s; see docs/backtest.md).
pub fn kpa_policy(target: f64, per_replica: f64, min: u32, max: u32) -> Policy {
    let none = DirectionRules {
        cooldown: Duration::ZERO,
        stabilization: Duration::ZERO,
        limits: Vec::new(),
        select: Select::Max,
    };
    Policy {
        min_replicas: min,
        max_replicas: max.max(min),
        interval: HPA_SYNC,
        metrics: vec![MetricSpec {
            name: "rps".into(),
            kind: MetricKind::RequestRate,
            veto_above: None,
            allow_negative: false,
        }],
        thresholds: vec![],
        targets: vec![],
        demand: vec![DemandRule {
            metric: "rps".into(),
            target: per_replica * target / 100.0,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
        }],
        predictive: None,
        up: none.clone(),
        down: none,
        fallback: Fallback { failure_threshold: 3, replicas: None },
        staleness: Duration::from_secs(120),
    }
}

/// The trace as the replay sees it: load at every tick, and the cluster's parameters.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Unix seconds of tick 0 (the trace's first timestamp).
    pub start: i64,
    pub tick_secs: i64,
    /// Load per trace step at each tick, interpolated.
    pub loads: Vec<f64>,
    /// Load per trace step one replica serves at 100 %.
    pub capacity: f64,
    /// The trace's step, in seconds.
    pub step_secs: f64,
    /// Start-up delay of a new replica, in seconds.
    pub delay_secs: i64,
    /// Keep the replica timeline (for timeline.csv and the plot).
    pub record: bool,
}

impl Setup {
    pub fn time(&self, k: usize) -> i64 {
        self.start + k as i64 * self.tick_secs
    }

    /// Replicas needed at 100 % for a load.
    pub fn needed(&self, load: f64) -> u32 {
        ceil_replicas(load / self.capacity)
    }
}

/// A point where a strategy's requested or ready replicas changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub tick: usize,
    pub requested: u32,
    pub ready: u32,
}

/// What replaying one strategy produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scores: Scores,
    /// Changes of (requested, ready), starting with tick 0; empty unless `Setup::record`.
    pub timeline: Vec<Change>,
    /// Scale actions (time, from, to); empty unless `Setup::record`.
    pub events: Vec<(i64, u32, u32)>,
    pub elapsed: Duration,
}

/// Why a strategy cannot be replayed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimulateError {
    #[error("the trace is empty")]
    EmptyTrace,
}

/// Replays one strategy over the whole trace. `progress` is called with the number of ticks done.
pub fn simulate(setup: &Setup, strategy: &Strategy, progress: &mut dyn FnMut(u64)) -> Result<Outcome, SimulateError> {
    simulate_shared(setup, strategy, None, progress)
}

/// [`simulate`], with the policy's forecasts fitted through `fits` (shared with other runs, see
/// [`FitCache`]; the same decisions as without it).
pub fn simulate_shared(
    setup: &Setup,
    strategy: &Strategy,
    fits: Option<&FitCache>,
    progress: &mut dyn FnMut(u64),
) -> Result<Outcome, SimulateError> {
    let started = std::time::Instant::now();
    let first = *setup.loads.first().ok_or(SimulateError::EmptyTrace)?;
    let mut run = Run::new(setup);
    match strategy {
        Strategy::Policy { policy, starting_pods_at_zero, headroom, .. } => {
            let initial = setup.needed(first).clamp(policy.min_replicas, policy.max_replicas);
            let units = rate_scale(setup, policy);
            if *headroom == 1.0 {
                run_engine(setup, policy, units, *starting_pods_at_zero, initial, fits, &mut run, progress);
            } else {
                let scaled = super::sweep::with_headroom(policy, *headroom);
                run_engine(setup, &scaled, units, *starting_pods_at_zero, initial, fits, &mut run, progress);
            }
        }
        Strategy::Hpa { target, min, max } => {
            let policy = hpa_policy(*target, *min, *max);
            let initial = setup.needed(first).clamp(policy.min_replicas, policy.max_replicas);
            // metrics-server's view (ready pods) plus the engine's HPA handling of starting pods.
            run_engine(setup, &policy, 1.0, false, initial, None, &mut run, progress);
        }
        Strategy::Kpa { target, min, max } => {
            let policy = kpa_policy(*target, setup.capacity / setup.step_secs, *min, *max);
            let initial = setup.needed(first).clamp(policy.min_replicas, policy.max_replicas);
            // The activator and queue-proxy count requests at every pod; ready pods for the rates.
            run_engine(setup, &policy, 1.0, false, initial, None, &mut run, progress);
        }
        Strategy::Static => {
            let replicas = setup.loads.iter().map(|&l| setup.needed(l)).max().unwrap_or(0);
            run.start(replicas);
            for k in 0..setup.loads.len() {
                run.tick(k);
            }
        }
        Strategy::Oracle => {
            let plan = oracle_plan(setup);
            run.start(plan[0]);
            for (k, &want) in plan.iter().enumerate() {
                run.scale(k, want);
                run.tick(k);
            }
        }
    }
    progress(setup.loads.len() as u64);
    Ok(Outcome {
        scores: run.scorer.finish(strategy.name()),
        timeline: run.timeline,
        events: run.events,
        elapsed: started.elapsed(),
    })
}

/// The oracle's requests: at each tick the most replicas needed over the next `delay`.
pub fn oracle_plan(setup: &Setup) -> Vec<u32> {
    let needed: Vec<u32> = setup.loads.iter().map(|&l| setup.needed(l)).collect();
    let ahead = (setup.delay_secs / setup.tick_secs.max(1)) as usize;
    // Sliding-window maximum over [k, k + ahead], from the end (monotonic deque of indices).
    let mut out = vec![0; needed.len()];
    let mut window: VecDeque<usize> = VecDeque::new();
    for k in (0..needed.len()).rev() {
        while window.back().is_some_and(|&j| needed[j] <= needed[k]) {
            window.pop_back();
        }
        window.push_back(k);
        while window.front().is_some_and(|&j| j > k + ahead) {
            window.pop_front();
        }
        out[k] = window.front().map(|&j| needed[j]).unwrap_or(0);
    }
    out
}

/// The mutable state of one replay: cluster, scores, timeline.
struct Run<'a> {
    setup: &'a Setup,
    cluster: Cluster,
    scorer: Scorer,
    timeline: Vec<Change>,
    events: Vec<(i64, u32, u32)>,
}

impl<'a> Run<'a> {
    fn new(setup: &'a Setup) -> Self {
        Run {
            setup,
            cluster: Cluster::new(0, setup.delay_secs),
            scorer: Scorer::new(setup.tick_secs, 0),
            timeline: Vec::new(),
            events: Vec::new(),
        }
    }

    fn start(&mut self, replicas: u32) {
        self.cluster = Cluster::new(replicas, self.setup.delay_secs);
        self.scorer = Scorer::new(self.setup.tick_secs, replicas);
    }

    fn scale(&mut self, k: usize, to: u32) {
        let from = self.cluster.requested();
        if from == to {
            return;
        }
        let now = self.setup.time(k);
        self.cluster.scale(now, to);
        self.scorer.action(now, from, to);
        if self.setup.record {
            self.events.push((now, from, to));
        }
    }

    fn tick(&mut self, k: usize) {
        let ready = self.cluster.ready(self.setup.time(k));
        let requested = self.cluster.requested();
        self.scorer.tick(self.setup.loads[k], requested, ready, self.setup.capacity);
        if self.setup.record && self.timeline.last().is_none_or(|c| (c.requested, c.ready) != (requested, ready)) {
            self.timeline.push(Change { tick: k, requested, ready });
        }
    }
}

/// Multiplier from load per second to the policy's request-rate units: what one replica serves by the
/// predictive rule's reckoning (see `signals::Observation::rate_scale`); 1 without such a rule.
pub fn rate_scale(setup: &Setup, policy: &Policy) -> f64 {
    policy
        .predictive
        .as_ref()
        .filter(|rule| {
            matches!(policy.metric(&rule.metric).map(|m| m.kind), Some(MetricKind::RequestRate | MetricKind::Query))
        })
        .map(|rule| rule.capacity_per_replica / (setup.capacity / setup.step_secs))
        .filter(|scale| scale.is_finite() && *scale > 0.0)
        .unwrap_or(1.0)
}

/// Replays an engine policy: observe, forecast, `engine::recommend`, act, exactly as a reconcile does.
/// Request rates are reported times `rate_scale`. The forecasts' fits go through `fits` when given.
#[allow(clippy::too_many_arguments)]
fn run_engine(
    setup: &Setup,
    policy: &Policy,
    rate_scale: f64,
    starting_pods_at_zero: bool,
    initial: u32,
    fits: Option<&FitCache>,
    run: &mut Run<'_>,
    progress: &mut dyn FnMut(u64),
) {
    run.start(initial);
    let every = (policy.interval.as_secs() as i64 / setup.tick_secs).max(1) as usize;
    let mut signals = Signals::new(policy, starting_pods_at_zero);
    let mut history: Vec<ScaleEvent> = Vec::with_capacity(HISTORY_LIMIT + 1);
    let mut records: Vec<RecommendationRecord> = Vec::new();
    let mut failures = 0u32;

    // The forecast sees the predictive metric at its own step, never the future.
    let mut predictor = policy.predictive.as_ref().map(|rule| {
        let kind = policy.metric(&rule.metric).map(|m| m.kind).unwrap_or(MetricKind::Query);
        let step = (rule.step.as_secs() as i64).max(setup.tick_secs);
        let past = History::new(rule.history.as_secs() as i64, step);
        let predictor = Predictor::new(rule);
        let predictor = match fits {
            Some(cache) => predictor.shared(cache.clone()),
            None => predictor,
        };
        (predictor, kind, step, past)
    });

    for k in 0..setup.loads.len() {
        if k % every == 0 {
            let now = setup.time(k);
            let obs = Observation {
                load: setup.loads[k],
                ready: run.cluster.ready(now),
                requested: run.cluster.requested(),
                capacity: setup.capacity,
                step_secs: setup.step_secs,
                rate_scale,
            };
            signals.observe(now, &obs);
            let stamp = Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH);
            let forecast: Option<Forecast> = predictor.as_mut().map(|(p, kind, step, past)| {
                if (now - setup.start) % *step == 0
                    && let Some(v) = obs.value(*kind, false)
                {
                    past.push(now, v);
                    run.scorer.forecast_metric(now, v);
                }
                let forecast = p.forecast(past.samples(), stamp);
                if let Forecast::Ready { peak, .. } = &forecast {
                    run.scorer.provisioned(now, p.rule().lookahead.as_secs() as i64, *peak);
                }
                forecast
            });
            let current = run.cluster.requested();
            let snap = Snapshot {
                now: stamp,
                current_replicas: current,
                // Per-pod averages here come from ready pods only (metrics-server's view), so the engine
                // needs the ready count to treat starting pods as the HPA does.
                ready_replicas: if starting_pods_at_zero { None } else { Some(run.cluster.ready(now)) },
                metrics: signals.metrics(),
                history: &history,
                recommendations: &records,
                consecutive_failures: failures,
                forecast: forecast.as_ref(),
            };
            let rec = engine::recommend(policy, &snap);
            records = rec.recommendations;
            failures = rec.consecutive_failures;
            if rec.desired != current {
                history.insert(0, ScaleEvent { time: stamp, from: current, to: rec.desired, external: false });
                history.truncate(HISTORY_LIMIT);
                run.scale(k, rec.desired);
            }
            if k % 65_536 == 0 {
                progress(k as u64);
            }
        }
        run.tick(k);
    }
}
