//! History for a simulated workload, as OpenMetrics for `promtool` backfill: what Prometheus would have
//! scraped from `replicas` steady pods following the profile from the simulator's epoch until `end`: CPU usage
//! and requests, and `http_requests_total` by code (no latency histogram: no policy forecasts latency).
//!
//! A predictive policy needs cycles of history before it forecasts; backfilling them lets a scenario start
//! with that history instead of waiting for it. Start the simulator with the same profile and
//! [`SimConfig::started_ago`](super::SimConfig::started_ago) so the live metrics continue the backfilled cycle.

use std::time::Duration;

use jiff::Timestamp;

use super::SimConfig;
use super::model::pod_name;
use crate::prometheus::{OpenMetricsBuilder, OpenMetricsError};

/// Serial numbers of backfilled pods start here, so their names never collide with live pods'.
const HISTORY_SERIAL: u64 = 1 << 40;

/// OpenMetrics for `[from, end)` every `step`, where `from` is `end - span`; profile time runs from
/// `epoch` (the simulator's time zero).
pub fn openmetrics(
    config: &SimConfig,
    replicas: usize,
    epoch: Timestamp,
    span: Duration,
    end: Timestamp,
    step: Duration,
) -> Result<String, OpenMetricsError> {
    let step_s = step.as_secs_f64().max(1.0);
    let span_s = span.as_secs_f64();
    let points = (span_s / step_s).floor() as usize;
    let from = end.as_second() as f64 - points as f64 * step_s;
    let at = |i: usize| Timestamp::from_second((from + i as f64 * step_s) as i64).unwrap_or(epoch);
    let profile_time = |i: usize| {
        let t = (from + i as f64 * step_s) - epoch.as_second() as f64;
        Duration::from_secs_f64(t.max(0.0))
    };
    // Per-pod cumulative counters, integrated with the rate at the start of each step.
    let mut cpu = vec![0.0; points];
    let mut ok = vec![0.0; points];
    let mut errors = vec![0.0; points];
    let (mut c, mut o, mut e) = (0.0, 0.0, 0.0);
    for i in 0..points {
        cpu[i] = c;
        ok[i] = o;
        errors[i] = e;
        let load = config.profile.load_at(profile_time(i));
        if let Some(r) = config.pod.rates(load, replicas, 0.0) {
            c += r.cpu_cores * step_s;
            o += r.ok_rps * step_s;
            e += r.error_rps * step_s;
        }
    }
    let series = |values: &[f64]| values.iter().enumerate().map(|(i, v)| (at(i), *v)).collect::<Vec<_>>();
    let ns = config.namespace.as_str();
    let mut builder = OpenMetricsBuilder::new();
    for p in 0..replicas {
        let pod = pod_name(&config.deployment, HISTORY_SERIAL + p as u64);
        let pod = pod.as_str();
        builder = builder
            .counter(
                "container_cpu_usage_seconds",
                &[("namespace", ns), ("pod", pod), ("container", "app")],
                series(&cpu),
            )
            .gauge(
                "kube_pod_container_resource_requests",
                &[("namespace", ns), ("pod", pod), ("container", "app"), ("resource", "cpu"), ("unit", "core")],
                series(&vec![config.pod.cpu_request_cores; points]),
            )
            .counter("http_requests", &[("namespace", ns), ("pod", pod), ("code", "200")], series(&ok))
            .counter("http_requests", &[("namespace", ns), ("pod", pod), ("code", "500")], series(&errors));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::LoadProfile;

    #[test]
    fn history_follows_the_profile_per_pod() {
        let config = SimConfig::new(
            "shop",
            "web",
            LoadProfile::Cycle { base: 20.0, amplitude: 80.0, period: Duration::from_secs(120) },
        );
        let end = Timestamp::from_second(1_800_000_000).expect("valid");
        let epoch = Timestamp::from_second(1_800_000_000 - 240).expect("valid");
        let text = openmetrics(&config, 2, epoch, Duration::from_secs(240), end, Duration::from_secs(5))
            .expect("valid history");
        let pod = pod_name("web", HISTORY_SERIAL);
        let prefix = format!("http_requests_total{{code=\"200\",namespace=\"shop\",pod=\"{pod}\"}} ");
        let value_at = |at: i64| -> f64 {
            text.lines()
                .find(|l| l.starts_with(&prefix) && l.ends_with(&format!(" {}", 1_800_000_000 - 240 + at)))
                .and_then(|l| l.split(' ').nth(1)?.parse().ok())
                .unwrap_or(f64::NAN)
        };
        // Trough at t=0: 20 req/s over 2 pods = 10 req/s per pod, 50 per 5 s step.
        assert!((value_at(5) - value_at(0) - 50.0).abs() < 1e-6, "{} {}", value_at(0), value_at(5));
        // Peak at t=60: 100 req/s over 2 pods = 250 per step.
        assert!((value_at(65) - value_at(60) - 250.0).abs() < 1e-6);
        assert!(text.ends_with("# EOF\n"));
    }
}
