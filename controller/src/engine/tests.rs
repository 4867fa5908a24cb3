//! Scenario tests of the whole engine: the seed scenarios, the HPA's documented behaviour, and properties
//! that must hold for any input.

use std::time::Duration;

use proptest::prelude::*;

use super::{
    Decision, LimitedBy, PolicyId, Recommendation,
    policy::{Amount, MetricKind, PredictiveMode, RateLimit, Select},
    recommend,
    snapshot::{Forecast, RecommendationRecord, ScaleEvent, Series, Snapshot},
    testing::*,
};
use crate::engine::Policy;

/// Evaluates `policy` at `now` with these metrics and history.
fn eval(
    policy: &Policy,
    now: i64,
    current: u32,
    metrics: &[(&'static str, Series)],
    history: &[ScaleEvent],
) -> Recommendation {
    let metrics = super::testing::metrics(metrics.iter().cloned());
    let snap = Snapshot {
        now: at(now),
        current_replicas: current,
        ready_replicas: None,
        metrics: &metrics,
        history,
        recommendations: &[],
        consecutive_failures: 0,
        forecast: None,
    };
    recommend(policy, &snap)
}

fn cpu_for(from: i64, to: i64, value: f64) -> (&'static str, Series) {
    ("cpu", steady(at(from), at(to), 15, value))
}

// --- The seed scenarios -------------------------------------------------------------------------------------

#[test]
fn seed_cpu_85_for_3_minutes_at_4_replicas_scales_up() {
    let policy = PolicyBuilder::new(1, 10).cpu_threshold().build();
    let r = eval(&policy, 180, 4, &[cpu_for(0, 180, 85.0)], &[]);
    assert_eq!(r.decision, Decision::ScaleUp);
    assert_eq!(r.desired, 5);
    assert_eq!(r.winner, Some(PolicyId::Threshold("cpu".into())));
    assert_eq!(r.reason, "cpu 85% > 70% for 2m");
}

#[test]
fn seed_cpu_20_for_6_minutes_but_scaled_2_minutes_ago_is_held_by_cooldown() {
    let policy = PolicyBuilder::new(1, 10).cpu_threshold().build();
    let history = [ours(at(240), 4, 5)];
    let r = eval(&policy, 360, 5, &[cpu_for(0, 360, 20.0)], &history);
    assert_eq!(r.decision, Decision::Hold);
    assert_eq!(r.desired, 5);
    assert!(
        r.limited_by.contains(&LimitedBy::Cooldown { direction: super::Direction::Down, until: at(540) }),
        "{:?}",
        r.limited_by
    );
    assert!(r.reason.contains("cpu 20% < 30% for 5m"), "{}", r.reason);
    assert!(r.reason.contains("cooldown"), "{}", r.reason);
    // Once the cooldown is over, the same evidence scales down.
    let r = eval(&policy, 541, 5, &[cpu_for(0, 541, 20.0)], &history);
    assert_eq!((r.decision, r.desired), (Decision::ScaleDown, 4));
}

#[test]
fn seed_low_cpu_but_6_percent_errors_does_not_scale_down() {
    let policy = PolicyBuilder::new(1, 10).cpu_threshold().veto("errors", MetricKind::ErrorRate, 0.01).build();
    let r = eval(&policy, 400, 6, &[cpu_for(0, 400, 20.0), ("errors", steady(at(0), at(400), 15, 0.06))], &[]);
    assert_eq!(r.decision, Decision::Hold);
    assert_eq!(
        r.limited_by,
        vec![LimitedBy::Vetoed { metric: "errors".into(), value: "6%".into(), bound: "1%".into() }]
    );
    assert!(r.reason.contains("errors 6% > 1% blocks scale-down"), "{}", r.reason);
    // With errors at 0.5 % the scale-down goes ahead.
    let r = eval(&policy, 400, 6, &[cpu_for(0, 400, 20.0), ("errors", steady(at(0), at(400), 15, 0.005))], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleDown, 5));
}

#[test]
fn seed_a_90_second_spike_does_not_trigger_a_2_minute_threshold() {
    let policy = PolicyBuilder::new(1, 10).cpu_threshold().build();
    let spike = Series::Samples(samples_every(at(0), at(300), 15, |t| if t > 210 { 95.0 } else { 50.0 }));
    let r = eval(&policy, 300, 4, &[("cpu", spike)], &[]);
    assert_eq!(r.decision, Decision::Hold);
    assert!(r.reason.contains("for 1m15s of 2m"), "{}", r.reason);
}

// --- Missing data ----------------------------------------------------------------------------------------------

#[test]
fn never_scales_down_when_a_metric_is_missing_but_scales_up_on_what_is_present() {
    let policy = PolicyBuilder::new(1, 10).cpu_threshold().target("rps", MetricKind::RequestRate, 100.0).build();
    // cpu low for long, rps NaN: no scale-down.
    let r = eval(&policy, 400, 6, &[cpu_for(0, 400, 10.0), ("rps", steady(at(0), at(400), 15, f64::NAN))], &[]);
    assert_eq!(r.decision, Decision::Hold);
    assert_eq!(r.limited_by, vec![LimitedBy::MissingMetrics { metrics: vec!["rps".into()] }]);
    // cpu high, rps missing: scale-up still happens (ceil(6 x 90 / 70) = 8).
    let r = eval(&policy, 400, 6, &[cpu_for(0, 400, 90.0)], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleUp, 8));
}

