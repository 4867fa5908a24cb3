//! Prometheus queries per interval with and without grouped queries, against a real Prometheus.
//!
//! `cargo bench -p foresight-e2e --bench grouped_queries [-- POLICIES NAMESPACES INTERVALS]` (default 1,000
//! policies in 10 namespaces, 3 intervals). Each policy has a cpu metric and a raw query (the measured problem of
//! issue #12) on its own Deployment with two pods. Every interval, every policy reads both metrics over a
//! 2-minute lookback at a 15 s step, once per policy (one range query per metric, as without
//! `--grouped-queries`) and once through the shared `GroupedReader` (what `--grouped-queries` does); the policies
//! of an interval run 64 at a time, as the reconcile loop does across namespaces. Prints the range queries
//! Prometheus answered (its own `prometheus_http_requests_total`), the wall time of an interval's reads, and
//! how many reads were answered from a query already sent.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use foresight::{
    api::spec::{Metric, QueryMetric, ResourceMetric, TargetRef},
    promql::{self, Scope},
    source::{GroupedConfig, GroupedReader, MetricsSource, PrometheusConfig, PrometheusSource, QueryCounter},
};
use foresight_e2e::prometheus::{OpenMetricsBuilder, PromServer, every};
use futures::{StreamExt, stream};
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(15);
const POINTS: usize = 120;
const T0: i64 = 1_704_067_200;

#[derive(Default)]
struct Counts {
    sent: AtomicUsize,
    deduplicated: AtomicUsize,
    throttled: AtomicUsize,
}

impl QueryCounter for Counts {
    fn sent(&self, _: &'static str) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
    fn deduplicated(&self, _: &'static str) {
        self.deduplicated.fetch_add(1, Ordering::Relaxed);
    }
    fn throttled(&self, _: &str) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }
}

async fn range_queries(prometheus: &PromServer) -> u64 {
    let Ok(mut stream) = tokio::net::TcpStream::connect(prometheus.addr()).await else { return 0 };
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    body.lines()
        .filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains(r#"handler="/api/v1/query_range""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn metric(name: &str) -> Metric {
    Metric {
        name: name.into(),
        cpu: None,
        memory: None,
        latency: None,
        error_rate: None,
        request_rate: None,
        query: None,
        veto_scale_down: None,
    }
}

struct Policy {
    namespace: String,
    target: TargetRef,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let policies = args.first().copied().unwrap_or(1000);
    let namespaces = args.get(1).copied().unwrap_or(10).max(1);
    let intervals = args.get(2).copied().unwrap_or(3).max(1);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let start = Timestamp::from_second(T0)?;
    let mut b = OpenMetricsBuilder::new();
    let mut all = Vec::new();
    for i in 0..policies {
        let namespace = format!("ns{}", i % namespaces);
        let name = format!("app{i}");
        for p in ["aaaaa", "bbbbb"] {
            let pod = format!("{name}-7c9f8d6b5-{p}");
            let app = [("namespace", namespace.as_str()), ("pod", pod.as_str()), ("container", "app")];
            b = b.counter(
                "container_cpu_usage_seconds",
                &app,
                every(start, STEP, POINTS, |j, _| 0.3 * 15.0 * j as f64),
            );
            let req =
                [("namespace", namespace.as_str()), ("pod", pod.as_str()), ("container", "app"), ("resource", "cpu")];
            b = b.gauge("kube_pod_container_resource_requests", &req, every(start, STEP, POINTS, |_, _| 0.5));
        }
        let queue = [("namespace", namespace.as_str())];
        if i < namespaces {
            b = b.gauge("queue_depth", &queue, every(start, STEP, POINTS, |_, _| 3.0));
        }
        all.push(Policy {
            namespace,
            target: TargetRef { api_version: "apps/v1".into(), kind: "Deployment".into(), name },
        });
    }
    let prometheus = PromServer::start(&b.build()?)?;
    let metrics = [
        Metric { cpu: Some(ResourceMetric::default()), ..metric("cpu") },
        Metric {
            query: Some(QueryMetric {
                promql: r#"max(queue_depth{namespace="{namespace}"})"#.into(),
                allow_negative: false,
            }),
            ..metric("q")
        },
    ];
    println!(
        "{policies} policies in {namespaces} namespaces, 2 metrics each (cpu, a raw query), {intervals} intervals"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = PrometheusConfig::new(prometheus.url());
        let source: Arc<dyn MetricsSource> = Arc::new(PrometheusSource::new(&config)?);
        let counts = Arc::new(Counts::default());
        let reader = GroupedReader::new(GroupedConfig::default(), counts.clone());
        for grouped in [false, true] {
            let before = range_queries(&prometheus).await;
            let mut seconds = Vec::new();
            let mut failed = 0;
            for k in 0..intervals {
                // Interval k of the data, 15 minutes in.
                let end = Timestamp::from_second(T0 + 900 + 15 * k as i64)?;
                let begin = end.checked_sub(jiff::SignedDuration::from_mins(2))?;
                let started = Instant::now();
                let results: Vec<bool> = stream::iter(all.iter().flat_map(|p| metrics.iter().map(move |m| (p, m))))
                    .map(|(p, m)| {
                        let (reader, source, config) = (&reader, &source, &config);
                        async move {
                            let plan = promql::plan(m, Scope::new(&p.namespace, &p.target)).expect("plan");
                            if grouped {
                                reader.read(config, source, &p.namespace, &plan, begin, end, STEP, end).await.is_ok()
                            } else {
                                source.range(plan.per_policy_query(), begin, end, STEP).await.is_ok()
                            }
                        }
                    })
                    .buffer_unordered(64)
                    .collect()
                    .await;
                failed += results.iter().filter(|ok| !**ok).count();
                seconds.push(started.elapsed().as_secs_f64());
            }
            let sent = range_queries(&prometheus).await - before;
            let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
            println!(
                "{:<22} {:>6.0} range queries per interval, {:>6.3} s of reads per interval, {failed} failed reads",
                if grouped { "grouped (after):" } else { "per policy (before):" },
                sent as f64 / intervals as f64,
                mean
            );
        }
        println!(
            "grouped reader: {} queries sent, {} reads answered from a query already sent, {} throttled",
            counts.sent.load(Ordering::Relaxed),
            counts.deduplicated.load(Ordering::Relaxed),
            counts.throttled.load(Ordering::Relaxed)
        );
        anyhow::Ok(())
    })?;
    Ok(())
}
