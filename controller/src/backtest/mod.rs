//! `foresight backtest`: replay a policy against a recorded load trace through the same engine the controller
//! runs, on a simulated clock and a simple cluster model, next to the Kubernetes HPA, a static count and a
//! perfect-foresight oracle.
//!
//! ```text
//!  trace.csv ─► Trace ─resample every tick─► loads ─┬─► policy (engine::recommend + forecast::Predictor)─┐
//!                                                   ├─► hpa    (engine::recommend, HPA defaults)         ├─► Cluster ─► Scorer
//!                                                   ├─► kpa    (engine::recommend, KPA defaults)         │
//!                                                   ├─► static                                          │
//!                                                   └─► oracle (most replicas needed over the next delay)┘
//! ```
//!
//! See docs/backtest.md for the cluster model and the scores.

pub mod cluster;
pub mod frontier;
pub mod input;
pub mod matrix;
pub mod output;
pub mod plot;
pub mod score;
pub mod signals;
pub mod strategy;
pub mod sweep;
#[cfg(test)]
mod tests;
pub mod trace;

use std::{path::Path, time::Duration};

pub use matrix::matrix;
pub use output::Report;
pub use score::Scores;
pub use strategy::{HPA_SYNC, Outcome, Setup, Strategy, simulate};
pub use trace::{Trace, TraceError};

use crate::{
    api::{ScalingPolicy, convert::InvalidPolicy},
    engine::policy::{MetricKind, Policy},
};

/// Why a backtest cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("cannot read policy {path}: {reason}")]
    ReadPolicy { path: String, reason: String },
    #[error("policy {path}: {reason}")]
    ParsePolicy { path: String, reason: String },
    /// `line` is "line N: " when the field was found. The cause is in the message, not a `source`: printed as
    /// a chain it would say the same thing twice.
    #[error("policy {path}: {line}{reason}")]
    InvalidPolicy { path: String, line: String, reason: InvalidPolicy },
    #[error("cannot read {what} {path}: {reason}")]
    ReadDir { what: &'static str, path: String, reason: String },
    #[error("capacity per replica must be a finite number greater than 0, got {0}")]
    Capacity(f64),
    #[error("--peak-replicas must be at least 1")]
    PeakReplicas,
    #[error("the trace's 99th-percentile load is 0: give --capacity-per-replica")]
    ZeroLoad,
    #[error("unknown baseline {0:?}: expected hpa, kpa, oracle or static")]
    UnknownBaseline(String),
    #[error("--hpa-target must be between 1 and 100 percent, got {0}")]
    HpaTarget(f64),
    #[error("--kpa-target must be between 1 and 100 percent, got {0}")]
    KpaTarget(f64),
    #[error(transparent)]
    Simulate(#[from] strategy::SimulateError),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// How much load one replica serves at 100 % utilization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Capacity {
    /// In load units per trace step.
    PerReplica(f64),
    /// So that the trace's 99th-percentile load needs this many replicas.
    PeakReplicas(u32),
}

/// A strategy to compare the policy with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    Hpa,
    Kpa,
    Oracle,
    Static,
}

impl std::str::FromStr for Baseline {
    type Err = BacktestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hpa" => Ok(Baseline::Hpa),
            "kpa" => Ok(Baseline::Kpa),
            "oracle" => Ok(Baseline::Oracle),
            "static" => Ok(Baseline::Static),
            other => Err(BacktestError::UnknownBaseline(other.to_string())),
        }
    }
}

/// Everything a backtest needs besides the trace and the policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub capacity: Capacity,
    pub startup_delay: Duration,
    pub compare: Vec<Baseline>,
    /// The HPA baseline's CPU target, percent.
    pub hpa_target: f64,
    /// The KPA baseline's target utilization, percent of a replica's capacity.
    pub kpa_target: f64,
    /// Keep the replica timeline (for timeline.csv and the plot).
    pub record: bool,
    /// The policy sees CPU and memory averaged over every requested pod, starting ones at 0 %, instead of
    /// over ready pods only (the HPA baseline always does).
    pub starting_pods_at_zero: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: Capacity::PeakReplicas(20),
            startup_delay: Duration::from_secs(60),
            compare: vec![Baseline::Hpa, Baseline::Oracle, Baseline::Static],
            hpa_target: 70.0,
            kpa_target: 70.0,
            record: false,
            starting_pods_at_zero: false,
        }
    }
}

