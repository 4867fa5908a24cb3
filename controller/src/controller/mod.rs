//! The reconciler: watches `ScalingPolicy` objects and, for each, gathers, decides and acts.
//!
//! ```text
//!  watch ScalingPolicy ──► (generation or paused annotation changed) ──► reconcile ──► requeue after interval
//!                                                                         │ error: back off 5s, 10s, ... 5m
//!  reconcile:  observe()  /scale + Prometheus + status  ──►  engine::recommend()  ──►  act()
//!                                                                       patch /scale, write /status, Events
//! ```
//!
//! Status writes do not change the generation, so Foresight's own writes never trigger a reconcile; time does
//! (requeue after `spec.interval`). Only the leader reconciles: a standby requeues without reading or writing,
//! and the moment it becomes the leader it reconciles every policy rather than waiting for each requeue.

pub mod act;
pub mod conditions;
pub mod error;
pub mod observe;
pub mod report;
pub mod target;

#[cfg(test)]
mod fixtures;

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, future::join_all};
use jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use tracing::Instrument;

pub use error::Error;

use crate::{
    api::{PAUSED_ANNOTATION, ScalingPolicy, convert::DEFAULT_INTERVAL},
    engine::{self, Forecast, Policy, Recommendation, Sample, policy::PredictiveRule},
    predict::Predictor,
    source::{
        ConfigError, GroupedConfig, GroupedReader, MetricsSource, PrometheusConfig, SourcePool, grouped::NoopCounter,
    },
};

/// How often the reconcile loop checks whether this replica has just become the leader.
const LEADERSHIP_POLL: Duration = Duration::from_millis(500);

/// The first retry after a failed reconcile; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between retries of a failing policy.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The per-query timeout when neither the policy nor the flags set one.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where metrics come from: one pooled client per Prometheus config, or one fixed source (tests).
#[derive(Clone)]
pub enum Sources {
    Pool(Arc<SourcePool>),
    Fixed(Arc<dyn MetricsSource>),
}

impl Sources {
    pub fn get(&self, config: &PrometheusConfig) -> Result<Arc<dyn MetricsSource>, ConfigError> {
        match self {
            Sources::Pool(pool) => pool.get_or_create(config),
            Sources::Fixed(source) => Ok(source.clone()),
        }
    }
}

