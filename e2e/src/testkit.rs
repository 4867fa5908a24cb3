//! Shared setup of the controller-level tests (real reconcile loop, fake API server, real Prometheus): a
//! namespace `shop` with the ScalingPolicy kind and a Deployment `web`, CPU history for it, bounded waits.

use std::time::{Duration, Instant};

use foresight::api::ScalingPolicy;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};

use crate::{
    fakeapi::{ApiResourceSpec, FakeApiServer, fixtures::deployment},
    prometheus::{OpenMetricsBuilder, every},
};

/// The namespace every controller-level test works in.
pub const NAMESPACE: &str = "shop";

/// A fake API server with namespace `shop` and the ScalingPolicy kind (with its status subresource).
pub fn api_server() -> FakeApiServer {
    FakeApiServer::builder()
        .with_namespace(NAMESPACE)
        .with_kind(
            ApiResourceSpec::custom("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies", "ScalingPolicy", true)
                .with_status(),
        )
        .build()
}

/// Creates Deployment `web` with `replicas` in `shop`; returns the Deployment and ScalingPolicy APIs there.
pub async fn web_deployment(server: &FakeApiServer, replicas: i32) -> (Api<Deployment>, Api<ScalingPolicy>) {
    let client = server.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    deployments.create(&PostParams::default(), &deployment("web", replicas)).await.expect("create deployment");
    (deployments, Api::namespaced(client, NAMESPACE))
}

/// Creates ScalingPolicy `name` in `shop` with this `spec` (JSON, as a user would write it) and returns it.
pub async fn create_policy(policies: &Api<ScalingPolicy>, name: &str, spec: serde_json::Value) -> ScalingPolicy {
    let policy: ScalingPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "autoscaling.foresight.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "spec": spec,
    }))
    .expect("valid policy");
    policies.create(&PostParams::default(), &policy).await.expect("create policy")
}

/// OpenMetrics history of `web`'s pods in `shop`, each using `cores` of 0.5 requested CPU, `points` samples
/// every `step` from `start`: cAdvisor's counter and kube-state-metrics' requests, as the cpu template reads them.
pub fn cpu_history(pods: &[&str], cores: f64, start: Timestamp, step: Duration, points: usize) -> String {
    let mut b = OpenMetricsBuilder::new();
    let step_secs = step.as_secs_f64();
    for pod in pods {
        let app = [("namespace", NAMESPACE), ("pod", pod), ("container", "app")];
        b = b.counter(
            "container_cpu_usage_seconds",
            &app,
            every(start, step, points, |i, _| cores * step_secs * i as f64),
        );
        let req = [("namespace", NAMESPACE), ("pod", pod), ("container", "app"), ("resource", "cpu")];
        b = b.gauge("kube_pod_container_resource_requests", &req, every(start, step, points, |_, _| 0.5));
    }
    b.build().expect("valid history")
}

/// Polls `check` every 100 ms until it holds, failing the test after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}
