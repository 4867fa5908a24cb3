//! Every trace of a directory against every policy of another, with the baselines, as one table: the
//! `--trace-dir` mode and the `backtest` bench.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use super::{BacktestError, Options, Trace, plan, read_policy, run};

/// The files in `dir` with extension `ext`, sorted by name.
pub fn files(dir: &Path, ext: &str, what: &'static str) -> Result<Vec<PathBuf>, BacktestError> {
    let read = std::fs::read_dir(dir).map_err(|e| BacktestError::ReadDir {
        what,
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut out: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case(ext)))
        .collect();
    out.sort();
    Ok(out)
}

/// Runs the matrix and returns the table (or one JSON array of reports).
pub fn matrix(trace_dir: &Path, policy_dir: &Path, opts: &Options, json: bool) -> Result<String, BacktestError> {
    let traces = files(trace_dir, "csv", "trace directory")?;
    let mut policies = files(policy_dir, "yaml", "policy directory")?;
    policies.extend(files(policy_dir, "yml", "policy directory")?);
    let mut out = String::new();
    let mut reports = Vec::new();
    let _ = writeln!(
        out,
        "{:<36} {:<16} {:<16} {:>11} {:>9} {:>10} {:>9} {:>8} {:>8}",
        "trace", "policy", "strategy", "replica-h", "vs oracle", "viol min", "dropped%", "actions", "time"
    );
    for trace_path in &traces {
        let trace = Trace::read(trace_path)?;
        let trace_name = trace_path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for (i, policy_path) in policies.iter().enumerate() {
            let named = read_policy(policy_path)?;
            let started = Instant::now();
            // The baselines do not depend on the policy: run and print them once per trace.
            let opts = if i == 0 { opts.clone() } else { Options { compare: Vec::new(), ..opts.clone() } };
            let p = plan(&trace, &named, &opts)?;
            let (report, _) = run(&p, &trace_name, &named.name, &mut |_| {})?;
            let total = started.elapsed();
            for (i, r) in report.results.iter().enumerate() {
                let time = report.elapsed.get(i).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                let _ = writeln!(
                    out,
                    "{:<36} {:<16} {:<16} {:>11.1} {:>9} {:>10.1} {:>9.3} {:>8} {:>7.2}s",
                    trace_name,
                    if r.name == named.name { named.name.as_str() } else { "-" },
                    r.name,
                    r.replica_hours,
                    super::output::vs_oracle(r),
                    r.violation_minutes,
                    r.dropped_load_fraction * 100.0,
                    r.scale_actions,
                    time
                );
            }
            let _ = writeln!(out, "{:<36} {:<16} {:<16} total {:.2}s", "", named.name, "", total.as_secs_f64());
            for r in &report.results {
                if let Some(w) = super::output::warning(r) {
                    let _ = writeln!(out, "{:<36} warning: {}: {w}", "", r.name);
                }
            }
            reports.push(report);
        }
    }
    if json {
        return Ok(serde_json::to_string_pretty(&reports).unwrap_or_default() + "\n");
    }
    Ok(out)
}
