//! `--promql-tenancy=namespace` in the real reconcile loop: a policy's own PromQL reaches Prometheus confined to
//! the policy's namespace, and a policy that asks for another namespace's series gets no data and says why on its
//! status.

use std::{sync::Arc, time::Duration};

use foresight::{
    controller::{Context, Sources},
    source::{InMemorySource, Sample, promql::tenancy::Tenancy},
};
use foresight_e2e::testkit::{self, NAMESPACE, eventually};
use jiff::Timestamp;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_confined_and_a_foreign_namespace_is_refused_on_status() {
    let server = testkit::api_server();
    let (_, policies) = testkit::web_deployment(&server, 2).await;
    let spec = |promql: &str| {
        serde_json::json!({
            "targetRef": { "name": "web" },
            "maxReplicas": 10,
            "interval": "1s",
            "metrics": [ { "name": "load", "query": { "promql": promql } } ],
            "policies": { "target": [ { "metric": "load", "value": 50 } ] }
        })
    };
    testkit::create_policy(&policies, "own", spec("sum(rate(jobs_total[2m]))")).await;
    testkit::create_policy(&policies, "foreign", spec(r#"sum(rate(jobs_total{namespace="payments"}[2m]))"#)).await;

    let source = Arc::new(InMemorySource::new());
    let now = Timestamp::now();
    let samples: Vec<Sample> =
        (-40..=400).map(|i| Sample::new(now + jiff::SignedDuration::from_secs(15 * i), 50.0)).collect();
    source.set(r#"sum(rate(jobs_total{namespace="shop"}[2m]))"#, samples);
    let ctx = Context::new(server.client(), Sources::Fixed(source.clone()), Some("http://unused:9090".into()), "t")
        .with_promql_tenancy(Tenancy::Namespace);
    let running = testkit::spawn_controller(Arc::new(ctx), &[NAMESPACE], 4);
    running.synced(WAIT).await;

    eventually("both policies to be evaluated", WAIT, || {
        let policies = policies.clone();
        async move {
            let mut evaluated = 0;
            for name in ["own", "foreign"] {
                let status = policies.get(name).await.ok().and_then(|p| p.status);
                evaluated += usize::from(status.is_some_and(|s| s.last_evaluation.is_some()));
            }
            evaluated == 2
        }
    })
    .await;
    let asked: Vec<String> = source.queries().iter().map(|q| q.query().to_string()).collect();
    assert!(asked.iter().all(|q| q == r#"sum(rate(jobs_total{namespace="shop"}[2m]))"#), "{asked:?}");

    let own = policies.get("own").await.expect("own").status.expect("status");
    let value = &own.last_evaluation.as_ref().expect("evaluation").metrics[0];
    assert_eq!((value.state.as_str(), value.value), ("Ok", Some(50.0)), "{own:?}");

    let foreign = policies.get("foreign").await.expect("foreign").status.expect("status");
    let value = &foreign.last_evaluation.as_ref().expect("evaluation").metrics[0];
    assert_eq!((value.state.as_str(), value.value), ("QueryFailed", None), "{foreign:?}");
    let text = serde_json::to_string(&foreign).expect("json");
    assert!(text.contains(r#"may read only namespace=\"shop\""#), "the status says why the metric has no data: {text}");
    running.stop().await;
}
