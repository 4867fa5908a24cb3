//! Demand scaling with a panic mode, as the Knative Pod Autoscaler (KPA) does it
//! (`pkg/autoscaler/scaling/autoscaler.go` in knative/serving).
//!
//! The metric is a demand signal that does not saturate (request rate, queue depth, concurrency), summed over
//! the target's pods. Two averages of it are taken: over the stable window (default 60 s) and over the panic
//! window (a percentage of it, default 10 %: 6 s). Each asks for `ceil(average / per-replica target)` replicas,
//! kept within `[floor(ready / maxScaleDownRate), ceil(ready x maxScaleUpRate)]`.
//!
//! ```text
//!  panic window asks for >= panicThreshold x ready pods ──► panic: the larger of both counts, never fewer
//!                                                            than now, in one step (no scale-up rate limit)
//!  no panic for a whole stable window ──────────────────► stable: the stable window's count
//! ```
//!
//! Knative keeps the time it last panicked in memory. Here it is judged again at every evaluation from the
//! samples of the last stable window (plus one panic window), against the replicas then requested (from the
//! status history), so a restarted controller decides as the old one would have. Ready counts are not kept in
//! history, so a past evaluation compares against requested replicas; the present one against ready replicas,
//! as the KPA does.

use std::time::Duration;

use jiff::Timestamp;

use super::{
    behavior::before,
    format,
    policy::{DemandRule, MetricSpec},
    recommendation::{Missing, PolicyId, Proposal},
    snapshot::{Sample, ScaleEvent},
    target::ceil_replicas,
};

/// What a demand rule decided, with the panic state the engine needs for the rate limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub proposal: Proposal,
    /// The rule is in panic mode: its scale-up is not limited by the policy's scale-up rate limits and it
    /// never proposes fewer replicas than now.
    pub panicking: bool,
}

/// The mean of the finite samples in `(t - window, t]`; the latest sample at or before `t` when the window
/// is shorter than the sampling step and holds none.
pub fn window_average(samples: &[Sample], t: Timestamp, window: Duration) -> Option<f64> {
    let start = before(t, window);
    let (sum, n) = samples
        .iter()
        .filter(|s| s.time > start && s.time <= t && s.value.is_finite())
        .fold((0.0, 0u32), |(sum, n), s| (sum + s.value, n + 1));
    if n > 0 {
        return Some(sum / f64::from(n));
    }
    samples.iter().rev().find(|s| s.time <= t && s.value.is_finite()).map(|s| s.value)
}

/// The replicas an evaluation at time `t` saw, from the current count and the history of changes (newest
/// first): a change made at `t` came out of that evaluation, so it is undone too.
pub fn replicas_at(current: u32, history: &[ScaleEvent], t: Timestamp) -> u32 {
    let mut replicas = current;
    for e in history.iter().filter(|e| e.time >= t) {
        // Newest first: undo each change made after `t`; the oldest such change says what was in force.
        replicas = e.from;
    }
    replicas
}

/// Whether the panic window at `t` asks for at least the panic threshold times `pods` (KPA's
/// `dppc / readyPodsCount >= PanicThreshold`, with at least one pod).
fn over_threshold(rule: &DemandRule, samples: &[Sample], t: Timestamp, pods: u32) -> bool {
    window_average(samples, t, rule.panic_window)
        .is_some_and(|v| f64::from(ceil_replicas(v / rule.target)) / f64::from(pods.max(1)) >= rule.panic_threshold)
}

/// What a demand rule judges from: the metric's samples, the clock, the replicas and their history.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    pub samples: &'a [Sample],
    pub now: Timestamp,
    pub current: u32,
    /// How many of the current replicas serve (`None`: all of them).
    pub ready: Option<u32>,
    /// Changes of replicas, newest first.
    pub history: &'a [ScaleEvent],
}

