//! The in-process half of a grouped query: from namespace-wide per-pod series to one policy's series.
//!
//! ```text
//!   sum by (pod) (rate(x{namespace="NS"}[W]))   ──► keep series whose pod matches ^PODS$ ──► sum per timestamp
//!   sum by (pod, le) (rate(h_bucket{...}[W]))   ──► keep matching pods ──► sum per (timestamp, le)
//!                                                                     ──► bucket_quantile per timestamp
//! ```
//!
//! Each step mirrors what Prometheus does for the per-policy query, so the answers agree (to float rounding of
//! the summation order):
//! - `sum(v)` of an empty vector is no sample, not 0: a timestamp where no matching pod has a value is absent;
//! - `a / b` between two one-series vectors needs both sides at that timestamp; IEEE division otherwise (x/0 is
//!   ±Inf, 0/0 is NaN);
//! - `=~` is anchored and a series without a `pod` label is matched as the empty string;
//! - `histogram_quantile` ignores series whose `le` does not parse as a float, and [`bucket_quantile`] is
//!   Prometheus 2.42's `bucketQuantile` (`promql/quantile.go`), special cases included.

use std::collections::BTreeMap;

use jiff::Timestamp;
use regex::Regex;

use super::promql::Combine;
use super::{LabeledSeries, Sample};

/// The policy's pod regex as Prometheus applies `=~`: anchored at both ends.
pub fn anchored(pod_regex: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pod_regex})$"))
}

/// One policy's series from the grouped answers `parts` (in the order of [`super::promql::GroupedQuery::parts`]).
pub fn combine(combine: Combine, parts: &[&[LabeledSeries]], pods: &Regex) -> Vec<Sample> {
    let matching = |part: &[LabeledSeries]| -> Vec<usize> {
        part.iter()
            .enumerate()
            .filter(|(_, s)| pods.is_match(s.labels.get("pod").map_or("", String::as_str)))
            .map(|(i, _)| i)
            .collect()
    };
    match combine {
        Combine::Sum => {
            let Some(part) = parts.first() else { return vec![] };
            to_samples(sum(part, &matching(part)))
        }
        Combine::Ratio { scale } => {
            let (Some(num), Some(den)) = (parts.first(), parts.get(1)) else { return vec![] };
            let numerator = sum(num, &matching(num));
            let denominator = sum(den, &matching(den));
            let ratio = numerator
                .into_iter()
                .filter_map(|(t, n)| denominator.get(&t).map(|d| (t, scale * n / d)))
                .collect::<BTreeMap<_, _>>();
            to_samples(ratio)
        }
        Combine::FailedFraction => {
            let (Some(num), Some(den)) = (parts.first(), parts.get(1)) else { return vec![] };
            let failed = sum(num, &matching(num));
            let all = sum(den, &matching(den));
            // As the per-policy template: `(failed or all * 0) / (all > 0) or all * 0`.
            let fraction = all
                .into_iter()
                .map(|(t, total)| {
                    let failed = failed.get(&t).copied().unwrap_or(0.0);
                    (t, if total > 0.0 { failed / total } else { 0.0 })
                })
                .collect::<BTreeMap<_, _>>();
            to_samples(fraction)
        }
        Combine::Quantile { q } => {
            let Some(part) = parts.first() else { return vec![] };
            // Per timestamp, per `le` string (as `sum by (le)` groups them): the summed bucket counts.
            let mut per_time: BTreeMap<i64, BTreeMap<&str, f64>> = BTreeMap::new();
            for i in matching(part) {
                let series = &part[i];
                let le = series.labels.get("le").map_or("", String::as_str);
                for s in &series.samples {
                    *per_time.entry(s.time.as_millisecond()).or_default().entry(le).or_insert(0.0) += s.value;
                }
            }
            let quantiles = per_time
                .into_iter()
                .filter_map(|(t, by_le)| {
                    let mut buckets: Vec<Bucket> = by_le
                        .into_iter()
                        .filter_map(|(le, count)| parse_le(le).map(|upper_bound| Bucket { upper_bound, count }))
                        .collect();
                    // histogram_quantile answers nothing for a group with no valid bucket.
                    (!buckets.is_empty()).then(|| (t, bucket_quantile(q, &mut buckets)))
                })
                .collect();
            to_samples(quantiles)
        }
    }
}

/// Sum per timestamp (milliseconds) over the chosen series; timestamps with no sample are absent.
fn sum(part: &[LabeledSeries], chosen: &[usize]) -> BTreeMap<i64, f64> {
    let mut out = BTreeMap::new();
    for &i in chosen {
        for s in &part[i].samples {
            *out.entry(s.time.as_millisecond()).or_insert(0.0) += s.value;
        }
    }
    out
}