/// A policy read from a ScalingPolicy YAML file, with the name to report it under.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedPolicy {
    pub name: String,
    pub policy: Policy,
}

/// Reads a ScalingPolicy YAML file and converts it for the engine.
pub fn read_policy(path: &Path) -> Result<NamedPolicy, BacktestError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| BacktestError::ReadPolicy { path: display.clone(), reason: e.to_string() })?;
    let parse = |reason: String| BacktestError::ParsePolicy { path: display.clone(), reason };
    // First as plain YAML, for the strict checks (kind, apiVersion, unknown fields); then as the typed policy,
    // whose errors (a string where a number belongs, ...) carry their own line and a cropped snippet.
    let value: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| parse(e.to_string()))?;
    input::check(&value, &text).map_err(parse)?;
    let sp: ScalingPolicy = serde_saphyr::from_str(&text).map_err(|e| parse(e.to_string()))?;
    let policy = Policy::try_from(&sp.spec).map_err(|reason| {
        let keys = input::field_of(&reason).unwrap_or_default();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let line = input::line_of(&text, &keys).map(|l| format!("line {l}: ")).unwrap_or_default();
        BacktestError::InvalidPolicy { path: display, line, reason }
    })?;
    let name = sp
        .metadata
        .name
        .clone()
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "policy".into());
    Ok(NamedPolicy { name, policy })
}

/// A backtest ready to run: the replay setup, the strategies in report order, and notes for the user.
#[derive(Clone, Debug)]
pub struct Plan {
    pub setup: Setup,
    pub strategies: Vec<Strategy>,
    /// Adjustments the user should know about (printed to stderr by the CLI).
    pub notes: Vec<String>,
}

