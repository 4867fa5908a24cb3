//! Grouped queries against a real Prometheus: the in-process aggregation of the namespace-wide per-pod queries
//! must give exactly what each policy's own PromQL gives, on the same backfilled data.
//!
//! The data is random but seeded (each namespace is one seed, so a failure names the seed that reproduces it):
//! random workloads of random kinds with random pod counts, decoy pods of a workload whose name extends
//! another's, pods without requests, counters that reset, histograms with random bucket layouts (no buckets, only
//! `+Inf`, no `+Inf`, negative and zero bounds, duplicated bounds, non-monotonic counts, zero observations), and
//! series that stop half-way.

use std::sync::Arc;
use std::time::Duration;

use foresight::api::spec::{CounterMetric, LatencyMetric, Metric, QueryMetric, ResourceMetric, TargetRef};
use foresight::source::promql::{self, Plan, Scope};
use foresight::source::{
    GroupedConfig, GroupedReader, MetricsSource, PrometheusConfig, PrometheusSource, QueryCounter, Sample,
};
use foresight_e2e::prometheus::{OpenMetricsBuilder, PromServer};
use foresight_e2e::testkit::{metric, t};

const STEP: Duration = Duration::from_secs(15);
const POINTS: i64 = 120; // 30 minutes

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

struct Workload {
    kind: &'static str,
    name: String,
    pods: Vec<String>,
}

fn pod_name(rng: &mut Rng, kind: &str, name: &str, i: usize) -> String {
    let hash = |rng: &mut Rng| format!("{:x}", rng.below(0xfffff) + 0x10000);
    match kind {
        "StatefulSet" => format!("{name}-{i}"),
        "ReplicaSet" => format!("{name}-{}", hash(rng)),
        "Rollout" => format!("{name}-{}-x", hash(rng)),
        _ => format!("{name}-{}-{}", hash(rng), hash(rng)),
    }
}

/// A counter's points: a random rate, sometimes a reset to 0, sometimes stopping early.
fn counter_points(rng: &mut Rng, per_step: f64) -> Vec<(i64, f64)> {
    let reset_at = rng.chance(0.3).then(|| rng.below(POINTS as u64) as i64);
    let stop_at = if rng.chance(0.15) { rng.below(POINTS as u64) as i64 } else { POINTS };
    let mut value = rng.unit() * 100.0;
    (0..stop_at)
        .map(|i| {
            if Some(i) == reset_at {
                value = 0.0;
            } else {
                value += per_step * (0.5 + rng.unit());
            }
            (i * 15, value)
        })
        .collect()
}

fn at(points: Vec<(i64, f64)>) -> Vec<(jiff::Timestamp, f64)> {
    points.into_iter().map(|(s, v)| (t(s), v)).collect()
}

