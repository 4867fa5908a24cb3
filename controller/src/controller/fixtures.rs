//! Exact-request tests of one reconcile against a scripted API server (kube-rs controller-rs' `ApiServerVerifier`
//! style): every request the reconciler sends is checked (method, path, body) and answered, in order, and a
//! request the script does not expect fails the test. Metrics come from an `InMemorySource`.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::{Action, Context, Error, Sources, reconcile};
use crate::{
    api::{ScalingPolicy, ScalingPolicySpec},
    source::{
        InMemorySource, Sample,
        promql::{self, Scope},
    },
};

const NOW: i64 = 1_704_067_200;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("valid")
}

/// `ScalingPolicy` "web" in "shop" scaling Deployment "web" on cpu with a target of 60 %, between 1 and 10.
fn policy() -> ScalingPolicy {
    let spec: ScalingPolicySpec = serde_json::from_value(json!({
        "targetRef": { "name": "web" },
        "maxReplicas": 10,
        "metrics": [ { "name": "cpu", "cpu": {} } ],
        "policies": { "target": [ { "metric": "cpu", "value": 60 } ] }
    }))
    .expect("valid spec");
    let mut sp = ScalingPolicy::new("web", spec);
    sp.metadata.namespace = Some("shop".into());
    sp.metadata.generation = Some(1);
    sp.metadata.uid = Some("6b1d2f3e-0000-4000-8000-000000000001".into());
    sp.metadata.resource_version = Some("100".into());
    sp
}

trait PolicyExt {
    fn dry_run(self) -> Self;
    fn paused(self) -> Self;
    fn with_status(self, status: Value) -> Self;
}

impl PolicyExt for ScalingPolicy {
    fn dry_run(mut self) -> Self {
        self.spec.dry_run = true;
        self
    }
    fn paused(mut self) -> Self {
        self.metadata.annotations =
            Some([(crate::api::PAUSED_ANNOTATION.to_string(), "true".to_string())].into_iter().collect());
        self
    }
    fn with_status(mut self, status: Value) -> Self {
        self.status = Some(serde_json::from_value(status).expect("valid status"));
        self
    }
}

/// cpu at `value` % for the last 10 minutes, every 15 s.
fn cpu_at(sp: &ScalingPolicy, value: f64) -> Arc<InMemorySource> {
    let source = InMemorySource::new();
    let query = promql::query(&sp.spec.metrics[0], Scope::new("shop", &sp.spec.target_ref)).expect("query");
    let samples =
        (0..=40).map(|i| Sample::new(now() - jiff::SignedDuration::from_secs(15 * (40 - i)), value)).collect();
    source.set(query, samples);
    Arc::new(source)
}

fn scale(replicas: i32, resource_version: &str) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": { "name": "web", "namespace": "shop", "resourceVersion": resource_version },
        "spec": { "replicas": replicas },
        "status": { "replicas": replicas }
    })
}

fn not_found(what: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{what} not found"), "reason": "NotFound", "code": 404 }),
    )
}

const SCALE_PATH: &str = "/apis/apps/v1/namespaces/shop/deployments/web/scale";
const STATUS_PATH: &str = "/apis/autoscaling.foresight.dev/v1alpha1/namespaces/shop/scalingpolicies/web/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

/// One request as the verifier saw it.
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

/// The scripted API server.
struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

