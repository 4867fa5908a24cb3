//! `demo-app serve`: an HTTP server whose cost per request is tunable, so an autoscaler has something real to
//! react to.
//!
//! `GET /` waits `latency_base` (a stand-in for a downstream call), then burns `cpu_per_request` of CPU in a
//! hashing busy loop on the blocking pool (real CPU that cAdvisor sees, unlike a sleep), then fails with 500 with
//! the configured probability. `POST /admin/errors?rate=0.2` changes that probability at run time.
//! `/metrics` serves the counter and histogram; `/healthz` is liveness; `/readyz` turns 503 once shutdown starts.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::metrics::{CONTENT_TYPE, Metrics};

/// A probability of failing a request, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRate(f64);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("error rate {0:?} must be a number between 0 and 1 (0.2 fails one request in five)")]
pub struct ErrorRateError(String);

impl ErrorRate {
    pub fn new(rate: f64) -> Result<Self, ErrorRateError> {
        if (0.0..=1.0).contains(&rate) { Ok(ErrorRate(rate)) } else { Err(ErrorRateError(rate.to_string())) }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromStr for ErrorRate {
    type Err = ErrorRateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rate = s.trim().parse::<f64>().map_err(|_| ErrorRateError(s.to_owned()))?;
        ErrorRate::new(rate).map_err(|_| ErrorRateError(s.to_owned()))
    }
}

/// How expensive and how flaky each `GET /` is.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    pub cpu_per_request: Duration,
    pub error_rate: ErrorRate,
    pub latency_base: Duration,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Shared state of the handlers.
pub struct App {
    cpu_per_request: Duration,
    latency_base: Duration,
    /// The error probability's f64 bits, so `/admin/errors` can change it without a lock.
    error_rate: AtomicU64,
    ready: AtomicBool,
    metrics: Metrics,
}

impl App {
    pub fn new(config: ServeConfig) -> Arc<App> {
        Arc::new(App {
            cpu_per_request: config.cpu_per_request,
            latency_base: config.latency_base,
            error_rate: AtomicU64::new(config.error_rate.get().to_bits()),
            ready: AtomicBool::new(true),
            metrics: Metrics::new(),
        })
    }

    pub fn error_rate(&self) -> f64 {
        f64::from_bits(self.error_rate.load(Ordering::Relaxed))
    }

    fn set_error_rate(&self, rate: ErrorRate) {
        self.error_rate.store(rate.get().to_bits(), Ordering::Relaxed);
    }
}

/// The demo app's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(work))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/admin/errors", post(set_errors))
        .with_state(app)
}

/// Binds `addr`, for callers that have an address rather than a listener.
pub async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.to_owned(), source })
}

/// Serves until `shutdown` completes, then stops accepting, turns `/readyz` to 503 and drains in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = App::new(config);
    let on_shutdown = app.clone();
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            shutdown.await;
            on_shutdown.ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: draining in-flight requests");
        })
        .await
        .map_err(ServeError::Serve)
}

async fn work(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    let start = Instant::now();
    if !app.latency_base.is_zero() {
        tokio::time::sleep(app.latency_base).await;
    }
    let budget = app.cpu_per_request;
    let burned = tokio::task::spawn_blocking(move || burn_cpu(budget)).await;
    let fail = burned.is_err() || fastrand::f64() < app.error_rate();
    let (status, body) =
        if fail { (StatusCode::INTERNAL_SERVER_ERROR, "injected error\n") } else { (StatusCode::OK, "ok\n") };
    app.metrics.observe(status.as_u16(), start.elapsed());
    (status, body)
}

/// Hashes in a loop until `budget` of wall time has passed, keeping one core busy for that long. Under a CPU
/// limit the thread is throttled part of that time, which is what makes latency grow with load.
pub fn burn_cpu(budget: Duration) -> u64 {
    let start = Instant::now();
    let mut hasher = DefaultHasher::new();
    let mut i: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..256 {
            i.hash(&mut hasher);
            i = i.wrapping_add(hasher.finish());
        }
    }
    std::hint::black_box(i)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    match app.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

#[derive(serde::Deserialize)]
struct ErrorsQuery {
    rate: Option<String>,
}

async fn set_errors(State(app): State<Arc<App>>, Query(query): Query<ErrorsQuery>) -> (StatusCode, String) {
    let Some(raw) = query.rate else {
        return (StatusCode::BAD_REQUEST, "missing ?rate=, e.g. POST /admin/errors?rate=0.2\n".to_owned());
    };
    match raw.parse::<ErrorRate>() {
        Ok(rate) => {
            app.set_error_rate(rate);
            tracing::info!(rate = rate.get(), "error rate changed");
            (StatusCode::OK, format!("error rate {}\n", rate.get()))
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_accepts_probabilities_only() {
        assert_eq!("0.2".parse(), Ok(ErrorRate(0.2)));
        assert_eq!("1".parse(), Ok(ErrorRate(1.0)));
        assert!("1.5".parse::<ErrorRate>().is_err());
        assert!("-0.1".parse::<ErrorRate>().is_err());
        let err = "lots".parse::<ErrorRate>().expect_err("not a number");
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
    }

    #[test]
    fn burn_cpu_takes_its_budget() {
        let start = Instant::now();
        burn_cpu(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