/// What the controller's own metrics need to hear about reconciles, so that this module needs no metrics crate.
pub trait ReconcileObserver: Send + Sync {
    /// A reconcile finished: `result` is `"success"` or the error's category.
    fn reconciled(&self, result: &'static str, seconds: f64);
    /// A policy was evaluated.
    fn evaluated(
        &self,
        namespace: &str,
        name: &str,
        policy: &Policy,
        rec: &Recommendation,
        forecast: Option<&Forecast>,
    );
    /// Foresight changed a target's replicas (`direction` is `"up"` or `"down"`).
    fn scaled(&self, namespace: &str, name: &str, direction: &'static str);
    /// How many policies the controller watches.
    fn policies_managed(&self, count: usize);
    /// A policy was deleted: drop whatever was kept about it.
    fn forgotten(&self, namespace: &str, name: &str);
}

/// An observer that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopReconcileObserver;

impl ReconcileObserver for NoopReconcileObserver {
    fn reconciled(&self, _: &'static str, _: f64) {}
    fn evaluated(&self, _: &str, _: &str, _: &Policy, _: &Recommendation, _: Option<&Forecast>) {}
    fn scaled(&self, _: &str, _: &str, _: &'static str) {}
    fn policies_managed(&self, _: usize) {}
    fn forgotten(&self, _: &str, _: &str) {}
}

/// The clock, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub sources: Sources,
    /// The controller's --prometheus-address, for policies without spec.prometheus.
    pub default_prometheus: Option<String>,
    pub query_timeout: Duration,
    /// Grouped, coalesced metric reads shared by every reconcile (`--grouped-queries`); `None` sends one query
    /// per metric per policy. On by default.
    pub grouped: Option<Arc<GroupedReader>>,
    pub recorder: Recorder,
    pub telemetry: Arc<dyn ReconcileObserver>,
    pub clock: Clock,
    /// Whether this replica holds the Lease. Cleared the moment the lease is lost.
    pub leader: Arc<AtomicBool>,
    resolver: target::Resolver,
    failures: Mutex<HashMap<(String, String), u32>>,
    stores: Mutex<Vec<Store<ScalingPolicy>>>,
    /// One forecaster per policy, so a fitted model is reused until its next refit (at most every step).
    predictors: Mutex<HashMap<(String, String), crate::predict::Predictor>>,
    /// Every policy reconciled since it was last pruned: what [`Context::prune`] compares with the stores.
    seen: Mutex<HashSet<(String, String)>>,
}

impl Context {
    /// A context for `client`, leading by default (no leader election), with the system clock and grouped queries
    /// (as `--grouped-queries` defaults to).
    pub fn new(client: Client, sources: Sources, default_prometheus: Option<String>, instance: &str) -> Self {
        let reporter = Reporter { controller: "foresight".into(), instance: Some(instance.into()) };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            sources,
            default_prometheus,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            grouped: Some(Arc::new(GroupedReader::new(GroupedConfig::default(), Arc::new(NoopCounter)))),
            telemetry: Arc::new(NoopReconcileObserver),
            clock: Arc::new(Timestamp::now),
            leader: Arc::new(AtomicBool::new(true)),
            resolver: target::Resolver::default(),
            failures: Mutex::default(),
            stores: Mutex::default(),
            predictors: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    pub fn with_telemetry(mut self, telemetry: Arc<dyn ReconcileObserver>) -> Self {
        self.telemetry = telemetry;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_leader(mut self, leader: Arc<AtomicBool>) -> Self {
        self.leader = leader;
        self
    }

    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    pub fn with_grouped(mut self, grouped: Option<Arc<GroupedReader>>) -> Self {
        self.grouped = grouped;
        self
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Counts a failure of this object's reconcile and returns how many in a row.
    fn record_failure(&self, key: (String, String)) -> u32 {
        let mut failures = lock(&self.failures);
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn clear_failures(&self, key: &(String, String)) {
        lock(&self.failures).remove(key);
    }

    /// Whether this policy's forecaster must refit at `now` (and so needs history). A changed rule gets a
    /// new forecaster.
    fn forecast_due(&self, key: &(String, String), rule: &PredictiveRule, now: Timestamp) -> bool {
        let mut predictors = lock(&self.predictors);
        let predictor = predictors.entry(key.clone()).or_insert_with(|| Predictor::new(rule));
        if predictor.rule() != rule {
            *predictor = Predictor::new(rule);
        }
        predictor.due(now)
    }

    /// The forecast at `now`, refitting on `history` when due.
    fn forecast(&self, key: &(String, String), rule: &PredictiveRule, history: &[Sample], now: Timestamp) -> Forecast {
        let mut predictors = lock(&self.predictors);
        predictors.entry(key.clone()).or_insert_with(|| Predictor::new(rule)).forecast(history, now)
    }

    /// Forgets per-object state of a policy that no longer exists.
    pub fn forget(&self, key: &(String, String)) {
        lock(&self.failures).remove(key);
        lock(&self.predictors).remove(key);
        lock(&self.seen).remove(key);
        self.telemetry.forgotten(&key.0, &key.1);
    }

    /// Forgets every policy reconciled before that is not in `live` (the keys in the watch stores), and
    /// returns how many. kube-runtime does not call `reconcile` for a deleted object, so without this a
    /// deleted policy's failure count, fitted forecaster and metric series would stay for the process's life.
    pub fn prune(&self, live: &HashSet<(String, String)>) -> usize {
        let gone: Vec<(String, String)> = lock(&self.seen).iter().filter(|k| !live.contains(*k)).cloned().collect();
        for key in &gone {
            tracing::debug!(namespace = %key.0, name = %key.1, "forgetting a deleted policy");
            self.forget(key);
        }
        gone.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The wait before retrying an object that failed `failures` times in a row: 5 s doubling to 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    MIN_BACKOFF.saturating_mul(1u32 << exp).min(MAX_BACKOFF)
}

/// Reconciles one policy: evaluate it, act on the decision, and come back after its interval.
pub async fn reconcile(sp: Arc<ScalingPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (namespace, name) = observe::object_key(&sp);
    let span = tracing::info_span!("reconcile", %namespace, %name);
    async move {
        let started = Instant::now();
        let result = reconcile_inner(&sp, &ctx, &namespace).await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(action) => {
                ctx.clear_failures(&(namespace.clone(), name.clone()));
                ctx.telemetry.reconciled("success", seconds);
                tracing::info!(seconds, ?action, "reconciled");
            }
            Err(error) => {
                ctx.telemetry.reconciled(error.category(), seconds);
                tracing::warn!(seconds, %error, category = error.category(), "reconcile failed");
            }
        }
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_inner(sp: &ScalingPolicy, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    lock(&ctx.seen).insert(observe::object_key(sp));
    let interval = sp.spec.interval.map(|d| d.std()).unwrap_or(DEFAULT_INTERVAL).max(Duration::from_secs(1));
    if !ctx.is_leader() {
        return Ok(Action::requeue(interval));
    }
    if namespace.is_empty() {
        return Err(Error::MissingNamespace);
    }
    let now = ctx.now();
    let mut old = sp.status.clone().unwrap_or_default();

    let policy = match Policy::try_from(&sp.spec) {
        Ok(p) => p,
        Err(invalid) => {
            tracing::warn!(error = %invalid, "invalid policy");
            act::report_failure(sp, ctx, &old, now, "InvalidPolicy", &invalid.to_string()).await;
            return Ok(Action::await_change());
        }
    };

    let obs = match observe::observe(sp, &policy, &mut old, ctx, namespace, now).await {
        Ok(obs) => obs,
        Err(error) => {
            act::report_failure(sp, ctx, &old, now, error.reason(), &error.to_string()).await;
            return Err(error);
        }
    };
    let rec = engine::recommend(&policy, &obs.snapshot());
    let (ns, name) = observe::object_key(sp);
    ctx.telemetry.evaluated(&ns, &name, &policy, &rec, obs.forecast.as_ref());
    tracing::info!(
        current = rec.current,
        desired = rec.desired,
        decision = rec.decision.as_str(),
        reason = %rec.reason,
        "evaluated"
    );
    if let Err(error) = act::act(sp, ctx, &old, &policy, &obs, &rec).await {
        if matches!(error, Error::TargetNotFound { .. } | Error::PatchScale { .. }) {
            act::report_failure(sp, ctx, &old, now, error.reason(), &error.to_string()).await;
        }
        return Err(error);
    }
    Ok(Action::requeue(interval))
}

/// Retry a failed object with exponential backoff of its own (not a flat requeue shared by all).
pub fn error_policy(sp: Arc<ScalingPolicy>, _error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.record_failure(observe::object_key(&sp));
    Action::requeue(backoff(failures))
}

/// What makes a policy worth reconciling at once: a new generation (spec change) or a change of the paused
/// annotation. Status writes change neither.
pub fn change_key(sp: &ScalingPolicy) -> Option<u64> {
    let mut h = DefaultHasher::new();
    sp.metadata.generation.hash(&mut h);
    sp.annotations().get(PAUSED_ANNOTATION).hash(&mut h);
    Some(h.finish())
}

/// Options of the reconcile loop.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Policies reconciled at once (per watched namespace).
    pub concurrency: u16,
}

/// Runs the controller until `shutdown` resolves. `ready` is set once every watch has listed its policies.
pub async fn run(
    ctx: Arc<Context>,
    options: RunOptions,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let apis: Vec<Api<ScalingPolicy>> = if options.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        options.namespaces.iter().map(|ns| Api::namespaced(ctx.client.clone(), ns)).collect()
    };
    let mut loops = Vec::new();
    let mut stores = Vec::new();
    // A standby requeues each policy after its interval without evaluating it. When it becomes the leader it
    // re-evaluates every policy at once rather than up to one interval later.
    let (gained, _) = tokio::sync::broadcast::channel::<()>(4);
    // One controller per namespace: each has its own store, so one namespace's re-list never drops another's.
    for api in apis {
        let (reader, writer) = reflector::store::<ScalingPolicy>();
        stores.push(reader.clone());
        let stream = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .predicate_filter(change_key, Default::default());
        let leadership_gained = futures::stream::unfold(gained.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(()) => return Some(((), rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let controller = Controller::for_stream(stream, reader)
            .with_config(controller::Config::default().concurrency(options.concurrency))
            .reconcile_all_on(leadership_gained)
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| std::future::ready(()));
        loops.push(controller);
    }
    *lock(&ctx.stores) = stores.clone();
    let readiness = {
        let ctx = ctx.clone();
        async move {
            let synced = join_all(stores.iter().map(|s| s.wait_until_ready())).await;
            if synced.iter().all(Result::is_ok) {
                ready.store(true, Ordering::SeqCst);
                ctx.telemetry.policies_managed(stores.iter().map(Store::len).sum());
            }
        }
    };
    let counting = {
        let ctx = ctx.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let stores = lock(&ctx.stores).clone();
                ctx.telemetry.policies_managed(stores.iter().map(Store::len).sum());
                let live = stores.iter().flat_map(Store::state).map(|sp| observe::object_key(&sp)).collect();
                ctx.prune(&live);
            }
        }
    };
    let leadership = {
        let ctx = ctx.clone();
        async move {
            let mut was_leader = ctx.is_leader();
            loop {
                tokio::time::sleep(LEADERSHIP_POLL).await;
                let is_leader = ctx.is_leader();
                if is_leader && !was_leader {
                    tracing::info!("became the leader: evaluating every policy now");
                    let _ = gained.send(());
                }
                was_leader = is_leader;
            }
        }
    };
    let all = join_all(loops);
    tokio::select! {
        _ = all => {}
        _ = async { readiness.await; counting.await } => {}
        _ = leadership => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5s_to_5m() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