impl ApiServerVerifier {
    /// The next request, which must be `method path`, answered with `status` and `answer`.
    async fn expect(&mut self, method: Method, path: &str, status: StatusCode, answer: Value) -> Seen {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request within 5s; expected {method} {path}"))
            .unwrap_or_else(|| panic!("the client went away; expected {method} {path}"));
        let seen = Seen {
            method: request.method().clone(),
            path: request.uri().path().to_string(),
            query: request.uri().query().unwrap_or_default().to_string(),
            body: {
                let bytes = request.into_body().collect_bytes().await.expect("body");
                if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") }
            },
        };
        assert_eq!((&seen.method, seen.path.as_str()), (&method, path), "unexpected request: {}", seen.body);
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).expect("json")))
            .expect("response");
        send.send_response(response);
        seen
    }

    /// Answers a status merge patch with the policy carrying the patched status.
    async fn expect_status_patch(&mut self, sp: &ScalingPolicy) -> Seen {
        let mut answer = serde_json::to_value(sp).expect("json");
        {
            let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
                .await
                .expect("a status patch within 5s")
                .expect("the client went away; expected a status patch");
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            let bytes = request.into_body().collect_bytes().await.expect("body");
            let body: Value = serde_json::from_slice(&bytes).expect("JSON body");
            assert_eq!((&method, path.as_str()), (&Method::PATCH, STATUS_PATH), "unexpected request: {body}");
            answer["status"] = body["status"].clone();
            send.send_response(
                Response::builder().body(Body::from(serde_json::to_vec(&answer).expect("json"))).expect("response"),
            );
            Seen { method, path, query, body }
        }
    }

    /// Answers an Event creation.
    async fn expect_event(&mut self) -> Seen {
        self.expect(Method::POST, EVENTS_PATH, StatusCode::CREATED, json!({})).await
    }

    /// Fails if the reconciler sends anything more (waits until every client is dropped).
    async fn expect_nothing_more(mut self) {
        if let Ok(Some((request, _))) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

/// Runs one reconcile of `sp` against the script; returns its result once the script has finished.
async fn run<F, Fut>(sp: ScalingPolicy, source: Arc<InMemorySource>, script: F) -> Result<Action, Error>
where
    F: FnOnce(ApiServerVerifier) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let verifier = tokio::spawn(script(ApiServerVerifier(handle)));
    let ctx = Context::new(client, Sources::Fixed(source), Some("http://prometheus.test:9090".into()), "test-pod")
        .with_clock(Arc::new(now));
    let result = reconcile(Arc::new(sp), Arc::new(ctx)).await;
    // The context (and with it every client) is dropped here, which ends `expect_nothing_more`.
    tokio::time::timeout(Duration::from_secs(10), verifier).await.expect("script finished").expect("script passed");
    result
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn high_cpu_patches_scale_then_writes_history_and_an_event() {
    let sp = policy();
    let source = cpu_at(&sp, 90.0);
    let answer = sp.clone();
    let result = run(sp, source, move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(2, "7")).await;

        // Announced first, so that a controller stopping right after the scale patch loses nothing.
        let pending = api.expect_status_patch(&answer).await.body;
        let announced = &pending["status"]["pendingScale"];
        assert_eq!(pending["status"].as_object().map(|o| o.len()), Some(1), "only pendingScale: {pending}");
        assert_eq!((announced["from"].clone(), announced["to"].clone()), (json!(2), json!(3)), "{pending}");
        assert_eq!(announced["policy"], json!("target/cpu"));

        let patch = api.expect(Method::PATCH, SCALE_PATH, StatusCode::OK, scale(3, "8")).await;
        assert_eq!(patch.body, json!({ "metadata": { "resourceVersion": "7" }, "spec": { "replicas": 3 } }));
        assert!(patch.query.contains("fieldManager=foresight"), "{}", patch.query);

        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        assert_eq!((status["currentReplicas"].clone(), status["desiredReplicas"].clone()), (json!(3), json!(3)));
        assert_eq!(status["observedGeneration"], json!(1));
        let history = status["history"].as_array().expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["from"], json!(2));
        assert_eq!(history[0]["to"], json!(3));
        assert_eq!(history[0]["policy"], json!("target/cpu"));
        assert_eq!(history[0]["metrics"], json!(["cpu=90%"]));
        assert_eq!(history[0]["time"], json!("2024-01-01T00:00:00Z"));
        assert_eq!(status["lastScaleTime"], json!("2024-01-01T00:00:00Z"));
        assert_eq!(status.get("pendingScale"), Some(&Value::Null), "the merge patch must clear pendingScale");
        assert_eq!(&history[0], announced, "history records exactly what was announced");
        assert_eq!(status["lastEvaluation"]["metrics"][0]["value"], json!(90.0));
        assert_eq!(status["lastEvaluation"]["proposals"][0]["replicas"], json!(3));
        assert_eq!(status["lastEvaluation"]["decision"], json!("ScaleUp"));
        for (type_, value, reason) in [
            ("Ready", "True", "Evaluated"),
            ("MetricsAvailable", "True", "MetricsRead"),
            ("ScalingActive", "True", "Active"),
            ("ScalingLimited", "False", "WithinLimits"),
            ("ReplicaFight", "False", "NoFight"),
        ] {
            let c = condition(&status, type_);
            assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some(value), Some(reason)), "{c}");
            assert_eq!(c["observedGeneration"], json!(1));
            assert_eq!(c["lastTransitionTime"], json!("2024-01-01T00:00:00Z"));
        }

        let event = api.expect_event().await.body;
        assert_eq!(event["reason"], json!("ScaledUp"));
        assert_eq!(event["type"], json!("Normal"));
        assert_eq!(event["action"], json!("Scale"));
        let note = event["note"].as_str().expect("note");
        assert!(note.starts_with("Scaled up from 2 to 3: "), "{note}");
        assert!(note.contains("cpu 90%"), "{note}");
        assert_eq!(event["regarding"]["kind"], json!("ScalingPolicy"));
        assert_eq!(event["regarding"]["name"], json!("web"));
        assert_eq!(event["reportingController"], json!("foresight"));

        api.expect_nothing_more().await;
    })
    .await;
    assert_eq!(result.expect("reconciled"), Action::requeue(Duration::from_secs(15)));
}

