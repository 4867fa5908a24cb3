//! A workload simulator that closes the autoscaling loop without real pods.
//!
//! ```text
//!   Deployment spec.replicas (kube API, polled) ──► simulated pods (ready after the start-up delay)
//!                                                        │
//!   LoadProfile::load_at(t) ──► model::PodModel::rates ──┴──► per-pod counters ──► GET /metrics (loopback)
//!                                                                                      ▲
//!                                          Prometheus scrapes it (namespace/pod labels set explicitly)
//! ```
//!
//! Each tick it reads the Deployment's replicas, adds pods (named `<deploy>-<10 hex>-<5 alnum>`) or removes
//! the newest ones at once, integrates every ready pod's counters over the elapsed time, optionally writes the
//! pods and the Deployment's status to the API (the fake API server runs no workload controllers), and records
//! a timeline (time, load, replicas, ready) for failure reports. One endpoint carries what cAdvisor,
//! kube-state-metrics and the app would export separately.

pub mod history;
pub mod model;
pub mod render;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::task::JoinHandle;

pub use model::{LATENCY_BUCKETS, LoadProfile, PodModel, PodRates};

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub namespace: String,
    pub deployment: String,
    pub profile: LoadProfile,
    pub pod: PodModel,
    /// How long a new pod takes to become ready (and to take load).
    pub startup_delay: Duration,
    /// How often replicas are read and counters advanced.
    pub tick: Duration,
    /// Write Pod objects and the Deployment's status, as the ReplicaSet and Deployment controllers would.
    /// Off against a real cluster, whose controllers do it themselves.
    pub write_objects: bool,
    /// How far back the profile's time zero lies (a cycle already in progress; see [`SimConfig::epoch`]).
    pub started_ago: Duration,
}

impl SimConfig {
    /// Defaults: [`PodModel::default`], a 5 s start-up delay, 250 ms ticks, objects written.
    pub fn new(namespace: &str, deployment: &str, profile: LoadProfile) -> Self {
        Self {
            namespace: namespace.into(),
            deployment: deployment.into(),
            profile,
            pod: PodModel::default(),
            startup_delay: Duration::from_secs(5),
            tick: Duration::from_millis(250),
            write_objects: true,
            started_ago: Duration::ZERO,
        }
    }

    pub fn startup_delay(mut self, delay: Duration) -> Self {
        self.startup_delay = delay;
        self
    }

    pub fn write_objects(mut self, on: bool) -> Self {
        self.write_objects = on;
        self
    }

    /// Starts the profile's clock `ago` in the past, so that history backfilled for `[now - ago, now)` from
    /// the same profile continues seamlessly into the live metrics.
    pub fn started_ago(mut self, ago: Duration) -> Self {
        self.started_ago = ago;
        self
    }

    /// The wall-clock time of the profile's time zero if the simulator started now.
    pub fn epoch(&self) -> jiff::Timestamp {
        let ago = jiff::SignedDuration::try_from(self.started_ago).unwrap_or(jiff::SignedDuration::ZERO);
        jiff::Timestamp::now().checked_sub(ago).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot bind the simulator's metrics port: {0}")]
    BindMetrics(std::io::Error),
}

/// One point of the timeline, about once a second.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePoint {
    /// Seconds since the simulator started.
    pub at: f64,
    /// Offered load, req/s.
    pub load: f64,
    /// The Deployment's spec.replicas as last read.
    pub replicas: i32,
    /// Ready simulated pods.
    pub ready: usize,
}

