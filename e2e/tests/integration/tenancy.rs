//! Tenant isolation on the Prometheus side, against the real reconcile loop and the fake API server: a policy
//! author cannot make the controller send a Secret anywhere, query an address the admin did not allow, or cut
//! other namespaces off by making its own queries time out; and an idle service (zero traffic) scales in.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use foresight::{
    api::ScalingPolicy,
    controller::{Context, Sources},
    source::{
        AccessPolicy, BreakerConfig, CREDENTIALS_SECRET_TYPE, CircuitState, MetricsSource, NoopObserver,
        PrometheusConfig, SourceError, SourcePool,
    },
};
use foresight_e2e::{
    prometheus::{DelayProxy, OpenMetricsBuilder, PromServer, StaticHttpServer, every},
    testkit::{self, eventually, t},
};
use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret, api::events::v1::Event};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn ready(policies: &Api<ScalingPolicy>, name: &str) -> Option<(String, String, String)> {
    let status = policies.get(name).await.ok()?.status?;
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn create_secret(client: &kube::Client, name: &str, type_: &str, data: &[(&str, &str)]) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), testkit::NAMESPACE);
    let data: BTreeMap<String, ByteString> =
        data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect();
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        type_: Some(type_.into()),
        data: Some(data),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.expect("create secret");
}

fn policy_on(address: &str, secret: &str) -> serde_json::Value {
    json!({
        "targetRef": { "name": "web" },
        "maxReplicas": 5,
        "interval": "1s",
        "dryRun": true,
        "prometheus": {
            "address": address,
            "auth": { "bearerToken": { "name": secret, "key": "password" } }
        },
        "metrics": [ { "name": "q", "query": { "promql": "vector(1)" } } ],
        "policies": { "target": [ { "metric": "q", "value": 1 } ] }
    })
}

/// QA's exfiltration: a policy points spec.prometheus at a listener of its own and names the database
/// password as its bearer token. The listener must never see the password, whatever the admin allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_cannot_send_a_secret_or_anything_to_an_address_of_its_choosing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let now = Timestamp::now();
    // Four listeners, one per case, so that every request is attributable.
    let not_allowed = StaticHttpServer::prometheus_vector(now, 1.0).expect("listener");
    let opaque = StaticHttpServer::prometheus_vector(now, 1.0).expect("listener");
    let elsewhere = StaticHttpServer::prometheus_vector(now, 1.0).expect("listener");
    let bound = StaticHttpServer::prometheus_vector(now, 1.0).expect("listener");
    let server = testkit::api_server();
    let client = server.client();
    let (_deployments, policies) = testkit::web_deployment(&server, 2).await;

    // The database password: an ordinary Secret nobody made for Foresight.
    create_secret(&client, "payments-db", "Opaque", &[("password", "hunter2-db")]).await;
    // A credentials Secret made for Foresight, bound to another address than the one the policy names.
    let other = "http://127.0.0.1:1";
    create_secret(&client, "bound-elsewhere", CREDENTIALS_SECRET_TYPE, &[("address", other), ("password", "tok-x")])
        .await;
    // A credentials Secret bound to the `bound` listener: the one case where a token is sent.
    create_secret(
        &client,
        "prom-token",
        CREDENTIALS_SECRET_TYPE,
        &[("address", &format!("{}/", bound.url())), ("password", "tok-ok")],
    )
    .await;

    let url = |s: &StaticHttpServer| format!("{}/any/path", s.url());
    testkit::create_policy(&policies, "not-allowed", policy_on(&url(&not_allowed), "payments-db")).await;
    testkit::create_policy(&policies, "opaque", policy_on(&opaque.url(), "payments-db")).await;
    testkit::create_policy(&policies, "elsewhere", policy_on(&elsewhere.url(), "bound-elsewhere")).await;
    let mut long_timeout = policy_on(&bound.url(), "prom-token");
    long_timeout["prometheus"]["timeout"] = json!("10m");
    testkit::create_policy(&policies, "bound", long_timeout).await;

    let access = AccessPolicy {
        // The admin allowed three of the listeners (not the first) and per-policy credentials.
        allowed_addresses: vec![opaque.url(), elsewhere.url(), bound.url()],
        policy_credentials: true,
        ..AccessPolicy::default()
    };
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool), Some("http://127.0.0.1:9".into()), "tenancy-test")
            .with_access(access),
    );
    let running = testkit::spawn_controller(ctx, &["shop"], 4);

    for (name, reason, words) in [
        ("not-allowed", "PrometheusAddressNotAllowed", "is not allowed"),
        ("opaque", "SecretNotAllowed", "not of type foresight.dev/prometheus-credentials"),
        ("elsewhere", "SecretNotAllowed", "does not name this Prometheus address"),
    ] {
        eventually(&format!("{name}: Ready=False {reason}"), WAIT, || async {
            ready(&policies, name).await.is_some_and(|(s, r, m)| s == "False" && r == reason && m.contains(words))
        })
        .await;
    }
    eventually("the bound policy to query its listener", WAIT, || async { !bound.requests().is_empty() }).await;
    // Another couple of evaluations for the refused ones, to be sure nothing goes out later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.stop().await;

    assert_eq!(not_allowed.requests(), [], "a non-allowed address was contacted");
    assert_eq!(opaque.requests(), [], "an ordinary Secret was sent");
    assert_eq!(elsewhere.requests(), [], "credentials were sent to another address than their Secret names");
    let sent = bound.requests();
    assert_eq!(sent[0].header("authorization"), Some("Bearer tok-ok"), "{sent:?}");
    // Its 10-minute timeout was lowered to the controller's ceiling, and its status says so.
    let (status, _, message) = ready(&policies, "bound").await.expect("condition");
    assert_eq!(status, "True");
    assert!(message.contains("spec.prometheus.timeout 10m lowered to the controller's maximum 30s"), "{message}");
    // The refusal never shows the Secret's content.
    for name in ["not-allowed", "opaque", "elsewhere"] {
        let (_, _, message) = ready(&policies, name).await.expect("condition");
        assert!(!message.contains("hunter2") && !message.contains("tok-x"), "{message}");
    }
}

