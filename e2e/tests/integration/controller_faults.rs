//! The real reconcile loop when Prometheus dies and comes back (fake API server, real Prometheus): replicas are
//! held, `MetricsAvailable` turns False with an Event, the fallback floor applies after its threshold, the
//! circuit breaker opens, and everything recovers when Prometheus returns.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use foresight::{
    api::ScalingPolicy,
    controller::{Context, Sources},
    source::{BreakerConfig, CircuitState, NoopObserver, SourcePool},
};
use foresight_e2e::{
    prometheus::PromServer,
    testkit::{self, eventually, t},
};
use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::api::Api;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const STEP: Duration = Duration::from_secs(15);
const POINTS: usize = 240; // one hour

/// Deployment `web` in `shop`: 2 pods at 0.35 cores of 0.5 requested (70 % CPU) for an hour.
fn history() -> String {
    testkit::cpu_history(&["web-7c9f8d6b5-aaaaa", "web-7c9f8d6b5-bbbbb"], 0.35, t(0), STEP, POINTS)
}

async fn condition(policies: &Api<ScalingPolicy>, type_: &str) -> Option<(String, String)> {
    let status = policies.get("web").await.ok()?.status?;
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
}

async fn replicas(deployments: &Api<Deployment>) -> Option<i32> {
    deployments.get("web").await.ok()?.spec?.replicas
}

async fn has_event(events: &Api<Event>, reason: &str) -> bool {
    let list = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
    list.iter().any(|e| e.reason.as_deref() == Some(reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_prometheus_holds_replicas_then_falls_back_and_recovers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut prometheus = PromServer::start(&history()).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = testkit::api_server();
    let client = server.client();
    let (deployments, policies) = testkit::web_deployment(&server, 2).await;
    let events: Api<Event> = Api::namespaced(client.clone(), "shop");
    // On target (70 % vs 70 %): hold at 2. Without metrics for 3 evaluations: at least 4.
    testkit::create_policy(
        &policies,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "maxReplicas": 10,
            "interval": "1s",
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 70 } ] },
            "fallback": { "failureThreshold": 3, "replicas": 4 }
        }),
    )
    .await;

    let clock = testkit::clock_from(t(30 * 60));
    let breaker = BreakerConfig { failure_threshold: 2, cool_off: Duration::from_secs(1) };
    let pool = Arc::new(SourcePool::new(breaker, Arc::new(NoopObserver)));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool.clone()), Some(prometheus.url()), "faults-test")
            .with_clock(clock)
            .with_query_timeout(Duration::from_millis(500)),
    );
    let running = testkit::spawn_controller(ctx, &["shop"], 2);

    eventually("metrics to be read", WAIT, || async {
        condition(&policies, "MetricsAvailable").await == Some(("True".into(), "MetricsRead".into()))
    })
    .await;
    assert_eq!(replicas(&deployments).await, Some(2));

    prometheus.stop().expect("stop Prometheus");
    eventually("MetricsAvailable=False and its Event", WAIT, || async {
        condition(&policies, "MetricsAvailable").await.is_some_and(|(s, _)| s == "False")
            && has_event(&events, "MetricsUnavailable").await
    })
    .await;
    let circuit = pool.circuit(&prometheus.url()).expect("a circuit for the address");
    eventually("the circuit to open", WAIT, || {
        let circuit = circuit.clone();
        async move { circuit.state() != CircuitState::Closed }
    })
    .await;
    eventually("the fallback to raise replicas to 4", WAIT, || async { replicas(&deployments).await == Some(4) }).await;
    // The scale is patched first; its status and Events follow.
    eventually("the FallbackActive event and the history entry", WAIT, || async {
        let status = policies.get("web").await.ok().and_then(|p| p.status);
        has_event(&events, "FallbackActive").await && status.is_some_and(|s| !s.history.is_empty())
    })
    .await;
    let status = policies.get("web").await.expect("policy").status.expect("status");
    assert_eq!((status.history[0].from, status.history[0].to), (2, 4));
    assert_eq!(status.history[0].policy, "fallback");
    assert!(status.consecutive_metric_failures >= 3, "{}", status.consecutive_metric_failures);

    prometheus.restart().expect("restart Prometheus");
    eventually("metrics to be read again", WAIT, || async {
        condition(&policies, "MetricsAvailable").await == Some(("True".into(), "MetricsRead".into()))
    })
    .await;
    eventually("the circuit to close", WAIT, || {
        let circuit = circuit.clone();
        async move { circuit.state() == CircuitState::Closed }
    })
    .await;
    let status = policies.get("web").await.expect("policy").status.expect("status");
    assert_eq!(status.consecutive_metric_failures, 0);
    // 70 % at 4 replicas against 70 %: on target, so the fallback's replicas are kept, not undone at once.
    assert_eq!(replicas(&deployments).await, Some(4));
    assert!(running.ready.load(Ordering::SeqCst));

    running.stop().await;
}