#[test]
fn a_negative_cpu_is_not_believed_and_never_scales_down() {
    // QA: a query answering -5 scaled 5 -> 2.
    let policy = PolicyBuilder::new(2, 10).target("cpu", MetricKind::Cpu, 60.0).build();
    let r = eval(&policy, 400, 5, &[cpu_for(0, 400, -5.0)], &[]);
    assert_eq!((r.decision, r.desired), (Decision::Hold, 5));
    assert_eq!(r.readings[0].value, Err(super::Missing::Negative { value: -5.0 }));
    let why: Vec<String> = r.missing_metrics().map(|(m, why)| format!("{m}: {why}")).collect();
    assert_eq!(why, ["cpu: value -5 is negative, which this source cannot be (a query metric may set allowNegative)"]);
}

#[test]
fn a_raw_query_may_declare_negative_values_valid() {
    let mut policy = PolicyBuilder::new(1, 10).threshold("trend", Some((5.0, 60)), Some((-1.0, 60))).build();
    policy.metrics.push(super::policy::MetricSpec {
        name: "trend".into(),
        kind: MetricKind::Query,
        veto_above: None,
        allow_negative: true,
    });
    let r = eval(&policy, 400, 5, &[("trend", steady(at(0), at(400), 15, -3.0))], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleDown, 4), "{}", r.reason);
}

#[test]
fn an_idle_service_scales_in_although_its_latency_and_error_ratio_are_0_over_0() {
    // QA: zero requests made p99 and errors NaN, NaN counted as missing, and the service never scaled in.
    let policy = PolicyBuilder::new(1, 10)
        .target("cpu", MetricKind::Cpu, 60.0)
        .metric("p99", MetricKind::Latency)
        .threshold("p99", Some((0.3, 60)), None)
        .veto("errors", MetricKind::ErrorRate, 0.01)
        .build();
    let idle = |name| (name, steady(at(0), at(400), 15, f64::NAN));
    let r = eval(&policy, 400, 4, &[cpu_for(0, 400, 10.0), idle("p99"), idle("errors")], &[]);
    assert_eq!(r.decision, Decision::ScaleDown, "{}", r.reason);
    assert_eq!(r.missing_metrics().count(), 0);
    assert_eq!(r.idle_metrics().collect::<Vec<_>>(), ["p99", "errors"]);
    // With nothing but idle metrics, nothing is missing either: no fallback, no failure count.
    let only_idle = PolicyBuilder::new(1, 10)
        .metric("p99", MetricKind::Latency)
        .threshold("p99", Some((0.3, 60)), None)
        .fallback(1, Some(8))
        .build();
    let r = eval(&only_idle, 400, 4, &[idle("p99")], &[]);
    assert_eq!((r.decision, r.desired, r.consecutive_failures), (Decision::Hold, 4, 0), "{}", r.reason);
}

#[test]
fn stale_samples_count_as_missing() {
    let policy = PolicyBuilder::new(1, 10).target("cpu", MetricKind::Cpu, 60.0).build();
    // The last sample is 10 minutes old.
    let r = eval(&policy, 1200, 5, &[cpu_for(0, 600, 10.0)], &[]);
    assert_eq!(r.decision, Decision::Hold);
    assert!(r.reason.contains("no metric could be read"), "{}", r.reason);
}