/// One namespace of random workloads and their series, added to `b`.
fn namespace(b: OpenMetricsBuilder, ns: &str, seed: u64) -> (OpenMetricsBuilder, Vec<Workload>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let kinds = ["Deployment", "StatefulSet", "ReplicaSet", "Rollout"];
    let mut workloads: Vec<Workload> = Vec::new();
    for w in 0..4 {
        let kind = kinds[rng.below(4) as usize];
        // Names that extend one another ("web", "web-api") test the regex anchoring.
        let name = match w {
            0 => "web".to_string(),
            1 => "web-api".to_string(),
            _ => format!("svc{}", rng.below(100)),
        };
        if workloads.iter().any(|x| x.name == name) {
            continue;
        }
        let count = rng.below(5) as usize;
        let pods = (0..count).map(|i| pod_name(&mut rng, kind, &name, i)).collect();
        workloads.push(Workload { kind, name, pods });
    }
    // Bucket layouts are per workload, as an application has one histogram definition.
    let layouts: Vec<Vec<String>> = workloads
        .iter()
        .map(|_| {
            let mut bounds: Vec<String> = ["-1", "0", "0.05", "0.1", "0.25", "0.5", "1", "2.5"]
                .iter()
                .filter(|_| rng.chance(0.5))
                .map(|s| s.to_string())
                .collect();
            if rng.chance(0.2) {
                bounds.push("1.0".into()); // the same bound as "1", written differently
            }
            if rng.chance(0.85) {
                bounds.push("+Inf".into());
            }
            if rng.chance(0.1) {
                bounds.clear(); // no buckets at all
            }
            bounds
        })
        .collect();
    let mut b = b;
    for (workload, layout) in workloads.iter().zip(&layouts) {
        for pod in &workload.pods {
            for container in ["app", "sidecar", "POD"] {
                if container == "sidecar" && rng.chance(0.5) {
                    continue;
                }
                let labels = [("namespace", ns), ("pod", pod.as_str()), ("container", container)];
                let cores = rng.unit() * 15.0;
                b = b.counter("container_cpu_usage_seconds", &labels, at(counter_points(&mut rng, cores))).gauge(
                    "container_memory_working_set_bytes",
                    &labels,
                    at((0..POINTS).map(|i| (i * 15, 1e6 * (1.0 + rng.unit()))).collect()),
                );
                // A pod that is still starting has no requests yet.
                if rng.chance(0.8) {
                    for resource in ["cpu", "memory"] {
                        let labels = [
                            ("namespace", ns),
                            ("pod", pod.as_str()),
                            ("container", container),
                            ("resource", resource),
                        ];
                        let value = if resource == "cpu" { rng.unit() } else { 2e6 * rng.unit() };
                        b = b.gauge(
                            "kube_pod_container_resource_requests",
                            &labels,
                            at((0..POINTS).map(|i| (i * 15, value)).collect()),
                        );
                    }
                }
            }
            for code in ["200", "404", "500", "503"] {
                if code != "200" && rng.chance(0.4) {
                    continue; // no errors of this kind: no series
                }
                let labels = [("namespace", ns), ("pod", pod.as_str()), ("code", code)];
                let rate = if rng.chance(0.1) { 0.0 } else { rng.unit() * 100.0 };
                b = b.counter("http_requests", &labels, at(counter_points(&mut rng, rate)));
            }
            // Cumulative bucket counts, occasionally not monotonic across bounds, occasionally all zero.
            let idle = rng.chance(0.1);
            let mut cumulative = 0.0;
            for le in layout {
                let step = if idle { 0.0 } else { rng.unit() * 10.0 };
                cumulative += if rng.chance(0.1) { -step } else { step };
                let per_step = cumulative.max(0.0);
                let labels = [("namespace", ns), ("pod", pod.as_str()), ("le", le.as_str())];
                // A gauge, so that the name stays `_bucket` (OpenMetrics counters end in `_total`); rate() does not
                // care about the type.
                b = b.gauge("http_request_duration_seconds_bucket", &labels, at(counter_points(&mut rng, per_step)));
            }
        }
    }
    (b, workloads)
}

/// Every template with random parameters.
fn metrics(rng: &mut Rng) -> Vec<Metric> {
    let window = |rng: &mut Rng| Some(["1m", "2m", "45s"][rng.below(3) as usize].parse().expect("duration"));
    let container = |rng: &mut Rng| ["app", "sidecar"].get(rng.below(3) as usize).map(|c| c.to_string());
    let resource =
        |rng: &mut Rng| ResourceMetric { container: container(rng), window: window(rng), query_override: None };
    let counter = |rng: &mut Rng| CounterMetric { window: window(rng), ..Default::default() };
    let quantile = [0.5, 0.9, 0.99, 0.01, rng.unit() * 0.98 + 0.01][rng.below(5) as usize];
    vec![
        Metric { cpu: Some(resource(rng)), ..metric("cpu") },
        Metric { memory: Some(resource(rng)), ..metric("memory") },
        Metric {
            latency: Some(LatencyMetric { quantile, histogram: None, window: window(rng), query_override: None }),
            ..metric("latency")
        },
        Metric { error_rate: Some(counter(rng)), ..metric("errors") },
        Metric { request_rate: Some(counter(rng)), ..metric("rps") },
    ]
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan())
        || a == b
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-9))
}