/// Resamples the trace, sizes replicas and lists the strategies.
pub fn plan(trace: &Trace, policy: &NamedPolicy, opts: &Options) -> Result<Plan, BacktestError> {
    let capacity = match opts.capacity {
        Capacity::PerReplica(c) if c.is_finite() && c > 0.0 => c,
        Capacity::PerReplica(c) => return Err(BacktestError::Capacity(c)),
        Capacity::PeakReplicas(0) => return Err(BacktestError::PeakReplicas),
        Capacity::PeakReplicas(n) => {
            let p99 = trace.quantile(0.99);
            if p99 <= 0.0 {
                return Err(BacktestError::ZeroLoad);
            }
            p99 / f64::from(n)
        }
    };
    if !(opts.hpa_target >= 1.0 && opts.hpa_target <= 100.0) {
        return Err(BacktestError::HpaTarget(opts.hpa_target));
    }
    if !(opts.kpa_target >= 1.0 && opts.kpa_target <= 100.0) {
        return Err(BacktestError::KpaTarget(opts.kpa_target));
    }
    let step_secs = trace.step as f64;
    let mut notes = Vec::new();
    // The simulated replica serves `capacity`; the policy says one replica serves capacityPerReplica. Request
    // rates are reported in the policy's units (see signals::Observation::rate_scale), so its rules keep theirs.
    if let Some(rule) = policy.policy.predictive.as_ref() {
        let kind = policy.policy.metric(&rule.metric).map(|m| m.kind);
        if matches!(kind, Some(MetricKind::RequestRate | MetricKind::Query)) {
            let sized_by = match opts.capacity {
                Capacity::PeakReplicas(n) => {
                    format!("the trace's 99th percentile load over {n} replicas, --peak-replicas")
                }
                Capacity::PerReplica(c) => {
                    format!("--capacity-per-replica {} per {}s trace step", output::human(c), trace.step)
                }
            };
            notes.push(output::units_note(
                rule.capacity_per_replica,
                capacity / step_secs,
                &sized_by,
                trace.max() / step_secs,
            ));
        }
    }
    let mut strategies = vec![Strategy::Policy {
        name: policy.name.clone(),
        policy: Box::new(policy.policy.clone()),
        starting_pods_at_zero: opts.starting_pods_at_zero,
        headroom: 1.0,
    }];
    // The baselines scale within the policy's own range, so that they answer the same question.
    let (min, max) = (policy.policy.min_replicas, policy.policy.max_replicas);
    for b in &opts.compare {
        let s = match b {
            Baseline::Hpa => Strategy::Hpa { target: opts.hpa_target, min, max },
            Baseline::Kpa => Strategy::Kpa { target: opts.kpa_target, min, max },
            Baseline::Oracle => Strategy::Oracle,
            Baseline::Static => Strategy::Static,
        };
        if !strategies.iter().any(|x| x.name() == s.name()) {
            strategies.push(s);
        }
    }
    // One tick divides every strategy's interval, the start-up delay and the forecast step. It always divides
    // the HPA's 15 s sync, so a policy's scores do not depend on which baselines run next to it.
    let mut tick = HPA_SYNC.as_secs();
    for s in &strategies {
        if let Some(i) = s.interval() {
            tick = gcd(tick, i.as_secs().max(1));
        }
        if let Strategy::Policy { policy, .. } = s
            && let Some(rule) = &policy.predictive
        {
            tick = gcd(tick, rule.step.as_secs().max(1));
        }
    }
    // The policy knows its pods' start-up time better than a command-line default.
    let delay = match policy.policy.predictive.as_ref().and_then(|r| r.startup_delay) {
        Some(d) => {
            notes.push(format!(
                "the simulated pods start in {} (the policy's startupDelay; --startup-delay is not used)",
                crate::engine::format::duration(d)
            ));
            d.as_secs()
        }
        None => opts.startup_delay.as_secs(),
    };
    if delay > 0 {
        tick = gcd(tick, delay);
    }
    let tick = tick as i64;
    if trace.gaps > 0 {
        notes.push(format!("trace has {} gap(s); load is interpolated across them", trace.gaps));
    }
    let setup = Setup {
        start: trace.start(),
        tick_secs: tick,
        loads: trace.resample(tick),
        capacity,
        step_secs,
        delay_secs: delay as i64,
        record: opts.record,
    };
    Ok(Plan { setup, strategies, notes })
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Runs every strategy of a plan and scores it against the oracle (computed even when not reported).
pub fn run(
    plan: &Plan,
    trace_name: &str,
    policy_name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<(Report, Vec<Outcome>), BacktestError> {
    let total = plan.setup.loads.len() as u64;
    let mut outcomes = Vec::with_capacity(plan.strategies.len());
    for (i, s) in plan.strategies.iter().enumerate() {
        let done = i as u64 * total;
        let outcome = simulate(&plan.setup, s, &mut |k| progress(done + k))?;
        outcomes.push(outcome);
    }
    let oracle_hours = match outcomes.iter().find(|o| o.scores.name == "oracle") {
        Some(o) => o.scores.replica_hours,
        None => {
            let setup = Setup { record: false, ..plan.setup.clone() };
            simulate(&setup, &Strategy::Oracle, &mut |_| {})?.scores.replica_hours
        }
    };
    for o in &mut outcomes {
        o.scores.cost_vs_oracle = if oracle_hours > 0.0 { o.scores.replica_hours / oracle_hours } else { f64::NAN };
    }
    let report = Report {
        trace: trace_name.to_string(),
        policy: policy_name.to_string(),
        steps: plan.setup.loads.len(),
        results: outcomes.iter().map(|o| o.scores.clone()).collect(),
        elapsed: outcomes.iter().map(|o| o.elapsed).collect(),
    };
    Ok((report, outcomes))
}