#[tokio::test]
async fn dry_run_sends_no_scale_patch_but_reports_the_decision() {
    let sp = policy().dry_run();
    let source = cpu_at(&sp, 90.0);
    let answer = sp.clone();
    run(sp, source, move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(2, "7")).await;
        // Straight to status: a scale patch here fails the path assertion.
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        assert_eq!((status["currentReplicas"].clone(), status["desiredReplicas"].clone()), (json!(2), json!(3)));
        assert!(status.get("history").is_none(), "{status}");
        let active = condition(&status, "ScalingActive");
        assert_eq!((active["status"].as_str(), active["reason"].as_str()), (Some("False"), Some("DryRun")));
        let event = api.expect_event().await.body;
        assert_eq!(event["reason"], json!("DryRunDecision"));
        assert!(event["note"].as_str().is_some_and(|n| n.starts_with("Would scale from 2 to 3 (dry run)")), "{event}");
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
}

#[tokio::test]
async fn paused_sends_no_scale_patch_but_keeps_evaluating() {
    let sp = policy().paused();
    let source = cpu_at(&sp, 90.0);
    let answer = sp.clone();
    run(sp, source, move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(2, "7")).await;
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        assert_eq!(status["desiredReplicas"], json!(3));
        assert_eq!(status["lastEvaluation"]["metrics"][0]["value"], json!(90.0));
        let active = condition(&status, "ScalingActive");
        assert_eq!((active["status"].as_str(), active["reason"].as_str()), (Some("False"), Some("Paused")));
        let event = api.expect_event().await.body;
        assert_eq!(event["reason"], json!("DryRunDecision"));
        assert!(event["note"].as_str().is_some_and(|n| n.contains("(paused)")), "{event}");
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
}

#[tokio::test]
async fn a_change_by_someone_else_is_recorded_as_external() {
    // Foresight last set 4; the target now has 6 (kubectl scale). cpu is on target, so Foresight holds.
    let sp = policy().with_status(json!({
        "history": [ { "time": "2023-12-31T23:50:00Z", "from": 2, "to": 4, "reason": "cpu high", "policy": "target/cpu" } ]
    }));
    let source = cpu_at(&sp, 60.0);
    let answer = sp.clone();
    run(sp, source, move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(6, "9")).await;
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        let history = status["history"].as_array().expect("history");
        assert_eq!(history.len(), 2);
        assert_eq!(history[0]["policy"], json!("external"));
        assert_eq!((history[0]["from"].clone(), history[0]["to"].clone()), (json!(4), json!(6)));
        assert_eq!(history[0]["time"], json!("2024-01-01T00:00:00Z"));
        assert_eq!(history[1]["policy"], json!("target/cpu"));
        assert_eq!(status["currentReplicas"], json!(6));
        assert_eq!(condition(&status, "ReplicaFight")["status"], json!("False"));
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
}

