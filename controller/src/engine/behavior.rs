//! How fast replicas may change: stabilization windows and rate limits with the HPA v2 semantics
//! (`stabilizeRecommendationWithBehaviors`, `calculateScaleUpLimitWithScalingRules` and
//! `calculateScaleDownLimitWithBehaviors` in Kubernetes' `horizontal.go`), plus cooldowns.
//!
//! Each is a small pure function of the history Foresight keeps in status, so all of them survive restarts.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{
    policy::{Amount, DirectionRules, Select},
    snapshot::{RecommendationRecord, ScaleEvent},
};

/// `now - d`, saturating at the earliest representable time.
pub fn before(now: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d).ok().and_then(|d| now.checked_sub(d).ok()).unwrap_or(Timestamp::MIN)
}

/// `t + d`, saturating at the latest representable time.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d).ok().and_then(|d| t.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

/// Appends this evaluation's raw recommendation (run-length: only when the value changes) and drops records
/// no window can see any more. Records are oldest first; each holds until the next one.
pub fn record(
    records: &[RecommendationRecord],
    now: Timestamp,
    replicas: u32,
    keep: Duration,
) -> Vec<RecommendationRecord> {
    let horizon = before(now, keep);
    let mut out: Vec<RecommendationRecord> = Vec::with_capacity(records.len() + 1);
    for (i, r) in records.iter().enumerate() {
        let ends = records.get(i + 1).map(|n| n.time).unwrap_or(now);
        // Keep a record if it was still in force within the horizon.
        if ends >= horizon && r.time <= now {
            out.push(*r);
        }
    }
    if out.last().map(|r| r.replicas) != Some(replicas) {
        out.push(RecommendationRecord { time: now, replicas });
    }
    // A bound against a clock that jumped: no window needs more than a few hundred changes.
    const MAX_RECORDS: usize = 200;
    if out.len() > MAX_RECORDS {
        out.drain(..out.len() - MAX_RECORDS);
    }
    out
}

/// The values in force at some point within `[now - window, now]`.
fn in_window(records: &[RecommendationRecord], now: Timestamp, window: Duration) -> impl Iterator<Item = u32> + '_ {
    let start = before(now, window);
    records.iter().enumerate().filter_map(move |(i, r)| {
        let ends = records.get(i + 1).map(|n| n.time).unwrap_or(Timestamp::MAX);
        (ends > start && r.time <= now).then_some(r.replicas)
    })
}

/// When a stabilization window stops holding `held`: the end of the newest record of that value within the
/// window, plus the window. `None` when that record is still the latest (it holds for as long as it lasts).
pub fn stabilized_until(
    records: &[RecommendationRecord],
    now: Timestamp,
    window: Duration,
    held: u32,
) -> Option<Timestamp> {
    let start = before(now, window);
    let i = records.iter().enumerate().rev().find_map(|(i, r)| {
        let ends = records.get(i + 1).map(|n| n.time).unwrap_or(Timestamp::MAX);
        (r.replicas == held && ends > start && r.time <= now).then_some(i)
    })?;
    records.get(i + 1).map(|next| after(next.time, window))
}

/// The HPA's stabilization: scale up only to the lowest recommendation of the up window, down only to the
/// highest of the down window. `records` must already include this evaluation's recommendation.
pub fn stabilize(
    current: u32,
    recommendation: u32,
    records: &[RecommendationRecord],
    now: Timestamp,
    up_window: Duration,
    down_window: Duration,
) -> u32 {
    let up = in_window(records, now, up_window).chain([recommendation]).min().unwrap_or(recommendation);
    let down = in_window(records, now, down_window).chain([recommendation]).max().unwrap_or(recommendation);
    let mut result = current;
    if result < up {
        result = up;
    }
    if result > down {
        result = down;
    }
    result
}

/// Replicas added and removed by Foresight within `[now - period, now]`.
fn changes_within(history: &[ScaleEvent], now: Timestamp, period: Duration) -> (u32, u32) {
    let start = before(now, period);
    history.iter().filter(|e| !e.external && e.time > start && e.time <= now).fold((0, 0), |(up, down), e| {
        if e.to > e.from { (up + (e.to - e.from), down) } else { (up, down + (e.from - e.to)) }
    })
}

