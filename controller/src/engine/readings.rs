//! Turning raw samples into "the latest value" or "missing, and why".
//!
//! A NaN, an infinity, an empty result or an old sample is never a number: KEDA once treated null values as
//! zero and scaled workloads down at their peak. Here such a metric is missing, and missing blocks scale-down.

use std::time::Duration;

use jiff::Timestamp;

use super::{
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

    #[test]
    fn samples_from_the_future_are_ignored() {
        let s = Series::Samples(vec![Sample::new(at(0), 10.0), Sample::new(at(100), 99.0)]);
        assert_eq!(latest(Some(&s), at(50), STALE), Ok(10.0));
    }
}