fn assert_same_series(context: &str, grouped: &[Sample], direct: &[Sample]) {
    let g: Vec<_> = grouped.iter().map(|s| (s.time.as_second(), s.value)).collect();
    let d: Vec<_> = direct.iter().map(|s| (s.time.as_second(), s.value)).collect();
    let times = |v: &[(i64, f64)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(times(&g), times(&d), "{context}: timestamps differ");
    for (x, y) in g.iter().zip(&d) {
        assert!(same(x.1, y.1), "{context} at {}: grouped {} != Prometheus {}", x.0, x.1, y.1);
    }
}

#[derive(Default)]
struct Counts {
    sent: std::sync::atomic::AtomicUsize,
    deduplicated: std::sync::atomic::AtomicUsize,
}

impl QueryCounter for Counts {
    fn sent(&self, _: &'static str) {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn deduplicated(&self, _: &'static str) {
        self.deduplicated.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn throttled(&self, _: &str) {}
}

#[tokio::test]
async fn grouped_answers_equal_each_policys_own_promql_on_random_data() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seeds: Vec<u64> = (1..=12).collect();
    let mut b = OpenMetricsBuilder::new();
    let mut namespaces = Vec::new();
    for &seed in &seeds {
        let ns = format!("seed-{seed}");
        let (next, workloads) = namespace(b, &ns, seed);
        b = next;
        namespaces.push((seed, ns, workloads));
    }
    let server = PromServer::start(&b.build().expect("valid history"))
        .unwrap_or_else(|error| panic!("cannot start Prometheus: {error}"));
    let config = PrometheusConfig::new(server.url());
    let prometheus = Arc::new(PrometheusSource::new(&config).expect("valid config"));
    let source: Arc<dyn MetricsSource> = prometheus.clone();
    let counts = Arc::new(Counts::default());
    let reader = GroupedReader::new(GroupedConfig::default(), counts.clone());
    let (start, end) = (t(300), t(POINTS * 15));

    let (mut compared, mut non_empty, mut nan, mut grouped_reads) = (0, 0, 0, 0);
    for (seed, ns, workloads) in &namespaces {
        let mut rng = Rng(*seed);
        // A workload with no pods, too: its answer must be empty both ways.
        let ghost = Workload { kind: "Deployment", name: "ghost".into(), pods: vec![] };
        for workload in workloads.iter().chain([&ghost]) {
            let target =
                TargetRef { api_version: "apps/v1".into(), kind: workload.kind.into(), name: workload.name.clone() };
            for m in metrics(&mut rng) {
                let plan = promql::plan(&m, Scope::new(ns, &target)).expect("plan");
                assert!(matches!(plan, Plan::Grouped(_)), "{plan:?}");
                let context =
                    format!("seed {seed}, {} {} ({} pods), {m:?}", workload.kind, workload.name, workload.pods.len());
                let direct = source
                    .range(plan.per_policy_query(), start, end, STEP)
                    .await
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                let grouped = reader
                    .read(&config, &source, ns, &plan, start, end, STEP, end)
                    .await
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_same_series(&context, &grouped, &direct);
                compared += 1;
                grouped_reads += match &plan {
                    Plan::Grouped(g) => g.parts.len(),
                    Plan::Single(_) => 1,
                };
                non_empty += usize::from(!direct.is_empty());
                nan += usize::from(direct.iter().any(|s| s.value.is_nan()));
            }
        }
    }
    // The random data must actually exercise values and the NaN cases, or the comparison proves little.
    assert!(non_empty >= compared / 3, "only {non_empty} of {compared} comparisons had data");
    assert!(nan >= 3, "only {nan} series with NaN");
    let sent = counts.sent.load(std::sync::atomic::Ordering::SeqCst);
    let deduplicated = counts.deduplicated.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sent + deduplicated, grouped_reads);
    assert!(sent < grouped_reads / 2, "{sent} queries sent for {grouped_reads} reads: not shared");
}

#[tokio::test]
async fn identical_raw_queries_are_sent_once_and_overrides_keep_their_own_query() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = OpenMetricsBuilder::new().gauge(
        "queue_depth",
        &[("namespace", "shop")],
        at((0..POINTS).map(|i| (i * 15, i as f64)).collect()),
    );
    let server = PromServer::start(&b.build().expect("valid")).unwrap_or_else(|e| panic!("Prometheus: {e}"));
    let config = PrometheusConfig::new(server.url());
    let source: Arc<dyn MetricsSource> = Arc::new(PrometheusSource::new(&config).expect("valid config"));
    let counts = Arc::new(Counts::default());
    let reader = GroupedReader::new(GroupedConfig::default(), counts.clone());
    let raw = Metric {
        query: Some(QueryMetric {
            promql: r#"max(queue_depth{namespace="{namespace}"})"#.into(),
            allow_negative: false,
        }),
        ..metric("queue")
    };
    let overridden = Metric {
        cpu: Some(ResourceMetric { query_override: Some("max(queue_depth) * 2".into()), ..Default::default() }),
        ..metric("cpu")
    };
    for name in ["a", "b", "c"] {
        let target = TargetRef { api_version: "apps/v1".into(), kind: "Deployment".into(), name: name.into() };
        let read = |m| {
            let plan = promql::plan(m, Scope::new("shop", &target)).expect("plan");
            let (reader, config, source) = (&reader, &config, &source);
            async move { reader.read(config, source, "shop", &plan, t(600), t(600), STEP, t(600)).await.expect("read") }
        };
        assert_eq!(read(&raw).await.iter().map(|s| s.value).collect::<Vec<_>>(), [40.0]);
        assert_eq!(read(&overridden).await.iter().map(|s| s.value).collect::<Vec<_>>(), [80.0]);
    }
    assert_eq!(counts.sent.load(std::sync::atomic::Ordering::SeqCst), 2, "one raw query, one override");
    assert_eq!(counts.deduplicated.load(std::sync::atomic::Ordering::SeqCst), 4);
}