#[test]
fn fallback_is_a_floor_after_the_failure_threshold() {
    let policy = PolicyBuilder::new(1, 10).target("cpu", MetricKind::Cpu, 60.0).fallback(3, Some(6)).build();
    let metrics = super::testing::metrics([("cpu", Series::Failed("connection refused".into()))]);
    let run = |current: u32, failures: u32| {
        let snap = Snapshot {
            now: at(0),
            current_replicas: current,
            ready_replicas: None,
            metrics: &metrics,
            history: &[],
            recommendations: &[],
            consecutive_failures: failures,
            forecast: None,
        };
        recommend(&policy, &snap)
    };
    let r = run(3, 0);
    assert_eq!((r.desired, r.consecutive_failures, r.fallback_active), (3, 1, false));
    let r = run(3, 2);
    assert_eq!((r.desired, r.consecutive_failures, r.fallback_active), (6, 3, true));
    assert_eq!(r.winner, Some(PolicyId::Fallback));
    // A higher count is kept: fallback never lowers replicas.
    let r = run(8, 5);
    assert_eq!((r.desired, r.fallback_active), (8, true));
}

#[test]
fn with_no_metric_the_reason_says_what_was_done() {
    let policy = PolicyBuilder::new(8, 10).target("cpu", MetricKind::Cpu, 60.0).build();
    let metrics = super::testing::metrics([("cpu", Series::Failed("connection refused".into()))]);
    let run = |current: u32| {
        let snap = Snapshot {
            now: at(0),
            current_replicas: current,
            ready_replicas: None,
            metrics: &metrics,
            history: &[],
            recommendations: &[],
            consecutive_failures: 0,
            forecast: None,
        };
        recommend(&policy, &snap)
    };
    // 6 -> 8 is not "holding 6 replicas".
    let r = run(6);
    assert_eq!(r.desired, 8);
    assert_eq!(r.reason, "no metric could be read (cpu); raised to minReplicas 8");
    let r = run(9);
    assert_eq!(r.reason, "no metric could be read (cpu); holding 9 replicas");
    let single = PolicyBuilder::new(1, 10).target("cpu", MetricKind::Cpu, 60.0).build();
    let snap = Snapshot {
        now: at(0),
        current_replicas: 1,
        ready_replicas: None,
        metrics: &metrics,
        history: &[],
        recommendations: &[],
        consecutive_failures: 0,
        forecast: None,
    };
    assert_eq!(recommend(&single, &snap).reason, "no metric could be read (cpu); holding 1 replica");
}

// --- Combination --------------------------------------------------------------------------------------------

#[test]
fn any_up_takes_the_largest_proposal() {
    let policy = PolicyBuilder::new(1, 20).cpu_threshold().target("rps", MetricKind::RequestRate, 50.0).build();
    // threshold says 5, target says ceil(4 x 100/50) = 8.
    let r = eval(&policy, 180, 4, &[cpu_for(0, 180, 85.0), ("rps", steady(at(0), at(180), 15, 100.0))], &[]);
    assert_eq!(r.desired, 8);
    assert_eq!(r.winner, Some(PolicyId::Target("rps".into())));
}

#[test]
fn scale_down_needs_every_policy() {
    let policy = PolicyBuilder::new(1, 20)
        .cpu_threshold()
        .target("rps", MetricKind::RequestRate, 50.0)
        .no_stabilization()
        .build();
    // cpu low for 6 minutes, but rps right at target: hold.
    let r = eval(&policy, 360, 8, &[cpu_for(0, 360, 10.0), ("rps", steady(at(0), at(360), 15, 50.0))], &[]);
    assert_eq!(r.decision, Decision::Hold);
    // Both low: the larger of the two proposals (threshold 7, target 4) wins.
    let r = eval(&policy, 360, 8, &[cpu_for(0, 360, 10.0), ("rps", steady(at(0), at(360), 15, 25.0))], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleDown, 7));
    assert_eq!(r.winner, Some(PolicyId::Threshold("cpu".into())));
    assert!(r.reason.contains("cpu 10% < 30% for 5m") && r.reason.contains("rps"), "{}", r.reason);
}

