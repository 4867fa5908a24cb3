//! The reconciler: watches `ScalingPolicy` objects and, for each, gathers, decides and acts.
//!
//! ```text
//!  watch ScalingPolicy ──► (generation or paused annotation changed) ──► reconcile ──► requeue after interval
//!                                                                         │ error: back off 5s, 10s, ... 5m
//!  reconcile:  observe()  /scale + Prometheus + status  ──►  engine::recommend()  ──►  act()
//!                                                                       patch /scale, write /status, Events
//! ```
//!
//! The watch reads policies leniently ([`RawScalingPolicy`]): an object whose spec the Rust types reject (an
//! int64 in an int32 field, stored because API servers do not enforce `format`) is reported on its own status
//! (`Ready=False`, `InvalidPolicy`) and never fails the LIST for the others. Evaluations share
//! [`slots::Slots`] fairly between namespaces and each is abandoned after its [`slots::deadline`], so one
//! namespace's slow or hostile Prometheus delays no other namespace; a deleted policy's evaluation is cancelled
//! at once instead of holding its slot.
//!
//! Status writes do not change the generation, so Foresight's own writes never trigger a reconcile; time does
//! (requeue after `spec.interval`). Only the replica that owns a policy reconciles it (the leader, or with
//! sharding the holder of the policy's shard, see [`crate::shard`]): any other requeues without reading or
//! writing, and the moment it becomes the leader or gains a shard it reconciles every policy it now owns rather
//! than waiting for each requeue.
//!
//! Before acting, a policy asks [`conflicts`] whether another ScalingPolicy (older), an HPA or a KEDA
//! ScaledObject scales the same target; if so it evaluates and reports but does not patch `/scale`.

pub mod act;
pub mod conditions;
pub mod conflicts;
pub mod error;
pub mod events;
pub mod observe;
pub mod report;
pub mod runner;
pub mod slots;
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

use futures::{
    StreamExt,
    future::{AbortHandle, Abortable, join_all},
};
use jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::Instrument;

pub use error::Error;

