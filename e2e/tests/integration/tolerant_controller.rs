//! The real reconcile loop against hostile or broken policies (fake API server, real Prometheus): a stored
//! policy the Rust types reject is reported on its own status without blocking the LIST or the others, and a
//! namespace whose Prometheus accepts connections and never answers delays no other namespace.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use foresight::{
    api::{RawScalingPolicy, ScalingPolicy},
    controller::{Context, ReconcileObserver, Sources},
    engine::{Forecast, Policy, Recommendation},
    source::{AccessPolicy, BreakerConfig, InMemorySource, NoopObserver, SourcePool},
};
use foresight_e2e::{
    fakeapi::{ApiResourceSpec, FakeApiServer, fixtures::deployment},
    prometheus::PromServer,
    testkit::{self, eventually, t},
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Records when each policy was evaluated.
#[derive(Default)]
struct Evaluations(Mutex<HashMap<(String, String), Vec<Instant>>>);

impl Evaluations {
    fn of(&self, namespace: &str, name: &str) -> Vec<Instant> {
        self.0.lock().unwrap().get(&(namespace.to_string(), name.to_string())).cloned().unwrap_or_default()
    }
}

impl ReconcileObserver for Evaluations {
    fn reconciled(&self, _: &'static str, _: f64) {}
    fn evaluated(&self, namespace: &str, name: &str, _: &Policy, _: &Recommendation, _: Option<&Forecast>) {
        self.0.lock().unwrap().entry((namespace.into(), name.into())).or_default().push(Instant::now());
    }
    fn scaled(&self, _: &str, _: &str, _: &'static str) {}
    fn policies_managed(&self, _: usize) {}
    fn forgotten(&self, _: &str, _: &str) {}
}

async fn ready_condition(policies: &Api<RawScalingPolicy>, name: &str) -> Option<(String, String, String)> {
    let status = policies.get(name).await.ok()?.status?.to_value();
    let conditions = status.get("conditions")?.as_array()?.clone();
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_string(),
        ready["reason"].as_str()?.to_string(),
        ready["message"].as_str()?.to_string(),
    ))
}

fn policy(name: &str, namespace: &str, spec: serde_json::Value) -> RawScalingPolicy {
    serde_json::from_value(json!({
        "apiVersion": "autoscaling.foresight.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    }))
    .expect("a policy object")
}

/// A policy stored before the controller starts (so it is in the first LIST) with an int64 in an int32 field
/// and an interval beyond any duration: the API server stores it (it enforces no `format`), the Rust types
/// reject it. The other policy is evaluated and the bad one says why on its own status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_policy_in_the_list_is_reported_on_its_status_and_blocks_no_other() {
    let server = testkit::api_server();
    let client = server.client();
    let (_deployments, _) = testkit::web_deployment(&server, 2).await;
    let raw: Api<RawScalingPolicy> = Api::namespaced(client.clone(), testkit::NAMESPACE);
    let spec = |max: serde_json::Value, interval: &str| {
        json!({
            "targetRef": { "name": "web" },
            "maxReplicas": max,
            "interval": interval,
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 70 } ] }
        })
    };
    raw.create(&PostParams::default(), &policy("huge", testkit::NAMESPACE, spec(json!(99_999_999_999u64), "1s")))
        .await
        .expect("the API server stores an int64 in an int32 field");
    raw.create(
        &PostParams::default(),
        &policy("forever", testkit::NAMESPACE, spec(json!(5), "99999999999999999999999s")),
    )
    .await
    .expect("the API server stores a duration that matches the pattern");
    raw.create(&PostParams::default(), &policy("web", testkit::NAMESPACE, spec(json!(5), "1s")))
        .await
        .expect("create the valid policy");

    let evaluations = Arc::new(Evaluations::default());
    let source = Arc::new(InMemorySource::new());
    let ctx = Arc::new(
        // The fixed source answers every query; the default address only has to exist.
        Context::new(client.clone(), Sources::Fixed(source), Some("http://127.0.0.1:9".into()), "tolerant-test")
            .with_telemetry(evaluations.clone()),
    );
    let running = testkit::spawn_controller(ctx, &[], 2);
    running.synced(WAIT).await;
    eventually("the valid policy to be evaluated twice", WAIT, || {
        let evaluations = evaluations.clone();
        async move { evaluations.of(testkit::NAMESPACE, "web").len() >= 2 }
    })
    .await;
    eventually("InvalidPolicy on the out-of-range policy's status", WAIT, || async {
        ready_condition(&raw, "huge").await
            == Some((
                "False".into(),
                "InvalidPolicy".into(),
                "spec.maxReplicas 99999999999 is out of range (at most 2147483647)".into(),
            ))
    })
    .await;
    eventually("InvalidPolicy on the unbounded interval's status", WAIT, || async {
        ready_condition(&raw, "forever").await.is_some_and(|(s, r, m)| {
            s == "False" && r == "InvalidPolicy" && m.starts_with("spec.interval: invalid duration")
        })
    })
    .await;
    assert!(evaluations.of(testkit::NAMESPACE, "huge").is_empty());
    running.stop().await;
}

