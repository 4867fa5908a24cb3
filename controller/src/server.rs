//! The HTTP server for Prometheus and the kubelet: `/metrics`, `/healthz` (the reconcile loop makes progress, see
//! [`Liveness`]) and `/readyz` (every ScalingPolicy watch has listed its objects).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use crate::{
    controller::{MAX_BACKOFF, ReconcileObserver, slots},
    engine::{Forecast, Policy, Recommendation},
    metrics::Metrics,
};

/// Whether this replica may write for a policy (leader, or holder of its shard).
pub type Owns = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Liveness of the reconcile loop: `/healthz` fails when no reconcile has finished for longer than any healthy
/// loop can take, while this replica owns policies it has evaluated.
///
/// Every reconcile finishes (the gathering of metrics is bounded by the evaluation deadline, see
/// [`slots::deadline`]), and a policy is reconciled again after its interval, or after at most [`MAX_BACKOFF`]
/// when it failed. So while at least one evaluable policy is owned, the gap between two finished reconciles is
/// at most `max(longest interval, MAX_BACKOFF) + deadline(longest interval)`; [`Liveness::GRACE`] on top covers
/// API calls and scheduling. Beyond that the loop is stuck (a wedged watch, leaked evaluation slots, a dead
/// task) and the kubelet should restart the process. With no policies, none owned, or only policies that were
/// never evaluated (invalid ones wait for a change), there is nothing to expect and `/healthz` stays 200.
///
/// It sits between the reconcile loop and [`Metrics`] as the loop's [`ReconcileObserver`], forwarding every call.
pub struct Liveness {
    inner: Arc<dyn ReconcileObserver>,
    owns: Owns,
    started: Instant,
    /// Milliseconds after `started` of the latest finished reconcile (or of the start).
    last_progress_ms: AtomicU64,
    /// The interval of every policy evaluated at least once and not deleted since.
    intervals: Mutex<HashMap<(String, String), Duration>>,
}

impl Liveness {
    /// Slack on top of the longest legitimate gap between two finished reconciles.
    pub const GRACE: Duration = Duration::from_secs(60);

    /// A tracker forwarding to `inner`, checking only policies `owns` says this replica owns.
    pub fn new(inner: Arc<dyn ReconcileObserver>, owns: Owns) -> Self {
        Self::starting_at(inner, owns, Instant::now())
    }

    fn starting_at(inner: Arc<dyn ReconcileObserver>, owns: Owns, started: Instant) -> Self {
        Self { inner, owns, started, last_progress_ms: AtomicU64::new(0), intervals: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Duration>> {
        self.intervals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn track(&self, namespace: &str, name: &str, interval: Duration) {
        self.lock().insert((namespace.to_owned(), name.to_owned()), interval);
    }

    fn progress_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.started).as_millis();
        self.last_progress_ms.fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// How long the loop may go without finishing a reconcile, if this replica owns evaluable policies: from
    /// the longest interval among them.
    pub fn bound(&self) -> Option<(Duration, usize)> {
        let intervals = self.lock();
        let owned: Vec<Duration> =
            intervals.iter().filter(|((ns, name), _)| (self.owns)(ns, name)).map(|(_, i)| *i).collect();
        let longest = owned.iter().max().copied()?;
        Some((longest.max(MAX_BACKOFF) + slots::deadline(longest) + Self::GRACE, owned.len()))
    }

    /// `Err` with a one-line reason when the loop has made no progress for longer than [`Liveness::bound`].
    pub fn check_at(&self, now: Instant) -> Result<(), String> {
        let Some((bound, owned)) = self.bound() else { return Ok(()) };
        let last = self.started + Duration::from_millis(self.last_progress_ms.load(Ordering::SeqCst));
        let idle = now.saturating_duration_since(last);
        if idle > bound {
            return Err(format!(
                "the reconcile loop is stuck: no reconcile finished for {}s while this replica owns {owned} \
                 policies (at most {}s expected)",
                idle.as_secs(),
                bound.as_secs()
            ));
        }
        Ok(())
    }
}

impl ReconcileObserver for Liveness {
    fn reconciled(&self, result: &'static str, seconds: f64) {
        self.progress_at(Instant::now());
        self.inner.reconciled(result, seconds);
    }

    fn evaluated(
        &self,
        namespace: &str,
        name: &str,
        policy: &Policy,
        rec: &Recommendation,
        forecast: Option<&Forecast>,
    ) {
        self.track(namespace, name, policy.interval);
        self.inner.evaluated(namespace, name, policy, rec, forecast);
    }

    fn scaled(&self, namespace: &str, name: &str, direction: &'static str) {
        self.inner.scaled(namespace, name, direction);
    }

    fn policies_managed(&self, count: usize) {
        self.inner.policies_managed(count);
    }

    fn forgotten(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
        self.inner.forgotten(namespace, name);
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    liveness: Option<Arc<Liveness>>,
}

/// The routes, for serving or for tests. Without `liveness`, `/healthz` only says the process answers.
pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>, liveness: Option<Arc<Liveness>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, ready, liveness })
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    liveness: Option<Arc<Liveness>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready, liveness)).with_graceful_shutdown(shutdown).await
}

