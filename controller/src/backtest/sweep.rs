//! `foresight backtest --sweep`: the cost/violation trade-off of every strategy, not one point of it.
//!
//! One setting of a strategy is one point (replica-hours, violation minutes); a range of settings is a curve.
//! The policy runs at a range of *headroom* factors: every target value (target and demand rules) and the
//! predictive `capacityPerReplica` are multiplied by the factor, so below 1 it provisions more, above 1 it runs
//! hotter (threshold rules are bounds a user sets as guards, and stay as written). Request rates stay in the
//! units of the shipped policy, so the factor changes what the rules ask for, not what they see. The HPA and
//! KPA run at targets 50 % to 95 %; the oracle and the static count are single points. Comparing curves, not
//! points, tells whether one strategy is better or only tuned differently: a point below and left of another
//! curve beats it at the same cost or the same violations.
//!
//! Every run is independent, so they run on all cores; the policy's runs share their forecasts' fits.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::{BacktestError, Plan, strategy::Strategy, strategy::simulate_shared};
use crate::{
    engine::policy::{MetricKind, Policy},
    forecast::FitCache,
};

/// Headroom factors for the policy: 1 is the shipped policy; ±40 % around it in steps of 10 %.
pub const HEADROOM: [f64; 9] = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4];
/// Targets for the HPA and the KPA, percent: from half of a replica to nearly all of it.
pub const TARGETS: [f64; 10] = [50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0];

/// The policy with every target and the predictive capacity multiplied by `factor`.
pub fn with_headroom(policy: &Policy, factor: f64) -> Policy {
    let mut p = policy.clone();
    for t in &mut p.targets {
        t.target *= factor;
    }
    for d in &mut p.demand {
        d.target *= factor;
    }
    if let Some(rule) = &mut p.predictive {
        rule.capacity_per_replica *= factor;
    }
    p
}

/// One run of a curve.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The headroom factor or the target, percent.
    pub setting: f64,
    pub replica_hours: f64,
    pub cost_vs_oracle: f64,
    pub violation_minutes: f64,
}

/// A strategy over its range of settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub name: String,
    /// "headroom" (a factor) or "target" (percent); empty for a single point.
    pub setting: &'static str,
    pub points: Vec<Point>,
    /// The point of the shipped settings (headroom 1, or the baseline's default target).
    pub shipped: Option<usize>,
}

/// Every curve of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub curves: Vec<Curve>,
    /// When the policy's runs shared their forecasts' fits: how many fits were made, and how many times the runs
    /// took one (`FitCache::stats`).
    pub shared_fits: Option<(u64, u64)>,
}