#[test]
fn an_up_only_guard_does_not_block_scale_down() {
    let policy = PolicyBuilder::new(1, 20)
        .target("cpu", MetricKind::Cpu, 60.0)
        .metric("p99", MetricKind::Latency)
        .threshold("p99", Some((0.3, 60)), None)
        .no_stabilization()
        .build();
    let r = eval(&policy, 400, 8, &[cpu_for(0, 400, 15.0), ("p99", steady(at(0), at(400), 15, 0.1))], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleDown, 2));
    // ...but it still scales up when latency is high.
    let r = eval(&policy, 400, 8, &[cpu_for(0, 400, 60.0), ("p99", steady(at(0), at(400), 15, 0.5))], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleUp, 9));
    assert_eq!(r.reason, "p99 500ms > 300ms for 1m");
}

#[test]
fn a_forecast_raises_replicas_but_never_lowers_them_below_reactive() {
    let policy = PolicyBuilder::new(1, 50)
        .target("cpu", MetricKind::Cpu, 60.0)
        .predictive("rps", 100.0, PredictiveMode::Scale)
        .no_stabilization()
        .no_cooldowns()
        .build();
    let metrics =
        super::testing::metrics([("cpu", steady(at(0), at(60), 15, 60.0)), ("rps", steady(at(0), at(60), 15, 500.0))]);
    let run = |forecast: &Forecast| {
        let snap = Snapshot {
            now: at(60),
            current_replicas: 5,
            ready_replicas: None,
            metrics: &metrics,
            history: &[],
            recommendations: &[],
            consecutive_failures: 0,
            forecast: Some(forecast),
        };
        recommend(&policy, &snap)
    };
    // The forecast peak of 1,250 req/s needs 13 replicas: scale up ahead of load, as fast as the default
    // rate limit allows (100 % of 5).
    let up = Forecast::Ready { peak: 1250.0, samples: 2016, error: 0.08, detail: Default::default() };
    let r = run(&up);
    assert_eq!(r.desired, 10);
    assert_eq!(r.limited_by, vec![LimitedBy::RateLimit { direction: super::Direction::Up, limit: 10 }]);
    assert!(r.is_predictive_scale_up());
    assert!(r.reason.starts_with("forecast rps 1250 req/s within 15m needs 13"), "{}", r.reason);
    // A forecast of almost nothing does not pull below what cpu wants (hold at 5).
    let down = Forecast::Ready { peak: 10.0, samples: 2016, error: 0.08, detail: Default::default() };
    assert_eq!(run(&down).desired, 5);
    // Too inaccurate: abstains, the reactive policy decides alone.
    let bad = Forecast::Ready { peak: 5000.0, samples: 2016, error: 0.9, detail: Default::default() };
    let r = run(&bad);
    assert_eq!(r.desired, 5);
    assert!(r.proposals.iter().any(|p| p.policy == PolicyId::Predictive("rps".into()) && p.replicas.is_none()));
}

#[test]
fn a_shadow_forecast_is_recorded_but_never_acts() {
    let policy = PolicyBuilder::new(1, 50)
        .target("cpu", MetricKind::Cpu, 60.0)
        .predictive("rps", 100.0, PredictiveMode::Shadow)
        .build();
    let metrics =
        super::testing::metrics([("cpu", steady(at(0), at(60), 15, 60.0)), ("rps", steady(at(0), at(60), 15, 500.0))]);
    let forecast = Forecast::Ready { peak: 5000.0, samples: 2016, error: 0.05, detail: Default::default() };
    let snap = Snapshot {
        now: at(60),
        current_replicas: 5,
        ready_replicas: None,
        metrics: &metrics,
        history: &[],
        recommendations: &[],
        consecutive_failures: 0,
        forecast: Some(&forecast),
    };
    let r = recommend(&policy, &snap);
    assert_eq!(r.desired, 5);
    let p = r.proposals.iter().find(|p| p.shadow).expect("shadow proposal recorded");
    assert_eq!(p.replicas, Some(50));
}

// --- HPA's documented behaviour -----------------------------------------------------------------------------

