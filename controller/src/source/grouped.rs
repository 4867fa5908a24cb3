//! Grouped, coalesced Prometheus reads: one query per namespace, template and interval instead of one per policy.
//!
//! ```text
//!   policy A ─┐  plan(metric) = Grouped { parts: [sum by (pod) (rate(x{namespace="NS"}[W])), ...], combine }
//!   policy B ─┼─► GroupedReader::read ──► key (Prometheus config, query, start, end, step)
//!   policy C ─┘        │                    │ first asker: take a namespace token, spawn the query (behind the
//!                      │                    │   per-Prometheus in-flight semaphore), cache its shared future
//!                      │                    │ concurrent and later askers in the interval: await the same future
//!                      ▼                    ▼
//!               aggregate::combine(per-pod answers, policy's pod regex) ──► the policy's series
//! ```
//!
//! **Why range queries.** Threshold rules need the samples of their `for` window, not only the current value.
//! Rather than keeping that history in memory (lost on a restart or a leader change), each grouped query is
//! one range query over the policy's lookback ending at the interval-aligned evaluation time: every policy of a
//! namespace with the same template, window, container selector and interval shares it, and a new leader sees
//! exactly what the old one saw. Lookbacks are rounded up to a power of two steps ([`covering_start`]), so
//! policies with different threshold durations share the query that covers them all (one per doubling) and
//! each keeps its own samples. Nothing lives only in memory but the cache of the current interval's answers;
//! there is nothing to refill after a restart or a leader or shard change.
//!
//! **Never stale across intervals.** The key holds the aligned end time (`floor(now / step) * step`), so the
//! first read of a new interval misses and sends a fresh query; entries are dropped once their interval is over.
//! A failure is cached like an answer for the rest of its interval, so every policy that shares the query
//! reports the same failure instead of sending it again.
//!
//! **Budgets.** Each query actually sent takes a token from its namespace's bucket ([`super::budget`]); an empty
//! bucket answers [`ReadError::Throttled`] without sending anything, which only that namespace's policies see.
//! At most `max_in_flight` queries run against one Prometheus address at once.
//!
//! Identical raw `query` metrics (and identical overrides) go through the same cache as single-series queries,
//! so they are also sent once per interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, join_all};
use jiff::Timestamp;
use tokio::sync::Semaphore;

use super::budget::{BudgetConfig, Budgets};
use super::promql::Plan;
use super::{LabeledSeries, MetricsSource, PrometheusConfig, Sample, SourceError, aggregate};

/// Limits of the grouped reader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupedConfig {
    /// Queries in flight against one Prometheus address at most.
    pub max_in_flight: usize,
    /// Each namespace's query budget.
    pub budget: BudgetConfig,
}

impl Default for GroupedConfig {
    fn default() -> Self {
        Self { max_in_flight: 32, budget: BudgetConfig::default() }
    }
}

/// Receives query counts for `/metrics`, so that this module needs no metrics crate.
pub trait QueryCounter: Send + Sync {
    /// A query was sent to Prometheus; `kind` is `"grouped"` (per-pod, shared by a namespace) or `"single"`.
    fn sent(&self, kind: &'static str);
    /// A metric read was answered by a query already sent (or in flight) this interval.
    fn deduplicated(&self, kind: &'static str);
    /// A query of `namespace` was not sent because its budget was spent.
    fn throttled(&self, namespace: &str);
}

/// A counter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopCounter;

impl QueryCounter for NoopCounter {
    fn sent(&self, _: &'static str) {}
    fn deduplicated(&self, _: &'static str) {}
    fn throttled(&self, _: &str) {}
}

/// Why a grouped read gave no series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The namespace spent its query budget; the read was held back without asking Prometheus.
    #[error("throttled: namespace {namespace:?} spent its Prometheus query budget; held back until it refills")]
    Throttled { namespace: String, retry_after: Duration },
    /// The pod regex did not compile (cannot happen for the regexes Foresight builds).
    #[error("invalid pod regex: {message}")]
    PodRegex { message: String },
}

impl ReadError {
    /// A short, low-cardinality name for metric labels and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Source(e) => e.category(),
            Self::Throttled { .. } => "throttled",
            Self::PodRegex { .. } => "pod_regex",
        }
    }
}

#[derive(Debug)]
enum Answered {
    Labeled(Vec<LabeledSeries>),
    Single(Vec<Sample>),
    /// The source cannot answer labelled series: read the per-policy query instead.
    Unsupported,
}

type Answer = Result<Arc<Answered>, SourceError>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    prometheus: PrometheusConfig,
    labeled: bool,
    query: String,
    start_ms: i64,
    end_ms: i64,
    step: Duration,
}