/// Accepts TCP connections on 127.0.0.1 and never answers: a hostile or wedged Prometheus.
async fn tarpit() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (address, accepted)
}

/// Namespace `hog` has more policies than the controller has slots, each against a Prometheus that accepts
/// and never answers, with a 10-minute query timeout (interval 30s); a healthy policy in `shop` keeps its
/// cadence all along,
/// the hogs are abandoned at their deadline and say so on their status, and deleting them frees their slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_with_an_unresponsive_prometheus_does_not_delay_another_namespace() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let history = testkit::cpu_history(&["web-7c9f8d6b5-aaaaa"], 0.35, t(0), Duration::from_secs(15), 240);
    let prometheus = PromServer::start(&history).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let (hostile, accepted) = tarpit().await;
    let server = FakeApiServer::builder()
        .with_namespace(testkit::NAMESPACE)
        .with_namespace("hog")
        .with_kind(
            ApiResourceSpec::custom("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies", "ScalingPolicy", true)
                .with_status(),
        )
        .build();
    let client = server.client();
    let (_, shop) = testkit::web_deployment(&server, 1).await;
    Api::<Deployment>::namespaced(client.clone(), "hog")
        .create(&PostParams::default(), &deployment("app", 1))
        .await
        .expect("create the hog's deployment");
    let hog: Api<ScalingPolicy> = Api::namespaced(client.clone(), "hog");
    let hogs = 6;
    for i in 0..hogs {
        let sp = policy(
            &format!("hog-{i}"),
            "hog",
            json!({
                "targetRef": { "name": "app" },
                "maxReplicas": 5,
                "interval": "30s",
                "prometheus": { "address": hostile, "timeout": "10m" },
                "metrics": [ { "name": "cpu", "cpu": {} } ],
                "policies": { "target": [ { "metric": "cpu", "value": 70 } ] }
            }),
        );
        Api::<RawScalingPolicy>::namespaced(client.clone(), "hog")
            .create(&PostParams::default(), &sp)
            .await
            .expect("create a hog policy");
    }

    let evaluations = Arc::new(Evaluations::default());
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool), Some(prometheus.url()), "hog-test")
            .with_clock(testkit::clock_from(t(30 * 60)))
            .with_telemetry(evaluations.clone())
            // The admin allowed the hogs' Prometheus and long timeouts: the evaluation deadline alone must keep
            // them from delaying the other namespace.
            .with_access(AccessPolicy {
                allowed_addresses: vec![hostile.clone()],
                max_query_timeout: Duration::from_secs(600),
                ..AccessPolicy::default()
            }),
    );
    // Four slots in all, as many hogs as would take every one of them.
    let running = testkit::spawn_controller(ctx, &[], 4);
    running.synced(WAIT).await;
    eventually("the hogs to hold connections to the unresponsive Prometheus", WAIT, || {
        let accepted = accepted.clone();
        async move { accepted.load(Ordering::SeqCst) >= 2 }
    })
    .await;
    // Only now the healthy policy, so that the hogs are already in flight.
    testkit::create_policy(
        &shop,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "maxReplicas": 5,
            "interval": "2s",
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 70 } ] }
        }),
    )
    .await;
    let window = Duration::from_secs(16);
    tokio::time::sleep(window).await;
    let times = evaluations.of(testkit::NAMESPACE, "web");
    assert!(times.len() >= 4, "the healthy policy was evaluated {} times in {window:?} (interval 2s)", times.len());
    let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    // Two intervals, plus a second of scheduling on a loaded test machine.
    assert!(worst <= Duration::from_secs(5), "the healthy policy waited {worst:?} between evaluations (interval 2s)");

    let raw: Api<RawScalingPolicy> = Api::namespaced(client.clone(), "hog");
    // The hogs' deadline is their interval (30 s), then they retry and take the namespace's slots again.
    eventually("a hog abandoned at its deadline, said on its status", Duration::from_secs(40), || async {
        let mut any = false;
        for i in 0..hogs {
            any |= ready_condition(&raw, &format!("hog-{i}"))
                .await
                .is_some_and(|(s, r, _)| s == "False" && r == "EvaluationTimedOut");
        }
        any
    })
    .await;
    assert!(evaluations.of("hog", "hog-0").is_empty(), "a hog was evaluated against a Prometheus that never answers");

    // Deleted hogs stop holding the namespace's slots at once: a healthy policy there is evaluated well before
    // the deadline of the hogs in flight (up to 30 s away) would have freed them.
    for i in 0..hogs {
        hog.delete(&format!("hog-{i}"), &DeleteParams::default()).await.expect("delete a hog");
    }
    let healthy = policy(
        "healthy",
        "hog",
        json!({
            "targetRef": { "name": "app" },
            "maxReplicas": 5,
            "interval": "2s",
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 70 } ] }
        }),
    );
    raw.create(&PostParams::default(), &healthy).await.expect("create a healthy policy among the hogs");
    eventually("the healthy policy in the hogs' namespace to be evaluated", Duration::from_secs(4), || {
        let evaluations = evaluations.clone();
        async move { !evaluations.of("hog", "healthy").is_empty() }
    })
    .await;
    running.stop().await;
}