#[test]
fn hpa_tolerance_band_changes_nothing() {
    let policy = PolicyBuilder::new(1, 20).target("cpu", MetricKind::Cpu, 50.0).build();
    let r = eval(&policy, 60, 10, &[cpu_for(0, 60, 54.0)], &[]);
    assert_eq!(r.decision, Decision::Hold);
    assert!(r.reason.contains("within 10% of target 50%"), "{}", r.reason);
}

#[test]
fn hpa_scale_down_stabilization_uses_the_highest_recent_recommendation() {
    let policy = PolicyBuilder::new(1, 20).target("cpu", MetricKind::Cpu, 50.0).no_cooldowns().build();
    let metrics = super::testing::metrics([("cpu", steady(at(0), at(600), 15, 25.0))]);
    // Two minutes ago the recommendation was 10; now it is 5 (cpu halved): stay at 10 within 300 s.
    let records = [RecommendationRecord { time: at(80), replicas: 10 }];
    let snap = Snapshot {
        now: at(200),
        current_replicas: 10,
        ready_replicas: None,
        metrics: &metrics,
        history: &[],
        recommendations: &records,
        consecutive_failures: 0,
        forecast: None,
    };
    let r = recommend(&policy, &snap);
    assert_eq!(r.desired, 10);
    assert!(matches!(r.limited_by[..], [LimitedBy::Stabilized { .. }]), "{:?}", r.limited_by);
    // The 10 was superseded at 200 s: it holds until 200 s + 300 s.
    assert!(
        r.reason.ends_with(&format!(
            "(scale-down stabilization holds 10 (highest recommendation of the last 5m) until {})",
            at(500)
        )),
        "{}",
        r.reason
    );
    assert_eq!(r.recommendations.last(), Some(&RecommendationRecord { time: at(200), replicas: 5 }));
    // Five minutes after the 10 was superseded, the 5 goes through.
    let snap = Snapshot { now: at(500), recommendations: &r.recommendations, ..snap };
    let r = recommend(&policy, &snap);
    assert_eq!(r.desired, 5);
}

#[test]
fn stacked_waits_say_when_the_next_change_can_happen_at_the_earliest() {
    let policy = PolicyBuilder::new(1, 20).target("cpu", MetricKind::Cpu, 50.0).build();
    let metrics = super::testing::metrics([("cpu", steady(at(0), at(600), 15, 25.0))]);
    // The window holds 8 until 200 s + 300 s; the scale at 150 s cools down until 150 s + 300 s.
    let records = [RecommendationRecord { time: at(80), replicas: 8 }];
    let history = [ScaleEvent { time: at(150), from: 8, to: 10, external: false }];
    let snap = Snapshot {
        now: at(200),
        current_replicas: 10,
        ready_replicas: None,
        metrics: &metrics,
        history: &history,
        recommendations: &records,
        consecutive_failures: 0,
        forecast: None,
    };
    let r = recommend(&policy, &snap);
    assert_eq!(r.desired, 10);
    assert_eq!(r.earliest_change(), Some(at(500)));
    assert!(r.reason.contains(&format!("scale-down cooldown until {}", at(450))), "{}", r.reason);
    assert!(r.reason.ends_with(&format!("; next change at {} at the earliest)", at(500))), "{}", r.reason);
}

#[test]
fn hpa_default_scale_up_rate_is_max_of_4_pods_and_100_percent() {
    let policy = PolicyBuilder::new(1, 100).target("cpu", MetricKind::Cpu, 10.0).build();
    // cpu 10x the target at 2 replicas asks for 20: limited to 2 + 4 = 6.
    let r = eval(&policy, 60, 2, &[cpu_for(0, 60, 100.0)], &[]);
    assert_eq!(r.desired, 6);
    assert_eq!(r.limited_by, vec![LimitedBy::RateLimit { direction: super::Direction::Up, limit: 6 }]);
    // At 10 replicas, 100 % allows 20.
    let r = eval(&policy, 60, 10, &[cpu_for(0, 60, 100.0)], &[]);
    assert_eq!(r.desired, 20);
}