#[tokio::test]
async fn a_missing_target_is_a_condition_an_event_and_an_error() {
    let sp = policy();
    let source = cpu_at(&sp, 90.0);
    let answer = sp.clone();
    let result = run(sp, source, move |mut api| async move {
        let (code, body) = not_found("deployments.apps \"web\"");
        api.expect(Method::GET, SCALE_PATH, code, body).await;
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        let ready = condition(&status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("TargetNotFound")));
        let event = api.expect_event().await.body;
        assert_eq!((event["reason"].as_str(), event["type"].as_str()), (Some("TargetNotFound"), Some("Warning")));
        api.expect_nothing_more().await;
    })
    .await;
    assert!(matches!(result, Err(Error::TargetNotFound { .. })), "{result:?}");
}

#[tokio::test]
async fn an_invalid_policy_is_reported_and_never_scales() {
    let mut sp = policy();
    sp.spec.min_replicas = Some(5);
    sp.spec.max_replicas = 3;
    let source = cpu_at(&sp, 90.0);
    let answer = sp.clone();
    let result = run(sp, source, move |mut api| async move {
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        let ready = condition(&status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidPolicy")));
        assert!(ready["message"].as_str().is_some_and(|m| m.contains("minReplicas (5)")), "{ready}");
        let event = api.expect_event().await.body;
        assert_eq!((event["reason"].as_str(), event["type"].as_str()), (Some("InvalidPolicy"), Some("Warning")));
        api.expect_nothing_more().await;
    })
    .await;
    assert_eq!(result.expect("reported"), Action::await_change());
}

#[tokio::test]
async fn a_conflicting_scale_patch_writes_no_history_and_fails_for_retry() {
    let sp = policy();
    let source = cpu_at(&sp, 90.0);
    let answer = sp.clone();
    let result = run(sp, source, move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(2, "7")).await;
        api.expect_status_patch(&answer).await;
        let conflict = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
            "message": "the object has been modified" });
        api.expect(Method::PATCH, SCALE_PATH, StatusCode::CONFLICT, conflict).await;
        // No history entry: only Ready=False with the reason, and a Warning event.
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        assert!(status.get("history").is_none(), "{status}");
        let ready = condition(&status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("ScaleFailed")));
        assert!(ready["message"].as_str().is_some_and(|m| m.contains("modified")), "{ready}");
        let event = api.expect_event().await.body;
        assert_eq!((event["reason"].as_str(), event["type"].as_str()), (Some("ScaleFailed"), Some("Warning")));
        api.expect_nothing_more().await;
    })
    .await;
    let error = result.expect_err("conflict");
    assert_eq!(error.category(), "patch_scale", "{error}");
}

#[tokio::test]
async fn an_unchanged_evaluation_writes_nothing() {
    // First reconcile: hold at 3 replicas, status written. Second, with that status: only the /scale read.
    let sp = policy();
    let source = cpu_at(&sp, 60.0);
    let answer = sp.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    run(sp.clone(), source.clone(), move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(3, "7")).await;
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        let _ = tx.send(status);
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
    let status = rx.await.expect("status");
    run(sp.with_status(status), source, |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(3, "7")).await;
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
}