fn to_samples(values: BTreeMap<i64, f64>) -> Vec<Sample> {
    values.into_iter().filter_map(|(ms, v)| Timestamp::from_millisecond(ms).ok().map(|t| Sample::new(t, v))).collect()
}

/// An `le` label as Go's `strconv.ParseFloat` reads it (`+Inf`, `Inf`, `NaN`, decimals, exponents).
fn parse_le(le: &str) -> Option<f64> {
    match le.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => le.parse().ok(),
    }
}

/// One histogram bucket: observations at most `upper_bound`, cumulative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// The `q`-quantile of cumulative `buckets` (any order; sorted here), interpolated linearly within a bucket,
/// exactly as Prometheus' `bucketQuantile`:
/// - q NaN: NaN; q < 0: -Inf; q > 1: +Inf;
/// - the highest bucket must be `+Inf`, else NaN; buckets with equal bounds are merged; decreasing counts are
///   raised to the running maximum (the monotonicity fix);
/// - fewer than 2 buckets after that, or no observations: NaN;
/// - a rank in the `+Inf` bucket answers the second-highest bound; in the lowest bucket, 0 is its lower bound
///   unless its upper bound is <= 0, which is then the answer.
pub fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go's sort with `<` on bounds; bounds are not NaN in practice, and NaN compares equal here as in Go's
    // less-than based sort.
    buckets.sort_by(|a, b| a.upper_bound.partial_cmp(&b.upper_bound).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.upper_bound == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    coalesce(buckets);
    ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = go_search(buckets.len() - 1, |i| buckets[i].count >= rank);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].upper_bound;
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return buckets[0].upper_bound;
    }
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Merges neighbours with the same upper bound (the buckets are sorted).
fn coalesce(buckets: &mut Vec<Bucket>) {
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.upper_bound == b.upper_bound => last.count += b.count,
            _ => out.push(*b),
        }
    }
    *buckets = out;
}