/// The most replicas the scale-up rate limits allow now (HPA's `calculateScaleUpLimitWithScalingRules`).
pub fn scale_up_limit(current: u32, history: &[ScaleEvent], now: Timestamp, rules: &DirectionRules) -> u32 {
    if rules.select == Select::Disabled {
        return current;
    }
    if rules.limits.is_empty() {
        return u32::MAX;
    }
    let proposals = rules.limits.iter().map(|limit| {
        let (added, removed) = changes_within(history, now, limit.period);
        let period_start = (i64::from(current) - i64::from(added) + i64::from(removed)).max(0) as u64;
        let proposed = match limit.amount {
            Amount::Pods(n) => period_start + u64::from(n),
            Amount::Percent(p) => (period_start * (100 + u64::from(p))).div_ceil(100),
        };
        proposed.min(u64::from(u32::MAX)) as u32
    });
    let limit = match rules.select {
        Select::Min => proposals.min(),
        _ => proposals.max(),
    }
    .unwrap_or(u32::MAX);
    // Scaling events still inside the period may put the limit below current: then just don't scale up.
    limit.max(current)
}

/// The fewest replicas the scale-down rate limits allow now (HPA's `calculateScaleDownLimitWithBehaviors`).
pub fn scale_down_limit(current: u32, history: &[ScaleEvent], now: Timestamp, rules: &DirectionRules) -> u32 {
    if rules.select == Select::Disabled {
        return current;
    }
    if rules.limits.is_empty() {
        return 0;
    }
    let proposals = rules.limits.iter().map(|limit| {
        let (added, removed) = changes_within(history, now, limit.period);
        let period_start = (i64::from(current) + i64::from(removed) - i64::from(added)).max(0) as u64;
        let proposed = match limit.amount {
            Amount::Pods(n) => period_start.saturating_sub(u64::from(n)),
            // HPA: int32(float64(periodStartReplicas) * (1 - value/100)), i.e. rounded down.
            Amount::Percent(p) => period_start * u64::from(100u32.saturating_sub(p)) / 100,
        };
        proposed.min(u64::from(u32::MAX)) as u32
    });
    let limit = match rules.select {
        // Max means "the policy allowing the largest change", which for scale-down is the lowest limit.
        Select::Min => proposals.max(),
        _ => proposals.min(),
    }
    .unwrap_or(0);
    limit.min(current)
}

