//! The two series Foresight's built-in templates read from a workload, in Prometheus' exposition format:
//! `http_requests_total{code}` (request rate and 5xx error rate) and `http_request_duration_seconds`
//! (latency quantiles). Only the work endpoint `/` is counted, so probes and scrapes never dilute the error rate.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets from 1 ms to 10 s, roughly 1-2.5-5 per decade, so p99 is resolvable both for a fast idle
/// pod and for one throttled at its CPU limit.
pub const LATENCY_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The Content-Type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// The demo app's registry and its two instruments. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<CodeLabels, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        registry.register("http_requests", "Requests served by GET /, by HTTP status code.", requests.clone());
        let duration = Histogram::new(LATENCY_BUCKETS);
        registry.register("http_request_duration_seconds", "Time to serve GET /, in seconds.", duration.clone());
        // Export both codes from the start: rate() over a series that appears mid-window undercounts.
        for code in [200, 500] {
            drop(requests.get_or_create(&CodeLabels { code: code.to_string() }));
        }
        Metrics { registry: Arc::new(registry), requests, duration }
    }

    /// Counts one request and its latency.
    pub fn observe(&self, code: u16, elapsed: Duration) {
        self.requests.get_or_create(&CodeLabels { code: code.to_string() }).inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The registry in OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_counter_by_code_and_histogram() {
        let m = Metrics::new();
        m.observe(200, Duration::from_millis(3));
        m.observe(200, Duration::from_millis(30));
        m.observe(500, Duration::from_secs(20));
        let text = m.encode().expect("encodes");
        assert!(text.contains("http_requests_total{code=\"200\"} 2"), "{text}");
        assert!(text.contains("http_requests_total{code=\"500\"} 1"), "{text}");
        assert!(text.contains("http_request_duration_seconds_count 3"), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"10.0\"} 2"), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
    }

    #[test]
    fn both_codes_exist_before_any_request() {
        let text = Metrics::new().encode().expect("encodes");
        assert!(text.contains("http_requests_total{code=\"200\"} 0"), "{text}");
        assert!(text.contains("http_requests_total{code=\"500\"} 0"), "{text}");
    }
}
