//! `foresight backtest --prometheus URL --query Q --start T --end T --step D`: the trace comes from a range
//! query against a real Prometheus, and the result matches the same trace read from a CSV file.

use std::{path::PathBuf, process::Command, time::Duration};

use foresight_e2e::prometheus::{OpenMetricsBuilder, PromServer, every};
use foresight_e2e::testkit::T0;
use jiff::Timestamp;

/// The `foresight` binary next to this test's target directory, built first if missing.
fn foresight() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target profile directory");
    let bin = dir.join("foresight");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "foresight", "--bin", "foresight"])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "cargo build -p foresight failed");
    }
    bin
}

/// Two days of a gauge `offered_load` at 5-minute steps: 100 at night, 900 at midday.
fn load(i: usize) -> f64 {
    let hour = (i * 5 / 60) % 24;
    if (10..18).contains(&hour) { 900.0 } else { 100.0 }
}

#[test]
fn a_prometheus_range_query_is_a_trace() {
    let points = 2 * 24 * 12;
    let om = OpenMetricsBuilder::new()
        .gauge(
            "offered_load",
            &[("app", "web")],
            every(Timestamp::from_second(T0).unwrap(), Duration::from_secs(300), points, |i, _| load(i)),
        )
        .build()
        .expect("valid OpenMetrics");
    let prometheus = PromServer::start(&om).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = repo.join("examples/policies/cpu-threshold.yaml");
    let end = Timestamp::from_second(T0 + (points as i64 - 1) * 300).unwrap();
    let out = Command::new(foresight())
        .args(["backtest", "--policy"])
        .arg(&policy)
        .args(["--prometheus", &prometheus.url(), "--query", "sum(offered_load)"])
        .args(["--start", &Timestamp::from_second(T0).unwrap().to_string(), "--end", &end.to_string()])
        .args(["--step", "5m", "--format", "json", "--compare", "hpa,oracle"])
        .output()
        .expect("foresight runs");
    assert!(out.status.success(), "backtest failed: {}", String::from_utf8_lossy(&out.stderr));
    let from_prometheus: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    // The same data as a CSV trace gives the same scores.
    let csv = std::env::temp_dir().join(format!("foresight-trace-{}.csv", std::process::id()));
    let mut text = String::from("timestamp,value\n");
    for i in 0..points {
        text.push_str(&format!("{},{}\n", T0 + i as i64 * 300, load(i)));
    }
    std::fs::write(&csv, text).expect("write CSV");
    let out = Command::new(foresight())
        .args(["backtest", "--policy"])
        .arg(&policy)
        .arg("--trace")
        .arg(&csv)
        .args(["--format", "json", "--compare", "hpa,oracle"])
        .output()
        .expect("foresight runs");
    let _ = std::fs::remove_file(&csv);
    assert!(out.status.success(), "backtest failed: {}", String::from_utf8_lossy(&out.stderr));
    let from_csv: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    assert_eq!(from_prometheus["steps"], from_csv["steps"]);
    assert_eq!(from_prometheus["results"], from_csv["results"]);
    let results = from_prometheus["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "policy, hpa and oracle: {results:?}");
    assert!(results[0]["replica_hours"].as_f64().is_some_and(|h| h > 0.0));

    // A bad query is a clear error, not a panic.
    let out = Command::new(foresight())
        .args(["backtest", "--policy"])
        .arg(&policy)
        .args(["--prometheus", &prometheus.url(), "--query", "sum(offered_load"])
        .args(["--start", &Timestamp::from_second(T0).unwrap().to_string(), "--end", &end.to_string()])
        .output()
        .expect("foresight runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("range query") && !stderr.contains("panicked"), "{stderr}");
}
