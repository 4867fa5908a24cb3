//! Turning raw samples into "the latest value" or "missing, and why".
//!
//! A NaN, an infinity, an empty result or an old sample is never a number: KEDA once treated null values as
//! zero and scaled workloads down at their peak. Here such a metric is missing, and missing blocks scale-down.
//!
//! Two refinements by source ([`reading`]): a negative value from a source that cannot be negative (every
//! built-in one; a raw query unless it says `allowNegative`) is not believed either; and a NaN from a latency
//! quantile or an error ratio is what Prometheus answers for a window with no requests (0/0), which is not an
//! outage: it is [`Missing::NoRequests`], which blocks nothing.

use std::time::Duration;

use jiff::Timestamp;

use super::{
    policy::{MetricKind, MetricSpec},
    recommendation::Missing,
    snapshot::{Sample, Series},
};

/// The latest usable value of a series at `now`, or why there is none.
pub fn latest(series: Option<&Series>, now: Timestamp, staleness: Duration) -> Result<f64, Missing> {
    let samples = match series {
        None => return Err(Missing::Empty),
        Some(Series::Failed(why)) => return Err(Missing::QueryFailed(why.clone())),
        Some(Series::Samples(s)) => s,
    };
    let last = samples.iter().rev().find(|s| s.time <= now).ok_or(Missing::Empty)?;
    if !last.value.is_finite() {
        return Err(Missing::NotANumber);
    }
    let age = age(now, last.time);
    if age > staleness {
        return Err(Missing::Stale { age });
    }
    Ok(last.value)
}

/// The reading of one metric: [`latest`], then what the value means for this metric's source.
pub fn reading(
    metric: &MetricSpec,
    series: Option<&Series>,
    now: Timestamp,
    staleness: Duration,
) -> Result<f64, Missing> {
    match latest(series, now, staleness) {
        Err(Missing::NotANumber) if is_ratio_of_requests(metric.kind) && latest_is_nan(series, now) => {
            Err(Missing::NoRequests)
        }
        Ok(value) if value < 0.0 && !metric.allow_negative => Err(Missing::Negative { value }),
        other => other,
    }
}

/// Sources whose value is a ratio over requests, and so 0/0 = NaN when there are none.
fn is_ratio_of_requests(kind: MetricKind) -> bool {
    matches!(kind, MetricKind::Latency | MetricKind::ErrorRate)
}

fn latest_is_nan(series: Option<&Series>, now: Timestamp) -> bool {
    samples(series).iter().rev().find(|s| s.time <= now).is_some_and(|s| s.value.is_nan())
}

/// How long ago `then` was, zero if it is in the future.
pub fn age(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or(Duration::ZERO)
}

/// The samples of a series (empty for a failed query).
pub fn samples(series: Option<&Series>) -> &[Sample] {
    match series {
        Some(Series::Samples(s)) => s,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{at, steady};

    const STALE: Duration = Duration::from_secs(120);

    #[test]
    fn latest_sample_wins() {
        let s = Series::Samples(vec![Sample::new(at(0), 10.0), Sample::new(at(15), 20.0)]);
        assert_eq!(latest(Some(&s), at(20), STALE), Ok(20.0));
    }

    #[test]
    fn nan_inf_empty_stale_and_failed_are_missing() {
        let nan = Series::Samples(vec![Sample::new(at(0), 1.0), Sample::new(at(15), f64::NAN)]);
        assert_eq!(latest(Some(&nan), at(20), STALE), Err(Missing::NotANumber));
        let inf = Series::Samples(vec![Sample::new(at(15), f64::INFINITY)]);
        assert_eq!(latest(Some(&inf), at(20), STALE), Err(Missing::NotANumber));
        assert_eq!(latest(Some(&Series::Samples(vec![])), at(20), STALE), Err(Missing::Empty));
        assert_eq!(latest(None, at(20), STALE), Err(Missing::Empty));
        let old = steady(at(0), at(60), 15, 50.0);
        assert_eq!(latest(Some(&old), at(600), STALE), Err(Missing::Stale { age: Duration::from_secs(540) }));
        let failed = Series::Failed("connection refused".into());
        assert!(matches!(latest(Some(&failed), at(0), STALE), Err(Missing::QueryFailed(_))));
    }

    fn spec(kind: MetricKind, allow_negative: bool) -> MetricSpec {
        MetricSpec { name: "m".into(), kind, veto_above: None, allow_negative }
    }

    #[test]
    fn negative_values_are_not_believed_unless_a_query_allows_them() {
        let minus_five = Series::Samples(vec![Sample::new(at(15), -5.0)]);
        for kind in [MetricKind::Cpu, MetricKind::Memory, MetricKind::Latency, MetricKind::ErrorRate] {
            let r = reading(&spec(kind, false), Some(&minus_five), at(20), STALE);
            assert_eq!(r, Err(Missing::Negative { value: -5.0 }), "{kind:?}");
        }
        assert_eq!(reading(&spec(MetricKind::RequestRate, false), Some(&minus_five), at(20), STALE).ok(), None);
        assert_eq!(reading(&spec(MetricKind::Query, false), Some(&minus_five), at(20), STALE).ok(), None);
        assert_eq!(reading(&spec(MetricKind::Query, true), Some(&minus_five), at(20), STALE), Ok(-5.0));
    }

    #[test]
    fn nan_latency_and_error_rate_mean_no_requests_but_nan_cpu_is_missing() {
        let nan = Series::Samples(vec![Sample::new(at(15), f64::NAN)]);
        for kind in [MetricKind::Latency, MetricKind::ErrorRate] {
            assert_eq!(reading(&spec(kind, false), Some(&nan), at(20), STALE), Err(Missing::NoRequests), "{kind:?}");
        }
        assert_eq!(reading(&spec(MetricKind::Cpu, false), Some(&nan), at(20), STALE), Err(Missing::NotANumber));
        let inf = Series::Samples(vec![Sample::new(at(15), f64::INFINITY)]);
        assert_eq!(reading(&spec(MetricKind::Latency, false), Some(&inf), at(20), STALE), Err(Missing::NotANumber));
        assert!(Missing::NotANumber.blocks() && !Missing::NoRequests.blocks());
    }

    #[test]
    fn samples_from_the_future_are_ignored() {
        let s = Series::Samples(vec![Sample::new(at(0), 10.0), Sample::new(at(100), 99.0)]);
        assert_eq!(latest(Some(&s), at(50), STALE), Ok(10.0));
    }
}