/// QA's breaker DoS: tenant A's queries time out again and again against the shared Prometheus; tenant B's
/// queries to the same address keep working, and only A's own circuit opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_namespaces_timeouts_do_not_open_the_circuit_of_the_others() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream = StaticHttpServer::prometheus_vector(Timestamp::now(), 1.0).expect("upstream");
    let proxy = DelayProxy::start(upstream.addr()).expect("proxy");
    proxy.set_delay(Duration::from_millis(300));
    let pool = SourcePool::new(
        BreakerConfig { failure_threshold: 3, cool_off: Duration::from_secs(60) },
        Arc::new(NoopObserver),
    );
    let impatient = PrometheusConfig { timeout: Duration::from_millis(50), ..PrometheusConfig::new(proxy.url()) };
    let patient = PrometheusConfig { timeout: Duration::from_secs(5), ..PrometheusConfig::new(proxy.url()) };
    let a: Arc<dyn MetricsSource> = pool.get_or_create(&impatient, "team-a").expect("valid");
    let b: Arc<dyn MetricsSource> = pool.get_or_create(&patient, "team-b").expect("valid");

    for _ in 0..10 {
        let _ = a.instant("expensive", Timestamp::now()).await;
    }
    let error = a.instant("expensive", Timestamp::now()).await.expect_err("A's own circuit is open");
    assert!(matches!(error, SourceError::CircuitOpen { shared: false, .. }), "{error}");

    let samples = b.instant("cheap", Timestamp::now()).await.expect("B is not affected");
    assert_eq!(samples.len(), 1);
    let shared = pool.circuit(&proxy.url()).expect("shared circuit");
    assert_eq!(shared.state(), CircuitState::Closed);
    let own = pool.tenant_circuit(&proxy.url(), "team-a").expect("A's circuit");
    assert_eq!(own.state(), CircuitState::Open);
}

