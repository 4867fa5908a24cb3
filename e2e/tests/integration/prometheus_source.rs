//! `PrometheusSource` against a real Prometheus 2.x with backfilled history.
//!
//! Every test starts its own server on its own copy of the data (Prometheus compacts its data directory about a
//! minute after start). History: two hours from 2024-01-01T00:00:00Z at 15 s.

use foresight::source::{
    Auth, BreakerConfig, BreakerSource, CircuitBreaker, CircuitState, Clock, MetricsSource, PrometheusConfig,
    PrometheusSource, QueryObserver, Sample, SourceError,
};
use foresight_e2e::prometheus::{DelayProxy, OpenMetricsBuilder, PromServer, StaticHttpServer, every};
use foresight_e2e::testkit::{T0, t};
use futures::future::BoxFuture;
use jiff::Timestamp;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POINTS: usize = 480; // two hours at 15 s
const STEP: Duration = Duration::from_secs(15);

/// - `queue_depth{queue="orders"}` = 100 + i (one series)
/// - `inflight{pod="a"}` = i and `inflight{pod="b"}` = 2i (two series)
/// - `requests_total` grows by 30 per 15 s (rate 2/s)
/// - `idle_workers` = 0 (so `idle_workers / idle_workers` is NaN)
fn history() -> String {
    OpenMetricsBuilder::new()
        .gauge("queue_depth", &[("queue", "orders")], every(t(0), STEP, POINTS, |i, _| 100.0 + i as f64))
        .gauge("inflight", &[("pod", "a")], every(t(0), STEP, POINTS, |i, _| i as f64))
        .gauge("inflight", &[("pod", "b")], every(t(0), STEP, POINTS, |i, _| 2.0 * i as f64))
        .counter("requests", &[], every(t(0), STEP, POINTS, |i, _| 30.0 * i as f64))
        .gauge("idle_workers", &[], every(t(0), STEP, POINTS, |_, _| 0.0))
        .build()
        .expect("valid history")
}