#[tokio::test]
async fn a_scale_whose_status_write_failed_is_recorded_once_by_the_next_reconcile() {
    // Reconcile 1: the scale is announced in status.pendingScale, the scale patch succeeds, the final status
    // write gets a 500 (as if the controller had died there). Reconcile 2 is a fresh controller (new context:
    // nothing in memory) reading the stored status: the target has the 3 replicas announced, which must be
    // recorded as Foresight's scale, once, with its event, and not as someone else's change.
    let sp = policy();
    let answer = sp.clone();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = tokio::spawn(async move {
        let mut api = ApiServerVerifier(handle);
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(2, "7")).await;
        let stored = api.expect_status_patch(&answer).await.body["status"].clone();
        api.expect(Method::PATCH, SCALE_PATH, StatusCode::OK, scale(3, "8")).await;
        let boom = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError",
            "code": 500, "message": "etcd is sad" });
        api.expect(Method::PATCH, STATUS_PATH, StatusCode::INTERNAL_SERVER_ERROR, boom).await;
        let _ = tx.send(stored);

        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(3, "8")).await;
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        let history = status["history"].as_array().expect("history").clone();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0]["policy"], json!("target/cpu"));
        assert_eq!((history[0]["from"].clone(), history[0]["to"].clone()), (json!(2), json!(3)));
        assert_eq!(status.get("pendingScale"), Some(&Value::Null), "settled, so cleared: {status}");
        assert_eq!(status["lastScaleTime"], history[0]["time"]);
        assert_eq!(condition(&status, "ReplicaFight")["status"], json!("False"));
        let event = api.expect_event().await.body;
        assert_eq!(event["reason"], json!("ScaledUp"));
        let note = event["note"].as_str().expect("note");
        assert!(note.starts_with("Scaled up from 2 to 3 at "), "{note}");
        api.expect_nothing_more().await;
    });
    // cpu 60 % against 60 % at 2 replicas would hold; start high so that the first reconcile scales.
    let high = cpu_at(&sp, 90.0);
    let context = |client: Client, source: Arc<InMemorySource>| {
        Arc::new(
            Context::new(client, Sources::Fixed(source), Some("http://prometheus.test:9090".into()), "test-pod")
                .with_clock(Arc::new(now)),
        )
    };
    let first = reconcile(Arc::new(sp.clone()), context(client.clone(), high.clone())).await;
    assert_eq!(first.expect_err("status write failed").category(), "patch_status");
    let stored = rx.await.expect("the pending status the API server holds");
    // The load has settled at target by the retry.
    let query = promql::query(&sp.spec.metrics[0], Scope::new("shop", &sp.spec.target_ref)).expect("query");
    high.set(
        query,
        (0..=40).map(|i| Sample::new(now() - jiff::SignedDuration::from_secs(15 * (40 - i)), 60.0)).collect(),
    );
    reconcile(Arc::new(sp.with_status(stored)), context(client, high)).await.expect("second reconcile");
    tokio::time::timeout(Duration::from_secs(10), script).await.expect("script finished").expect("script passed");
}

#[tokio::test]
async fn a_pending_scale_that_never_happened_is_dropped() {
    // The controller announced 2 -> 3 and stopped before the scale patch: the target still has 2. Nothing
    // is recorded, neither as Foresight's scale nor as someone else's, and pendingScale is cleared.
    let sp = policy().with_status(json!({
        "currentReplicas": 2,
        "pendingScale": { "time": "2023-12-31T23:59:00Z", "from": 2, "to": 3, "reason": "cpu high", "policy": "target/cpu" }
    }));
    let source = cpu_at(&sp, 60.0);
    let answer = sp.clone();
    run(sp, source, move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(2, "7")).await;
        let body = api.expect_status_patch(&answer).await.body;
        let status = &body["status"];
        assert_eq!(status.get("pendingScale"), Some(&Value::Null), "cleared: {body}");
        assert!(status.get("history").is_none(), "{body}");
        assert_eq!(status["currentReplicas"], json!(2));
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
}

