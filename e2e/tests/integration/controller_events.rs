//! What `kubectl describe sp` and `kubectl get events` show, against the fake API server's events.k8s.io and a
//! real Prometheus: every change of replicas is its own Event with its own from/to and reason (as the HPA's
//! `SuccessfulRescale`), never folded into the first one's series.

use std::{sync::Arc, time::Duration};

use foresight::{
    controller::{Context, Sources},
    source::{BreakerConfig, NoopObserver, SourcePool},
};
use foresight_e2e::{
    prometheus::PromServer,
    testkit::{self, eventually, t},
};
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const STEP: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scale_is_its_own_event_with_its_own_replicas() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // One pod at 0.35 of 0.5 cores: 70 % CPU whatever the replicas, so a 50 % target keeps asking for more.
    let history = testkit::cpu_history(&["web-7c9f8d6b5-aaaaa"], 0.35, t(0), STEP, 240);
    let prometheus = PromServer::start(&history).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = testkit::api_server();
    let client = server.client();
    let (deployments, policies) = testkit::web_deployment(&server, 1).await;
    testkit::create_policy(
        &policies,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "minReplicas": 1,
            "maxReplicas": 5,
            "interval": "1s",
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 50 } ] }
        }),
    )
    .await;
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool), Some(prometheus.url()), "controller-events-test")
            .with_clock(testkit::clock_from(t(30 * 60))),
    );
    let running = testkit::spawn_controller(ctx, &["shop"], 2);
    running.synced(WAIT).await;

    // 70 % against 50 %: 1 -> 2 -> 3 -> 5 (ceil(3 x 1.4) = 5 = maxReplicas).
    eventually("the Deployment to reach 5 replicas", WAIT, || {
        let deployments = deployments.clone();
        async move { deployments.get("web").await.ok().and_then(|d| d.spec?.replicas) == Some(5) }
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "shop");
    let scaled = || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
            let mut scaled: Vec<Event> = list.into_iter().filter(|e| e.reason.as_deref() == Some("ScaledUp")).collect();
            scaled.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
            scaled
        }
    };
    eventually("three ScaledUp events", WAIT, || {
        let scaled = scaled();
        async move { scaled.await.len() >= 3 }
    })
    .await;
    let scaled = scaled().await;
    let notes: Vec<&str> = scaled.iter().filter_map(|e| e.note.as_deref()).collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    for (note, prefix) in
        notes.iter().zip(["Scaled up from 1 to 2: ", "Scaled up from 2 to 3: ", "Scaled up from 3 to 5: "])
    {
        assert!(note.starts_with(prefix), "{note:?} should start with {prefix:?}; all: {notes:?}");
        assert!(note.contains("cpu 70%"), "{note:?} names the metric and its value");
    }
    for e in &scaled {
        assert_eq!(e.series, None, "a scale is never counted into another one's series: {e:?}");
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.action.as_deref(), Some("Scale"));
        assert_eq!(e.reporting_controller.as_deref(), Some("foresight"));
        assert_eq!(e.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("web"));
    }
    running.stop().await;
}