#[test]
fn hpa_percent_versus_pods_with_select_min() {
    let mut policy =
        PolicyBuilder::new(1, 100).target("cpu", MetricKind::Cpu, 50.0).no_cooldowns().no_stabilization().build();
    policy.down.limits = vec![
        RateLimit { amount: Amount::Pods(4), period: Duration::from_secs(60) },
        RateLimit { amount: Amount::Percent(10), period: Duration::from_secs(60) },
    ];
    policy.down.select = Select::Min;
    let r = eval(&policy, 60, 80, &[cpu_for(0, 60, 5.0)], &[]);
    assert_eq!(r.desired, 76, "Min picks the policy allowing the smaller change (4 pods < 8)");
    policy.down.select = Select::Max;
    let r = eval(&policy, 60, 80, &[cpu_for(0, 60, 5.0)], &[]);
    assert_eq!(r.desired, 72, "Max picks the larger change (10 % = 8 pods)");
}

#[test]
fn replicas_outside_the_range_are_brought_back() {
    let policy = PolicyBuilder::new(2, 10).target("cpu", MetricKind::Cpu, 50.0).build();
    let r = eval(&policy, 60, 15, &[cpu_for(0, 60, 50.0)], &[]);
    assert_eq!((r.desired, r.limited_by.clone()), (10, vec![LimitedBy::MaxReplicas]));
    let r = eval(&policy, 60, 1, &[cpu_for(0, 60, 50.0)], &[]);
    assert_eq!((r.desired, r.limited_by.clone()), (2, vec![LimitedBy::MinReplicas]));
}

#[test]
fn zero_replicas_means_autoscaling_is_disabled() {
    let policy = PolicyBuilder::new(1, 10).cpu_threshold().build();
    let r = eval(&policy, 180, 0, &[cpu_for(0, 180, 90.0)], &[]);
    assert_eq!(r.desired, 0);
    assert_eq!(r.limited_by, vec![LimitedBy::ScalingDisabled]);
}

/// Evaluates with `ready` of the `current` replicas serving.
fn eval_ready(
    policy: &Policy,
    now: i64,
    current: u32,
    ready: u32,
    metrics: &[(&'static str, Series)],
    history: &[ScaleEvent],
) -> Recommendation {
    let metrics = super::testing::metrics(metrics.iter().cloned());
    let snap = Snapshot {
        now: at(now),
        current_replicas: current,
        ready_replicas: Some(ready),
        metrics: &metrics,
        history,
        recommendations: &[],
        consecutive_failures: 0,
        forecast: None,
    };
    recommend(policy, &snap)
}

#[test]
fn a_threshold_at_300_percent_cpu_asks_for_enough_replicas_at_once() {
    // One pod at 300 % of its CPU request against a 70 % bound: ceil(1 x 300 / 70) = 5 in one step (the
    // default rate limit allows max(100 %, 4 pods) = 5), not 1 -> 2 and another 2-minute wait.
    let policy = PolicyBuilder::new(1, 10).cpu_threshold().build();
    let r = eval(&policy, 120, 1, &[cpu_for(0, 120, 300.0)], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleUp, 5), "{}", r.reason);
}

#[test]
fn a_threshold_episode_continues_across_scale_ups() {
    let policy = PolicyBuilder::new(1, 10).cpu_threshold().build();
    // Scaled 4 -> 5 thirty seconds ago and CPU never came back below 70 %: the episode goes on, so the rule
    // steps again now (ceil(5 x 85 / 70) = 7) instead of waiting another 2 minutes.
    let history = [ours(at(150), 4, 5)];
    let r = eval(&policy, 180, 5, &[cpu_for(0, 180, 85.0)], &history);
    assert_eq!((r.decision, r.desired), (Decision::ScaleUp, 7), "{}", r.reason);
    // While the pod of the last step starts, the 4 ready pods need ceil(4 x 85 / 70) = 5: wait for it.
    let r = eval_ready(&policy, 180, 5, 4, &[cpu_for(0, 180, 85.0)], &history);
    assert_eq!(r.decision, Decision::Hold, "{}", r.reason);
    assert!(r.reason.contains("waiting for 1 starting"), "{}", r.reason);
    // An episode ends when the metric comes back below the bound: a new one needs its own 2 minutes.
    let dip = ("cpu", Series::Samples(samples_every(at(0), at(180), 15, |t| if t == 135 { 60.0 } else { 85.0 })));
    let r = eval(&policy, 180, 5, &[dip], &history);
    assert_eq!(r.decision, Decision::Hold, "{}", r.reason);
}

#[test]
fn a_3x_burst_on_a_demand_rule_goes_to_the_desired_count_in_one_step() {
    // 10 replicas at 70 req/s each (Knative's 70 % of 100), then 3x in the last 6 s: the panic window asks
    // for 30 = 300 % of the ready pods. The HPA's default rate limit would allow 20; panic goes to 30.
    let policy = PolicyBuilder::new(1, 50).demand("rps", 100.0).no_cooldowns().no_stabilization().build();
    let burst = samples_every(at(0), at(120), 2, |t| if t > 114 { 2100.0 } else { 700.0 });
    let r = eval_ready(&policy, 120, 10, 10, &[("rps", Series::Samples(burst))], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleUp, 30), "{}", r.reason);
    assert_eq!(r.winner, Some(PolicyId::Demand("rps".into())));
    assert!(r.limited_by.is_empty(), "{:?}", r.limited_by);
}