/// Raises every count to the running maximum (NaN counts stay, as Go's comparisons leave them).
fn ensure_monotonic(buckets: &mut [Bucket]) {
    let Some(first) = buckets.first() else { return };
    let mut max = first.count;
    for b in buckets.iter_mut().skip(1) {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
}

/// Go's `sort.Search`: the smallest i in [0, n) for which `f` holds, by the same bisection, so that a predicate
/// that is not monotonic (NaN counts) picks the same index as Prometheus.
fn go_search(n: usize, f: impl Fn(usize) -> bool) -> usize {
    let (mut i, mut j) = (0, n);
    while i < j {
        let h = (i + j) / 2;
        if !f(h) {
            i = h + 1;
        } else {
            j = h;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(buckets: &[(f64, f64)]) -> Vec<Bucket> {
        buckets.iter().map(|&(upper_bound, count)| Bucket { upper_bound, count }).collect()
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn bucket_quantile_follows_prometheus_special_cases() {
        type Case<'a> = (f64, &'a [(f64, f64)], f64);
        let cases: &[Case<'_>] = &[
            // Linear interpolation inside a bucket, 0 as the lower bound of the first.
            (0.5, &[(1.0, 10.0), (2.0, 20.0), (INF, 20.0)], 1.0),
            (0.25, &[(1.0, 10.0), (2.0, 20.0), (INF, 20.0)], 0.5),
            (0.75, &[(1.0, 10.0), (2.0, 20.0), (INF, 20.0)], 1.5),
            // Any order in.
            (0.75, &[(INF, 20.0), (2.0, 20.0), (1.0, 10.0)], 1.5),
            // A rank in the +Inf bucket: the second-highest bound.
            (0.99, &[(1.0, 10.0), (INF, 20.0)], 1.0),
            // No +Inf bucket: NaN.
            (0.5, &[(1.0, 10.0), (2.0, 20.0)], f64::NAN),
            // Only +Inf: fewer than 2 buckets.
            (0.5, &[(INF, 20.0)], f64::NAN),
            // No observations.
            (0.5, &[(1.0, 0.0), (INF, 0.0)], f64::NAN),
            // The lowest bucket's upper bound <= 0 is the answer when the rank falls in it.
            (0.1, &[(-1.0, 5.0), (1.0, 10.0), (INF, 10.0)], -1.0),
            (0.1, &[(0.0, 5.0), (1.0, 10.0), (INF, 10.0)], 0.0),
            // Decreasing counts are raised to the running maximum: (2, 5) becomes (2, 10).
            (0.75, &[(1.0, 10.0), (2.0, 5.0), (3.0, 20.0), (INF, 20.0)], 2.5),
            // Equal bounds are merged.
            (0.5, &[(1.0, 5.0), (1.0, 5.0), (2.0, 20.0), (INF, 20.0)], 1.0),
            // Out-of-range q.
            (-0.1, &[(1.0, 10.0), (INF, 10.0)], f64::NEG_INFINITY),
            (1.1, &[(1.0, 10.0), (INF, 10.0)], INF),
            (f64::NAN, &[(1.0, 10.0), (INF, 10.0)], f64::NAN),
        ];
        for (q, buckets, expected) in cases {
            let got = bucket_quantile(*q, &mut b(buckets));
            assert!(got == *expected || (got.is_nan() && expected.is_nan()), "q={q} {buckets:?}: {got} != {expected}");
        }
    }

    fn series(pod: Option<&str>, extra: &[(&str, &str)], points: &[(i64, f64)]) -> LabeledSeries {
        let mut labels: crate::source::Labels = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if let Some(pod) = pod {
            labels.insert("pod".into(), pod.into());
        }
        let samples = points.iter().map(|&(s, v)| Sample::new(Timestamp::from_second(s).expect("valid"), v)).collect();
        LabeledSeries { labels, samples }
    }

    fn values(samples: &[Sample]) -> Vec<(i64, f64)> {
        samples.iter().map(|s| (s.time.as_second(), s.value)).collect()
    }

    #[test]
    fn ratio_sums_only_matching_pods_and_needs_both_sides() {
        let pods = anchored("web-[a-z0-9]+-[a-z0-9]+").expect("valid");
        let usage = [
            series(Some("web-a-1"), &[], &[(0, 1.0), (15, 2.0)]),
            series(Some("web-a-2"), &[], &[(15, 1.0), (30, 4.0)]),
            series(Some("web-api-a-1"), &[], &[(0, 100.0)]),
            series(Some("xweb-a-1"), &[], &[(0, 100.0)]),
            series(None, &[], &[(0, 100.0)]),
        ];
        let requests = [
            series(Some("web-a-1"), &[], &[(0, 2.0), (15, 2.0)]),
            series(Some("web-a-2"), &[], &[(15, 2.0)]),
            series(Some("web-api-a-1"), &[], &[(0, 1.0)]),
        ];
        let got = combine(Combine::Ratio { scale: 100.0 }, &[&usage, &requests], &pods);
        // 30 s has usage but no requests: absent, as `a / b` needs both sides.
        assert_eq!(values(&got), [(0, 50.0), (15, 75.0)]);
    }

    #[test]
    fn a_failed_fraction_is_zero_without_failures_or_requests_and_absent_without_a_counter() {
        let pods = anchored("web-[0-9]+").expect("valid");
        let failed = [series(Some("web-1"), &[], &[(15, 1.0)])];
        let all =
            [series(Some("web-1"), &[], &[(0, 4.0), (15, 4.0), (30, 0.0)]), series(Some("web-2"), &[], &[(45, 0.0)])];
        let got = combine(Combine::FailedFraction, &[&failed, &all], &pods);
        assert_eq!(values(&got), [(0, 0.0), (15, 0.25), (30, 0.0), (45, 0.0)]);
        let none: [LabeledSeries; 0] = [];
        assert!(combine(Combine::FailedFraction, &[&failed, &none], &pods).is_empty(), "no counter: missing");
    }

    #[test]
    fn a_sum_over_no_matching_pod_is_absent_not_zero() {
        let pods = anchored("db-[0-9]+").expect("valid");
        let part = [series(Some("web-a-1"), &[], &[(0, 1.0)])];
        assert!(combine(Combine::Sum, &[&part], &pods).is_empty());
        let part = [series(Some("db-0"), &[], &[(0, 0.0)])];
        assert_eq!(values(&combine(Combine::Sum, &[&part], &pods)), [(0, 0.0)], "zero traffic is a value");
    }

    #[test]
    fn quantile_sums_buckets_across_pods_per_le() {
        let pods = anchored("web-[0-9]+").expect("valid");
        let bucket = |pod, le, v| series(Some(pod), &[("le", le)], &[(0, v)]);
        let part = [
            bucket("web-0", "1", 5.0),
            bucket("web-0", "+Inf", 10.0),
            bucket("web-1", "1", 5.0),
            bucket("web-1", "+Inf", 10.0),
            bucket("web-1", "not-a-number", 1000.0),
            bucket("other-0", "1", 0.0),
            bucket("other-0", "+Inf", 1000.0),
        ];
        // 10 of 20 at most 1: the median is 1.
        assert_eq!(values(&combine(Combine::Quantile { q: 0.5 }, &[&part], &pods)), [(0, 1.0)]);
        let no_valid_le = [bucket("web-0", "x", 1.0)];
        assert!(combine(Combine::Quantile { q: 0.5 }, &[&no_valid_le], &pods).is_empty());
    }
}