async fn condition_message(policies: &Api<ScalingPolicy>, type_: &str) -> Option<String> {
    let status = policies.get("web").await.ok()?.status?;
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.clone())
}

/// Prometheus on a closed port, two metrics: once the breaker is open, MetricsAvailable says why once (the
/// connection is refused, and where), not the breaker's message once per metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_names_the_underlying_cause_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let address = format!("http://{closed}");
    let server = testkit::api_server();
    let client = server.client();
    let (_deployments, policies) = testkit::web_deployment(&server, 2).await;
    testkit::create_policy(
        &policies,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "maxReplicas": 10,
            "interval": "1s",
            "metrics": [ { "name": "cpu", "cpu": {} }, { "name": "memory", "memory": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 70 }, { "metric": "memory", "value": 80 } ] }
        }),
    )
    .await;
    let breaker = BreakerConfig { failure_threshold: 2, cool_off: Duration::from_secs(1) };
    let pool = Arc::new(SourcePool::new(breaker, Arc::new(NoopObserver)));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool.clone()), Some(address.clone()), "faults-test")
            .with_query_timeout(Duration::from_millis(500)),
    );
    let running = testkit::spawn_controller(ctx, &["shop"], 2);

    eventually("the circuit to open", WAIT, || {
        let pool = pool.clone();
        let address = address.clone();
        async move { pool.circuit(&address).is_some_and(|c| c.state() != CircuitState::Closed) }
    })
    .await;
    // Several evaluations and cool-offs (each ends in a failed probe) later, the message is the same.
    let mut seen = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        seen.push(condition_message(&policies, "MetricsAvailable").await.unwrap_or_default());
    }
    let expected = format!(
        "no metric could be read (cpu, memory: query failed: circuit open after 2 failures: connection refused ({closed}))"
    );
    assert_eq!(seen, vec![expected; 4]);
    let ready = condition_message(&policies, "Ready").await.unwrap_or_default();
    assert!(ready.matches("circuit open").count() <= 1, "{ready}");
    running.stop().await;
}

/// A raw query that matches nothing in Prometheus (a typo in the metric name): `Ready=False MetricNotFound`,
/// naming the metric, for as long as it stays so, with one Warning; the replicas are held (missing data never
/// scales down). Fixing the query (a new generation) makes the policy Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_that_never_exists_is_a_persistent_ready_false_until_its_query_is_fixed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prometheus = PromServer::start(&history()).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = testkit::api_server();
    let client = server.client();
    let (deployments, policies) = testkit::web_deployment(&server, 4).await;
    let events: Api<Event> = Api::namespaced(client.clone(), "shop");
    let spec = |query: &str| {
        json!({
            "targetRef": { "name": "web" },
            "maxReplicas": 10,
            "interval": "1s",
            "metrics": [ { "name": "cpu", "cpu": {} }, { "name": "queue", "query": { "promql": query } } ],
            // cpu at 70 % of a 95 % target asks for fewer replicas: only the missing queue holds them at 4.
            "policies": { "target": [ { "metric": "cpu", "value": 95 }, { "metric": "queue", "value": 10 } ] },
            "behavior": { "scaleDown": { "cooldown": "0s", "stabilizationWindow": "0s" } }
        })
    };
    testkit::create_policy(&policies, "web", spec("sum(queue_depht{namespace=\"shop\"})")).await;
    let clock = testkit::clock_from(t(30 * 60));
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool), Some(prometheus.url()), "faults-test").with_clock(clock),
    );
    let running = testkit::spawn_controller(ctx, &["shop"], 2);

    eventually("Ready=False MetricNotFound", WAIT, || async {
        condition(&policies, "Ready").await == Some(("False".into(), "MetricNotFound".into()))
    })
    .await;
    // It persists evaluation after evaluation, and is warned about once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(condition(&policies, "Ready").await, Some(("False".into(), "MetricNotFound".into())));
    let message = condition_message(&policies, "Ready").await.unwrap_or_default();
    assert!(message.starts_with("queue: Prometheus has had no series for its query since this spec"), "{message}");
    assert_eq!(condition(&policies, "MetricsAvailable").await, Some(("False".into(), "MetricNotFound".into())));
    let list = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
    let warned: Vec<_> = list.iter().filter(|e| e.reason.as_deref() == Some("MetricsUnavailable")).collect();
    assert_eq!(warned.len(), 1, "one Warning, not one per evaluation: {warned:?}");
    assert!(warned[0].series.is_none(), "not repeated: {:?}", warned[0]);
    assert_eq!(replicas(&deployments).await, Some(4), "a metric never found blocks scale-down");

    let fixed = json!({ "spec": spec("sum(kube_pod_container_resource_requests{namespace=\"shop\"})") });
    policies.patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&fixed)).await.expect("patch");
    eventually("Ready once the query finds series", WAIT, || async {
        condition(&policies, "Ready").await == Some(("True".into(), "Evaluated".into()))
    })
    .await;
    running.stop().await;
}
