//! Target tracking, as the HPA does it: `desired = ceil(current x value / target)`, nothing inside the
//! tolerance band.

use super::{
    format,
    policy::{MetricSpec, TargetKind, TargetRule},
    recommendation::{Missing, PolicyId, Proposal},
};

/// What a target rule proposes. `ready` is how many pods a per-pod average describes (see
/// `Snapshot::ready_replicas`).
///
/// Like the HPA, pods that are not ready yet are counted at 0 % when scaling up (they will take load once
/// ready) and at the target when scaling down (no evidence they are idle). Without this, an average over the
/// ready pods stays high while new pods start, and `current x ratio` multiplies again at every evaluation.
pub fn propose(
    rule: &TargetRule,
    metric: &MetricSpec,
    reading: &Result<f64, Missing>,
    current: u32,
    ready: Option<u32>,
) -> Proposal {
    let policy = PolicyId::Target(rule.metric.clone());
    let name = &rule.metric;
    let value = match reading {
        Ok(v) => *v,
        Err(missing) => {
            return Proposal {
                policy,
                replicas: None,
                reason: format!("{name} {missing}"),
                shadow: false,
                floor: None,
            };
        }
    };
    let fmt = |v: f64| format::value(metric.kind, v);
    // Inside the band the rule holds, and lets another rule's scale-down go as far as its own count.
    let mut floor = None;
    let (replicas, reason) = match rule.kind {
        TargetKind::Value => {
            let ratio = value / rule.target;
            let ready = ready.unwrap_or(current).min(current);
            let starting = current - ready;
            if within_tolerance(ratio, rule.tolerance) {
                // Starting pods at the target, as for a scale-down.
                floor = Some(ceil_replicas(f64::from(ready) * ratio + f64::from(starting)).min(current));
                (
                    current,
                    format!("{name} {} within {}% of target {}", fmt(value), pct(rule.tolerance), fmt(rule.target)),
                )
            } else {
                // Starting pods at 0 % for a scale-up, at the target for a scale-down.
                let need =
                    if ratio > 1.0 { f64::from(ready) * ratio } else { f64::from(ready) * ratio + f64::from(starting) };
                let desired = ceil_replicas(need);
                let flipped = (ratio > 1.0 && desired <= current) || (ratio < 1.0 && desired >= current);
                if flipped {
                    let reason = format!(
                        "{name} {} vs target {} on {ready} ready pods; waiting for {starting} starting",
                        fmt(value),
                        fmt(rule.target)
                    );
                    (current, reason)
                } else {
                    (desired, format!("{name} {} vs target {}: {current} -> {desired}", fmt(value), fmt(rule.target)))
                }
            }
        }
        TargetKind::AverageValue => {
            let desired = ceil_replicas(value / rule.target);
            let ratio = if current == 0 { f64::INFINITY } else { value / (rule.target * f64::from(current)) };
            if current > 0 && within_tolerance(ratio, rule.tolerance) {
                floor = Some(desired.min(current));
                (
                    current,
                    format!(
                        "{name} {} within {}% of {} per replica",
                        fmt(value),
                        pct(rule.tolerance),
                        fmt(rule.target)
                    ),
                )
            } else {
                (desired, format!("{name} {} at {} per replica needs {desired}", fmt(value), fmt(rule.target)))
            }
        }
    };
    Proposal { policy, replicas: Some(replicas), reason, shadow: false, floor }
}

/// The HPA's tolerance band: |ratio - 1| <= tolerance means "close enough, change nothing".
pub fn within_tolerance(ratio: f64, tolerance: f64) -> bool {
    (ratio - 1.0).abs() <= tolerance
}

/// Replicas for a fractional need, rounded up; huge or invalid values saturate instead of wrapping.
pub fn ceil_replicas(x: f64) -> u32 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // Guard against 3.0000000001 from float noise turning into 4.
        let rounded = x.round();
        if (x - rounded).abs() < 1e-9 { rounded as u32 } else { x.ceil() as u32 }
    }
}

