//! Grouped queries in the real reconcile loop, counted at the Prometheus side.
//!
//! Many policies in one namespace must cost one query per grouped template part (and one per distinct raw
//! query) per interval, not one per metric per policy; Prometheus' own `prometheus_http_requests_total` counts
//! what really arrived. A namespace that floods Prometheus with distinct queries spends its own budget only.

use std::{sync::Arc, time::Duration};

use foresight::{
    api::ScalingPolicy,
    controller::{Context, Sources},
    source::{BreakerConfig, GroupedConfig, GroupedReader, NoopObserver, SourcePool, budget::BudgetConfig},
};
use foresight_e2e::{
    fakeapi::{ApiResourceSpec, FakeApiServer, fixtures::deployment},
    prometheus::{OpenMetricsBuilder, PromServer, every},
    testkit::{self, eventually, t},
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(15);
const POINTS: usize = 240; // one hour
const POLICIES: usize = 20;

/// Range queries Prometheus has answered so far, from its own /metrics.
async fn range_queries(prometheus: &PromServer) -> u64 {
    let mut stream = tokio::net::TcpStream::connect(prometheus.addr()).await.expect("connect to Prometheus");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("response");
    body.lines()
        .filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains(r#"handler="/api/v1/query_range""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn pod(name: &str) -> String {
    format!("{name}-7c9f8d6b5-aaaaa")
}

/// Every workload's one pod at 0.35 of 0.5 cores (70 %), in its namespace, plus a queue depth gauge.
fn history(workloads: &[(&str, String)]) -> String {
    let mut b = OpenMetricsBuilder::new();
    for (ns, name) in workloads {
        let pod = pod(name);
        let app = [("namespace", *ns), ("pod", pod.as_str()), ("container", "app")];
        b = b.counter("container_cpu_usage_seconds", &app, every(t(0), STEP, POINTS, |i, _| 0.35 * 15.0 * i as f64));
        let req = [("namespace", *ns), ("pod", pod.as_str()), ("container", "app"), ("resource", "cpu")];
        b = b.gauge("kube_pod_container_resource_requests", &req, every(t(0), STEP, POINTS, |_, _| 0.5));
        let queue = [("namespace", *ns), ("pod", pod.as_str())];
        b = b.gauge("queue_depth", &queue, every(t(0), STEP, POINTS, |_, _| 5.0));
    }
    b.build().expect("valid history")
}

fn api_server(namespaces: &[&str]) -> FakeApiServer {
    let mut builder = FakeApiServer::builder().with_kind(
        ApiResourceSpec::custom("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies", "ScalingPolicy", true)
            .with_status(),
    );
    for ns in namespaces {
        builder = builder.with_namespace(ns);
    }
    builder.build()
}

/// Deployment `name` with 2 replicas and a policy on it with a cpu metric and `raw` as a raw query metric.
async fn workload(client: &kube::Client, ns: &str, name: &str, raw: &str) {
    workload_with(client, ns, name, raw, json!({ "target": [ { "metric": "cpu", "value": 50 } ] })).await;
}

/// [`workload`] with the policy's rules `rules` (`spec.policies`).
async fn workload_with(client: &kube::Client, ns: &str, name: &str, raw: &str, rules: serde_json::Value) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments.create(&PostParams::default(), &deployment(name, 2)).await.expect("create deployment");
    let policy: ScalingPolicy = serde_json::from_value(json!({
        "apiVersion": "autoscaling.foresight.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "targetRef": { "name": name },
            "minReplicas": 2,
            "maxReplicas": 2,
            "interval": "5s",
            "metrics": [ { "name": "cpu", "cpu": {} }, { "name": "queue", "query": { "promql": raw } } ],
            "policies": rules
        }
    }))
    .expect("valid policy");
    let policies: Api<ScalingPolicy> = Api::namespaced(client.clone(), ns);
    policies.create(&PostParams::default(), &policy).await.expect("create policy");
}

fn context(client: kube::Client, prometheus: &PromServer, grouped: Option<GroupedConfig>) -> Arc<Context> {
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let exporter = Arc::new(foresight::metrics::Metrics::new());
    let reader = grouped.map(|config| Arc::new(GroupedReader::new(config, exporter)));
    Arc::new(
        Context::new(client, Sources::Pool(pool), Some(prometheus.url()), "grouped-test")
            .with_clock(testkit::clock_from(t(30 * 60)))
            .with_grouped(reader),
    )
}