/// What a demand rule proposes.
pub fn propose(
    rule: &DemandRule,
    metric: &MetricSpec,
    reading: &Result<f64, Missing>,
    evidence: Evidence<'_>,
) -> Outcome {
    let Evidence { samples, now, current, ready, history } = evidence;
    let policy = PolicyId::Demand(rule.metric.clone());
    let name = &rule.metric;
    let abstain = |reason: String| Outcome {
        proposal: Proposal { policy: policy.clone(), replicas: None, reason, shadow: false, floor: None },
        panicking: false,
    };
    if let Err(missing) = reading {
        return abstain(format!("{name} {missing}"));
    }
    let (Some(stable), Some(panic)) =
        (window_average(samples, now, rule.stable_window), window_average(samples, now, rule.panic_window))
    else {
        return abstain(format!("{name} {}", Missing::Empty));
    };
    let fmt = |v: f64| format::value(metric.kind, v);
    let ready = ready.unwrap_or(current).min(current).max(1);
    let max_up = ceil_replicas(rule.max_scale_up_rate * f64::from(ready));
    let max_down = (f64::from(ready) / rule.max_scale_down_rate).floor() as u32;
    let clamp = |v: f64| ceil_replicas(v).max(max_down).min(max_up);
    let stable_count = clamp(stable / rule.target);
    let panic_count = clamp(panic / rule.target);

    // Panicking now, or at an evaluation of the last stable window (judged at each sample's time).
    let now_over = over_threshold(rule, samples, now, ready);
    let since = before(now, rule.stable_window);
    let last_panic = if now_over {
        Some(now)
    } else {
        samples
            .iter()
            .rev()
            .filter(|s| s.time >= since && s.time < now)
            .find(|s| over_threshold(rule, samples, s.time, replicas_at(current, history, s.time)))
            .map(|s| s.time)
    };
    let target = fmt(rule.target);
    let (replicas, reason) = match last_panic {
        Some(at) => {
            let desired = stable_count.max(panic_count).max(current);
            let why = if at == now {
                format!(
                    "panic: {name} {} over {} needs {desired} (>= {}% of {ready} ready) at {target} per replica",
                    fmt(panic),
                    format::duration(rule.panic_window),
                    (rule.panic_threshold * 100.0).round(),
                )
            } else {
                format!(
                    "panic since {at}: no scale-down until {} without panic; {name} {} needs {desired}",
                    format::duration(rule.stable_window),
                    fmt(stable)
                )
            };
            (desired, why)
        }
        None => (
            stable_count,
            format!(
                "{name} {} over {} at {target} per replica needs {stable_count}",
                fmt(stable),
                format::duration(rule.stable_window)
            ),
        ),
    };
    Outcome {
        proposal: Proposal { policy, replicas: Some(replicas), reason, shadow: false, floor: None },
        panicking: last_panic.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        policy::MetricKind,
        testing::{at, demand_rule, ours, samples_every},
    };

    fn rps() -> MetricSpec {
        MetricSpec { name: "rps".into(), kind: MetricKind::RequestRate, veto_above: None, allow_negative: false }
    }

    fn run(samples: &[Sample], now: i64, current: u32, ready: Option<u32>, history: &[ScaleEvent]) -> Outcome {
        let rule = demand_rule("rps", 100.0);
        let reading = samples.last().map(|s| s.value).ok_or(Missing::Empty);
        propose(&rule, &rps(), &reading, Evidence { samples, now: at(now), current, ready, history })
    }

    #[test]
    fn stable_mode_tracks_the_stable_window_average() {
        // 10 replicas' worth at 100 per replica x 70 % = 70 per replica: 700 -> 10.
        let s = samples_every(at(0), at(120), 2, |_| 700.0);
        let out = run(&s, 120, 10, None, &[]);
        assert_eq!(out.proposal.replicas, Some(10));
        assert!(!out.panicking);
        // Half the demand: down to 5, the most the default maxScaleDownRate of 2 allows from 10.
        let s = samples_every(at(0), at(120), 2, |_| 210.0);
        assert_eq!(run(&s, 120, 10, None, &[]).proposal.replicas, Some(5));
    }

    #[test]
    fn a_3x_burst_panics_and_asks_for_all_of_it_at_once() {
        // 2 replicas serving 140 (70 each), then 3x: 420 over the last 6 s. The stable window still averages
        // mostly the old load, the panic window sees all of it: ceil(420 / 70) = 6 = 3 x 2 ready >= 200 %.
        let s = samples_every(at(0), at(120), 2, |t| if t > 114 { 420.0 } else { 140.0 });
        let out = run(&s, 120, 2, Some(2), &[]);
        assert!(out.panicking, "{}", out.proposal.reason);
        assert_eq!(out.proposal.replicas, Some(6), "{}", out.proposal.reason);
        assert!(out.proposal.reason.starts_with("panic:"), "{}", out.proposal.reason);
        // A 1.5x burst is under the threshold: the stable window decides (and has barely moved).
        let s = samples_every(at(0), at(120), 2, |t| if t > 114 { 210.0 } else { 140.0 });
        let out = run(&s, 120, 2, Some(2), &[]);
        assert!(!out.panicking);
        assert_eq!(out.proposal.replicas, Some(3));
    }

    #[test]
    fn no_scale_down_until_a_stable_window_passes_without_panic() {
        // The burst of the previous test lasted until t=130; the controller went 2 -> 6 at t=120.
        let s = samples_every(at(0), at(300), 2, |t| if (115..=130).contains(&t) { 420.0 } else { 140.0 });
        let history = [ours(at(120), 2, 6)];
        // At t=150 demand is back at 140 (2 replicas' worth), but the panic at t=120 is within 60 s: hold 6.
        let out = run(&s[..=75], 150, 6, Some(6), &history);
        assert!(out.panicking, "{}", out.proposal.reason);
        assert_eq!(out.proposal.replicas, Some(6), "{}", out.proposal.reason);
        // The last panicking evaluation was the one at t=120 that scaled (6 >= 2 x 2 pods); at t=180 it is
        // exactly a stable window old, and Knative un-panics only once panicTime + stableWindow is before now.
        let out = run(&s[..=90], 180, 6, Some(6), &history);
        assert!(out.panicking);
        assert_eq!(out.proposal.replicas, Some(6));
        // At t=182 a whole stable window has passed without panic: scale down (at most 6 / 2 = 3).
        let out = run(&s[..=91], 182, 6, Some(6), &history);
        assert!(!out.panicking, "{}", out.proposal.reason);
        assert_eq!(out.proposal.replicas, Some(3));
    }

    #[test]
    fn the_panic_threshold_compares_with_ready_pods() {
        // 6 requested, 2 ready: the panic window asks for 6 = 3x the ready pods, so it is still panicking and
        // holds 6 while the new pods start.
        let s = samples_every(at(0), at(120), 2, |_| 420.0);
        let out = run(&s, 120, 6, Some(2), &[ours(at(100), 2, 6)]);
        assert!(out.panicking);
        assert_eq!(out.proposal.replicas, Some(6));
    }

    #[test]
    fn replicas_at_undoes_later_changes() {
        let history = [ours(at(200), 6, 4), ours(at(100), 2, 6)];
        assert_eq!(replicas_at(4, &history, at(50)), 2);
        assert_eq!(replicas_at(4, &history, at(150)), 6);
        assert_eq!(replicas_at(4, &history, at(250)), 4);
    }

    #[test]
    fn window_average_falls_back_to_the_latest_sample() {
        let s = samples_every(at(0), at(60), 15, |t| t as f64);
        assert_eq!(window_average(&s, at(60), Duration::from_secs(6)), Some(60.0));
        // (15 + 30 + 45 + 60) / 4: the sample at exactly t - 60 s is outside (t - window, t].
        assert_eq!(window_average(&s, at(60), Duration::from_secs(60)), Some(37.5));
        assert_eq!(window_average(&[], at(60), Duration::from_secs(6)), None);
    }
}