struct Entry {
    answer: Shared<BoxFuture<'static, Answer>>,
    /// When the interval this answer belongs to is over.
    expires: Timestamp,
}

#[derive(Default)]
struct State {
    cache: HashMap<Key, Entry>,
    budgets: Budgets,
    in_flight: HashMap<String, Arc<Semaphore>>,
}

/// Shared by every reconcile: coalesces identical queries within an interval and enforces the budgets.
pub struct GroupedReader {
    config: GroupedConfig,
    counter: Arc<dyn QueryCounter>,
    state: Mutex<State>,
}

impl std::fmt::Debug for GroupedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedReader").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The interval-aligned evaluation time: the same for every policy with this step within one interval.
pub fn aligned(now: Timestamp, step: Duration) -> Timestamp {
    let step_ms = step.as_millis().clamp(1, i64::MAX as u128) as i64;
    let ms = now.as_millisecond();
    Timestamp::from_millisecond(ms - ms.rem_euclid(step_ms)).unwrap_or(now)
}

/// Where the query for a read from `start` to `end` at `step` begins: its lookback rounded up to a power of two
/// steps (1, 2, 4, 8, ...), so that the policies of a namespace with different threshold durations or windows
/// share a handful of queries (at most one per doubling) instead of one per distinct lookback, at the price of
/// at most twice the points.
pub fn covering_start(start: Timestamp, end: Timestamp, step: Duration) -> Timestamp {
    let step_ms = step.as_millis().clamp(1, i64::MAX as u128) as i64;
    let span = end.as_millisecond().saturating_sub(start.as_millisecond());
    if span <= 0 {
        return start;
    }
    let steps = (span + step_ms - 1) / step_ms;
    let covering = u64::try_from(steps).unwrap_or(u64::MAX).checked_next_power_of_two().unwrap_or(u64::MAX);
    let back = i64::try_from(covering).unwrap_or(i64::MAX).saturating_mul(step_ms);
    Timestamp::from_millisecond(end.as_millisecond().saturating_sub(back)).unwrap_or(start).min(start)
}

impl GroupedReader {
    pub fn new(config: GroupedConfig, counter: Arc<dyn QueryCounter>) -> Self {
        let state = State { budgets: Budgets::new(config.budget), ..State::default() };
        Self { config, counter, state: Mutex::new(state) }
    }

    /// One metric's samples at `start`, `start + step`, ... `end`, read as `plan` says: a grouped template from the
    /// namespace-wide queries aggregated for the policy's pods, anything else from its own (coalesced) query.
    /// `now` is the wall-clock time of the read, which decides when cached answers expire.
    #[allow(clippy::too_many_arguments)]
    pub async fn read(
        &self,
        prometheus: &PrometheusConfig,
        source: &Arc<dyn MetricsSource>,
        namespace: &str,
        plan: &Plan,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
        now: Timestamp,
    ) -> Result<Vec<Sample>, ReadError> {
        // Policies whose lookbacks round up to the same number of steps share one query; each keeps its own
        // samples, from `start` on.
        let covering = covering_start(start, end, step);
        let own = |mut samples: Vec<Sample>| {
            samples.retain(|s| s.time >= start);
            samples
        };
        let fetch = |labeled, query: &str| {
            let key = Key {
                prometheus: prometheus.clone(),
                labeled,
                query: query.to_owned(),
                start_ms: covering.as_millisecond(),
                end_ms: end.as_millisecond(),
                step,
            };
            self.fetch(key, source, namespace, now)
        };
        let single = |answer: &Answered| match answer {
            Answered::Single(samples) => Ok(own(samples.clone())),
            _ => Err(ReadError::Source(SourceError::Decode { message: "unexpected grouped answer".into() })),
        };
        let grouped = match plan {
            Plan::Single(query) => return single(&*fetch(false, query).await?),
            Plan::Grouped(g) => g,
        };
        let pods =
            aggregate::anchored(&grouped.pod_regex).map_err(|e| ReadError::PodRegex { message: e.to_string() })?;
        let answers = join_all(grouped.parts.iter().map(|part| fetch(true, part))).await;
        let mut parts = Vec::with_capacity(answers.len());
        for answer in answers {
            parts.push(answer?);
        }
        let mut series: Vec<&[LabeledSeries]> = Vec::with_capacity(parts.len());
        for part in &parts {
            match &**part {
                Answered::Labeled(s) => series.push(s),
                Answered::Unsupported => return single(&*fetch(false, &grouped.per_policy).await?),
                Answered::Single(_) => {
                    return Err(ReadError::Source(SourceError::Decode { message: "unexpected single answer".into() }));
                }
            }
        }
        Ok(own(aggregate::combine(grouped.combine, &series, &pods)))
    }

