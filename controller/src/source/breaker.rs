//! Circuit breakers per failure domain: one per Prometheus address, shared by every namespace, and one per
//! address and namespace.
//!
//! The shared breaker counts only transport failures ([`SourceError::is_transport_failure`]: the server cannot be
//! reached at all), so that nothing one tenant's queries do can cut the other namespaces off. A tenant's own
//! timeouts, query errors that stress the server and oversized answers count towards its own breaker only
//! ([`SourceError::is_server_failure`]), which fails that namespace's queries fast and leaves the others alone.
//!
//! When Prometheus is down, every policy's query would otherwise wait for its own timeout, every evaluation
//! interval. After `failure_threshold` consecutive server failures the circuit opens and queries fail at once with
//! [`SourceError::CircuitOpen`]; after `cool_off` one probe is let through (half-open): success closes the circuit,
//! failure opens it for another cool-off.
//!
//! ```text
//!   Closed ──N consecutive failures──► Open ──cool-off elapsed, next query──► HalfOpen (one probe in flight)
//!     ▲                                  ▲                                        │
//!     └────────── probe succeeded ───────┼────────────────────────────────────────┤
//!                                        └────────── probe failed ────────────────┘
//! ```
//!
//! [`Breaker`] is the pure state machine (clock passed in, tested without sleeping); [`CircuitBreaker`] shares one
//! between every client of an address and reports transitions; [`BreakerSource`] wraps a [`MetricsSource`].

use super::{MetricsSource, NoopObserver, QueryObserver, Sample, SourceError};
use futures::future::BoxFuture;
use jiff::Timestamp;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When to open the circuit and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BreakerConfig {
    /// Consecutive server failures that open the circuit. At least 1.
    pub failure_threshold: u32,
    /// How long an open circuit refuses queries before letting a probe through.
    pub cool_off: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, cool_off: Duration::from_secs(30) }
    }
}

/// The circuit's state as reported to telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The value of `foresight_prometheus_circuit_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// What a finished query says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered (even if the answer was an error about the query itself).
    Success,
    /// The server could not answer (see [`SourceError::is_server_failure`]).
    Failure,
}

impl Outcome {
    /// For a namespace's own breaker: any sign of a struggling server (timeouts included).
    pub fn of<T>(result: &Result<T, SourceError>) -> Self {
        match result {
            Err(error) if error.is_server_failure() => Self::Failure,
            _ => Self::Success,
        }
    }

    /// For the breaker shared by every namespace: only an unreachable server.
    pub fn transport<T>(result: &Result<T, SourceError>) -> Self {
        match result {
            Err(error) if error.is_transport_failure() => Self::Failure,
            _ => Self::Success,
        }
    }
}

/// The breaker's answer to "may I query now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; the circuit is closed.
    Call,
    /// Go ahead as the half-open probe; the circuit's fate rides on this query.
    Probe,
    /// Don't; fail with [`SourceError::CircuitOpen`]. `until` is the end of the cool-off, or `now` while a
    /// half-open probe is in flight (its answer is due within one query timeout).
    Rejected { until: Timestamp },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed { consecutive_failures: u32 },
    Open { until: Timestamp },
    HalfOpen { probe_in_flight: bool },
}