fn pct(f: f64) -> String {
    format!("{}", (f * 100.0).round())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{policy::MetricKind, testing::target_rule};

    fn cpu() -> MetricSpec {
        MetricSpec { name: "cpu".into(), kind: MetricKind::Cpu, veto_above: None, allow_negative: false }
    }

    #[test]
    fn proportional_like_the_hpa() {
        // HPA docs: current 200m, target 100m -> double the replicas.
        let rule = target_rule("cpu", 50.0);
        let p = propose(&rule, &cpu(), &Ok(100.0), 3, None);
        assert_eq!(p.replicas, Some(6));
        assert_eq!(p.reason, "cpu 100% vs target 50%: 3 -> 6");
        // 50 % of target: halve (rounded up).
        assert_eq!(propose(&rule, &cpu(), &Ok(25.0), 5, None).replicas, Some(3));
    }

    #[test]
    fn nothing_changes_inside_the_tolerance_band() {
        // HPA docs: with the default 0.1 tolerance a ratio of 1.05 changes nothing, 1.15 does.
        let rule = target_rule("cpu", 100.0);
        assert_eq!(propose(&rule, &cpu(), &Ok(105.0), 10, None).replicas, Some(10));
        assert_eq!(propose(&rule, &cpu(), &Ok(91.0), 10, None).replicas, Some(10));
        assert_eq!(propose(&rule, &cpu(), &Ok(115.0), 10, None).replicas, Some(12));
        assert_eq!(propose(&rule, &cpu(), &Ok(85.0), 10, None).replicas, Some(9));
    }

    #[test]
    fn inside_the_band_the_floor_is_the_rules_own_count() {
        // 10 pods at 92 % of target: hold 10, but the rule's own count is ceil(9.2) = 10, so another rule may
        // not scale below 10; at 91 % of a 100 % target on 20 pods, ceil(18.2) = 19.
        let rule = target_rule("cpu", 100.0);
        let p = propose(&rule, &cpu(), &Ok(92.0), 10, None);
        assert_eq!((p.replicas, p.floor), (Some(10), Some(10)));
        let p = propose(&rule, &cpu(), &Ok(91.0), 20, None);
        assert_eq!((p.replicas, p.floor), (Some(20), Some(19)));
        // Above the target inside the band, the floor is the current count (never above it).
        assert_eq!(propose(&rule, &cpu(), &Ok(108.0), 20, None).floor, Some(20));
        // Starting pods count at the target, as for a scale-down: 16 ready at 91 % + 4 starting = 18.56 -> 19.
        assert_eq!(propose(&rule, &cpu(), &Ok(91.0), 20, Some(16)).floor, Some(19));
        // Outside the band there is no floor: the proposal is the count.
        let p = propose(&rule, &cpu(), &Ok(50.0), 20, None);
        assert_eq!((p.replicas, p.floor), (Some(10), None));
        // AverageValue: 1820 req/s at 100 per replica on 20 pods is inside the band, its own count 19.
        let mut rule = target_rule("rps", 100.0);
        rule.kind = TargetKind::AverageValue;
        let rps =
            MetricSpec { name: "rps".into(), kind: MetricKind::RequestRate, veto_above: None, allow_negative: false };
        let p = propose(&rule, &rps, &Ok(1820.0), 20, None);
        assert_eq!((p.replicas, p.floor), (Some(20), Some(19)));
    }

    #[test]
    fn average_value_divides_the_total() {
        let mut rule = target_rule("rps", 100.0);
        rule.kind = TargetKind::AverageValue;
        let rps =
            MetricSpec { name: "rps".into(), kind: MetricKind::RequestRate, veto_above: None, allow_negative: false };
        assert_eq!(propose(&rule, &rps, &Ok(1234.0), 4, None).replicas, Some(13));
        assert_eq!(propose(&rule, &rps, &Ok(400.0), 4, None).replicas, Some(4));
        // From zero replicas a total still gives an answer (scale from zero with minReplicas 0).
        assert_eq!(propose(&rule, &rps, &Ok(250.0), 0, None).replicas, Some(3));
    }

    #[test]
    fn starting_pods_count_at_zero_on_the_way_up() {
        // 9 requested, 6 ready at 100 % against a 70 % target: the HPA sees 600 % over 9 pods = 67 %, within
        // tolerance. Multiplying 9 x 100/70 instead would ask for 13 and run away while pods start.
        let rule = target_rule("cpu", 70.0);
        let p = propose(&rule, &cpu(), &Ok(100.0), 9, Some(6));
        assert_eq!(p.replicas, Some(9));
        assert!(p.reason.contains("waiting for 3 starting"), "{}", p.reason);
        // All ready: the usual answer.
        assert_eq!(propose(&rule, &cpu(), &Ok(100.0), 9, Some(9)).replicas, Some(13));
        // Far above target even counting starting pods at 0: 6 x 200/70 = 18.
        assert_eq!(propose(&rule, &cpu(), &Ok(200.0), 9, Some(6)).replicas, Some(18));
    }

    #[test]
    fn starting_pods_count_at_target_on_the_way_down() {
        // 10 requested, 8 ready at 20 % of a 50 % target: 8 x 0.4 + 2 = 5.2 -> 6 (not 4).
        let rule = target_rule("cpu", 50.0);
        assert_eq!(propose(&rule, &cpu(), &Ok(20.0), 10, Some(8)).replicas, Some(6));
        assert_eq!(propose(&rule, &cpu(), &Ok(20.0), 10, None).replicas, Some(4));
    }

    #[test]
    fn missing_metric_abstains() {
        let p = propose(&target_rule("cpu", 60.0), &cpu(), &Err(Missing::NotANumber), 4, None);
        assert_eq!(p.replicas, None);
        assert!(p.reason.contains("NaN"), "{}", p.reason);
    }

    #[test]
    fn ceil_is_exact_on_whole_numbers_and_safe_on_garbage() {
        assert_eq!(ceil_replicas(3.0), 3);
        assert_eq!(ceil_replicas(3.0000000001), 3);
        assert_eq!(ceil_replicas(3.01), 4);
        assert_eq!(ceil_replicas(f64::NAN), 0);
        assert_eq!(ceil_replicas(-2.0), 0);
        assert_eq!(ceil_replicas(1e30), u32::MAX);
    }
}