/// One simulated pod and its cumulative counters.
#[derive(Debug, Clone)]
pub struct SimPod {
    pub name: String,
    created: Instant,
    pub ready: bool,
    pub cpu_seconds: f64,
    pub memory_bytes: f64,
    pub requests_ok: f64,
    pub requests_error: f64,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`.
    pub buckets: [f64; LATENCY_BUCKETS.len() + 1],
    pub latency_sum: f64,
}

impl SimPod {
    fn new(name: String, now: Instant) -> Self {
        Self {
            name,
            created: now,
            ready: false,
            cpu_seconds: 0.0,
            memory_bytes: 0.0,
            requests_ok: 0.0,
            requests_error: 0.0,
            buckets: [0.0; LATENCY_BUCKETS.len() + 1],
            latency_sum: 0.0,
        }
    }

    /// Adds `dt` seconds at `rates` to the counters.
    fn advance(&mut self, rates: &PodRates, dt: f64) {
        self.cpu_seconds += rates.cpu_cores * dt;
        self.memory_bytes = rates.memory_bytes;
        self.requests_ok += rates.ok_rps * dt;
        self.requests_error += rates.error_rps * dt;
        let requests = (rates.ok_rps + rates.error_rps) * dt;
        for (bucket, le) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            *bucket += requests * model::latency_cdf(le, rates.mean_latency_seconds);
        }
        self.buckets[LATENCY_BUCKETS.len()] += requests;
        self.latency_sum += requests * rates.mean_latency_seconds;
    }
}

/// The simulator's shared state.
#[derive(Debug)]
pub struct SimState {
    pub config: SimConfig,
    started: Instant,
    epoch: Instant,
    profile_rebased: Option<Instant>,
    pub extra_error_fraction: f64,
    pub replicas: i32,
    pub pods: Vec<SimPod>,
    serial: u64,
    pub load: f64,
    pub timeline: Vec<TimelinePoint>,
    /// API reads or writes that failed (the simulator keeps going with what it knew).
    pub api_errors: u64,
    last_status: Option<(i32, usize)>,
}

impl SimState {
    /// No pods yet; the load profile's clock starts `config.started_ago` before `now`.
    fn new(config: SimConfig, now: Instant) -> Self {
        let epoch = now.checked_sub(config.started_ago).unwrap_or(now);
        SimState {
            config,
            started: now,
            epoch,
            profile_rebased: None,
            extra_error_fraction: 0.0,
            replicas: 0,
            pods: Vec::new(),
            serial: 0,
            load: 0.0,
            timeline: Vec::new(),
            api_errors: 0,
            last_status: None,
        }
    }

    fn profile_time(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.profile_rebased.unwrap_or(self.epoch))
    }

    /// Brings the pod set to `replicas` and readiness up to date; returns (added, removed) pod names.
    fn reconcile_pods(&mut self, now: Instant) -> (Vec<String>, Vec<String>) {
        let want = usize::try_from(self.replicas.max(0)).unwrap_or(0);
        let mut added = Vec::new();
        while self.pods.len() < want {
            let name = model::pod_name(&self.config.deployment, self.serial);
            self.serial += 1;
            added.push(name.clone());
            self.pods.push(SimPod::new(name, now));
        }
        let mut removed = Vec::new();
        while self.pods.len() > want {
            // The newest pod goes first, as the ReplicaSet controller prefers pods that are not ready yet.
            if let Some(pod) = self.pods.pop() {
                removed.push(pod.name);
            }
        }
        let delay = self.config.startup_delay;
        for pod in &mut self.pods {
            pod.ready = now.saturating_duration_since(pod.created) >= delay;
        }
        (added, removed)
    }

    /// Advances every ready pod by `dt` at the current load.
    fn advance(&mut self, now: Instant, dt: f64) {
        self.load = self.config.profile.load_at(self.profile_time(now));
        let ready = self.ready();
        if let Some(rates) = self.config.pod.rates(self.load, ready, self.extra_error_fraction) {
            for pod in self.pods.iter_mut().filter(|p| p.ready) {
                pod.advance(&rates, dt);
            }
        }
        let at = now.saturating_duration_since(self.started).as_secs_f64();
        if self.timeline.last().is_none_or(|last| at - last.at >= 1.0) {
            self.timeline.push(TimelinePoint { at, load: self.load, replicas: self.replicas, ready });
        }
    }

    pub fn ready(&self) -> usize {
        self.pods.iter().filter(|p| p.ready).count()
    }
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulator; stops when dropped.
#[derive(Debug)]
pub struct Simulator {
    state: Arc<Mutex<SimState>>,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Starts following `config.deployment` through `client` and serving `/metrics` on a loopback port.
    /// Must be called inside a tokio runtime.
    pub async fn start(client: kube::Client, config: SimConfig) -> Result<Self, SimError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(SimError::BindMetrics)?;
        let addr = listener.local_addr().map_err(SimError::BindMetrics)?;
        let state = Arc::new(Mutex::new(SimState::new(config, Instant::now())));
        let server = {
            let state = state.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let state = state.clone();
                    async move {
                        let body = render::metrics(&lock(&state));
                        ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
                    }
                }),
            );
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::warn!(%error, "simulator metrics server stopped");
                }
            })
        };
        let driver = tokio::spawn(drive(client, state.clone()));
        Ok(Self { state, addr, tasks: vec![server, driver] })
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the load profile; its time zero is now.
    pub fn set_profile(&self, profile: LoadProfile) {
        let mut state = lock(&self.state);
        state.config.profile = profile;
        state.profile_rebased = Some(Instant::now());
    }

    /// Makes this fraction of served requests fail with 500 regardless of load.
    pub fn set_extra_error_fraction(&self, fraction: f64) {
        lock(&self.state).extra_error_fraction = fraction.clamp(0.0, 1.0);
    }

    /// The Deployment's replicas as last read.
    pub fn replicas(&self) -> i32 {
        lock(&self.state).replicas
    }

    /// Ready simulated pods.
    pub fn ready(&self) -> usize {
        lock(&self.state).ready()
    }

    /// The current offered load, req/s.
    pub fn load(&self) -> f64 {
        lock(&self.state).load
    }

    /// Pod names, oldest first.
    pub fn pods(&self) -> Vec<String> {
        lock(&self.state).pods.iter().map(|p| p.name.clone()).collect()
    }

    /// Seconds since start, with the recorded timeline.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        lock(&self.state).timeline.clone()
    }

    /// The `/metrics` text right now.
    pub fn metrics_text(&self) -> String {
        render::metrics(&lock(&self.state))
    }

    /// API requests that failed so far.
    pub fn api_errors(&self) -> u64 {
        lock(&self.state).api_errors
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The tick loop: read replicas, reconcile pods, advance counters, write objects.
async fn drive(client: kube::Client, state: Arc<Mutex<SimState>>) {
    let (namespace, name, tick, write) = {
        let s = lock(&state);
        (s.config.namespace.clone(), s.config.deployment.clone(), s.config.tick, s.config.write_objects)
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut last = Instant::now();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let read = deployments.get_opt(&name).await;
        let now = Instant::now();
        let dt = now.saturating_duration_since(last).as_secs_f64();
        last = now;
        let (added, removed, status) = {
            let mut s = lock(&state);
            match read {
                Ok(Some(d)) => s.replicas = d.spec.and_then(|spec| spec.replicas).unwrap_or(1),
                Ok(None) => s.replicas = 0,
                Err(_) => s.api_errors += 1,
            }
            // Counters first, over the interval that just ended, with the pods that were ready during it.
            s.advance(now, dt);
            let (added, removed) = s.reconcile_pods(now);
            let current = (s.replicas, s.ready());
            let status = (s.last_status != Some(current)).then_some(current);
            (added, removed, status)
        };
        if !write {
            continue;
        }
        let mut failures = 0;
        for pod in &added {
            if pods.create(&PostParams::default(), &pod_object(&name, pod)).await.is_err() {
                failures += 1;
            }
        }
        for pod in &removed {
            if pods.delete(pod, &DeleteParams::default()).await.is_err() {
                failures += 1;
            }
        }
        if let Some((replicas, ready)) = status {
            let body = json!({"status": {
                "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": ready, "availableReplicas": ready,
            }});
            match deployments.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body)).await {
                Ok(_) => lock(&state).last_status = Some((replicas, ready)),
                Err(_) => failures += 1,
            }
        }
        lock(&state).api_errors += failures;
    }
}

/// A Pod as the ReplicaSet controller would create it (labels `app=<deployment>`, one container `app`).
fn pod_object(deployment: &str, name: &str) -> Pod {
    let labels = BTreeMap::from([("app".to_string(), deployment.to_string())]);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(profile: LoadProfile, startup: Duration) -> SimState {
        SimState::new(SimConfig::new("shop", "web", profile).startup_delay(startup), Instant::now())
    }

    #[test]
    fn new_pods_take_load_only_after_the_startup_delay_and_removed_ones_vanish() {
        let mut s = state(LoadProfile::Constant(70.0), Duration::from_secs(5));
        let t0 = s.started;
        s.replicas = 2;
        s.reconcile_pods(t0);
        assert_eq!(s.ready(), 0);
        let t5 = t0 + Duration::from_secs(5);
        s.reconcile_pods(t5);
        assert_eq!(s.ready(), 2);
        s.advance(t5 + Duration::from_secs(1), 1.0);
        assert!((s.pods[0].cpu_seconds - 0.35).abs() < 1e-9, "70 req/s over 2 pods: {:?}", s.pods[0]);

        s.replicas = 3;
        let (added, _) = s.reconcile_pods(t5 + Duration::from_secs(1));
        assert_eq!(added.len(), 1);
        s.advance(t5 + Duration::from_secs(2), 1.0);
        assert_eq!(s.pods[2].cpu_seconds, 0.0, "a starting pod takes no load");
        assert!((s.pods[0].cpu_seconds - 0.70).abs() < 1e-9, "still split over the 2 ready pods");

        s.replicas = 1;
        let (_, removed) = s.reconcile_pods(t5 + Duration::from_secs(2));
        assert_eq!(removed.len(), 2);
        assert_eq!(s.pods.len(), 1, "removed pods vanish at once");
        assert!(!s.metrics_contains(&removed[0]));
    }

    #[test]
    fn the_timeline_records_about_once_a_second() {
        let mut s = state(LoadProfile::Constant(10.0), Duration::ZERO);
        s.replicas = 1;
        let t0 = s.started;
        for i in 0..20 {
            let now = t0 + Duration::from_millis(250 * i);
            s.reconcile_pods(now);
            s.advance(now, 0.25);
        }
        assert_eq!(s.timeline.len(), 5, "{:?}", s.timeline);
        assert_eq!(s.timeline[1].replicas, 1);
        assert_eq!(s.timeline[1].load, 10.0);
    }

    impl SimState {
        fn metrics_contains(&self, pod: &str) -> bool {
            render::metrics(self).contains(pod)
        }
    }
}