/// The pure state machine. Every method takes the current time; nothing here sleeps or reads a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    config: BreakerConfig,
    phase: Phase,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, phase: Phase::Closed { consecutive_failures: 0 } }
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    pub fn state(&self) -> CircuitState {
        match self.phase {
            Phase::Closed { .. } => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Consecutive server failures counted while closed.
    pub fn consecutive_failures(&self) -> u32 {
        match self.phase {
            Phase::Closed { consecutive_failures } => consecutive_failures,
            Phase::Open { .. } | Phase::HalfOpen { .. } => 0,
        }
    }

    /// Decides whether a query may go out at `now`. An open circuit whose cool-off has elapsed turns half-open and
    /// admits exactly one probe; others are rejected until the probe reports.
    pub fn admit(&mut self, now: Timestamp) -> Admission {
        match self.phase {
            Phase::Closed { .. } => Admission::Call,
            Phase::Open { until } if now < until => Admission::Rejected { until },
            Phase::Open { .. } | Phase::HalfOpen { probe_in_flight: false } => {
                self.phase = Phase::HalfOpen { probe_in_flight: true };
                Admission::Probe
            }
            Phase::HalfOpen { probe_in_flight: true } => Admission::Rejected { until: now },
        }
    }

    /// Records how an admitted query went. Late reports of ordinary calls that finish after the circuit opened
    /// are ignored: only the probe decides a half-open circuit.
    pub fn record(&mut self, admission: Admission, outcome: Outcome, now: Timestamp) {
        match (self.phase, admission, outcome) {
            (Phase::Closed { .. }, Admission::Call, Outcome::Success) => {
                self.phase = Phase::Closed { consecutive_failures: 0 };
            }
            (Phase::Closed { consecutive_failures }, Admission::Call, Outcome::Failure) => {
                let failures = consecutive_failures.saturating_add(1);
                self.phase = if failures >= self.config.failure_threshold.max(1) {
                    self.open_at(now)
                } else {
                    Phase::Closed { consecutive_failures: failures }
                };
            }
            (Phase::HalfOpen { .. }, Admission::Probe, Outcome::Success) => {
                self.phase = Phase::Closed { consecutive_failures: 0 };
            }
            (Phase::HalfOpen { .. }, Admission::Probe, Outcome::Failure) => {
                self.phase = self.open_at(now);
            }
            _ => {}
        }
    }

    /// The probe went away without an answer (its caller gave up): let the next query probe instead.
    pub fn abandon_probe(&mut self) {
        if self.phase == (Phase::HalfOpen { probe_in_flight: true }) {
            self.phase = Phase::HalfOpen { probe_in_flight: false };
        }
    }

    /// The end of the cool-off while the circuit is open.
    pub fn open_until(&self) -> Option<Timestamp> {
        match self.phase {
            Phase::Open { until } => Some(until),
            Phase::Closed { .. } | Phase::HalfOpen { .. } => None,
        }
    }

    fn open_at(&self, now: Timestamp) -> Phase {
        let until = now.checked_add(self.config.cool_off).unwrap_or(Timestamp::MAX);
        Phase::Open { until }
    }
}

/// Where the breaker reads the time; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// One breaker shared by every client of one Prometheus address, reporting its transitions to an observer.
pub struct CircuitBreaker {
    address: String,
    breaker: Mutex<Breaker>,
    /// Why the latest failure failed, said by every query the open circuit refuses.
    cause: Mutex<String>,
    clock: Clock,
    observer: Arc<dyn QueryObserver>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("address", &self.address)
            .field("breaker", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// `address` is the label reported to the observer; pass it without credentials.
    pub fn new(
        address: impl Into<String>,
        config: BreakerConfig,
        clock: Clock,
        observer: Arc<dyn QueryObserver>,
    ) -> Self {
        let breaker = Mutex::new(Breaker::new(config));
        Self { address: address.into(), breaker, cause: Mutex::new(String::new()), clock, observer }
    }

    /// A breaker on the system clock that reports nowhere.
    pub fn standalone(address: impl Into<String>, config: BreakerConfig) -> Self {
        Self::new(address, config, system_clock(), Arc::new(NoopObserver))
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn state(&self) -> CircuitState {
        self.lock().state()
    }

    pub fn admit(&self) -> Admission {
        let now = (self.clock)();
        self.transition(|breaker| breaker.admit(now))
    }

    pub fn record(&self, admission: Admission, outcome: Outcome) {
        let now = (self.clock)();
        self.transition(|breaker| breaker.record(admission, outcome, now));
    }

    pub fn abandon_probe(&self) {
        self.transition(Breaker::abandon_probe);
    }

    /// Records a failure's cause (before [`record`](Self::record) counts it): the connection is refused, the
    /// server answers 503, ... For an unreachable server, the message without "cannot reach Prometheus".
    pub fn note_failure(&self, error: &SourceError) {
        let cause = match error {
            SourceError::Connect { message } => message.clone(),
            other => other.to_string(),
        };
        *self.cause.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = cause;
    }

    /// What a query refused by the open circuit fails with: the failures that opened it and the latest cause.
    pub fn open_error(&self, until: Timestamp, shared: bool) -> SourceError {
        let failures = self.lock().config().failure_threshold.max(1);
        let cause = self.cause.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let cause = if cause.is_empty() { "no answer".to_owned() } else { cause };
        SourceError::CircuitOpen { until, shared, failures, cause }
    }

    /// The end of the cool-off, if the circuit is open.
    pub fn open_until(&self) -> Option<Timestamp> {
        self.lock().open_until()
    }

    /// Applies `step` and tells the observer (outside the lock) if the state changed.
    fn transition<T>(&self, step: impl FnOnce(&mut Breaker) -> T) -> T {
        let (result, before, after) = {
            let mut breaker = self.lock();
            let before = breaker.state();
            let result = step(&mut breaker);
            (result, before, breaker.state())
        };
        if before != after {
            self.observer.circuit_changed(&self.address, after);
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // The state machine cannot be left half-updated by a panic, so a poisoned lock is still consistent.
        self.breaker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A [`MetricsSource`] that asks its address's shared [`CircuitBreaker`] and, if it has one, its namespace's own
/// breaker before every query, and reports every query's outcome and duration to the observer.
pub struct BreakerSource {
    inner: Arc<dyn MetricsSource>,
    circuit: Arc<CircuitBreaker>,
    tenant: Option<Arc<CircuitBreaker>>,
}

impl BreakerSource {
    /// `circuit` is the address's breaker, shared by every namespace: only transport failures count there.
    pub fn new(inner: Arc<dyn MetricsSource>, circuit: Arc<CircuitBreaker>) -> Self {
        Self { inner, circuit, tenant: None }
    }

    /// Adds the namespace's own breaker, which counts every server failure (timeouts included).
    pub fn with_tenant(mut self, tenant: Arc<CircuitBreaker>) -> Self {
        self.tenant = Some(tenant);
        self
    }

    pub fn circuit(&self) -> &Arc<CircuitBreaker> {
        &self.circuit
    }

    pub fn tenant_circuit(&self) -> Option<&Arc<CircuitBreaker>> {
        self.tenant.as_ref()
    }

    async fn guarded<T>(&self, query: BoxFuture<'_, Result<T, SourceError>>) -> Result<T, SourceError> {
        let admission = self.circuit.admit();
        if let Admission::Rejected { until } = admission {
            let error = self.circuit.open_error(until, true);
            self.circuit.observer.query_finished(error.category(), 0.0);
            return Err(error);
        }
        let mut pending = PendingQuery { circuit: &self.circuit, admission: Some(admission) };
        let mut tenant_pending = None;
        if let Some(tenant) = &self.tenant {
            let admission = tenant.admit();
            if let Admission::Rejected { until } = admission {
                // Dropping `pending` frees the shared probe slot if this query held it.
                let error = tenant.open_error(until, false);
                self.circuit.observer.query_finished(error.category(), 0.0);
                return Err(error);
            }
            tenant_pending = Some(PendingQuery { circuit: tenant, admission: Some(admission) });
        }
        let started = Instant::now();
        let result = query.await;
        // A failed probe re-opens its circuit: its caller is told so, in the same words as the queries the open
        // circuit refuses, so that an outage reads the same for every metric.
        let mut reopened = None;
        for (pending, outcome, shared) in std::iter::once((&mut pending, Outcome::transport(&result), true))
            .chain(tenant_pending.as_mut().map(|t| (t, Outcome::of(&result), false)))
        {
            let probing = pending.admission == Some(Admission::Probe);
            if let (Outcome::Failure, Err(error)) = (outcome, &result) {
                pending.circuit.note_failure(error);
            }
            pending.finish(outcome);
            if probing
                && outcome == Outcome::Failure
                && reopened.is_none()
                && let Some(until) = pending.circuit.open_until()
            {
                reopened = Some(pending.circuit.open_error(until, shared));
            }
        }
        let outcome = match &result {
            Ok(_) => "success",
            Err(error) => error.category(),
        };
        self.circuit.observer.query_finished(outcome, started.elapsed().as_secs_f64());
        match reopened {
            Some(error) => Err(error),
            None => result,
        }
    }
}

/// Frees the half-open probe slot if the query future is dropped before it reports.
struct PendingQuery<'a> {
    circuit: &'a CircuitBreaker,
    admission: Option<Admission>,
}

impl PendingQuery<'_> {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(admission) = self.admission.take() {
            self.circuit.record(admission, outcome);
        }
    }
}

impl Drop for PendingQuery<'_> {
    fn drop(&mut self) {
        if self.admission.take() == Some(Admission::Probe) {
            self.circuit.abandon_probe();
        }
    }
}

impl MetricsSource for BreakerSource {
    fn instant<'a>(&'a self, query: &'a str, at: Timestamp) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
        Box::pin(self.guarded(self.inner.instant(query, at)))
    }

    fn range<'a>(
        &'a self,
        query: &'a str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
        Box::pin(self.guarded(self.inner.range(query, start, end, step)))
    }

    fn range_labeled<'a>(
        &'a self,
        query: &'a str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Option<BoxFuture<'a, Result<Vec<super::LabeledSeries>, SourceError>>> {
        let inner = self.inner.range_labeled(query, start, end, step)?;
        Some(Box::pin(self.guarded(inner)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::InMemorySource;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
    }

    fn config() -> BreakerConfig {
        BreakerConfig { failure_threshold: 3, cool_off: Duration::from_secs(30) }
    }

    use Outcome::{Failure as F, Success as S};

    /// Admits one query at `at`, records `outcome` for it, and returns what admission said.
    fn step(breaker: &mut Breaker, at: i64, outcome: Outcome) -> Admission {
        let admission = breaker.admit(t(at));
        if !matches!(admission, Admission::Rejected { .. }) {
            breaker.record(admission, outcome, t(at));
        }
        admission
    }

    #[test]
    fn table_of_sequences() {
        struct Case {
            name: &'static str,
            steps: &'static [(i64, Outcome)],
            state: CircuitState,
            last: &'static str,
        }
        let cases = [
            Case {
                name: "stays closed below the threshold",
                steps: &[(0, F), (1, F)],
                state: CircuitState::Closed,
                last: "call",
            },
            Case {
                name: "opens at the threshold",
                steps: &[(0, F), (1, F), (2, F)],
                state: CircuitState::Open,
                last: "call",
            },
            Case {
                name: "fails fast while open",
                steps: &[(0, F), (1, F), (2, F), (10, S)],
                state: CircuitState::Open,
                last: "rejected",
            },
            Case {
                name: "a success resets the count",
                steps: &[(0, F), (1, F), (2, S), (3, F), (4, F)],
                state: CircuitState::Closed,
                last: "call",
            },
            Case {
                name: "successful probe after the cool-off closes",
                steps: &[(0, F), (1, F), (2, F), (32, S)],
                state: CircuitState::Closed,
                last: "probe",
            },
            Case {
                name: "failed probe re-opens",
                steps: &[(0, F), (1, F), (2, F), (32, F)],
                state: CircuitState::Open,
                last: "probe",
            },
            Case {
                name: "re-opened circuit waits a full cool-off from the failed probe",
                steps: &[(0, F), (1, F), (2, F), (32, F), (61, S)],
                state: CircuitState::Open,
                last: "rejected",
            },
            Case {
                name: "after a failed probe the next cool-off ends in another probe",
                steps: &[(0, F), (1, F), (2, F), (32, F), (62, S)],
                state: CircuitState::Closed,
                last: "probe",
            },
            Case {
                name: "after closing again it takes the full threshold to reopen",
                steps: &[(0, F), (1, F), (2, F), (32, S), (33, F), (34, F)],
                state: CircuitState::Closed,
                last: "call",
            },
        ];
        for case in cases {
            let mut breaker = Breaker::new(config());
            let mut last = Admission::Call;
            for &(at, outcome) in case.steps {
                last = step(&mut breaker, at, outcome);
            }
            let last = match last {
                Admission::Call => "call",
                Admission::Probe => "probe",
                Admission::Rejected { .. } => "rejected",
            };
            assert_eq!((breaker.state(), last), (case.state, case.last), "{}", case.name);
        }
    }

    #[test]
    fn open_circuit_says_until_when() {
        let mut breaker = Breaker::new(config());
        for at in 0..3 {
            step(&mut breaker, at, F);
        }
        assert_eq!(breaker.admit(t(5)), Admission::Rejected { until: t(32) });
        assert_eq!(breaker.admit(t(31)), Admission::Rejected { until: t(32) });
        assert_eq!(breaker.admit(t(32)), Admission::Probe);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let mut breaker = Breaker::new(config());
        for at in 0..3 {
            step(&mut breaker, at, F);
        }
        assert_eq!(breaker.admit(t(40)), Admission::Probe);
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(matches!(breaker.admit(t(40)), Admission::Rejected { .. }));
        breaker.abandon_probe();
        assert_eq!(breaker.admit(t(41)), Admission::Probe, "an abandoned probe frees the slot");
    }

    #[test]
    fn late_reports_from_ordinary_calls_do_not_decide_a_half_open_circuit() {
        let mut breaker = Breaker::new(config());
        let slow = breaker.admit(t(0));
        for at in 0..3 {
            step(&mut breaker, at, F);
        }
        assert_eq!(breaker.admit(t(40)), Admission::Probe);
        breaker.record(slow, S, t(41));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn threshold_zero_behaves_like_one() {
        let mut breaker = Breaker::new(BreakerConfig { failure_threshold: 0, cool_off: Duration::from_secs(1) });
        step(&mut breaker, 0, F);
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[test]
    fn gauge_values_match_the_metric_contract() {
        assert_eq!(
            [CircuitState::Closed, CircuitState::HalfOpen, CircuitState::Open].map(CircuitState::gauge_value),
            [0, 1, 2]
        );
    }

    #[derive(Default)]
    struct Recorder {
        queries: Mutex<Vec<&'static str>>,
        circuits: Mutex<Vec<(String, CircuitState)>>,
    }

    impl QueryObserver for Recorder {
        fn query_finished(&self, outcome: &'static str, _seconds: f64) {
            self.queries.lock().expect("lock").push(outcome);
        }
        fn circuit_changed(&self, address: &str, state: CircuitState) {
            self.circuits.lock().expect("lock").push((address.to_owned(), state));
        }
    }

    /// The decorator with a hand-moved clock: fails fast without asking the inner source, then probes.
    #[tokio::test]
    async fn decorator_fails_fast_and_reports_transitions() {
        let now = Arc::new(Mutex::new(t(0)));
        let clock_now = now.clone();
        let clock: Clock = Arc::new(move || *clock_now.lock().expect("lock"));
        let recorder = Arc::new(Recorder::default());
        let memory = Arc::new(InMemorySource::new());
        memory.fail("up", SourceError::Connect { message: "refused".into() });
        let circuit = Arc::new(CircuitBreaker::new("http://prom:9090", config(), clock, recorder.clone()));
        let source = BreakerSource::new(memory.clone(), circuit.clone());

        for _ in 0..3 {
            let error = source.instant("up", t(0)).await.expect_err("inner fails");
            assert_eq!(error.category(), "connect");
        }
        assert_eq!(circuit.state(), CircuitState::Open);
        let error = source.instant("up", t(0)).await.expect_err("open");
        let cause = "refused".to_owned();
        assert_eq!(error, SourceError::CircuitOpen { until: t(30), shared: true, failures: 3, cause });
        assert_eq!(memory.queries().len(), 3, "the open circuit did not reach the source");

        memory.set("up", vec![crate::source::Sample::new(t(29), 1.0)]);
        *now.lock().expect("lock") = t(31);
        let samples = source.instant("up", t(31)).await.expect("probe succeeds");
        assert_eq!(samples.len(), 1);
        assert_eq!(circuit.state(), CircuitState::Closed);

        let circuits = recorder.circuits.lock().expect("lock").clone();
        let states: Vec<_> = circuits.iter().map(|(_, s)| *s).collect();
        assert_eq!(states, [CircuitState::Open, CircuitState::HalfOpen, CircuitState::Closed]);
        assert!(circuits.iter().all(|(a, _)| a == "http://prom:9090"));
        let queries = recorder.queries.lock().expect("lock").clone();
        assert_eq!(queries, ["connect", "connect", "connect", "circuit_open", "success"]);
    }

    /// An outage reads the same for every query and every cool-off: the failures and the cause, once.
    #[tokio::test]
    async fn refused_queries_and_failed_probes_name_the_cause() {
        let now = Arc::new(Mutex::new(t(0)));
        let clock_now = now.clone();
        let clock: Clock = Arc::new(move || *clock_now.lock().expect("lock"));
        let memory = Arc::new(InMemorySource::new());
        memory.fail("up", SourceError::Connect { message: "connection refused (127.0.0.1:9090)".into() });
        let circuit = Arc::new(CircuitBreaker::new("http://127.0.0.1:9090", config(), clock, Arc::new(NoopObserver)));
        let source = BreakerSource::new(memory.clone(), circuit.clone());
        for _ in 0..3 {
            let error = source.instant("up", t(0)).await.expect_err("inner fails");
            assert_eq!(error.to_string(), "cannot reach Prometheus: connection refused (127.0.0.1:9090)");
        }
        let expected = "circuit open after 3 failures: connection refused (127.0.0.1:9090)";
        let refused = source.instant("up", t(0)).await.expect_err("open");
        assert_eq!(refused.to_string(), expected);
        *now.lock().expect("lock") = t(31);
        let probe = source.instant("up", t(31)).await.expect_err("the probe fails");
        assert_eq!(memory.queries().len(), 4, "the probe reached the source");
        assert_eq!(probe.to_string(), expected);
        assert_eq!(circuit.state(), CircuitState::Open);
        assert_eq!(
            probe,
            SourceError::CircuitOpen {
                until: t(61),
                shared: true,
                failures: 3,
                cause: "connection refused (127.0.0.1:9090)".into()
            }
        );
    }

    #[tokio::test]
    async fn query_errors_do_not_open_the_circuit() {
        let memory = Arc::new(InMemorySource::new());
        memory.fail("sum(", SourceError::Prometheus { error_type: "bad_data".into(), message: "parse".into() });
        let circuit = Arc::new(CircuitBreaker::standalone("p", config()));
        let source = BreakerSource::new(memory, circuit.clone());
        for _ in 0..10 {
            let error = source.instant("sum(", t(0)).await.expect_err("bad query");
            assert_eq!(error.category(), "prometheus_bad_data");
        }
        assert_eq!(circuit.state(), CircuitState::Closed);
    }
}