/// QA's idle service: no requests at all, so the p99 is 0/0 and the error ratio 0/0. CPU is low; the
/// service scales in, without a missing-metrics warning, and status says "no requests" in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_service_with_latency_and_error_rate_metrics_scales_in() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let step = Duration::from_secs(15);
    let points = 240;
    let pods = ["web-7c9f8d6b5-aaaaa", "web-7c9f8d6b5-bbbbb", "web-7c9f8d6b5-ccccc", "web-7c9f8d6b5-ddddd"];
    let mut history = OpenMetricsBuilder::new();
    for pod in pods {
        let app = [("namespace", testkit::NAMESPACE), ("pod", pod), ("container", "app")];
        // 0.05 of 0.5 cores: 10 % CPU.
        let cpu = every(t(0), step, points, |i, _| 0.05 * step.as_secs_f64() * i as f64);
        history = history.counter("container_cpu_usage_seconds", &app, cpu);
        let req = [("namespace", testkit::NAMESPACE), ("pod", pod), ("container", "app"), ("resource", "cpu")];
        history = history.gauge("kube_pod_container_resource_requests", &req, every(t(0), step, points, |_, _| 0.5));
        // The service exports its request metrics, but nothing calls it: every counter stays where it is.
        let ok = [("namespace", testkit::NAMESPACE), ("pod", pod), ("code", "200")];
        history = history.counter("http_requests", &ok, every(t(0), step, points, |_, _| 42.0));
        for le in ["0.1", "0.5", "+Inf"] {
            let bucket = [("namespace", testkit::NAMESPACE), ("pod", pod), ("le", le)];
            history =
                history.gauge("http_request_duration_seconds_bucket", &bucket, every(t(0), step, points, |_, _| 42.0));
        }
    }
    let prometheus = PromServer::start(&history.build().expect("history")).expect("Prometheus");
    let server = testkit::api_server();
    let client = server.client();
    let (deployments, policies) = testkit::web_deployment(&server, 4).await;
    // The README's SLO guard.
    testkit::create_policy(
        &policies,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "minReplicas": 1,
            "maxReplicas": 10,
            "interval": "1s",
            "metrics": [
                { "name": "cpu", "cpu": {} },
                { "name": "p99", "latency": { "quantile": 0.99 } },
                { "name": "errors", "errorRate": {}, "vetoScaleDown": { "above": 0.01 } }
            ],
            "policies": {
                "target": [ { "metric": "cpu", "value": 60 } ],
                "threshold": [ { "metric": "p99", "scaleUpAbove": 0.3, "scaleUpFor": "1m" } ]
            },
            "behavior": { "scaleDown": { "cooldown": "0s", "stabilizationWindow": "0s" } }
        }),
    )
    .await;
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool), Some(prometheus.url()), "idle-test")
            .with_clock(testkit::clock_from(t(30 * 60))),
    );
    let running = testkit::spawn_controller(ctx, &["shop"], 2);

    eventually("the idle service to scale in", WAIT, || async {
        deployments.get("web").await.ok().and_then(|d| d.spec?.replicas).is_some_and(|r| r < 4)
    })
    .await;
    running.stop().await;

    let status = policies.get("web").await.expect("policy").status.expect("status");
    let metrics = status.conditions.iter().find(|c| c.type_ == "MetricsAvailable").expect("MetricsAvailable");
    assert_eq!(metrics.status, "True", "{metrics:?}");
    assert!(metrics.message.contains("no requests: p99"), "{}", metrics.message);
    // The error ratio of no requests is 0 (the template's answer, not a NaN read as missing).
    let read: Vec<(String, Option<f64>, String)> = status
        .last_evaluation
        .expect("an evaluation")
        .metrics
        .into_iter()
        .map(|m| (m.name, m.value, m.state))
        .collect();
    assert!(read.contains(&("errors".into(), Some(0.0), "Ok".into())), "{read:?}");
    assert!(read.contains(&("p99".into(), None, "NoRequests".into())), "{read:?}");
    let events: Api<Event> = Api::namespaced(client, testkit::NAMESPACE);
    let events = events.list(&Default::default()).await.expect("events").items;
    assert!(
        !events.iter().any(|e| e.reason.as_deref() == Some("MetricsUnavailable")),
        "an idle service was reported as missing metrics"
    );
}

/// Header names and values a policy sets in spec.prometheus.headers are checked at apply by the CRD's schema
/// (the fake enforces the generated CRD as kube-apiserver would): a name that is not an HTTP token, a value with
/// a line break (header smuggling: "team-a\r\nHost: evil") or a control character is refused with the field
/// named, while a Mimir tenant header is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_and_values_are_validated_at_apply() {
    let server = foresight_e2e::fakeapi::FakeApiServer::builder().with_namespace(testkit::NAMESPACE).build();
    let client = server.client();
    foresight_e2e::harness::apply_crd(&client).await.expect("apply the generated CRD");
    let policies: Api<ScalingPolicy> = Api::namespaced(client, testkit::NAMESPACE);
    let with_headers = |name: &str, headers: serde_json::Value| -> ScalingPolicy {
        serde_json::from_value(json!({
            "apiVersion": "autoscaling.foresight.dev/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": { "name": name },
            "spec": {
                "targetRef": { "name": "web" },
                "maxReplicas": 5,
                "prometheus": { "address": "http://mimir:8080/prometheus", "headers": headers },
                "metrics": [ { "name": "cpu", "cpu": {} } ],
                "policies": { "target": [ { "metric": "cpu", "value": 60 } ] }
            }
        }))
        .expect("a ScalingPolicy")
    };
    let create = |p: ScalingPolicy| {
        let policies = policies.clone();
        async move { policies.create(&PostParams::default(), &p).await }
    };
    create(with_headers("tenant", json!({ "X-Scope-OrgID": "team-a|team-b", "X-Note": "a b\tc" })))
        .await
        .expect("token names and printable values are accepted");
    let long_name = "x".repeat(257);
    let long_value = "v".repeat(1025);
    let refused = [
        (json!({ "X Scope": "a" }), "header names must be HTTP tokens"),
        (json!({ "X-Scope-OrgID:": "a" }), "header names must be HTTP tokens"),
        (json!({ long_name: "a" }), "header names must be HTTP tokens"),
        (json!({ "X-Scope-OrgID": "team-a\r\nHost: evil" }), "spec.prometheus.headers.X-Scope-OrgID"),
        (json!({ "X-Scope-OrgID": "team\u{1}a" }), "should match"),
        (json!({ "X-Scope-OrgID": long_value }), "spec.prometheus.headers.X-Scope-OrgID"),
    ];
    for (i, (headers, expected)) in refused.into_iter().enumerate() {
        let shown = headers.to_string();
        match create(with_headers(&format!("bad-{i}"), headers)).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{shown}: {e:?}");
                assert!(e.message.contains(expected), "{shown}: {}", e.message);
            }
            other => panic!("{shown} was not refused at apply: {other:?}"),
        }
    }
}
