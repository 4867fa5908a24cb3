//! Threshold (step) scaling: up when a metric stays above a bound for a duration, down when it stays below.
//!
//! "Stays above for 2m" is judged from the samples of the last two minutes, never from process memory, so a
//! restarted controller judges exactly as the old one would have, and a 90-second spike never triggers a
//! 2-minute rule.
//!
//! An *episode* above the upper bound lasts while every sample stays above it, across our own scale-ups: once
//! it has lasted `for`, the rule steps up at every evaluation until the metric comes back below the bound,
//! instead of waiting another `for` after each step (which took 1 -> 5 replicas four minutes at 300 % CPU).
//! Each step is at least the rule's step and, for CPU and memory (per-pod utilization, as the HPA reads it),
//! `ceil(ready x value / bound)`, so a pod at 300 % of a 70 % bound asks for 5 at once. Pods still starting
//! from an earlier step count at 0 %, as in target tracking: while they start, the rule asks for more only
//! if the ready pods alone need more than is already requested.
//!
//! Scale-down stays one step per `for`: the down window restarts at every scale-down, since low values seen at
//! more pods prove nothing about fewer pods.

use std::time::Duration;

use jiff::Timestamp;

use super::{
    format,
    policy::{Amount, Bound, MetricKind, MetricSpec, ThresholdRule},
    readings,
    recommendation::{Missing, PolicyId, Proposal},
    snapshot::Sample,
    target::ceil_replicas,
};

/// How long a bound has been breached, judged from the samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sustained {
    /// Every sample of the whole window breaches the bound.
    Yes,
    /// The latest sample breaches, but only for this long (or only since the last change of replicas).
    Building(Duration),
    /// The latest sample does not breach.
    No,
}

/// Whether `breaches` held for every sample of the last `for_`. The streak is the run of breaching samples
/// ending at the latest one; it counts only from the last change of replicas on, and it must reach back a full
/// `for_` (a sample at or before `now - for_`), so a rule never fires on less evidence than it asks for.
pub fn sustained(
    samples: &[Sample],
    now: Timestamp,
    for_: Duration,
    last_change: Option<Timestamp>,
    breaches: impl Fn(f64) -> bool,
) -> Sustained {
    let mut streak_start: Option<Timestamp> = None;
    for s in samples.iter().rev().filter(|s| s.time <= now) {
        if s.value.is_finite() && breaches(s.value) {
            streak_start = Some(s.time);
        } else {
            break;
        }
    }
    let Some(start) = streak_start else { return Sustained::No };
    let evidence_start = match last_change {
        Some(change) if change > start => change,
        _ => start,
    };
    let streak = readings::age(now, evidence_start);
    if streak >= for_ { Sustained::Yes } else { Sustained::Building(streak) }
}

/// Replicas after a step in either direction. A percentage step is at least one pod.
pub fn step(current: u32, amount: Amount, up: bool) -> u32 {
    let delta = match amount {
        Amount::Pods(n) => n,
        Amount::Percent(p) => ((u64::from(current) * u64::from(p)).div_ceil(100) as u32).max(1),
    };
    if up { current.saturating_add(delta) } else { current.saturating_sub(delta) }
}

/// What a threshold rule judges from: the metric's samples, the clock, the last scale-down and the ready pods.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    pub samples: &'a [Sample],
    pub now: Timestamp,
    /// The last scale-down, ours or external: it restarts the scale-down window.
    pub last_down: Option<Timestamp>,
    /// How many of the current replicas a per-pod value describes (`None`: all of them).
    pub ready: Option<u32>,
}