/// Binds `addr`, with the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} for /metrics: {e}")))
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.liveness.as_ref().map(|l| l.check_at(Instant::now())) {
        Some(Err(reason)) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
        _ => "ok".into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the ScalingPolicy watch to sync").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ReconcileObserver;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        (status, response)
    }

    #[tokio::test]
    async fn probes_and_metrics_answer() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconciled("success", 0.1);
        let ready = Arc::new(AtomicBool::new(false));
        let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics, ready.clone(), None, async {
            let _ = stopped.await;
        }));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503, "not ready before the watch synced");
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("application/openmetrics-text"), "{body}");
        assert!(body.contains(r#"foresight_reconciles_total{result="success"} 1"#), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);

        let _ = stop.send(());
        server.await.expect("joined").expect("served");
    }

    fn tracker(owned: bool, started: Instant) -> Liveness {
        Liveness::starting_at(Arc::new(crate::controller::NoopReconcileObserver), Box::new(move |_, _| owned), started)
    }

    #[test]
    fn a_loop_without_progress_is_stuck_only_while_it_owns_evaluated_policies() {
        let start = Instant::now();
        let idle = tracker(true, start);
        assert_eq!(idle.check_at(start + Duration::from_secs(86_400)), Ok(()), "no policies: nothing to expect");

        let live = tracker(true, start);
        live.track("shop", "web", Duration::from_secs(15));
        live.track("shop", "api", Duration::from_secs(600));
        // The longest interval (10m) is over MAX_BACKOFF (5m): 10m + a 60s deadline + 60s grace.
        let (bound, owned) = live.bound().expect("owned policies");
        assert_eq!((bound, owned), (Duration::from_secs(720), 2));
        assert_eq!(live.check_at(start + bound), Ok(()));
        let stuck = live.check_at(start + bound + Duration::from_secs(1)).expect_err("stuck");
        assert!(stuck.contains("no reconcile finished for 721s") && stuck.contains("owns 2 policies"), "{stuck}");
        assert!(!stuck.contains('\n'), "one line: {stuck}");
        live.progress_at(start + Duration::from_secs(700));
        assert_eq!(live.check_at(start + bound + Duration::from_secs(1)), Ok(()), "progress resets the clock");

        let standby = tracker(false, start);
        standby.track("shop", "web", Duration::from_secs(15));
        assert_eq!(standby.check_at(start + Duration::from_secs(86_400)), Ok(()), "a standby owns nothing");
    }

    #[test]
    fn short_intervals_still_allow_a_failing_policy_its_longest_backoff() {
        let start = Instant::now();
        let live = tracker(true, start);
        live.track("shop", "web", Duration::from_secs(15));
        // A policy failing in a row is retried after up to 5 min: 5m + a 15s deadline + 60s grace.
        assert_eq!(live.bound().map(|(b, _)| b), Some(Duration::from_secs(375)));
        live.forgotten("shop", "web");
        assert_eq!(live.bound(), None, "a deleted policy is not waited for");
        assert_eq!(live.check_at(start + Duration::from_secs(86_400)), Ok(()));
    }

    #[tokio::test]
    async fn healthz_fails_with_the_reason_when_no_reconcile_finishes_and_recovers_with_one() {
        let long_ago = Instant::now().checked_sub(Duration::from_secs(1000)).expect("uptime over 1000s");
        let liveness = Arc::new(tracker(true, long_ago));
        let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ready = Arc::new(AtomicBool::new(true));
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::new()), ready, Some(liveness.clone()), async {
            let _ = stopped.await;
        }));

        assert_eq!(get(addr, "/healthz").await.0, 200, "nothing evaluated yet");
        liveness.track("shop", "web", Duration::from_secs(15));
        let (status, body) = get(addr, "/healthz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("the reconcile loop is stuck: no reconcile finished for 1000s"), "{body}");
        // A reconcile finishing (through the observer the loop calls) is progress.
        liveness.reconciled("success", 0.1);
        assert_eq!(get(addr, "/healthz").await.0, 200);

        let _ = stop.send(());
        server.await.expect("joined").expect("served");
    }
}