use crate::{
    api::{PAUSED_ANNOTATION, RawScalingPolicy, ScalingPolicy, convert::DEFAULT_INTERVAL},
    engine::{self, Forecast, Policy, Recommendation, Sample, policy::PredictiveRule},
    forecast::Predictor,
    source::{
        AccessPolicy, ConfigError, GroupedConfig, GroupedReader, MetricsSource, PrometheusConfig, SourcePool,
        grouped::NoopCounter,
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

/// What a reconcile asks for next: to come back after a duration, or only when the policy changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Evaluate again after `duration` (or at a change, if sooner).
    pub const fn requeue(duration: Duration) -> Self {
        Action { requeue_after: Some(duration) }
    }

    /// Evaluate again only when the policy changes.
    pub const fn await_change() -> Self {
        Action { requeue_after: None }
    }

    /// When to evaluate again without a change.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Where metrics come from: one pooled client per Prometheus config, or one fixed source (tests).
#[derive(Clone)]
pub enum Sources {
    Pool(Arc<SourcePool>),
    Fixed(Arc<dyn MetricsSource>),
}

impl Sources {
    /// The source for `config` as used by policies of `namespace` (which has its own circuit breaker).
    pub fn get(&self, config: &PrometheusConfig, namespace: &str) -> Result<Arc<dyn MetricsSource>, ConfigError> {
        match self {
            Sources::Pool(pool) => pool.get_or_create(config, namespace),
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
    /// What policies may do with Prometheus (allowed addresses, credentials, limits).
    pub access: AccessPolicy,
    /// Grouped, coalesced metric reads shared by every reconcile (`--grouped-queries`); `None` sends one query
    /// per metric per policy. On by default.
    pub grouped: Option<Arc<GroupedReader>>,
    pub recorder: events::EventRecorder,
    pub telemetry: Arc<dyn ReconcileObserver>,
    pub clock: Clock,
    /// Whether this replica holds the Lease. Cleared the moment the lease is lost.
    pub leader: Arc<AtomicBool>,
    /// With sharding, the shards this replica holds: a policy is owned when its shard is (instead of `leader`).
    pub shards: Option<Arc<crate::shard::Ownership>>,
    /// Whether every query is confined to its policy's namespace (`--promql-tenancy`).
    pub promql_tenancy: crate::source::promql::tenancy::Tenancy,
    /// Who else scales each target (other policies, HPAs, ScaledObjects), from the watches.
    pub conflicts: Arc<conflicts::Conflicts>,
    resolver: target::Resolver,
    failures: Mutex<HashMap<(String, String), u32>>,
    stores: Mutex<Vec<Store<RawScalingPolicy>>>,
    /// The evaluation in flight of each policy, cancelled when the policy is deleted.
    inflight: Mutex<HashMap<(String, String), (u64, AbortHandle)>>,
    evaluations: std::sync::atomic::AtomicU64,
    /// One forecaster per policy, so a fitted model is reused until its next refit (at most every step).
    predictors: Mutex<HashMap<(String, String), crate::forecast::Predictor>>,
    /// Every policy reconciled since it was last pruned: what [`Context::prune`] compares with the stores.
    seen: Mutex<HashSet<(String, String)>>,
}

impl Context {
    /// A context for `client`, leading by default (no leader election), with the system clock and grouped queries
    /// (as `--grouped-queries` defaults to).
    pub fn new(client: Client, sources: Sources, default_prometheus: Option<String>, instance: &str) -> Self {
        Context {
            recorder: events::EventRecorder::new(client.clone(), "foresight", instance),
            client,
            sources,
            default_prometheus,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            access: AccessPolicy::default(),
            grouped: Some(Arc::new(GroupedReader::new(GroupedConfig::default(), Arc::new(NoopCounter)))),
            telemetry: Arc::new(NoopReconcileObserver),
            clock: Arc::new(Timestamp::now),
            leader: Arc::new(AtomicBool::new(true)),
            shards: None,
            promql_tenancy: Default::default(),
            conflicts: Arc::default(),
            resolver: target::Resolver::default(),
            failures: Mutex::default(),
            stores: Mutex::default(),
            inflight: Mutex::default(),
            evaluations: Default::default(),
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

    pub fn with_access(mut self, access: AccessPolicy) -> Self {
        self.access = access;
        self
    }

    /// Confines every query to its policy's namespace (`--promql-tenancy=namespace`).
    pub fn with_promql_tenancy(mut self, tenancy: crate::source::promql::tenancy::Tenancy) -> Self {
        self.promql_tenancy = tenancy;
        self
    }

    /// Shards policies across replicas: a policy is owned while this replica holds its shard.
    pub fn with_shards(mut self, shards: Arc<crate::shard::Ownership>) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Whether this replica may write for the policy `namespace/name` now: it leads, or with sharding it holds
    /// the policy's shard and renewed it within the renew deadline. Checked before every write.
    pub fn owns(&self, namespace: &str, name: &str) -> bool {
        match &self.shards {
            Some(shards) => shards.owns(namespace, name),
            None => self.leader.load(Ordering::SeqCst),
        }
    }

    /// Whether this replica may write for `sp` now (see [`Context::owns`]).
    pub fn owns_policy(&self, sp: &ScalingPolicy) -> bool {
        let (namespace, name) = observe::object_key(sp);
        self.owns(&namespace, &name)
    }

    /// Changes whenever this replica gains ownership (becomes the leader or acquires a shard).
    fn ownership_gains(&self) -> (bool, u64) {
        (self.leader.load(Ordering::SeqCst), self.shards.as_ref().map_or(0, |s| s.gains()))
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
        self.cancel(key);
        lock(&self.failures).remove(key);
        lock(&self.predictors).remove(key);
        lock(&self.seen).remove(key);
        self.telemetry.forgotten(&key.0, &key.1);
    }

    /// Cancels the evaluation in flight of a deleted policy, so that it stops holding an evaluation slot.
    fn cancel(&self, key: &(String, String)) {
        if let Some((_, handle)) = lock(&self.inflight).remove(key) {
            tracing::debug!(namespace = %key.0, name = %key.1, "cancelling the evaluation of a deleted policy");
            handle.abort();
        }
    }

    /// Forgets every policy reconciled before that is not in `live` (the keys in the watch stores), and
    /// returns how many. The run loop does not evaluate a deleted object, so without this a
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

/// What the run loop reconciles: a policy as the watch read it. It waits for an evaluation slot of its
/// namespace; then one whose spec does not fit the Rust types is reported on its own status, the others are
/// evaluated within their deadline (else abandoned and reported, see [`reconcile`]). Either is cancelled if the
/// policy is deleted meanwhile.
pub async fn evaluate(
    raw: Arc<RawScalingPolicy>,
    ctx: Arc<Context>,
    slots: Arc<slots::Slots>,
) -> Result<Action, Error> {
    let key = (raw.namespace().unwrap_or_default(), raw.name_any());
    let (handle, registration) = AbortHandle::new_pair();
    let id = ctx.evaluations.fetch_add(1, Ordering::Relaxed);
    lock(&ctx.inflight).insert(key.clone(), (id, handle));
    let work = {
        let (ctx, namespace) = (ctx.clone(), key.0.clone());
        async move {
            let _slot = slots.acquire(&namespace).await;
            // Parsed and evaluated (in a box) once it has its slot: a policy waiting for one holds this small
            // future and its object's Arc, not its parsed status nor the evaluation's state (about 6 KB each,
            // most of the heap at 10,000 policies).
            Box::pin(parse_and_reconcile(raw, ctx)).await
        }
    };
    let result = Abortable::new(work, registration).await;
    let mut inflight = lock(&ctx.inflight);
    if inflight.get(&key).is_some_and(|(i, _)| *i == id) {
        inflight.remove(&key);
    }
    drop(inflight);
    result.unwrap_or_else(|_aborted| Ok(Action::await_change()))
}

/// The typed policy reconciled, or, when its spec does not fit the Rust types, the reason on its status.
async fn parse_and_reconcile(raw: Arc<RawScalingPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    match raw.parse() {
        Ok(sp) => reconcile(Arc::new(sp), ctx).await,
        Err(unreadable) => {
            let sp = raw.unparsed();
            let (namespace, name) = observe::object_key(&sp);
            tracing::warn!(%namespace, %name, error = %unreadable, "invalid policy");
            if !namespace.is_empty() && ctx.owns(&namespace, &name) {
                let old = sp.status.clone().unwrap_or_default();
                act::report_failure(&sp, &ctx, &old, ctx.now(), "InvalidPolicy", &unreadable.to_string()).await;
            }
            Ok(Action::await_change())
        }
    }
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
            Ok(_) => {
                ctx.clear_failures(&(namespace.clone(), name.clone()));
                ctx.telemetry.reconciled("success", seconds);
                tracing::debug!(seconds, "reconciled");
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
    let (ns, name) = observe::object_key(sp);
    if !ctx.owns(&ns, &name) {
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

    // Only gathering is bounded by the deadline (it is where a slow or hostile Prometheus waits): acting is
    // never abandoned between the /scale patch and the status write that records it.
    let deadline = slots::deadline(interval);
    let observed = tokio::time::timeout(deadline, observe::observe(sp, &policy, &mut old, ctx, namespace, now))
        .await
        .unwrap_or(Err(Error::EvaluationTimedOut { deadline }));
    let obs = match observed {
        Ok(obs) => obs,
        Err(error) => {
            act::report_failure(sp, ctx, &old, now, error.reason(), &error.to_string()).await;
            return Err(error);
        }
    };
    let rec = engine::recommend(&policy, &obs.snapshot());
    ctx.telemetry.evaluated(&ns, &name, &policy, &rec, obs.forecast.as_ref());
    // One INFO line when the evaluation changes something; a steady hold is DEBUG.
    if rec.desired != rec.current {
        tracing::info!(current = rec.current, desired = rec.desired, decision = rec.decision.as_str(), reason = %rec.reason, "evaluated");
    } else {
        tracing::debug!(current = rec.current, desired = rec.desired, decision = rec.decision.as_str(), reason = %rec.reason, "evaluated");
    }
    if let Err(error) = act::act(sp, ctx, &old, &policy, &obs, &rec).await {
        if matches!(error, Error::TargetNotFound { .. } | Error::PatchScale { .. }) {
            act::report_failure(sp, ctx, &old, now, error.reason(), &error.to_string()).await;
        }
        return Err(error);
    }
    Ok(Action::requeue(interval))
}

/// Retry a failed object with exponential backoff of its own (not a flat requeue shared by all).
pub fn error_policy(sp: Arc<RawScalingPolicy>, _error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.record_failure((sp.namespace().unwrap_or_default(), sp.name_any()));
    Action::requeue(backoff(failures))
}

/// What makes a policy worth reconciling at once: a new generation (spec change) or a change of the paused
/// annotation. Status writes change neither.
pub fn change_key<K: kube::Resource>(sp: &K) -> Option<u64> {
    let mut h = DefaultHasher::new();
    sp.meta().generation.hash(&mut h);
    sp.annotations().get(PAUSED_ANNOTATION).hash(&mut h);
    Some(h.finish())
}

/// Options of the reconcile loop.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Policies evaluated at once: per namespace when `namespaces` lists them; in all when watching all
    /// namespaces, where one namespace may use at most half (see [`slots::Slots`]).
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
    let apis: Vec<Api<RawScalingPolicy>> = if options.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        options.namespaces.iter().map(|ns| Api::namespaced(ctx.client.clone(), ns)).collect()
    };
    let mut loops = Vec::new();
    let mut stores = Vec::new();
    // A standby requeues each policy after its interval without evaluating it. When it becomes the leader it
    // re-evaluates every policy at once rather than up to one interval later.
    let (gained, _) = tokio::sync::broadcast::channel::<()>(4);
    // Watching all namespaces, one namespace may use half the slots; watching a list, each namespace has its
    // own `concurrency` (its own controller), as before.
    let slots = Arc::new(if options.namespaces.is_empty() {
        slots::Slots::shared(options.concurrency)
    } else {
        let each = usize::from(options.concurrency.max(1));
        slots::Slots::new(each * options.namespaces.len(), each)
    });
    // One controller per namespace: each has its own store, so one namespace's re-list never drops another's.
    for api in apis {
        let (reader, writer) = reflector::store::<RawScalingPolicy>();
        stores.push(reader.clone());
        let deletions = ctx.clone();
        let mut claims = ctx.conflicts.register();
        let stream = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            // The store keeps every policy for the process's life: only what reconciles read.
            .modify(RawScalingPolicy::trim)
            .reflect(writer)
            .inspect(move |event| {
                deletions.conflicts.observe_result(conflicts::Kind::ScalingPolicy, &mut claims, event);
                if let Ok(watcher::Event::Delete(sp)) = event {
                    deletions.cancel(&(sp.namespace().unwrap_or_default(), sp.name_any()));
                }
            })
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
        let slots = slots.clone();
        let changes = stream.filter_map(|object| std::future::ready(object.ok().map(|sp| ObjectRef::from_obj(&sp))));
        let context = ctx.clone();
        // Every due policy is its own task waiting for a slot (slots.rs): the slots bound how many evaluations
        // run, fairly between namespaces, and a waiting task costs nothing until its slot is free.
        let controller = runner::drive(changes, leadership_gained, reader, shutdown.clone(), move |sp| {
            let (ctx, slots) = (context.clone(), slots.clone());
            async move {
                match evaluate(sp.clone(), ctx.clone(), slots).await {
                    Ok(action) => action.requeue_after(),
                    Err(error) => error_policy(sp, &error, ctx).requeue_after(),
                }
            }
        });
        loops.push(controller);
    }
    *lock(&ctx.stores) = stores.clone();
    // HPAs and ScaledObjects in the same namespaces, for the conflict verdicts; never part of readiness.
    let autoscalers = conflicts::watch_autoscalers(&ctx.client, &options.namespaces, ctx.conflicts.clone());
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
                let live = stores
                    .iter()
                    .flat_map(Store::state)
                    .map(|sp| (sp.namespace().unwrap_or_default(), sp.name_any()))
                    .collect();
                ctx.prune(&live);
            }
        }
    };
    let leadership = {
        let ctx = ctx.clone();
        async move {
            let (mut was_leader, mut gains) = ctx.ownership_gains();
            loop {
                tokio::time::sleep(LEADERSHIP_POLL).await;
                let (is_leader, now_gains) = ctx.ownership_gains();
                if ctx.shards.is_none() && is_leader && !was_leader {
                    tracing::info!("became the leader: evaluating every policy now");
                    let _ = gained.send(());
                } else if now_gains != gains {
                    tracing::info!("gained a shard: evaluating every policy it holds now");
                    let _ = gained.send(());
                }
                (was_leader, gains) = (is_leader, now_gains);
            }
        }
    };
    let all = join_all(loops);
    tokio::select! {
        _ = all => {}
        _ = async { readiness.await; counting.await } => {}
        _ = leadership => {}
        _ = autoscalers => {}
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
