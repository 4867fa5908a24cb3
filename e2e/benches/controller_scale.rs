//! The reconcile loop with many policies: reconcile latency (p50/p99) and the process's resident memory.
//!
//! `cargo bench -p foresight-e2e --bench controller_scale [-- POLICIES SECONDS]` (default 1000 policies, 30 s).
//! The real `foresight::controller::run` runs against the in-process fake API server; metrics come from an
//! in-memory source, so the latency excludes Prometheus time (it is /scale read, engine, /status and Event
//! writes). Every policy is evaluated every 5 s. Resident memory is read from /proc/self/status and includes the
//! fake API server's store (1,000 Deployments, 1,000 policies with status) and its log of every request it
//! answered, in the same process.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use foresight::{
    api::ScalingPolicy,
    controller::{self, Context, ReconcileObserver, RunOptions, Sources},
    engine::{Forecast, Policy, Recommendation},
    source::{InMemorySource, Sample},
};
use foresight_e2e::fakeapi::{ApiResourceSpec, FakeApiServer, fixtures::deployment};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;

#[derive(Default)]
struct Latencies {
    seconds: Mutex<Vec<f64>>,
    failures: Mutex<usize>,
}

impl ReconcileObserver for Latencies {
    fn reconciled(&self, result: &'static str, seconds: f64) {
        if result == "success" {
            self.seconds.lock().unwrap_or_else(|p| p.into_inner()).push(seconds);
        } else {
            *self.failures.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
    }
    fn evaluated(&self, _: &str, _: &str, _: &Policy, _: &Recommendation, _: Option<&Forecast>) {}
    fn scaled(&self, _: &str, _: &str, _: &'static str) {}
    fn policies_managed(&self, _: usize) {}
    fn forgotten(&self, _: &str, _: &str) {}
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let policies: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(bench(policies, seconds))
}

async fn bench(count: usize, seconds: u64) -> Result<(), Box<dyn std::error::Error>> {
    let rss_start = rss_kib();
    let server = FakeApiServer::builder()
        .with_namespace("bench")
        .with_kind(
            ApiResourceSpec::custom("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies", "ScalingPolicy", true)
                .with_status(),
        )
        .build();
    let client = server.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "bench");
    let policies: Api<ScalingPolicy> = Api::namespaced(client.clone(), "bench");
    // One shared query answers every policy: on target, so each policy holds (one status write, then none).
    let source = Arc::new(InMemorySource::new());
    let now = Timestamp::now();
    let samples =
        (-40..=400).map(|i| Sample::new(now + jiff::SignedDuration::from_secs(15 * i), 50.0)).collect::<Vec<_>>();
    source.set("load", samples);
    for i in 0..count {
        let name = format!("app-{i}");
        deployments.create(&PostParams::default(), &deployment(&name, 2)).await?;
        let policy: ScalingPolicy = serde_json::from_value(json!({
            "apiVersion": "autoscaling.foresight.dev/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": { "name": name, "namespace": "bench" },
            "spec": {
                "targetRef": { "name": name },
                "maxReplicas": 10,
                "interval": "5s",
                "metrics": [ { "name": "load", "query": { "promql": "load" } } ],
                "policies": { "target": [ { "metric": "load", "value": 50 } ] }
            }
        }))?;
        policies.create(&PostParams::default(), &policy).await?;
    }
    server.clear_requests();
    let rss_loaded = rss_kib();

    let latencies = Arc::new(Latencies::default());
    let ctx = Arc::new(
        Context::new(client, Sources::Fixed(source), Some("http://unused:9090".into()), "bench")
            .with_telemetry(latencies.clone()),
    );
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = RunOptions { namespaces: vec![], concurrency: 16 };
    let started = Instant::now();
    let run = tokio::spawn(controller::run(ctx, options, ready.clone(), async {
        let _ = stopped.await;
    }));
    while !ready.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let synced = started.elapsed();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rss_running = rss_kib();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), run).await;

    let requests = server.requests();
    let count_of = |method: &str, suffix: &str| {
        requests.iter().filter(|r| r.method == method && r.path.ends_with(suffix) && !r.is_watch()).count()
    };
    let mut sorted = latencies.seconds.lock().unwrap_or_else(|p| p.into_inner()).clone();
    sorted.sort_by(f64::total_cmp);
    let failures = *latencies.failures.lock().unwrap_or_else(|p| p.into_inner());
    let ms = |s: f64| s * 1000.0;
    println!("policies:            {count}");
    println!("watch synced after:  {synced:?}");
    println!("reconciles:          {} ok, {failures} failed in {seconds}s", sorted.len());
    println!(
        "API requests:        {} GET /scale, {} PATCH /status, {} PATCH /scale",
        count_of("GET", "/scale"),
        count_of("PATCH", "/status"),
        count_of("PATCH", "/scale")
    );
    println!("reconcile p50:       {:.2} ms", ms(percentile(&sorted, 0.50)));
    println!("reconcile p99:       {:.2} ms", ms(percentile(&sorted, 0.99)));
    println!("reconcile max:       {:.2} ms", ms(sorted.last().copied().unwrap_or(f64::NAN)));
    let mib = |k: Option<u64>| k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "n/a".into());
    println!("RSS at start:        {}", mib(rss_start));
    println!("RSS objects loaded:  {} (fake API server store)", mib(rss_loaded));
    println!("RSS running:         {} (controller + fake API server)", mib(rss_running));
    Ok(())
}