/// When the cooldown of a direction ends: `cooldown` after the last change of replicas, ours or external.
pub fn cooldown_until(history: &[ScaleEvent], cooldown: Duration) -> Option<Timestamp> {
    if cooldown.is_zero() {
        return None;
    }
    history.iter().map(|e| e.time).max().map(|last| after(last, cooldown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        policy::RateLimit,
        testing::{at, ours},
    };

    fn rules(limits: Vec<RateLimit>, select: Select) -> DirectionRules {
        DirectionRules { cooldown: Duration::ZERO, stabilization: Duration::ZERO, limits, select }
    }

    fn pods(n: u32, secs: u64) -> RateLimit {
        RateLimit { amount: Amount::Pods(n), period: Duration::from_secs(secs) }
    }

    fn percent(p: u32, secs: u64) -> RateLimit {
        RateLimit { amount: Amount::Percent(p), period: Duration::from_secs(secs) }
    }

    #[test]
    fn default_scale_up_is_max_of_100_percent_and_4_pods() {
        let up = DirectionRules::default_up();
        // At 1 replica, 4 pods allows more than 100 %: up to 5.
        assert_eq!(scale_up_limit(1, &[], at(0), &up), 5);
        // At 10 replicas, 100 % allows more than 4 pods: up to 20.
        assert_eq!(scale_up_limit(10, &[], at(0), &up), 20);
    }

    #[test]
    fn select_min_picks_the_smaller_change() {
        // HPA docs example: 4 pods or 10 % per minute; at 80 replicas Max allows 8 (10 %), Min allows 4.
        let limits = vec![pods(4, 60), percent(10, 60)];
        assert_eq!(scale_down_limit(80, &[], at(0), &rules(limits.clone(), Select::Max)), 72);
        assert_eq!(scale_down_limit(80, &[], at(0), &rules(limits.clone(), Select::Min)), 76);
        assert_eq!(scale_up_limit(80, &[], at(0), &rules(limits.clone(), Select::Max)), 88);
        assert_eq!(scale_up_limit(80, &[], at(0), &rules(limits, Select::Min)), 84);
    }

    #[test]
    fn changes_within_the_period_use_up_the_budget() {
        let r = rules(vec![pods(4, 60)], Select::Max);
        // Scaled 10 -> 13 thirty seconds ago: only one more pod this minute.
        let history = [ours(at(70), 10, 13)];
        assert_eq!(scale_up_limit(13, &history, at(100), &r), 14);
        // Once the event leaves the period the full budget is back.
        assert_eq!(scale_up_limit(13, &history, at(131), &r), 17);
        // Scale-down budget likewise: removed 3 of 4 allowed.
        let history = [ours(at(70), 13, 10)];
        assert_eq!(scale_down_limit(10, &history, at(100), &r), 9);
    }

    #[test]
    fn external_changes_do_not_use_the_budget() {
        let r = rules(vec![pods(4, 60)], Select::Max);
        let mut e = ours(at(70), 10, 13);
        e.external = true;
        assert_eq!(scale_up_limit(13, &[e], at(100), &r), 17);
    }

    #[test]
    fn disabled_direction_allows_nothing() {
        let r = rules(vec![pods(4, 60)], Select::Disabled);
        assert_eq!(scale_up_limit(5, &[], at(0), &r), 5);
        assert_eq!(scale_down_limit(5, &[], at(0), &r), 5);
    }

    #[test]
    fn stabilization_picks_the_highest_recommendation_of_the_down_window() {
        // HPA docs: recommendations 10, 8, 9, 5 within 5 minutes: scale down only to 10... then 9 when 10 leaves.
        let recs = [
            RecommendationRecord { time: at(0), replicas: 10 },
            RecommendationRecord { time: at(60), replicas: 8 },
            RecommendationRecord { time: at(120), replicas: 9 },
            RecommendationRecord { time: at(180), replicas: 5 },
        ];
        let five_min = Duration::from_secs(300);
        assert_eq!(stabilize(10, 5, &recs, at(200), Duration::ZERO, five_min), 10);
        // At t=361 the 10 (in force until t=60) has left the window; 9 is the highest left.
        assert_eq!(stabilize(10, 5, &recs, at(361), Duration::ZERO, five_min), 9);
        // At t=481, only 9 (until 180) and 5 remain... 9 ended at 180 < 181: only 5.
        assert_eq!(stabilize(10, 5, &recs, at(481), Duration::ZERO, five_min), 5);
    }

    #[test]
    fn stabilization_up_window_uses_the_lowest() {
        let recs =
            [RecommendationRecord { time: at(0), replicas: 4 }, RecommendationRecord { time: at(30), replicas: 8 }];
        assert_eq!(stabilize(4, 8, &recs, at(45), Duration::from_secs(60), Duration::ZERO), 4);
        assert_eq!(stabilize(4, 8, &recs, at(91), Duration::from_secs(60), Duration::ZERO), 8);
    }

    #[test]
    fn records_are_run_length_and_pruned() {
        let keep = Duration::from_secs(300);
        let r = record(&[], at(0), 5, keep);
        let r = record(&r, at(15), 5, keep);
        assert_eq!(r.len(), 1, "same value: no new record");
        let r = record(&r, at(30), 3, keep);
        assert_eq!(r.len(), 2);
        // Far later: the 5 ended at t=30, outside the horizon; the 3 is still in force.
        let r = record(&r, at(1000), 3, keep);
        assert_eq!(r, vec![RecommendationRecord { time: at(30), replicas: 3 }]);
    }

    #[test]
    fn cooldown_counts_from_the_last_change() {
        let history = [ours(at(100), 3, 4), ours(at(10), 2, 3)];
        assert_eq!(cooldown_until(&history, Duration::from_secs(300)), Some(at(400)));
        assert_eq!(cooldown_until(&history, Duration::ZERO), None);
        assert_eq!(cooldown_until(&[], Duration::from_secs(300)), None);
    }
}
