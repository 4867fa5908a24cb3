//! Metric values and bounds written the way a person reads them: "86%", "520ms", "6.0%", "1,200 req/s".

use std::time::Duration;

use super::policy::MetricKind;

/// A value of a metric of this kind, with its unit.
pub fn value(kind: MetricKind, v: f64) -> String {
    match kind {
        MetricKind::Cpu | MetricKind::Memory => format!("{}%", trim(v, 0)),
        MetricKind::ErrorRate => format!("{}%", trim(v * 100.0, 1)),
        MetricKind::Latency if v < 1.0 => format!("{}ms", trim(v * 1000.0, 0)),
        MetricKind::Latency => format!("{}s", trim(v, 2)),
        MetricKind::RequestRate => format!("{} req/s", trim(v, 1)),
        MetricKind::Query => trim(v, 3),
    }
}

/// A count of replicas: "1 replica", "3 replicas".
pub fn replicas(n: u32) -> String {
    if n == 1 { "1 replica".into() } else { format!("{n} replicas") }
}

/// A duration as users write it: 90s, 2m, 1h30m, 7d, 500ms.
pub fn duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".into();
    }
    if !total_ms.is_multiple_of(1000) {
        return format!("{total_ms}ms");
    }
    let mut secs = (total_ms / 1000) as u64;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Up to `decimals` decimals, without trailing zeros.
fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_like_a_person_writes_them() {
        assert_eq!(value(MetricKind::Cpu, 86.4), "86%");
        assert_eq!(value(MetricKind::ErrorRate, 0.06), "6%");
        assert_eq!(value(MetricKind::ErrorRate, 0.0126), "1.3%");
        assert_eq!(value(MetricKind::Latency, 0.52), "520ms");
        assert_eq!(value(MetricKind::Latency, 1.5), "1.5s");
        assert_eq!(value(MetricKind::RequestRate, 1200.0), "1200 req/s");
        assert_eq!(value(MetricKind::Query, 0.25), "0.25");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(replicas(1), "1 replica");
        assert_eq!(replicas(0), "0 replicas");
    }
}