/// What a threshold rule proposes.
pub fn propose(
    rule: &ThresholdRule,
    metric: &MetricSpec,
    reading: &Result<f64, Missing>,
    evidence: Evidence<'_>,
    current: u32,
) -> Proposal {
    let Evidence { samples, now, last_down, ready } = evidence;
    let id = PolicyId::Threshold(rule.metric.clone());
    let fmt = |v: f64| format::value(metric.kind, v);
    let value = match reading {
        Ok(v) => *v,
        Err(missing) => {
            return Proposal {
                policy: id,
                replicas: None,
                reason: format!("{} {missing}", rule.metric),
                shadow: false,
                floor: None,
            };
        }
    };
    let judge = |bound: &Bound, above: bool| {
        // An episode above the bound continues across scale-ups; the down window restarts at each scale-down.
        let since = if above { None } else { last_down };
        sustained(samples, now, bound.for_, since, |v| if above { v > bound.value } else { v < bound.value })
    };
    let name = &rule.metric;
    let up = rule.up.as_ref().map(|b| (b, judge(b, true)));
    let down = rule.down.as_ref().map(|b| (b, judge(b, false)));
    let proposal = |replicas: Option<u32>, reason: String| Proposal {
        policy: id.clone(),
        replicas,
        reason,
        shadow: false,
        floor: None,
    };

    if let Some((b, Sustained::Yes)) = up {
        let ready = ready.unwrap_or(current).min(current);
        let starting = current - ready;
        // Per-pod utilization grows in proportion to the load per ready pod; other metrics step as written.
        let need = match metric.kind {
            MetricKind::Cpu | MetricKind::Memory if b.value > 0.0 => ceil_replicas(f64::from(ready) * value / b.value),
            _ => 0,
        };
        let breach = format!("{name} {} > {} for {}", fmt(value), fmt(b.value), format::duration(b.for_));
        if starting > 0 && need <= current {
            return proposal(Some(current), format!("{breach}; waiting for {starting} starting"));
        }
        return proposal(Some(need.max(step(current, b.step, true))), breach);
    }
    if let Some((b, Sustained::Yes)) = down {
        let to = step(current, b.step, false);
        return proposal(
            Some(to),
            format!("{name} {} < {} for {}", fmt(value), fmt(b.value), format::duration(b.for_)),
        );
    }
    let building = |b: &Bound, op: &str, d: Duration| {
        format!(
            "{name} {} {op} {} for {} of {}",
            fmt(value),
            fmt(b.value),
            format::duration(Duration::from_secs(d.as_secs())),
            format::duration(b.for_)
        )
    };
    let reason = match (up, down) {
        (Some((b, Sustained::Building(d))), _) => building(b, ">", d),
        (_, Some((b, Sustained::Building(d)))) => building(b, "<", d),
        (Some((u, _)), Some((d, _))) => format!("{name} {} between {} and {}", fmt(value), fmt(d.value), fmt(u.value)),
        (Some((u, _)), None) => format!("{name} {} <= {}", fmt(value), fmt(u.value)),
        (None, Some((d, _))) => format!("{name} {} >= {}", fmt(value), fmt(d.value)),
        (None, None) => format!("{name} has no bounds"),
    };
    // A rule with a scale-down bound votes to hold; an up-only rule (an SLO guard) has no say on scale-down.
    let replicas = rule.down.as_ref().map(|_| current);
    proposal(replicas, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{at, ramp_samples, samples_every};

    const TWO_MIN: Duration = Duration::from_secs(120);

    #[test]
    fn sustained_needs_the_whole_window() {
        // 3 minutes at 85 % judged at t=180: above for the full 2 minutes.
        let s = samples_every(at(0), at(180), 15, |_| 85.0);
        assert_eq!(sustained(&s, at(180), TWO_MIN, None, |v| v > 70.0), Sustained::Yes);
        // Only 90 s of data: building, not yet.
        let s = samples_every(at(90), at(180), 15, |_| 85.0);
        assert!(matches!(sustained(&s, at(180), TWO_MIN, None, |v| v > 70.0), Sustained::Building(_)));
    }

    #[test]
    fn a_90_second_spike_does_not_trigger_a_2_minute_rule() {
        let s = samples_every(at(0), at(300), 15, |t| if t >= 210 { 95.0 } else { 40.0 });
        match sustained(&s, at(300), TWO_MIN, None, |v| v > 70.0) {
            Sustained::Building(d) => assert_eq!(d, Duration::from_secs(90)),
            other => panic!("expected Building(90s), got {other:?}"),
        }
    }

    #[test]
    fn a_nan_inside_the_window_breaks_the_streak() {
        let s = samples_every(at(0), at(300), 15, |t| if t == 240 { f64::NAN } else { 90.0 });
        assert!(matches!(sustained(&s, at(300), TWO_MIN, None, |v| v > 70.0), Sustained::Building(_)));
    }

    #[test]
    fn the_window_restarts_at_a_change_of_replicas() {
        let s = samples_every(at(0), at(300), 15, |_| 90.0);
        assert_eq!(sustained(&s, at(300), TWO_MIN, Some(at(100)), |v| v > 70.0), Sustained::Yes);
        match sustained(&s, at(300), TWO_MIN, Some(at(240)), |v| v > 70.0) {
            Sustained::Building(d) => assert_eq!(d, Duration::from_secs(60)),
            other => panic!("expected Building(60s), got {other:?}"),
        }
    }

    #[test]
    fn a_rising_ramp_triggers_once_it_has_been_above_long_enough() {
        // 50 % rising 0.2 %/s crosses 70 % at t=100; by t=220 it has been above for 2 minutes.
        let s = ramp_samples(at(0), at(240), 15, 50.0, 0.2);
        assert!(matches!(sustained(&s, at(180), TWO_MIN, None, |v| v > 70.0), Sustained::Building(_)));
        assert_eq!(sustained(&s, at(240), TWO_MIN, None, |v| v > 70.0), Sustained::Yes);
    }

    #[test]
    fn steps_in_pods_and_percent() {
        assert_eq!(step(4, Amount::Pods(1), true), 5);
        assert_eq!(step(4, Amount::Pods(2), false), 2);
        assert_eq!(step(1, Amount::Pods(3), false), 0);
        assert_eq!(step(10, Amount::Percent(50), true), 15);
        assert_eq!(step(3, Amount::Percent(10), true), 4, "a percentage step is at least one pod");
        assert_eq!(step(10, Amount::Percent(25), false), 7, "rounds the change up");
    }
}