#[tokio::test]
async fn a_deleted_policy_is_forgotten_with_its_metric_series() {
    let sp = policy();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let answer = sp.clone();
    let script = tokio::spawn(async move {
        let mut api = ApiServerVerifier(handle);
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(2, "7")).await;
        api.expect_status_patch(&answer).await;
        api.expect(Method::PATCH, SCALE_PATH, StatusCode::OK, scale(3, "8")).await;
        api.expect_status_patch(&answer).await;
        api.expect_event().await;
    });
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let ctx = Context::new(client, Sources::Fixed(cpu_at(&sp, 90.0)), Some("http://prometheus.test:9090".into()), "p")
        .with_clock(Arc::new(now))
        .with_telemetry(metrics.clone());
    let ctx = Arc::new(ctx);
    reconcile(Arc::new(sp), ctx.clone()).await.expect("reconciled");
    tokio::time::timeout(Duration::from_secs(10), script).await.expect("script finished").expect("script passed");
    let exported = |text: String| text.contains(r#"foresight_policy_current_replicas{namespace="shop",policy="web"}"#);
    assert!(exported(metrics.encode().expect("encodes")), "the evaluated policy is exported");

    // Still in the watch store: kept.
    let key = ("shop".to_string(), "web".to_string());
    assert_eq!(ctx.prune(&std::collections::HashSet::from([key])), 0);
    assert!(exported(metrics.encode().expect("encodes")));
    // Deleted (gone from the store): forgotten once, series and all.
    assert_eq!(ctx.prune(&std::collections::HashSet::new()), 1);
    let text = metrics.encode().expect("encodes");
    assert!(!text.contains(r#"policy="web""#), "the deleted policy's series remain:\n{text}");
    assert_eq!(ctx.prune(&std::collections::HashSet::new()), 0);
}

#[tokio::test]
async fn a_standby_replica_sends_nothing() {
    let sp = policy();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let script = tokio::spawn(ApiServerVerifier(handle).expect_nothing_more());
    let ctx =
        Context::new(client, Sources::Fixed(cpu_at(&sp, 90.0)), Some("http://prometheus.test:9090".into()), "standby")
            .with_leader(Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let action = reconcile(Arc::new(sp), Arc::new(ctx)).await.expect("requeued");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    tokio::time::timeout(Duration::from_secs(10), script).await.expect("script finished").expect("no request");
}

#[tokio::test]
async fn a_restarted_controller_honours_the_cooldown_recorded_in_status() {
    // A fresh context (a controller that just started: no memory of its own) and a policy whose status says it
    // scaled 4 -> 5 two minutes ago. CPU is far below target, but the default 5-minute scale-down cooldown, read
    // from status.history, still holds.
    let sp = policy().with_status(json!({
        "currentReplicas": 5,
        "desiredReplicas": 5,
        "history": [ {
            "time": "2023-12-31T23:58:00Z", "from": 4, "to": 5, "reason": "cpu 90% vs target 60%: 4 -> 5",
            "policy": "target/cpu"
        } ]
    }));
    let source = cpu_at(&sp, 10.0);
    let answer = sp.clone();
    run(sp, source, move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(5, "7")).await;
        // No scale patch: straight to status.
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        assert_eq!(status["desiredReplicas"], json!(5));
        assert_eq!(status["history"].as_array().map(Vec::len), Some(1), "{status}");
        let limited = condition(&status, "ScalingLimited");
        assert_eq!((limited["status"].as_str(), limited["reason"].as_str()), (Some("True"), Some("CooldownActive")));
        assert!(limited["message"].as_str().is_some_and(|m| m.contains("2024-01-01T00:03:00Z")), "{limited}");
        let event = api.expect_event().await.body;
        assert_eq!(event["reason"], json!("ScaleLimited"));
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
}

#[tokio::test]
async fn nan_from_prometheus_holds_replicas_and_says_why() {
    let sp = policy();
    let source = cpu_at(&sp, f64::NAN);
    let answer = sp.clone();
    run(sp, source, move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(6, "7")).await;
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        assert_eq!((status["currentReplicas"].clone(), status["desiredReplicas"].clone()), (json!(6), json!(6)));
        let metrics = condition(&status, "MetricsAvailable");
        assert_eq!((metrics["status"].as_str(), metrics["reason"].as_str()), (Some("False"), Some("FailedGetMetric")));
        assert_eq!(status["lastEvaluation"]["metrics"][0]["state"], json!("NotANumber"));
        assert!(status["lastEvaluation"]["metrics"][0].get("value").is_none(), "a NaN is never a number: {status}");
        let event = api.expect_event().await.body;
        assert_eq!(event["reason"], json!("MetricsUnavailable"));
        assert_eq!(event["type"], json!("Warning"));
        // ScalingLimited turned True (FailedGetMetric) as well.
        let event = api.expect_event().await.body;
        assert_eq!(event["reason"], json!("ScaleLimited"));
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
}

#[tokio::test]
async fn a_slow_prometheus_times_out_instead_of_hanging_the_reconcile() {
    // The source answers after 30 s; the query timeout is 1 s. The reconcile finishes, holds replicas and
    // reports the timeout (the script's own 5-second waits fail the test if it hangs).
    let sp = policy();
    let source = cpu_at(&sp, 90.0);
    source.set_delay(Duration::from_secs(30));
    let answer = sp.clone();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let verifier = tokio::spawn(async move {
        let mut api = ApiServerVerifier(handle);
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(4, "7")).await;
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        assert_eq!(status["desiredReplicas"], json!(4));
        assert_eq!(status["lastEvaluation"]["metrics"][0]["state"], json!("QueryFailed"));
        let metrics = condition(&status, "MetricsAvailable");
        assert!(metrics["message"].as_str().is_some_and(|m| m.contains("no answer within")), "{metrics}");
        while let Ok(Some((_, send))) = tokio::time::timeout(Duration::from_secs(1), api.0.next_request()).await {
            send.send_response(Response::builder().status(201).body(Body::from(b"{}".to_vec())).expect("response"));
        }
    });
    let ctx = Context::new(client, Sources::Fixed(source), Some("http://prometheus.test:9090".into()), "test-pod")
        .with_clock(Arc::new(now))
        .with_query_timeout(Duration::from_secs(1));
    let started = std::time::Instant::now();
    reconcile(Arc::new(sp), Arc::new(ctx)).await.expect("reconciled");
    assert!(started.elapsed() < Duration::from_secs(10), "reconcile took {:?}", started.elapsed());
    tokio::time::timeout(Duration::from_secs(10), verifier).await.expect("script finished").expect("script passed");
}

#[tokio::test]
async fn a_steady_hold_logs_no_info_line_and_every_line_names_the_policy_at_the_top() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let buf = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(crate::telemetry::json_layer(move || crate::telemetry::Capture(writer.clone())));
    let _guard = tracing::subscriber::set_default(subscriber);
    // Three evaluations of a policy holding at 3 replicas, the status already written by the first.
    let sp = policy();
    let source = cpu_at(&sp, 60.0);
    let answer = sp.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    run(sp.clone(), source.clone(), move |mut api| async move {
        api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(3, "7")).await;
        let status = api.expect_status_patch(&answer).await.body["status"].clone();
        let _ = tx.send(status);
        api.expect_nothing_more().await;
    })
    .await
    .expect("reconciled");
    let sp = sp.with_status(rx.await.expect("status"));
    for _ in 0..2 {
        run(sp.clone(), source.clone(), |mut api| async move {
            api.expect(Method::GET, SCALE_PATH, StatusCode::OK, scale(3, "7")).await;
            api.expect_nothing_more().await;
        })
        .await
        .expect("reconciled");
    }
    let text = String::from_utf8(buf.lock().unwrap().clone()).expect("utf-8");
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().filter(|l| l["message"] == "evaluated").count() >= 3, "{text}");
    let info: Vec<&Value> = lines.iter().filter(|l| l["level"] == "INFO").collect();
    assert!(info.is_empty(), "INFO lines for a steady hold: {info:?}");
    for l in lines.iter().filter(|l| l["span"] == "reconcile") {
        assert_eq!(l["namespace"], sp.metadata.namespace.clone().unwrap_or_default().as_str(), "{l}");
        assert_eq!(l["name"], sp.metadata.name.clone().unwrap_or_default().as_str(), "{l}");
        assert!(!l.to_string().contains("Action {"), "Rust Debug text in {l}");
    }
}

/// Every due policy waits for an evaluation slot as its own task, so at 10,000 policies thousands of these
/// futures are alive at once: waiting, one holds a few pointers and the slot request, not the evaluation's
/// state machine (which was about 10 KB, and with the parsed status most of the heap).
#[tokio::test]
async fn a_policy_waiting_for_a_slot_holds_a_small_future() {
    let sp = policy();
    let raw: crate::api::RawScalingPolicy =
        serde_json::from_value(serde_json::to_value(&sp).expect("serializes")).expect("reads back");
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(client, Sources::Fixed(cpu_at(&sp, 90.0)), Some("http://prometheus.test:9090".into()), "p");
    let waiting = super::evaluate(Arc::new(raw), Arc::new(ctx), Arc::new(super::slots::Slots::new(1, 1)));
    let size = std::mem::size_of_val(&waiting);
    assert!(size <= 1024, "a policy waiting for its slot holds a {size}-byte future");
}
