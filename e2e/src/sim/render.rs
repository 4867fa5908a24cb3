//! The Prometheus text exposition of the simulated pods: what cAdvisor (CPU, memory), kube-state-metrics
//! (requests) and the app (requests, latency histogram) would export, with `namespace` and `pod` set as the
//! Kubernetes service discovery would.
//!
//! Requests are exported for every pod (kube-state-metrics reports pods that are still starting); usage and
//! app metrics only for ready pods, which are the ones taking traffic.

use std::fmt::Write as _;

use super::{LATENCY_BUCKETS, SimState};

/// The `/metrics` body for the current state.
pub fn metrics(state: &SimState) -> String {
    let ns = &state.config.namespace;
    let model = &state.config.pod;
    let mut out = String::new();
    let ready: Vec<_> = state.pods.iter().filter(|p| p.ready).collect();

    let _ = writeln!(out, "# TYPE container_cpu_usage_seconds_total counter");
    for pod in &ready {
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{namespace=\"{ns}\",pod=\"{}\",container=\"app\"}} {}",
            pod.name, pod.cpu_seconds
        );
    }
    let _ = writeln!(out, "# TYPE container_memory_working_set_bytes gauge");
    for pod in &ready {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"{}\",container=\"app\"}} {}",
            pod.name, pod.memory_bytes
        );
    }
    let _ = writeln!(out, "# TYPE kube_pod_container_resource_requests gauge");
    for pod in &state.pods {
        let _ = writeln!(
            out,
            "kube_pod_container_resource_requests{{namespace=\"{ns}\",pod=\"{}\",container=\"app\",resource=\"cpu\",unit=\"core\"}} {}",
            pod.name, model.cpu_request_cores
        );
        let _ = writeln!(
            out,
            "kube_pod_container_resource_requests{{namespace=\"{ns}\",pod=\"{}\",container=\"app\",resource=\"memory\",unit=\"byte\"}} {}",
            pod.name, model.memory_request_bytes
        );
    }
    let _ = writeln!(out, "# TYPE http_requests_total counter");
    for pod in &ready {
        for (code, value) in [("200", pod.requests_ok), ("500", pod.requests_error)] {
            let _ =
                writeln!(out, "http_requests_total{{namespace=\"{ns}\",pod=\"{}\",code=\"{code}\"}} {value}", pod.name);
        }
    }
    let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
    for pod in &ready {
        let labels = format!("namespace=\"{ns}\",pod=\"{}\"", pod.name);
        for (le, count) in LATENCY_BUCKETS.iter().zip(pod.buckets) {
            let _ = writeln!(out, "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {count}");
        }
        let total = pod.buckets[LATENCY_BUCKETS.len()];
        let _ = writeln!(out, "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "http_request_duration_seconds_sum{{{labels}}} {}", pod.latency_sum);
        let _ = writeln!(out, "http_request_duration_seconds_count{{{labels}}} {total}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{LoadProfile, SimConfig, SimState};
    use super::*;

    #[test]
    fn ready_pods_export_usage_and_app_metrics_every_pod_exports_requests() {
        let now = Instant::now();
        let config = SimConfig::new("shop", "web", LoadProfile::Constant(40.0)).startup_delay(Duration::from_secs(5));
        let mut state = SimState::new(config, now);
        state.replicas = 1;
        state.reconcile_pods(now);
        let later = now + Duration::from_secs(5);
        state.reconcile_pods(later);
        state.advance(later + Duration::from_secs(2), 2.0);
        state.replicas = 2;
        state.reconcile_pods(later + Duration::from_secs(2));
        let text = metrics(&state);
        let (ready, starting) = (&state.pods[0].name, &state.pods[1].name);
        assert!(
            text.contains(&format!(
                "container_cpu_usage_seconds_total{{namespace=\"shop\",pod=\"{ready}\",container=\"app\"}} 0.8\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("http_requests_total{{namespace=\"shop\",pod=\"{ready}\",code=\"200\"}} 80\n")));
        assert!(text.contains(&format!(
            "http_request_duration_seconds_bucket{{namespace=\"shop\",pod=\"{ready}\",le=\"+Inf\"}} 80\n"
        )));
        assert!(text.contains(&format!(
            "kube_pod_container_resource_requests{{namespace=\"shop\",pod=\"{starting}\",container=\"app\",resource=\"cpu\",unit=\"core\"}} 0.5\n"
        )));
        assert!(!text.contains(&format!("container_cpu_usage_seconds_total{{namespace=\"shop\",pod=\"{starting}\"")));
        // Buckets are cumulative.
        let buckets: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("http_request_duration_seconds_bucket"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }
}