    /// The cached answer for `key`, or a new query for it (budget permitting).
    async fn fetch(
        &self,
        key: Key,
        source: &Arc<dyn MetricsSource>,
        namespace: &str,
        now: Timestamp,
    ) -> Result<Arc<Answered>, ReadError> {
        let kind = if key.labeled { "grouped" } else { "single" };
        let answer = {
            let mut state = self.lock();
            state.cache.retain(|_, entry| entry.expires > now);
            if let Some(entry) = state.cache.get(&key) {
                self.counter.deduplicated(kind);
                entry.answer.clone()
            } else {
                let clock = Instant::now();
                state.budgets.prune(clock);
                if let Err(retry_after) = state.budgets.take(namespace, clock) {
                    self.counter.throttled(namespace);
                    return Err(ReadError::Throttled { namespace: namespace.to_owned(), retry_after });
                }
                let address = key.prometheus.address.trim().trim_end_matches('/').to_owned();
                let max = self.config.max_in_flight.max(1);
                let semaphore = state.in_flight.entry(address).or_insert_with(|| Arc::new(Semaphore::new(max))).clone();
                let task = tokio::spawn(send(key.clone(), source.clone(), semaphore, self.counter.clone(), kind));
                let answer = async move {
                    task.await
                        .unwrap_or_else(|e| Err(SourceError::Decode { message: format!("query task failed: {e}") }))
                }
                .boxed()
                .shared();
                let step = jiff::SignedDuration::try_from(key.step).unwrap_or(jiff::SignedDuration::from_secs(15));
                let end = Timestamp::from_millisecond(key.end_ms).unwrap_or(now);
                let expires = end.checked_add(step).unwrap_or(now).max(now.checked_add(step).unwrap_or(now));
                state.cache.insert(key, Entry { answer: answer.clone(), expires });
                answer
            }
        };
        answer.await.map_err(ReadError::from)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sends one query once a slot against its Prometheus is free. Spawned, so that it completes (and frees its
/// slot) even when the policy that started it gives up waiting.
async fn send(
    key: Key,
    source: Arc<dyn MetricsSource>,
    semaphore: Arc<Semaphore>,
    counter: Arc<dyn QueryCounter>,
    kind: &'static str,
) -> Answer {
    let _permit = semaphore.acquire_owned().await.ok();
    let start = Timestamp::from_millisecond(key.start_ms).map_err(|_| SourceError::InvalidRange { reason: "start" })?;
    let end = Timestamp::from_millisecond(key.end_ms).map_err(|_| SourceError::InvalidRange { reason: "end" })?;
    if !key.labeled {
        counter.sent(kind);
        return source.range(&key.query, start, end, key.step).await.map(|s| Arc::new(Answered::Single(s)));
    }
    match source.range_labeled(&key.query, start, end, key.step) {
        Some(query) => {
            counter.sent(kind);
            query.await.map(|s| Arc::new(Answered::Labeled(s)))
        }
        None => Ok(Arc::new(Answered::Unsupported)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::promql::{Combine, GroupedQuery};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every labelled query with two pods' series after `delay`, counting what it is asked.
    #[derive(Default)]
    struct Counting {
        labeled: AtomicUsize,
        single: AtomicUsize,
        fail: Mutex<Option<SourceError>>,
        delay: Duration,
    }

    impl MetricsSource for Counting {
        fn instant<'a>(&'a self, _: &'a str, _: Timestamp) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn range<'a>(
            &'a self,
            _: &'a str,
            _: Timestamp,
            end: Timestamp,
            _: Duration,
        ) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
            self.single.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(vec![Sample::new(end, 7.0)]) })
        }
        fn range_labeled<'a>(
            &'a self,
            _: &'a str,
            _: Timestamp,
            end: Timestamp,
            _: Duration,
        ) -> Option<BoxFuture<'a, Result<Vec<LabeledSeries>, SourceError>>> {
            self.labeled.fetch_add(1, Ordering::SeqCst);
            Some(Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                if let Some(e) = self.fail.lock().expect("lock").clone() {
                    return Err(e);
                }
                let pod = |name: &str, v| LabeledSeries {
                    labels: crate::source::Labels::from([("pod".to_string(), name.to_string())]),
                    samples: vec![Sample::new(end, v)],
                };
                Ok(vec![pod("web-0", 1.0), pod("web-1", 2.0), pod("db-0", 4.0)])
            }))
        }
    }

    fn plan(pods: &str) -> Plan {
        Plan::Grouped(GroupedQuery {
            parts: vec!["sum by (pod) (x)".into()],
            combine: Combine::Sum,
            pod_regex: pods.into(),
            per_policy: "unused".into(),
        })
    }

    /// `s` seconds after a whole 15 s step.
    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_010 + s).expect("valid")
    }

    const STEP: Duration = Duration::from_secs(15);

    async fn read(
        reader: &GroupedReader,
        source: &Arc<dyn MetricsSource>,
        ns: &str,
        plan: &Plan,
        now: Timestamp,
    ) -> Result<f64, ReadError> {
        let end = aligned(now, STEP);
        let config = PrometheusConfig::new("http://prom:9090");
        let samples = reader.read(&config, source, ns, plan, end, end, STEP, now).await?;
        Ok(samples.last().map_or(f64::NAN, |s| s.value))
    }

    #[tokio::test]
    async fn concurrent_and_later_askers_in_an_interval_share_one_query_and_a_new_interval_asks_again() {
        let counting = Arc::new(Counting { delay: Duration::from_millis(50), ..Counting::default() });
        let source: Arc<dyn MetricsSource> = counting.clone();
        let reader = GroupedReader::new(GroupedConfig::default(), Arc::new(NoopCounter));
        let (web, db) = (plan("web-[0-9]+"), plan("db-[0-9]+"));
        let (a, b) = tokio::join!(read(&reader, &source, "ns", &web, at(1)), read(&reader, &source, "ns", &db, at(2)));
        assert_eq!((a, b), (Ok(3.0), Ok(4.0)), "each policy gets its own pods' sum");
        assert_eq!(read(&reader, &source, "ns", &web, at(14)).await, Ok(3.0));
        assert_eq!(counting.labeled.load(Ordering::SeqCst), 1, "one grouped query for the whole interval");
        assert_eq!(read(&reader, &source, "ns", &web, at(16)).await, Ok(3.0));
        assert_eq!(counting.labeled.load(Ordering::SeqCst), 2, "the next interval is never served the old answer");
        assert_eq!(read(&reader, &source, "other", &web, at(17)).await, Ok(3.0));
        assert_eq!(counting.labeled.load(Ordering::SeqCst), 2, "same query text: same answer (namespace is in it)");
    }

    #[tokio::test]
    async fn a_failure_is_shared_by_every_asker_of_the_interval() {
        let counting = Arc::new(Counting::default());
        *counting.fail.lock().expect("lock") = Some(SourceError::Http { status: 503 });
        let source: Arc<dyn MetricsSource> = counting.clone();
        let reader = GroupedReader::new(GroupedConfig::default(), Arc::new(NoopCounter));
        for s in [1, 5, 9] {
            let error = read(&reader, &source, "ns", &plan("web-[0-9]+"), at(s)).await.expect_err("shared failure");
            assert_eq!(error, ReadError::Source(SourceError::Http { status: 503 }));
        }
        assert_eq!(counting.labeled.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_namespace_out_of_budget_is_throttled_and_others_are_not() {
        let counting = Arc::new(Counting::default());
        let source: Arc<dyn MetricsSource> = counting.clone();
        let config =
            GroupedConfig { budget: BudgetConfig { per_second: 0.001, burst: 2.0 }, ..GroupedConfig::default() };
        let reader = GroupedReader::new(config, Arc::new(NoopCounter));
        for (i, q) in ["a", "b"].iter().enumerate() {
            let single = Plan::Single((*q).into());
            assert_eq!(read(&reader, &source, "flood", &single, at(i as i64)).await, Ok(7.0));
        }
        let third = read(&reader, &source, "flood", &Plan::Single("c".into()), at(3)).await;
        assert!(matches!(&third, Err(ReadError::Throttled { namespace, .. }) if namespace == "flood"), "{third:?}");
        assert!(third.expect_err("throttled").to_string().contains("query budget"));
        assert_eq!(read(&reader, &source, "flood", &Plan::Single("a".into()), at(4)).await, Ok(7.0), "cached: free");
        assert_eq!(read(&reader, &source, "quiet", &Plan::Single("c".into()), at(5)).await, Ok(7.0));
        assert_eq!(counting.single.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn sources_without_labelled_series_fall_back_to_the_per_policy_query() {
        let source: Arc<dyn MetricsSource> = Arc::new(crate::source::InMemorySource::new());
        let reader = GroupedReader::new(GroupedConfig::default(), Arc::new(NoopCounter));
        let samples = reader
            .read(&PrometheusConfig::new("http://p:9090"), &source, "ns", &plan("web"), at(0), at(0), STEP, at(0))
            .await;
        assert_eq!(samples, Ok(vec![]));
    }

    /// Answers a sample at every step of the range asked, for two pods, and records each range asked.
    #[derive(Default)]
    struct Stepping {
        asked: Mutex<Vec<(Timestamp, Timestamp)>>,
    }

    fn steps(start: Timestamp, end: Timestamp, step: Duration, value: f64) -> Vec<Sample> {
        let step = jiff::SignedDuration::try_from(step).expect("step");
        std::iter::successors(Some(start), |t| t.checked_add(step).ok())
            .take_while(|t| *t <= end)
            .map(|t| Sample::new(t, value))
            .collect()
    }

    impl MetricsSource for Stepping {
        fn instant<'a>(&'a self, _: &'a str, _: Timestamp) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn range<'a>(
            &'a self,
            _: &'a str,
            start: Timestamp,
            end: Timestamp,
            step: Duration,
        ) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
            self.asked.lock().expect("lock").push((start, end));
            Box::pin(async move { Ok(steps(start, end, step, 7.0)) })
        }
        fn range_labeled<'a>(
            &'a self,
            _: &'a str,
            start: Timestamp,
            end: Timestamp,
            step: Duration,
        ) -> Option<BoxFuture<'a, Result<Vec<LabeledSeries>, SourceError>>> {
            self.asked.lock().expect("lock").push((start, end));
            let pod = move |name: &str, v| LabeledSeries {
                labels: crate::source::Labels::from([("pod".to_string(), name.to_string())]),
                samples: steps(start, end, step, v),
            };
            Some(Box::pin(async move { Ok(vec![pod("web-0", 1.0), pod("web-1", 2.0)]) }))
        }
    }

    #[tokio::test]
    async fn policies_with_different_lookbacks_share_the_query_covering_them_and_keep_their_own_samples() {
        let stepping = Arc::new(Stepping::default());
        let source: Arc<dyn MetricsSource> = stepping.clone();
        let reader = GroupedReader::new(GroupedConfig::default(), Arc::new(NoopCounter));
        let config = PrometheusConfig::new("http://prom:9090");
        let now = at(3);
        let end = aligned(now, STEP);
        let back = |n: i64| end.checked_sub(jiff::SignedDuration::from_secs(15 * n)).expect("start");
        for plan in [plan("web-[0-9]+"), Plan::Single("max(queue)".into())] {
            stepping.asked.lock().expect("lock").clear();
            // Lookbacks of 3 and 4 steps (say a 30 s and a 45 s threshold duration) round up to 4 steps.
            let short = reader.read(&config, &source, "ns", &plan, back(3), end, STEP, now).await.expect("read");
            let long = reader.read(&config, &source, "ns", &plan, back(4), end, STEP, now).await.expect("read");
            assert_eq!(*stepping.asked.lock().expect("lock"), [(back(4), end)], "one query covers both lookbacks");
            assert_eq!(short.first().map(|s| s.time), Some(back(3)), "the shorter lookback gets its own samples");
            assert_eq!((short.len(), long.len()), (4, 5));
            assert!(short.iter().all(|s| s.value == short[0].value) && long.last() == short.last());
            // 5 steps round up to 8: a second query, and no more for 6, 7 or 8.
            for n in 5..=8 {
                let samples = reader.read(&config, &source, "ns", &plan, back(n), end, STEP, now).await.expect("read");
                assert_eq!(samples.len(), n as usize + 1);
            }
            assert_eq!(stepping.asked.lock().expect("lock").len(), 2, "{:?}", stepping.asked.lock().expect("lock"));
        }
        assert_eq!(covering_start(back(1), end, STEP), back(1));
        assert_eq!(covering_start(end, end, STEP), end, "an instant read stays one point");
    }

    #[test]
    fn aligned_times_are_whole_steps() {
        assert_eq!(aligned(at(7), STEP).as_second() % 15, 0);
        assert!(aligned(at(7), STEP) <= at(7) && aligned(at(7), STEP) > at(7 - 15));
    }
}
