//! The built-in PromQL templates against a real Prometheus with backfilled cAdvisor, kube-state-metrics and
//! application series.
//!
//! The workload is the Deployment `web` in namespace `shop`, with four pods. Decoys that a sloppy selector would
//! pick up carry large values: the pods of Deployment `web-api` in the same namespace, pods named like `web`'s in
//! namespace `other`, and the `POD` (pause) container of every pod.

use foresight::api::spec::{CounterMetric, LatencyMetric, Metric, QueryMetric, ResourceMetric, TargetRef};
use foresight::source::promql::{self, Scope};
use foresight::source::{MetricsSource, PrometheusConfig, PrometheusSource};
use foresight_e2e::prometheus::{OpenMetricsBuilder, PromServer, every};
use foresight_e2e::testkit::{metric, t};
use std::time::Duration;

const POINTS: usize = 120; // 30 minutes at 15 s
const STEP: Duration = Duration::from_secs(15);
const PODS: [&str; 4] = ["web-7c9f8d6b5-aaaaa", "web-7c9f8d6b5-bbbbb", "web-7c9f8d6b5-ccccc", "web-7c9f8d6b5-ddddd"];
const MI: f64 = 1024.0 * 1024.0;

/// Per pod of `web`: 0.35 cores of 0.5 requested (70 %), 300 Mi of 500 Mi (60 %), 20 requests/s of which 1 is a
/// 500 and 1 a 404 (5 % errors), and 100 requests per 15 s with 90 at most 100 ms, 99 at most 500 ms, all at
/// most 1 s.
fn history() -> String {
    let mut b = OpenMetricsBuilder::new();
    let pods: Vec<(&str, &str, f64)> = PODS
        .iter()
        .map(|p| ("shop", *p, 1.0))
        .chain([("shop", "web-api-5f6d7c8b9-zzzzz", 10.0), ("other", "web-7c9f8d6b5-aaaaa", 10.0)])
        .collect();
    for (ns, pod, scale) in pods {
        let app = [("namespace", ns), ("pod", pod), ("container", "app")];
        let pause = [("namespace", ns), ("pod", pod), ("container", "POD")];
        b = b
            .counter(
                "container_cpu_usage_seconds",
                &app,
                every(t(0), STEP, POINTS, |i, _| scale * 0.35 * 15.0 * i as f64),
            )
            .counter("container_cpu_usage_seconds", &pause, every(t(0), STEP, POINTS, |i, _| 2.0 * 15.0 * i as f64))
            .gauge("container_memory_working_set_bytes", &app, every(t(0), STEP, POINTS, |_, _| scale * 300.0 * MI))
            .gauge("container_memory_working_set_bytes", &pause, every(t(0), STEP, POINTS, |_, _| 900.0 * MI));
        for (resource, value) in [("cpu", 0.5), ("memory", 500.0 * MI)] {
            let labels = [("namespace", ns), ("pod", pod), ("container", "app"), ("resource", resource)];
            b = b.gauge("kube_pod_container_resource_requests", &labels, every(t(0), STEP, POINTS, move |_, _| value));
        }
        for (code, per_second) in [("200", 18.0), ("404", 1.0), ("500", 1.0)] {
            let per_second = if code == "500" { per_second * scale } else { per_second };
            let labels = [("namespace", ns), ("pod", pod), ("code", code)];
            b = b.counter("http_requests", &labels, every(t(0), STEP, POINTS, |i, _| per_second * 15.0 * i as f64));
        }
        for (le, per_step) in [("0.1", 90.0), ("0.5", 99.0), ("1", 100.0), ("+Inf", 100.0)] {
            // The decoys are slow: all their requests take more than a second.
            let per_step = if scale > 1.0 && le != "+Inf" { 0.0 } else { per_step };
            let labels = [("namespace", ns), ("pod", pod), ("le", le)];
            b = b.gauge(
                "http_request_duration_seconds_bucket",
                &labels,
                every(t(0), STEP, POINTS, |i, _| per_step * i as f64),
            );
        }
    }
    b.build().expect("valid history")
}

fn web() -> TargetRef {
    TargetRef { api_version: "apps/v1".into(), kind: "Deployment".into(), name: "web".into() }
}

/// The value of `metric`'s query for Deployment `web` in `shop`, 20 minutes into the data.
async fn value_of(server: &PromServer, metric: &Metric) -> f64 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = PrometheusSource::new(&PrometheusConfig::new(server.url())).expect("valid config");
    let target = web();
    let query = promql::query(metric, Scope::new("shop", &target)).expect("query builds");
    let samples = source.instant(&query, t(1200)).await.unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(samples.len(), 1, "{query}: {samples:?}");
    samples[0].value
}

fn start() -> PromServer {
    PromServer::start(&history()).unwrap_or_else(|error| panic!("cannot start Prometheus: {error}"))
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "expected {expected}, got {actual}");
}

#[tokio::test]
async fn every_builtin_template_reads_the_expected_value() {
    let server = start();

    // 4 pods at 0.35 cores with 0.5-core requests is 70 %; the pause containers and the decoys are not counted.
    let cpu = Metric { cpu: Some(ResourceMetric::default()), ..metric("cpu") };
    assert_close(value_of(&server, &cpu).await, 70.0);

    let memory = Metric { memory: Some(ResourceMetric::default()), ..metric("memory") };
    assert_close(value_of(&server, &memory).await, 60.0);

    // 400 requests per step: 360 within 100 ms, 396 within 500 ms. p99 is the 396th: exactly 500 ms; p95 is the
    // 380th, interpolated within (100 ms, 500 ms]: 0.1 + 0.4 x 20/36.
    let latency = |q: f64| Metric {
        latency: Some(LatencyMetric { quantile: q, histogram: None, window: None, query_override: None }),
        ..metric("latency")
    };
    assert_close(value_of(&server, &latency(0.99)).await, 0.5);
    assert_close(value_of(&server, &latency(0.95)).await, 0.1 + 0.4 * 20.0 / 36.0);

    // 1 of 20 requests per second is a 500 (the 404 is not an error of the service).
    let errors = Metric { error_rate: Some(CounterMetric::default()), ..metric("errors") };
    assert_close(value_of(&server, &errors).await, 0.05);

    let rps = Metric { request_rate: Some(CounterMetric::default()), ..metric("rps") };
    assert_close(value_of(&server, &rps).await, 80.0);
}

#[tokio::test]
async fn container_restriction_overrides_and_custom_queries_run_in_prometheus() {
    let server = start();

    // Only the app container: still 70 % (the restriction must not pick up the pause container).
    let cpu = Metric {
        cpu: Some(ResourceMetric {
            container: Some("app".into()),
            window: Some("5m".parse().expect("d")),
            query_override: None,
        }),
        ..metric("cpu")
    };
    assert_close(value_of(&server, &cpu).await, 70.0);

    // An override with placeholders: the cores in use, not the percentage.
    let cores = Metric {
        cpu: Some(ResourceMetric {
            container: None,
            window: None,
            query_override: Some(
                r#"sum(rate(container_cpu_usage_seconds_total{namespace="{namespace}",pod=~"{pod_regex}",{container_matcher}}[{window}]))"#
                    .into(),
            ),
        }),
        ..metric("cores")
    };
    assert_close(value_of(&server, &cores).await, 1.4);

    let pods = Metric {
        query: Some(QueryMetric {
            promql: r#"count(kube_pod_container_resource_requests{namespace="{namespace}",pod=~"{pod_regex}",resource="cpu"})"#.into(),
            allow_negative: false,
        }),
        ..metric("pods")
    };
    assert_close(value_of(&server, &pods).await, 4.0);
}
