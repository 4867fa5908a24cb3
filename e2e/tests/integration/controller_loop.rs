//! The real reconcile loop (`foresight::controller::run`, kube-runtime's `Controller`) against the fake API server
//! and a real Prometheus: a policy scales a Deployment up when its CPU is high, records history, conditions and
//! an Event, and then holds at maxReplicas without further writes.
//!
//! The controller's clock starts 30 minutes into the backfilled data and runs at real speed, so its range
//! queries land on the history Prometheus holds.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use foresight::{
    api::ScalingPolicy,
    controller::{Context, Sources},
    source::{BreakerConfig, NoopObserver, SourcePool},
};
use foresight_e2e::{
    prometheus::PromServer,
    testkit::{self, eventually, t},
};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);
const STEP: Duration = Duration::from_secs(15);
const POINTS: usize = 240; // one hour

/// Deployment `web` in `shop`: 4 pods at 0.35 cores of 0.5 requested (70 % CPU) for an hour.
fn history() -> String {
    testkit::cpu_history(
        &["web-7c9f8d6b5-aaaaa", "web-7c9f8d6b5-bbbbb", "web-7c9f8d6b5-ccccc", "web-7c9f8d6b5-ddddd"],
        0.35,
        t(0),
        STEP,
        POINTS,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_scales_a_deployment_up_on_high_cpu_and_records_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prometheus = PromServer::start(&history()).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = testkit::api_server();
    let client = server.client();
    let (deployments, policies) = testkit::web_deployment(&server, 2).await;
    testkit::create_policy(
        &policies,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "minReplicas": 1,
            "maxReplicas": 3,
            "interval": "1s",
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 50 } ] }
        }),
    )
    .await;

    let clock = testkit::clock_from(t(30 * 60));
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let exporter = Arc::new(foresight::metrics::Metrics::new());
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool), Some(prometheus.url()), "controller-loop-test")
            .with_clock(clock)
            .with_telemetry(exporter.clone()),
    );
    let running = testkit::spawn_controller(ctx, &["shop"], 4);
    running.synced(WAIT).await;

    // 70 % against a target of 50 % at 2 replicas asks for 3 (= maxReplicas).
    eventually("the Deployment to reach 3 replicas", WAIT, || {
        let deployments = deployments.clone();
        async move { deployments.get("web").await.ok().and_then(|d| d.spec?.replicas) == Some(3) }
    })
    .await;
    eventually("the scale to be in status", WAIT, || {
        let policies = policies.clone();
        async move {
            let status = policies.get("web").await.ok().and_then(|p| p.status);
            status.is_some_and(|s| s.history.first().is_some_and(|h| h.to == 3))
        }
    })
    .await;

    let status = policies.get("web").await.expect("policy").status.expect("status");
    assert_eq!(status.history.len(), 1, "{:?}", status.history);
    let entry = &status.history[0];
    assert_eq!((entry.from, entry.to, entry.policy.as_str()), (2, 3, "target/cpu"));
    assert_eq!(entry.metrics, ["cpu=70%"]);
    assert_eq!(status.current_replicas, Some(3));
    let ready_condition = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready_condition.status, "True");
    let metrics = status.last_evaluation.as_ref().expect("evaluation").metrics.clone();
    assert!((metrics[0].value.expect("cpu value") - 70.0).abs() < 1e-6, "{metrics:?}");

    let events: Api<Event> = Api::namespaced(client.clone(), "shop");
    eventually("a ScaledUp event", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
            list.iter().any(|e| {
                e.reason.as_deref() == Some("ScaledUp")
                    && e.note.as_deref().is_some_and(|n| n.starts_with("Scaled up from 2 to 3: "))
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
            })
        }
    })
    .await;

    // At maxReplicas it holds: no further scale, no further history over several intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = policies.get("web").await.expect("policy").status.expect("status");
    assert_eq!(later.history.len(), 1, "{:?}", later.history);
    assert_eq!(deployments.get("web").await.expect("deployment").spec.and_then(|s| s.replicas), Some(3));
    let limited = later.conditions.iter().find(|c| c.type_ == "ScalingLimited").expect("ScalingLimited");
    assert_eq!((limited.status.as_str(), limited.reason.as_str()), ("True", "TooManyReplicas"));

    // Deleted, the policy's series leave /metrics at the next prune (every 15 s) instead of staying forever.
    let series = r#"foresight_policy_current_replicas{namespace="shop",policy="web"} 3"#;
    assert!(exporter.encode().expect("encodes").contains(series));
    policies.delete("web", &Default::default()).await.expect("delete policy");
    eventually("the deleted policy's series to leave /metrics", Duration::from_secs(40), || {
        let text = exporter.encode().expect("encodes");
        async move { !text.contains(r#"policy="web""#) }
    })
    .await;

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_with_scale_is_resolved_through_discovery_and_scaled() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let prometheus = PromServer::start(&history()).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = testkit::api_server();
    let client = server.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(foresight_e2e::fakeapi::fixtures::scalable_crd(
        "example.com",
        "v1",
        "widgets",
        "Widget",
        &[],
    ))
    .expect("crd");
    crds.create(&PostParams::default(), &crd).await.expect("create crd");
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", &ar);
    let mut widget = DynamicObject::new("queue", &ar);
    widget.data = json!({ "spec": { "replicas": 1 } });
    widgets.create(&PostParams::default(), &widget).await.expect("create widget");

    // A custom query (constant 100 against a target of 50) doubles the replicas, up to maxReplicas 2.
    let policies: Api<ScalingPolicy> = Api::namespaced(client.clone(), "shop");
    testkit::create_policy(
        &policies,
        "queue",
        json!({
            "targetRef": { "apiVersion": "example.com/v1", "kind": "Widget", "name": "queue" },
            "maxReplicas": 2,
            "interval": "1s",
            "metrics": [ { "name": "depth", "query": { "promql": "vector(100)" } } ],
            "policies": { "target": [ { "metric": "depth", "value": 50 } ] }
        }),
    )
    .await;

    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let ctx = Arc::new(Context::new(client.clone(), Sources::Pool(pool), Some(prometheus.url()), "crd-test"));
    let running = testkit::spawn_controller(ctx, &[], 2);

    eventually("the Widget to reach 2 replicas", WAIT, || {
        let widgets = widgets.clone();
        async move {
            let w = widgets.get("queue").await.ok();
            w.is_some_and(|w| w.data["spec"]["replicas"] == json!(2))
        }
    })
    .await;
    eventually("the scale in status", WAIT, || {
        let policies = policies.clone();
        async move {
            let status = policies.get("queue").await.ok().and_then(|p| p.status);
            status.is_some_and(|s| s.history.first().is_some_and(|h| (h.from, h.to) == (1, 2)))
        }
    })
    .await;

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_evaluates_every_policy_at_once_not_an_interval_later() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prometheus = PromServer::start(&history()).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = testkit::api_server();
    let client = server.client();
    let (_deployments, policies) = testkit::web_deployment(&server, 2).await;
    // A 10-minute interval: a standby that only waits for its requeue would not evaluate within this test.
    testkit::create_policy(
        &policies,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "maxReplicas": 3,
            "interval": "10m",
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 50 } ] }
        }),
    )
    .await;
    let clock = testkit::clock_from(t(30 * 60));
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let leader = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool), Some(prometheus.url()), "standby")
            .with_clock(clock)
            .with_leader(leader.clone()),
    );
    let running = testkit::spawn_controller(ctx, &["shop"], 4);
    running.synced(WAIT).await;

    // As a standby it has seen the policy and requeued it for 10 minutes without evaluating it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(policies.get("web").await.expect("policy").status.is_none(), "a standby wrote status");

    leader.store(true, Ordering::SeqCst);
    eventually("the new leader to evaluate the policy", Duration::from_secs(10), || {
        let policies = policies.clone();
        async move { policies.get("web").await.ok().and_then(|p| p.status).is_some_and(|s| s.last_evaluation.is_some()) }
    })
    .await;

    running.stop().await;
}
