//! What a backtest prints and writes: a table for people, one JSON object for scripts, and `timeline.csv`.

use std::{fmt::Write as _, io::Write, path::Path, time::Duration};

use serde::Serialize;

use super::{
    BacktestError,
    score::Scores,
    strategy::{Outcome, Setup},
};

/// The result of one backtest.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub trace: String,
    pub policy: String,
    /// Simulated ticks (the policy's evaluations at its interval, or finer when the HPA or the start-up
    /// delay need it).
    pub steps: usize,
    pub results: Vec<Scores>,
    /// Run time of each strategy, in `results` order (not part of the JSON).
    #[serde(skip)]
    pub elapsed: Vec<Duration>,
}

impl Report {
    /// Exactly one JSON object. A ratio without a denominator (an oracle that needed no replica) is `null`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    /// A readable table, one row per strategy.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "trace {}  policy {}  ({} steps)", self.trace, self.policy, self.steps);
        let _ = writeln!(
            out,
            "{:<18} {:>13} {:>9} {:>12} {:>8} {:>9} {:>8} {:>6} {:>5} {:>8} {:>8}",
            "strategy",
            "replica-hours",
            "vs oracle",
            "violation m",
            "viol %",
            "dropped %",
            "actions",
            "flaps",
            "max",
            "coverage",
            "time"
        );
        for (i, r) in self.results.iter().enumerate() {
            let time = self.elapsed.get(i).map(|d| format!("{:.2}s", d.as_secs_f64())).unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<18} {:>13.1} {:>9} {:>12.1} {:>8.3} {:>9.4} {:>8} {:>6} {:>5} {:>8} {:>8}",
                truncate(&r.name, 18),
                r.replica_hours,
                if r.cost_vs_oracle.is_finite() { format!("{:.3}", r.cost_vs_oracle) } else { "-".into() },
                r.violation_minutes,
                r.violation_fraction * 100.0,
                r.dropped_load_fraction * 100.0,
                r.scale_actions,
                r.flaps,
                r.max_replicas,
                r.forecast_coverage.map(|c| format!("{:.1}%", c * 100.0)).unwrap_or_else(|| "-".into()),
                time
            );
        }
        out
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).chain(['…']).collect() }
}

/// Writes `timeline.csv`: a row at the start, at every tick where a strategy's requested or ready replicas
/// changed, at every trace point and at the end (the replicas hold between rows; load is linear between them).
pub fn write_timeline(
    path: &Path,
    setup: &Setup,
    trace_times: &[i64],
    outcomes: &[Outcome],
) -> Result<(), BacktestError> {
    let err = |e: std::io::Error| BacktestError::Write { path: path.display().to_string(), reason: e.to_string() };
    let file = std::fs::File::create(path).map_err(err)?;
    let mut w = std::io::BufWriter::new(file);
    let mut header = String::from("time,load");
    for o in outcomes {
        let n = &o.scores.name;
        let _ = write!(header, ",{n}_replicas,{n}_ready,{n}_utilization");
    }
    writeln!(w, "{header}").map_err(err)?;

    let mut ticks: Vec<usize> = outcomes.iter().flat_map(|o| o.timeline.iter().map(|c| c.tick)).collect();
    let last = setup.loads.len().saturating_sub(1);
    ticks.extend([0, last]);
    ticks.extend(trace_times.iter().filter_map(|&t| usize::try_from((t - setup.start) / setup.tick_secs.max(1)).ok()));
    ticks.retain(|&k| k <= last);
    ticks.sort_unstable();
    ticks.dedup();

    let mut cursors = vec![0usize; outcomes.len()];
    let mut line = String::new();
    for k in ticks {
        line.clear();
        let time = jiff::Timestamp::from_second(setup.time(k)).map(|t| t.to_string()).unwrap_or_default();
        let load = setup.loads[k];
        let _ = write!(line, "{time},{load}");
        for (o, c) in outcomes.iter().zip(cursors.iter_mut()) {
            while *c + 1 < o.timeline.len() && o.timeline[*c + 1].tick <= k {
                *c += 1;
            }
            match o.timeline.get(*c) {
                Some(ch) if ch.tick <= k => {
                    let capacity = f64::from(ch.ready) * setup.capacity;
                    let u = if capacity > 0.0 { format!("{:.4}", load / capacity) } else { String::new() };
                    let _ = write!(line, ",{},{},{u}", ch.requested, ch.ready);
                }
                _ => line.push_str(",,,"),
            }
        }
        writeln!(w, "{line}").map_err(err)?;
    }
    w.flush().map_err(err)
}