/// Runs the sweep of a plan: its policy at every headroom, its HPA and KPA baselines (if compared) at every
/// target, and its other baselines once. `threads` runs at once.
pub fn sweep(plan: &Plan, threads: usize) -> Result<Sweep, BacktestError> {
    // (curve, setting, strategy) for every run.
    let mut jobs: Vec<(usize, f64, Strategy)> = Vec::new();
    let mut curves: Vec<Curve> = Vec::new();
    for s in &plan.strategies {
        let c = curves.len();
        // The baselines' own target joins the range if it is not in it.
        let mut targets = TARGETS.to_vec();
        if let Strategy::Hpa { target, .. } | Strategy::Kpa { target, .. } = s
            && !targets.contains(target)
        {
            targets.push(*target);
            targets.sort_by(f64::total_cmp);
        }
        let (setting, shipped) = match s {
            Strategy::Policy { .. } => ("headroom", HEADROOM.iter().position(|&h| h == 1.0)),
            Strategy::Hpa { target, .. } | Strategy::Kpa { target, .. } => {
                ("target", targets.iter().position(|t| t == target))
            }
            _ => ("", Some(0)),
        };
        match s {
            Strategy::Policy { headroom, .. } => {
                for &h in &HEADROOM {
                    let mut run = s.clone();
                    if let Strategy::Policy { headroom: x, .. } = &mut run {
                        *x = headroom * h;
                    }
                    jobs.push((c, h, run));
                }
            }
            Strategy::Hpa { min, max, .. } => {
                jobs.extend(targets.iter().map(|&t| (c, t, Strategy::Hpa { target: t, min: *min, max: *max })))
            }
            Strategy::Kpa { min, max, .. } => {
                jobs.extend(targets.iter().map(|&t| (c, t, Strategy::Kpa { target: t, min: *min, max: *max })))
            }
            other => jobs.push((c, 0.0, other.clone())),
        }
        curves.push(Curve { name: s.name().to_string(), setting, points: Vec::new(), shipped });
    }
    if !plan.strategies.iter().any(|s| matches!(s, Strategy::Oracle)) {
        jobs.push((usize::MAX, 0.0, Strategy::Oracle));
    }
    let setup = super::strategy::Setup { record: false, ..plan.setup.clone() };
    // The policy's runs at every headroom forecast the same offered load, so they share their fits: each fit is
    // made by whichever run needs it first (see FitCache). They run side by side, one thread each, so that a fit
    // is dropped soon after it is made instead of being kept until the last run reaches it.
    let shared: Vec<usize> = jobs.iter().enumerate().filter(|(_, j)| shares_fits(&j.2)).map(|(i, _)| i).collect();
    let fits = (shared.len() > 1).then(|| FitCache::new(shared.len()));
    let pooled: Vec<usize> = (0..jobs.len()).filter(|i| fits.is_none() || !shared.contains(i)).collect();
    let next = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(jobs.len()));
    let failed = std::sync::Mutex::new(None);
    let one = |i: usize, fits: Option<&FitCache>| {
        let (c, setting, strategy) = &jobs[i];
        match simulate_shared(&setup, strategy, fits, &mut |_| {}) {
            Ok(o) => results.lock().unwrap_or_else(|e| e.into_inner()).push((i, *c, *setting, o.scores)),
            Err(e) => *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e),
        }
    };
    std::thread::scope(|scope| {
        if let Some(fits) = &fits {
            for &i in &shared {
                scope.spawn(move || one(i, Some(fits)));
            }
        }
        for _ in 0..threads.clamp(1, pooled.len().max(1)) {
            scope.spawn(|| {
                while let Some(&i) = pooled.get(next.fetch_add(1, Ordering::Relaxed)) {
                    one(i, None);
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e.into());
    }
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.0);
    let oracle = results.iter().find(|r| r.3.name == "oracle").map(|r| r.3.replica_hours).unwrap_or(f64::NAN);
    for (_, c, setting, scores) in results {
        let Some(curve) = curves.get_mut(c) else { continue };
        curve.points.push(Point {
            setting,
            replica_hours: scores.replica_hours,
            cost_vs_oracle: if oracle > 0.0 { scores.replica_hours / oracle } else { f64::NAN },
            violation_minutes: scores.violation_minutes,
        });
    }
    let shared_fits = fits.map(|f| f.stats());
    Ok(Sweep { curves, shared_fits })
}

/// Whether a run's forecasts may share fits with the policy's other runs: a policy whose predictive rule
/// forecasts a request rate or a query, which the replay reports as the offered load (in the units of the policy
/// as written, whatever the headroom), so every run fits the same history at the same times. A forecast of CPU
/// or latency depends on the replicas the run chose; sharing would still be correct (the cache is keyed by the
/// history) but would only fill it.
fn shares_fits(strategy: &Strategy) -> bool {
    match strategy {
        Strategy::Policy { policy, .. } => policy.predictive.as_ref().is_some_and(|rule| {
            matches!(policy.metric(&rule.metric).map(|m| m.kind), Some(MetricKind::RequestRate | MetricKind::Query))
        }),
        _ => false,
    }
}

impl Sweep {
    /// One row per point: curve, setting, replica-hours, cost vs the oracle, violation minutes; the shipped
    /// setting marked with `*`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>11} {:>9} {:>10}",
            "strategy", "setting", "replica-h", "vs oracle", "viol min"
        );
        for c in &self.curves {
            for (i, p) in c.points.iter().enumerate() {
                let setting = match c.setting {
                    "headroom" => format!("x{:.2}", p.setting),
                    "target" => format!("{:.0}%", p.setting),
                    _ => "-".to_string(),
                };
                let mark = if c.shipped == Some(i) && !c.setting.is_empty() { "*" } else { " " };
                let _ = writeln!(
                    out,
                    "{:<20} {:>9}{mark} {:>11.1} {:>9.3} {:>10.1}",
                    c.name, setting, p.replica_hours, p.cost_vs_oracle, p.violation_minutes
                );
            }
        }
        out.push_str("* the shipped settings (the policy as written; the baselines' --hpa-target/--kpa-target)\n");
        out
    }
}