#[test]
fn a_demand_rule_holds_scale_down_until_a_stable_window_passes_without_panic() {
    let policy = PolicyBuilder::new(1, 50).demand("rps", 100.0).no_cooldowns().no_stabilization().build();
    // The burst lasted from t=116 to t=130 and scaled 10 -> 30 at t=120; then demand fell to 10 replicas'
    // worth. Panic was last seen at t=120, so scale-down waits until after t=180.
    let load = |t: i64| if (116..=130).contains(&t) { 2100.0 } else { 700.0 };
    let history = [ours(at(120), 10, 30)];
    for (now, want) in [(150, Decision::Hold), (180, Decision::Hold), (182, Decision::ScaleDown)] {
        let rps = ("rps", Series::Samples(samples_every(at(0), at(now), 2, load)));
        let r = eval_ready(&policy, now, 30, 30, &[rps], &history);
        assert_eq!(r.decision, want, "at t={now}: {}", r.reason);
        if want == Decision::ScaleDown {
            // At most halved per decision (maxScaleDownRate 2).
            assert_eq!(r.desired, 15, "{}", r.reason);
        }
    }
}

#[test]
fn a_target_rule_inside_its_tolerance_band_does_not_hold_up_another_rules_scale_down() {
    // 15 ready pods at 74 % CPU against an 80 % target: a ratio of 0.925 is inside the 10 % band, so the CPU
    // rule starts no change, but its own count is ceil(15 x 0.925) = 14. Demand has fallen to 13 replicas'
    // worth (910 req/s at 70 each). The scale-down goes to 14, where CPU (about 79 %) is still in its band.
    let policy = PolicyBuilder::new(1, 50)
        .target("cpu", MetricKind::Cpu, 80.0)
        .demand("rps", 100.0)
        .no_cooldowns()
        .no_stabilization()
        .build();
    let cpu = cpu_for(0, 180, 74.0);
    let rps = |v: f64| ("rps", steady(at(0), at(180), 2, v));
    let r = eval_ready(&policy, 180, 15, 15, &[cpu.clone(), rps(910.0)], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleDown, 14), "{}", r.reason);
    assert_eq!(r.winner, Some(PolicyId::Target("cpu".into())), "{}", r.reason);
    // Demand down to 14 replicas' worth: the same 14 (the first of equal votes, in spec order, wins).
    let r = eval_ready(&policy, 180, 15, 15, &[cpu.clone(), rps(980.0)], &[]);
    assert_eq!((r.decision, r.desired), (Decision::ScaleDown, 14), "{}", r.reason);
    // Demand still needs 15: the band starts nothing by itself, so hold.
    let r = eval_ready(&policy, 180, 15, 15, &[cpu.clone(), rps(1050.0)], &[]);
    assert_eq!((r.decision, r.desired), (Decision::Hold, 15), "{}", r.reason);
    // At 78 % the CPU rule's own count is ceil(15 x 0.975) = 15: it still holds the scale-down back.
    let r = eval_ready(&policy, 180, 15, 15, &[cpu_for(0, 180, 78.0), rps(910.0)], &[]);
    assert_eq!((r.decision, r.desired), (Decision::Hold, 15), "{}", r.reason);
}

#[test]
fn a_lone_target_rule_inside_its_tolerance_band_holds_as_the_hpa_does() {
    let policy =
        PolicyBuilder::new(1, 50).target("cpu", MetricKind::Cpu, 80.0).no_cooldowns().no_stabilization().build();
    let r = eval_ready(&policy, 180, 15, 15, &[cpu_for(0, 180, 74.0)], &[]);
    assert_eq!((r.decision, r.desired), (Decision::Hold, 15), "{}", r.reason);
}

