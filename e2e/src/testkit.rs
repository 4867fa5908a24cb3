//! Shared setup of the controller-level tests (real reconcile loop, fake API server, real Prometheus): a
//! namespace `shop` with the ScalingPolicy kind and a Deployment `web`, CPU history for it, a clock over that
//! history, the reconcile loop in the background, bounded waits.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use foresight::{
    api::{ScalingPolicy, spec::Metric},
    controller::{self, Clock, Context, RunOptions},
};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};

use crate::{
    fakeapi::{ApiResourceSpec, FakeApiServer, fixtures::deployment},
    prometheus::{OpenMetricsBuilder, every},
};

/// The namespace every controller-level test works in.
pub const NAMESPACE: &str = "shop";

/// Where the tests' backfilled histories start: Monday 2024-01-01T00:00:00Z, in Unix seconds.
pub const T0: i64 = 1_704_067_200;

/// [`T0`] plus `offset_seconds`.
pub fn t(offset_seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + offset_seconds).expect("valid timestamp")
}

/// A metric named `name` with no source yet: the tests set the one they query.
pub fn metric(name: &str) -> Metric {
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

/// A controller clock that reads `start` now and runs at real speed, so that the controller's range queries
/// land on history backfilled around `start`.
pub fn clock_from(start: Timestamp) -> Clock {
    let started = Instant::now();
    Arc::new(move || start + jiff::SignedDuration::try_from(started.elapsed()).unwrap_or(jiff::SignedDuration::ZERO))
}

/// `foresight::controller::run` in the background, until [`RunningController::stop`].
pub struct RunningController {
    /// Set once every watch has listed its policies.
    pub ready: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the reconcile loop over `namespaces` (empty: all).
pub fn spawn_controller(ctx: Arc<Context>, namespaces: &[&str], concurrency: u16) -> RunningController {
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = RunOptions { namespaces: namespaces.iter().map(|n| n.to_string()).collect(), concurrency };
    let task = tokio::spawn(controller::run(ctx, options, ready.clone(), async {
        let _ = stopped.await;
    }));
    RunningController { ready, stop, task }
}

impl RunningController {
    /// Waits (up to `timeout`) until every watch has listed its policies.
    pub async fn synced(&self, timeout: Duration) {
        eventually("the watch to sync", timeout, || {
            let ready = self.ready.clone();
            async move { ready.load(Ordering::SeqCst) }
        })
        .await;
    }

    /// Shuts the loop down and fails the test unless it stops within 10 s.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("controller stops on shutdown")
            .expect("joined");
    }
}

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
