//! A [`MetricsSource`] backed by series held in memory, for tests and backtests.
//!
//! Queries are not parsed: each query string maps to the raw samples set for it. Evaluation mimics Prometheus:
//! at each evaluation time the answer is the last sample at or before it, if that sample is at most
//! [`LOOKBACK`] old. Unknown queries answer with no series (`Ok(vec![])`), like a selector that matches nothing.

use super::{MetricsSource, Sample, SourceError};
use futures::future::BoxFuture;
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How far back an evaluation looks for a sample (Prometheus' default `--query.lookback-delta`).
pub const LOOKBACK: Duration = Duration::from_secs(5 * 60);

/// The most points a range query may produce (Prometheus refuses more than 11,000 per series).
pub const MAX_RANGE_POINTS: u128 = 11_000;

/// One query that was asked of an [`InMemorySource`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordedQuery {
    Instant { query: String, at: Timestamp },
    Range { query: String, start: Timestamp, end: Timestamp, step: Duration },
}

impl RecordedQuery {
    pub fn query(&self) -> &str {
        match self {
            Self::Instant { query, .. } | Self::Range { query, .. } => query,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    series: HashMap<String, Vec<Sample>>,
    failures: HashMap<String, SourceError>,
    fail_all: Option<SourceError>,
    delay: Duration,
    asked: Vec<RecordedQuery>,
}

/// Series by query string, scripted failures and delays, and a log of the queries asked.
#[derive(Debug, Default)]
pub struct InMemorySource {
    state: Mutex<State>,
}

impl InMemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `query` from `samples` (any order) from now on, replacing what was set before and clearing a
    /// failure set for it.
    pub fn set(&self, query: impl Into<String>, mut samples: Vec<Sample>) {
        samples.sort_by_key(|sample| sample.time);
        let query = query.into();
        let mut state = self.lock();
        state.failures.remove(&query);
        state.series.insert(query, samples);
    }

    /// Makes `query` fail with `error` until it is [`set`](Self::set) again.
    pub fn fail(&self, query: impl Into<String>, error: SourceError) {
        self.lock().failures.insert(query.into(), error);
    }

    /// Makes every query fail with `error` (an outage) until [`recover`](Self::recover).
    pub fn fail_all(&self, error: SourceError) {
        self.lock().fail_all = Some(error);
    }

    /// Ends a [`fail_all`](Self::fail_all) outage.
    pub fn recover(&self) {
        self.lock().fail_all = None;
    }

    /// Delays every answer by `delay` (a slow Prometheus).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Every query asked so far, in order (including ones that failed). A query counts when its future is first
    /// polled, so a decorator that builds the future but never awaits it (an open circuit) leaves no trace.
    pub fn queries(&self) -> Vec<RecordedQuery> {
        self.lock().asked.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the query and returns the delay to apply and the scripted failure or the series.
    fn begin(&self, asked: RecordedQuery) -> (Duration, Result<Vec<Sample>, SourceError>) {
        let mut state = self.lock();
        let query = asked.query().to_owned();
        state.asked.push(asked);
        let answer = match (&state.fail_all, state.failures.get(&query)) {
            (Some(error), _) | (None, Some(error)) => Err(error.clone()),
            (None, None) => Ok(state.series.get(&query).cloned().unwrap_or_default()),
        };
        (state.delay, answer)
    }
}

/// Checks a range query the way Prometheus would and returns its number of points.
pub(crate) fn range_points(start: Timestamp, end: Timestamp, step: Duration) -> Result<u128, SourceError> {
    if step.is_zero() {
        return Err(SourceError::InvalidRange { reason: "step must be positive" });
    }
    if start > end {
        return Err(SourceError::InvalidRange { reason: "start is after end" });
    }
    let span = u128::try_from(end.as_nanosecond() - start.as_nanosecond()).unwrap_or(u128::MAX);
    let points = span / step.as_nanos() + 1;
    if points > MAX_RANGE_POINTS {
        return Err(SourceError::InvalidRange { reason: "more than 11000 points; use a larger step" });
    }
    Ok(points)
}

/// The value Prometheus would see at `at`: the last sample at or before it, no older than [`LOOKBACK`].
fn value_at(samples: &[Sample], at: Timestamp) -> Option<f64> {
    let after = samples.partition_point(|sample| sample.time <= at);
    let last = samples.get(after.checked_sub(1)?)?;
    let age = at.as_nanosecond() - last.time.as_nanosecond();
    (age <= LOOKBACK.as_nanos() as i128).then_some(last.value)
}

fn evaluate_range(
    samples: &[Sample],
    start: Timestamp,
    end: Timestamp,
    step: Duration,
) -> Result<Vec<Sample>, SourceError> {
    let points = range_points(start, end, step)?;
    let mut out = Vec::new();
    for i in 0..points {
        let nanos = start.as_nanosecond() + (i * step.as_nanos()) as i128;
        let Ok(at) = Timestamp::from_nanosecond(nanos) else {
            break;
        };
        if let Some(value) = value_at(samples, at) {
            out.push(Sample::new(at, value));
        }
    }
    Ok(out)
}

impl MetricsSource for InMemorySource {
    fn instant<'a>(&'a self, query: &'a str, at: Timestamp) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
        Box::pin(async move {
            let (delay, answer) = self.begin(RecordedQuery::Instant { query: query.to_owned(), at });
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let samples = answer?;
            Ok(value_at(&samples, at).map(|value| Sample::new(at, value)).into_iter().collect())
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
            let (delay, answer) = self.begin(RecordedQuery::Range { query: query.to_owned(), start, end, step });
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            evaluate_range(&answer?, start, end, step)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
    }

    fn source_with(query: &str, points: &[(i64, f64)]) -> InMemorySource {
        let source = InMemorySource::new();
        source.set(query, points.iter().map(|&(s, v)| Sample::new(t(s), v)).collect());
        source
    }

    #[tokio::test]
    async fn instant_takes_the_last_sample_at_or_before_within_the_lookback() {
        let source = source_with("cpu", &[(0, 1.0), (60, 2.0), (120, 3.0)]);
        let cases = [(-1, None), (0, Some(1.0)), (59, Some(1.0)), (60, Some(2.0)), (420, Some(3.0)), (421, None)];
        for (at, expected) in cases {
            let samples = source.instant("cpu", t(at)).await.expect("answers");
            let expected: Vec<_> = expected.map(|v| Sample::new(t(at), v)).into_iter().collect();
            assert_eq!(samples, expected, "at {at}");
        }
    }

    #[tokio::test]
    async fn unknown_query_is_empty_not_an_error() {
        let source = InMemorySource::new();
        assert_eq!(source.instant("nothing", t(0)).await, Ok(vec![]));
        assert_eq!(source.range("nothing", t(0), t(60), Duration::from_secs(15)).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn range_resamples_at_each_step_and_skips_gaps() {
        // Samples every 30 s until 60 s, then a gap longer than the lookback, then one more at 600 s.
        let source = source_with("rps", &[(0, 1.0), (30, 2.0), (60, 3.0), (600, 9.0)]);
        let samples = source.range("rps", t(-20), t(600), Duration::from_secs(20)).await.expect("answers");
        let got: Vec<(i64, f64)> = samples.iter().map(|s| (s.time.as_second() - 1_700_000_000, s.value)).collect();
        let mut expected = vec![(0, 1.0), (20, 1.0), (40, 2.0), (60, 3.0)];
        expected.extend((80..=360).step_by(20).map(|s| (s, 3.0)));
        expected.push((600, 9.0));
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn nan_and_infinities_pass_through() {
        let source = source_with("ratio", &[(0, f64::NAN), (10, f64::INFINITY)]);
        let samples = source.range("ratio", t(0), t(10), Duration::from_secs(10)).await.expect("answers");
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[1].value, f64::INFINITY);
    }

    #[tokio::test]
    async fn invalid_ranges_are_refused() {
        let source = source_with("x", &[(0, 1.0)]);
        let zero_step = source.range("x", t(0), t(10), Duration::ZERO).await;
        assert_eq!(zero_step.map_err(|e| e.category()), Err("invalid_range"));
        let backwards = source.range("x", t(10), t(0), Duration::from_secs(1)).await;
        assert_eq!(backwards.map_err(|e| e.category()), Err("invalid_range"));
        let too_many = source.range("x", t(0), t(20_000), Duration::from_secs(1)).await;
        assert_eq!(too_many.map_err(|e| e.category()), Err("invalid_range"));
    }

    #[tokio::test]
    async fn scripted_failures_and_recovery() {
        let source = source_with("up", &[(0, 1.0)]);
        source.fail("up", SourceError::MultipleSeries { count: 2 });
        assert_eq!(source.instant("up", t(0)).await, Err(SourceError::MultipleSeries { count: 2 }));
        source.set("up", vec![Sample::new(t(0), 5.0)]);
        assert_eq!(source.instant("up", t(0)).await, Ok(vec![Sample::new(t(0), 5.0)]));

        source.fail_all(SourceError::Connect { message: "down".into() });
        assert_eq!(source.instant("up", t(0)).await.map_err(|e| e.category()), Err("connect"));
        source.recover();
        assert_eq!(source.instant("up", t(0)).await, Ok(vec![Sample::new(t(0), 5.0)]));
    }

    #[tokio::test]
    async fn records_every_query_in_order() {
        let source = InMemorySource::new();
        source.fail("bad", SourceError::Decode { message: "x".into() });
        let _ = source.instant("a", t(1)).await;
        let _ = source.range("bad", t(0), t(60), Duration::from_secs(30)).await;
        assert_eq!(
            source.queries(),
            [
                RecordedQuery::Instant { query: "a".into(), at: t(1) },
                RecordedQuery::Range { query: "bad".into(), start: t(0), end: t(60), step: Duration::from_secs(30) },
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_the_answer_back() {
        let source = source_with("x", &[(0, 1.0)]);
        source.set_delay(Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        let answer = source.instant("x", t(0)).await;
        assert_eq!(answer, Ok(vec![Sample::new(t(0), 1.0)]));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