// --- Properties ---------------------------------------------------------------------------------------------

fn arb_limits() -> impl Strategy<Value = (Vec<RateLimit>, Select)> {
    let limit = (any::<bool>(), 1u32..200, 1u64..600).prop_map(|(pods, value, period)| RateLimit {
        amount: if pods { Amount::Pods(value) } else { Amount::Percent(value) },
        period: Duration::from_secs(period),
    });
    (prop::collection::vec(limit, 0..3), prop_oneof![Just(Select::Max), Just(Select::Min), Just(Select::Disabled)])
}

fn arb_history() -> impl Strategy<Value = Vec<ScaleEvent>> {
    prop::collection::vec((0i64..900, 0u32..60, 0u32..60, any::<bool>()), 0..6).prop_map(|v| {
        let mut events: Vec<ScaleEvent> =
            v.into_iter().map(|(t, from, to, external)| ScaleEvent { time: at(t), from, to, external }).collect();
        events.sort_by_key(|e| std::cmp::Reverse(e.time));
        events
    })
}

proptest! {
    #[test]
    fn result_is_within_bounds_and_rate_limits(
        min in 0u32..10,
        span in 0u32..50,
        current in 1u32..80,
        cpu in prop_oneof![Just(f64::NAN), 0.0f64..500.0],
        rps in prop_oneof![Just(f64::INFINITY), 0.0f64..5000.0],
        up in arb_limits(),
        down in arb_limits(),
        history in arb_history(),
        failures in 0u32..5,
    ) {
        let max = (min + span).max(1);
        let mut policy = PolicyBuilder::new(min, max)
            .cpu_threshold()
            .target("rps", MetricKind::RequestRate, 100.0)
            .fallback(2, Some(max.min(min + 3).max(1)))
            .build();
        policy.up.limits = up.0;
        policy.up.select = up.1;
        policy.down.limits = down.0;
        policy.down.select = down.1;
        let metrics = super::testing::metrics([
            ("cpu", steady(at(0), at(1000), 15, cpu)),
            ("rps", steady(at(0), at(1000), 15, rps)),
        ]);
        let snap = Snapshot {
            now: at(1000),
            current_replicas: current,
            ready_replicas: None,
            metrics: &metrics,
            history: &history,
            recommendations: &[],
            consecutive_failures: failures,
            forecast: None,
        };
        let r = recommend(&policy, &snap);
        prop_assert!(r.desired >= min && r.desired <= max, "{} not in [{min}, {max}]", r.desired);
        let in_range = current >= min && current <= max;
        if in_range && !r.fallback_active {
            let up_limit = super::behavior::scale_up_limit(current, &history, at(1000), &policy.up);
            let down_limit = super::behavior::scale_down_limit(current, &history, at(1000), &policy.down);
            prop_assert!(r.desired <= up_limit.max(current), "{} above the up limit {up_limit}", r.desired);
            prop_assert!(r.desired >= down_limit.min(current), "{} below the down limit {down_limit}", r.desired);
        }
        if r.missing_metrics().next().is_some() && in_range {
            prop_assert!(r.desired >= current, "scaled down from {current} to {} with missing metrics", r.desired);
        }
        prop_assert!(!r.reason.is_empty());
    }

    #[test]
    fn stabilized_result_never_moves_past_the_recommendation(
        current in 1u32..50,
        recs in prop::collection::vec((0i64..600, 1u32..50), 0..8),
        now_rec in 1u32..50,
    ) {
        let mut records: Vec<RecommendationRecord> =
            recs.into_iter().map(|(t, r)| RecommendationRecord { time: at(t), replicas: r }).collect();
        records.sort_by_key(|r| r.time);
        let records = super::behavior::record(&records, at(600), now_rec, Duration::from_secs(300));
        let s = super::behavior::stabilize(current, now_rec, &records, at(600), Duration::ZERO, Duration::from_secs(300));
        // Stabilization only ever holds back: the result lies between current and the recommendation.
        prop_assert!(s >= current.min(now_rec) && s <= current.max(now_rec));
    }
}
