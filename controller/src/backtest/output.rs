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
                vs_oracle(r),
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
        for r in &self.results {
            if let Some(w) = warning(r) {
                let _ = writeln!(out, "warning: {}: {w}", r.name);
            }
        }
        out
    }
}

/// At least this share of the load unserved and a strategy is not keeping up at all: its cost is not a
/// result, only the price of serving a fraction of the load.
pub const CANNOT_KEEP_UP: f64 = 0.10;

/// `cost_vs_oracle` for a table cell: "-" without an oracle, a trailing "!" when [`warning`] has something
/// to say about it.
pub fn vs_oracle(r: &Scores) -> String {
    if !r.cost_vs_oracle.is_finite() {
        return "-".into();
    }
    let mark = if warning(r).is_some() { "!" } else { "" };
    format!("{:.3}{mark}", r.cost_vs_oracle)
}

/// Why a strategy's cost says nothing about how good it is, if it does not. The oracle serves every request
/// with the fewest replicas perfect foresight allows, so costing less than it is only possible by leaving
/// load unserved; and a strategy that drops a tenth of the load or more is not keeping up with the trace.
pub fn warning(r: &Scores) -> Option<String> {
    let dropped = r.dropped_load_fraction;
    let pct = |f: f64| if f >= 0.01 { format!("{:.0} %", f * 100.0) } else { format!("{:.2} %", f * 100.0) };
    if dropped >= CANNOT_KEEP_UP {
        return Some(format!(
            "left {} of the load unserved ({:.0} % of the time over capacity): it cannot keep up with this trace, \
             so its cost (vs oracle {}) is not a saving; compare strategies that serve the load",
            pct(dropped),
            r.violation_fraction * 100.0,
            if r.cost_vs_oracle.is_finite() { format!("{:.3}", r.cost_vs_oracle) } else { "-".into() },
        ));
    }
    if r.cost_vs_oracle < 1.0 && dropped > 0.0 {
        return Some(format!(
            "cheaper than the oracle (vs oracle {:.3}) only because it left {} of the load unserved",
            r.cost_vs_oracle,
            pct(dropped)
        ));
    }
    None
}

/// The note for a policy whose request-rate rules read the trace: what one replica serves in the trace's
/// units and in the policy's, and so what the policy sees in place of the trace's numbers.
pub fn units_note(capacity_per_replica: f64, replica_per_second: f64, sized_by: &str, peak_per_second: f64) -> String {
    let scale = capacity_per_replica / replica_per_second;
    format!(
        "the trace is not in your policy's units, so the backtest converts it: one simulated replica serves {} \
         of the trace's units per second ({sized_by}), and the policy says one replica serves {} \
         (capacityPerReplica), so every request rate the policy reads is the trace's times {} (the trace's peak \
         of {}/s reads as {}/s); its thresholds and targets keep the meaning they have on your cluster",
        human(replica_per_second),
        human(capacity_per_replica),
        human(scale),
        human(peak_per_second),
        human(peak_per_second * scale),
    )
}

/// A number for people: three significant digits, with k, M, G for thousands, millions, billions ("40k",
/// "1.25M", "0.747", "12", "0").
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "-".into()
        } else if v > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        };
    }
    let a = v.abs();
    let (x, unit) = match a {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let decimals = match x.abs() {
        0.0 => 0,
        x if x >= 100.0 => 0,
        x if x >= 10.0 => 1,
        x if x >= 1.0 => 2,
        // Small numbers keep three significant digits.
        x => (2 - x.log10().floor() as i32).clamp(0, 12) as usize,
    };
    let s = format!("{x:.decimals$}");
    // "40.0k" reads as "40k"; "1.50" as "1.5".
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{unit}")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(name: &str, cost_vs_oracle: f64, dropped: f64) -> Scores {
        let mut s = super::super::score::Scorer::new(60, 1).finish(name);
        s.cost_vs_oracle = cost_vs_oracle;
        s.violation_fraction = dropped;
        s.dropped_load_fraction = dropped;
        s
    }

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        for (v, want) in [
            (40_000.0, "40k"),
            (40_500.0, "40.5k"),
            (1_250_000.0, "1.25M"),
            (3.2e9, "3.2G"),
            (0.7472, "0.747"),
            (12.0, "12"),
            (133.83, "134"),
            (0.0, "0"),
            (-2500.0, "-2.5k"),
            (0.000_123_4, "0.000123"),
        ] {
            assert_eq!(human(v), want, "{v}");
        }
    }

    #[test]
    fn a_strategy_that_cannot_keep_up_is_flagged_and_its_cost_marked() {
        let report = Report {
            trace: "t.csv".into(),
            policy: "p".into(),
            steps: 1,
            results: vec![scores("drowning", 0.075, 0.91), scores("oracle", 1.0, 0.0), scores("lean", 0.98, 0.002)],
            elapsed: vec![],
        };
        let table = report.table();
        let row = |name: &str| table.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
        assert!(row("drowning").contains("0.075!"), "{table}");
        assert!(!row("oracle").contains('!'), "{table}");
        let warnings: Vec<&str> = table.lines().filter(|l| l.starts_with("warning: ")).collect();
        assert_eq!(warnings.len(), 2, "{table}");
        assert!(warnings[0].starts_with("warning: drowning: left 91 % of the load unserved"), "{table}");
        assert!(warnings[0].contains("cannot keep up"), "{table}");
        assert!(warnings[1].starts_with("warning: lean: cheaper than the oracle"), "{table}");
    }

    #[test]
    fn the_units_note_says_what_the_policy_sees() {
        let note = units_note(100.0, 0.7472, "the trace's 99th percentile over 20 replicas", 30.0);
        assert!(note.contains("one simulated replica serves 0.747 of the trace's units per second"), "{note}");
        assert!(note.contains("the trace's times 134"), "{note}");
        assert!(note.contains("peak of 30/s reads as 4.01k/s"), "{note}");
    }
}