fn start_server() -> PromServer {
    PromServer::start(&history()).unwrap_or_else(|error| panic!("cannot start Prometheus: {error}"))
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn source_for(url: &str) -> PrometheusSource {
    install_crypto();
    PrometheusSource::new(&PrometheusConfig::new(url)).expect("valid config")
}

fn values(samples: &[Sample]) -> Vec<(i64, f64)> {
    samples.iter().map(|s| (s.time.as_second() - T0, s.value)).collect()
}

#[tokio::test]
async fn instant_query_returns_the_value_at_a_time_inside_the_data() {
    let server = start_server();
    let source = source_for(&server.url());

    // i = 40 at 600 s; 7 s later the lookback still sees the same sample.
    for at in [600, 607] {
        let samples = source.instant(r#"queue_depth{queue="orders"}"#, t(at)).await.expect("answers");
        assert_eq!(values(&samples), [(at, 140.0)]);
    }

    let rate = source.instant("sum(rate(requests_total[5m]))", t(3600)).await.expect("answers");
    assert_eq!(rate.len(), 1);
    assert!((rate[0].value - 2.0).abs() < 1e-9, "rate was {}", rate[0].value);

    let scalar = source.instant("scalar(queue_depth)", t(600)).await.expect("answers");
    assert_eq!(values(&scalar), [(600, 140.0)], "a scalar result counts as one sample");
}

#[tokio::test]
async fn range_query_returns_the_expected_samples() {
    let server = start_server();
    let source = source_for(&server.url());

    let samples = source.range("queue_depth", t(600), t(660), Duration::from_secs(15)).await.expect("answers");
    assert_eq!(values(&samples), [(600, 140.0), (615, 141.0), (630, 142.0), (645, 143.0), (660, 144.0)]);

    // Steps before the data starts are absent, not zero.
    let edge = source.range("queue_depth", t(-60), t(30), Duration::from_secs(30)).await.expect("answers");
    assert_eq!(values(&edge), [(0, 100.0), (30, 102.0)]);
}

#[tokio::test]
async fn two_series_is_an_error_and_aggregating_fixes_it() {
    let server = start_server();
    let source = source_for(&server.url());

    assert_eq!(source.instant("inflight", t(600)).await, Err(SourceError::MultipleSeries { count: 2 }));
    assert_eq!(source.range("inflight", t(600), t(630), STEP).await, Err(SourceError::MultipleSeries { count: 2 }));
    let summed = source.instant("sum(inflight)", t(600)).await.expect("answers");
    assert_eq!(values(&summed), [(600, 120.0)]);
}

#[tokio::test]
async fn no_data_is_an_empty_answer() {
    let server = start_server();
    let source = source_for(&server.url());

    assert_eq!(source.instant("does_not_exist", t(600)).await, Ok(vec![]));
    assert_eq!(source.range("does_not_exist", t(600), t(660), STEP).await, Ok(vec![]));
    // Outside the data's time range (a day before it starts).
    assert_eq!(source.instant("queue_depth", t(-86_400)).await, Ok(vec![]));
}

#[tokio::test]
async fn nan_is_passed_through_not_zeroed() {
    let server = start_server();
    let source = source_for(&server.url());

    let instant = source.instant("idle_workers / idle_workers", t(600)).await.expect("answers");
    assert_eq!(instant.len(), 1);
    assert!(instant[0].value.is_nan(), "got {}", instant[0].value);

    let range = source.range("idle_workers / idle_workers", t(600), t(630), STEP).await.expect("answers");
    assert_eq!(range.len(), 3);
    assert!(range.iter().all(|s| s.value.is_nan()));

    let infinite = source.instant("sum(queue_depth) / sum(idle_workers)", t(600)).await.expect("answers");
    assert_eq!(infinite.iter().map(|s| s.value).collect::<Vec<_>>(), [f64::INFINITY]);
}

#[tokio::test]
async fn bad_promql_is_a_prometheus_error_that_names_the_problem() {
    let server = start_server();
    let source = source_for(&server.url());

    let error = source.instant("sum(queue_depth", t(600)).await.expect_err("syntax error");
    assert_eq!(error.category(), "prometheus_bad_data", "{error}");
    assert!(!error.is_server_failure());

    let error = source.instant("queue_depth[5m]", t(600)).await.expect_err("range vector");
    assert_eq!(error.category(), "unexpected_result", "{error}");
}

/// Counts the queries that reach the inner source.
struct Counting {
    inner: PrometheusSource,
    calls: AtomicUsize,
}

impl MetricsSource for Counting {
    fn instant<'a>(&'a self, query: &'a str, at: Timestamp) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.instant(query, at).await
        })
    }

    fn range<'a>(
        &'a self,
        query: &'a str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.range(query, start, end, step).await
        })
    }
}

#[derive(Default)]
struct Transitions(Mutex<Vec<CircuitState>>);

impl QueryObserver for Transitions {
    fn query_finished(&self, _outcome: &'static str, _seconds: f64) {}
    fn circuit_changed(&self, _address: &str, state: CircuitState) {
        self.0.lock().expect("lock").push(state);
    }
}

#[tokio::test]
async fn outage_opens_the_circuit_and_a_probe_closes_it_after_restart() {
    let mut server = start_server();
    let now = Arc::new(Mutex::new(Timestamp::now()));
    let clock: Clock = {
        let now = now.clone();
        Arc::new(move || *now.lock().expect("lock"))
    };
    let transitions = Arc::new(Transitions::default());
    let config = BreakerConfig { failure_threshold: 3, cool_off: Duration::from_secs(30) };
    let circuit = Arc::new(CircuitBreaker::new(server.url(), config, clock, transitions.clone()));
    let counting = Arc::new(Counting { inner: source_for(&server.url()), calls: AtomicUsize::new(0) });
    let source = BreakerSource::new(counting.clone(), circuit.clone());

    assert!(source.instant("queue_depth", t(600)).await.is_ok());
    server.stop().expect("stop");

    for _ in 0..3 {
        let started = Instant::now();
        let error = source.instant("queue_depth", t(600)).await.expect_err("server down");
        let took = started.elapsed();
        assert_eq!(error.category(), "connect", "{error}");
        assert!(took < Duration::from_secs(2), "a refused connection took {took:?}, as if waiting for the timeout");
    }
    assert_eq!(circuit.state(), CircuitState::Open);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 4);