/// Each policy's MetricsAvailable condition (status, message), once every policy of `ns` has one.
async fn metrics_conditions(client: &kube::Client, ns: &str, count: usize) -> Vec<(String, String, Option<f64>)> {
    let policies: Api<ScalingPolicy> = Api::namespaced(client.clone(), ns);
    let read = || async {
        let list = policies.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
        list.into_iter()
            .filter_map(|p| {
                let status = p.status?;
                let c = status.conditions.iter().find(|c| c.type_ == "MetricsAvailable")?.clone();
                let cpu = status.last_evaluation?.metrics.first().and_then(|m| m.value);
                Some((c.status, c.message, cpu))
            })
            .collect::<Vec<_>>()
    };
    eventually("every policy to be evaluated", Duration::from_secs(30), || async { read().await.len() == count }).await;
    read().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_of_a_namespace_send_one_grouped_query_per_template_part_per_interval() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let names: Vec<(&str, String)> = (0..POLICIES).map(|i| ("shop", format!("web{i}"))).collect();
    let prometheus = PromServer::start(&history(&names)).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = api_server(&["shop"]);
    let client = server.client();
    let raw = r#"max(queue_depth{namespace="{namespace}"})"#;
    for (ns, name) in &names {
        workload(&client, ns, name, raw).await;
    }
    let running =
        testkit::spawn_controller(context(client.clone(), &prometheus, Some(GroupedConfig::default())), &[], 4);
    running.synced(Duration::from_secs(15)).await;
    let first = metrics_conditions(&client, "shop", POLICIES).await;
    for (status, message, cpu) in &first {
        assert_eq!(status, "True", "{message}");
        assert!(cpu.is_some_and(|v| (v - 70.0).abs() < 1e-6), "each policy sees its own pods' 70 %: {cpu:?}");
    }

    // Over 15 s (3 intervals of 5 s, so at most 4 aligned evaluation times): cpu is 2 grouped queries (usage,
    // requests) and the identical raw query 1, per evaluation time. Per policy it would be 2 x 20 per interval.
    let before = range_queries(&prometheus).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let sent = range_queries(&prometheus).await - before;
    eprintln!("{sent} range queries in 15 s for {POLICIES} policies");
    running.stop().await;
    assert!(sent >= 3, "the policies kept reading: {sent}");
    assert!(sent <= 3 * 4, "{sent} range queries in 15 s for {POLICIES} policies: not grouped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_with_different_threshold_durations_share_the_grouped_queries_of_their_namespace() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let names: Vec<(&str, String)> = (0..POLICIES).map(|i| ("shop", format!("web{i}"))).collect();
    let prometheus = PromServer::start(&history(&names)).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = api_server(&["shop"]);
    let client = server.client();
    let raw = r#"max(queue_depth{namespace="{namespace}"})"#;
    for (i, (ns, name)) in names.iter().enumerate() {
        // Lookbacks of 15 s and 20 s (the duration plus one 5 s interval): 3 and 4 steps, one 4-step query.
        let duration = if i % 2 == 0 { "10s" } else { "15s" };
        let rules = json!({ "threshold": [ { "metric": "cpu", "scaleUpAbove": 90, "scaleUpFor": duration } ] });
        workload_with(&client, ns, name, raw, rules).await;
    }
    let running =
        testkit::spawn_controller(context(client.clone(), &prometheus, Some(GroupedConfig::default())), &[], 4);
    running.synced(Duration::from_secs(15)).await;
    for (status, message, cpu) in metrics_conditions(&client, "shop", POLICIES).await {
        assert_eq!(status, "True", "{message}");
        assert!(cpu.is_some_and(|v| (v - 70.0).abs() < 1e-6), "each policy sees its own pods' 70 %: {cpu:?}");
    }
    // As with one lookback: 3 queries per evaluation time, at most 4 evaluation times in 15 s. One query per
    // distinct lookback would be 6 per evaluation time.
    let before = range_queries(&prometheus).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let sent = range_queries(&prometheus).await - before;
    eprintln!("{sent} range queries in 15 s for {POLICIES} policies with two threshold durations");
    running.stop().await;
    assert!(sent >= 3, "the policies kept reading: {sent}");
    assert!(sent <= 3 * 4, "{sent} range queries in 15 s: one query per distinct lookback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_that_floods_prometheus_is_throttled_alone() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut names: Vec<(&str, String)> = (0..POLICIES).map(|i| ("flood", format!("w{i}"))).collect();
    names.push(("quiet", "web".into()));
    let prometheus = PromServer::start(&history(&names)).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = api_server(&["flood", "quiet"]);
    let client = server.client();
    for (ns, name) in &names {
        // Every flood policy has its own raw query (its own pod), so nothing is shared there.
        let raw = format!(r#"max(queue_depth{{namespace="{{namespace}}",pod="{}"}})"#, pod(name));
        workload(&client, ns, name, &raw).await;
    }
    // 10 queries at once, then one a second: enough for a namespace whose policies share their queries (3 per
    // 5 s interval), not for 20 distinct queries per interval.
    let budget = BudgetConfig { per_second: 1.0, burst: 10.0 };
    let config = GroupedConfig { budget, ..GroupedConfig::default() };
    let running = testkit::spawn_controller(context(client.clone(), &prometheus, Some(config)), &[], 4);
    running.synced(Duration::from_secs(15)).await;
    let flood = metrics_conditions(&client, "flood", POLICIES).await;
    // Later evaluations of the quiet policy, after the flood spent its burst, still read their metrics (a change
    // of its condition would be written to its status).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let quiet = metrics_conditions(&client, "quiet", 1).await;
    running.stop().await;

    let throttled = flood.iter().filter(|(status, message, _)| status == "False" && message.contains("throttled"));
    assert!(throttled.count() >= POLICIES / 2, "the flooding namespace is held back and says so: {flood:?}");
    assert!(flood.iter().all(|(_, _, cpu)| cpu.is_some_and(|v| (v - 70.0).abs() < 1e-6)), "grouped cpu still fits");
    assert_eq!(quiet[0].0, "True", "the quiet namespace is not throttled: {quiet:?}");
}

/// A predictive policy reads its week of history once per refit (every `step`), not every interval: 11
/// evaluations a minute apart with a 5 min step are 11 grouped metric reads and 3 history reads (at 0, 5 and
/// 10 min), each history read one range query (a week at 5 min is 2,016 points, one chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_predictive_policy_reads_its_history_once_per_refit() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let _ = rustls::crypto::ring::default_provider().install_default();
    const WEEK: i64 = 7 * 86_400;
    let minute = Duration::from_secs(60);
    let points = (WEEK + 3600) as usize / 60;
    let mut b = OpenMetricsBuilder::new();
    for pod in ["web-7c9f8d6b5-aaaaa", "web-7c9f8d6b5-bbbbb"] {
        let labels = [("namespace", testkit::NAMESPACE), ("pod", pod), ("code", "200")];
        b = b.counter("http_requests", &labels, every(t(0), minute, points, |i, _| 6000.0 * i as f64));
    }
    let prometheus = PromServer::start(&b.build().expect("valid history"))
        .unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = testkit::api_server();
    let (_, policies) = testkit::web_deployment(&server, 2).await;
    testkit::create_policy(
        &policies,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "minReplicas": 1,
            "maxReplicas": 30,
            "interval": "1m",
            "metrics": [ { "name": "rps", "requestRate": { "window": "2m" } } ],
            "policies": { "predictive": {
                "metric": "rps", "capacityPerReplica": 100, "lookahead": "15m", "history": "7d", "step": "5m"
            } }
        }),
    )
    .await;
    let now = Arc::new(AtomicI64::new(0));
    let clock_now = now.clone();
    let clock: foresight::controller::Clock =
        Arc::new(move || jiff::Timestamp::from_second(clock_now.load(Ordering::SeqCst)).expect("valid clock"));
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let reader = Arc::new(GroupedReader::new(GroupedConfig::default(), Arc::new(foresight::metrics::Metrics::new())));
    let ctx = Arc::new(
        Context::new(server.client(), Sources::Pool(pool), Some(prometheus.url()), "refit-test")
            .with_clock(clock)
            .with_grouped(Some(reader)),
    );
    let before = range_queries(&prometheus).await;
    for m in 0..=10 {
        now.store(t(WEEK + m * 60).as_second(), Ordering::SeqCst);
        let sp = Arc::new(policies.get("web").await.expect("policy"));
        foresight::controller::reconcile(sp, ctx.clone()).await.unwrap_or_else(|e| panic!("reconcile at {m}: {e}"));
    }
    let sent = range_queries(&prometheus).await - before;
    let status = policies.get("web").await.expect("policy").status.expect("status");
    let forecast = status.last_evaluation.and_then(|e| e.prediction).expect("a forecast");
    assert!(forecast.used, "fitted on the history: {forecast:?}");
    assert_eq!(sent, 11 + 3, "11 metric reads and one history read per refit");
}