    let error = source.instant("queue_depth", t(600)).await.expect_err("open");
    assert!(matches!(error, SourceError::CircuitOpen { .. }), "{error}");
    assert_eq!(counting.calls.load(Ordering::SeqCst), 4, "an open circuit must not query");

    server.restart().expect("restart");
    let error = source.instant("queue_depth", t(600)).await.expect_err("still cooling off");
    assert!(matches!(error, SourceError::CircuitOpen { .. }), "{error}");

    *now.lock().expect("lock") += Duration::from_secs(31);
    let samples = source.instant("queue_depth", t(600)).await.expect("probe succeeds");
    assert_eq!(values(&samples), [(600, 140.0)]);
    assert_eq!(circuit.state(), CircuitState::Closed);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 5);
    assert_eq!(
        *transitions.0.lock().expect("lock"),
        [CircuitState::Open, CircuitState::HalfOpen, CircuitState::Closed]
    );
}

#[tokio::test]
async fn slow_prometheus_times_out_instead_of_hanging() {
    let server = start_server();
    let proxy = DelayProxy::start(server.addr()).expect("proxy");
    install_crypto();
    let timeout = Duration::from_millis(500);
    let source = PrometheusSource::new(&PrometheusConfig { timeout, ..PrometheusConfig::new(proxy.url()) })
        .expect("valid config");

    assert!(source.instant("queue_depth", t(600)).await.is_ok(), "the proxy forwards");

    proxy.set_delay(Duration::from_secs(3));
    let started = Instant::now();
    let error = source.instant("queue_depth", t(600)).await.expect_err("too slow");
    let took = started.elapsed();
    assert_eq!(error, SourceError::Timeout { after: timeout });
    assert!(took < Duration::from_secs(2), "gave up after {took:?}, not about {timeout:?}");

    proxy.set_delay(Duration::ZERO);
    proxy.set_drop_connections(true);
    let error = source.instant("queue_depth", t(600)).await.expect_err("dropped");
    assert_eq!(error.category(), "connect", "{error}");
}

#[tokio::test]
async fn bearer_token_and_extra_headers_reach_the_server() {
    let fake = StaticHttpServer::prometheus_vector(t(600), 7.5).expect("server");
    install_crypto();
    let config = PrometheusConfig {
        auth: Some(Auth::Bearer("s3cr3t".into())),
        headers: vec![("X-Scope-OrgID".into(), "tenant-a".into())],
        ..PrometheusConfig::new(fake.url())
    };
    let source = PrometheusSource::new(&config).expect("valid config");
    let samples = source.instant("up", t(600)).await.expect("answers");
    assert_eq!(values(&samples), [(600, 7.5)]);

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target, "/api/v1/query");
    assert_eq!(requests[0].header("authorization"), Some("Bearer s3cr3t"));
    assert_eq!(requests[0].header("x-scope-orgid"), Some("tenant-a"));

    let basic = PrometheusConfig {
        auth: Some(Auth::Basic { username: "scaler".into(), password: "pw".into() }),
        ..PrometheusConfig::new(fake.url())
    };
    PrometheusSource::new(&basic).expect("valid config").instant("up", t(600)).await.expect("answers");
    // base64("scaler:pw")
    assert_eq!(fake.requests()[1].header("authorization"), Some("Basic c2NhbGVyOnB3"));
}

#[tokio::test]
async fn scraping_server_sees_a_loopback_exporter() {
    let exporter = StaticHttpServer::start("text/plain; version=0.0.4", "foresight_test_gauge 42\n").expect("exporter");
    let server = PromServer::start_with_scrape(&[exporter.addr()], Duration::from_secs(1))
        .unwrap_or_else(|error| panic!("cannot start Prometheus: {error}"));
    let source = source_for(&server.url());

    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let samples = source.instant("foresight_test_gauge", Timestamp::now()).await.expect("answers");
        if !samples.is_empty() || Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(samples.iter().map(|s| s.value).collect::<Vec<_>>(), [42.0], "log:\n{}", server.log());
    assert!(exporter.requests().iter().any(|r| r.target == "/metrics"));
}
