//! Scenario tests: tiny traces with answers worked out by hand.

use std::{collections::BTreeMap, time::Duration};

use super::{strategy::*, *};
use crate::engine::{
    self, Series, Snapshot,
    policy::{MetricKind, TargetKind},
    testing::{PolicyBuilder, at, steady},
};

/// 15 s ticks, 60 s start-up delay, 100 load units per replica, 60 s trace step.
fn setup(loads: Vec<f64>) -> Setup {
    Setup { start: 0, tick_secs: 15, loads, capacity: 100.0, step_secs: 60.0, delay_secs: 60, record: true }
}

/// One replica's worth of load for 10 minutes, then ten replicas' worth for 20 minutes.
fn step_up() -> Setup {
    setup((0..120).map(|k| if k < 40 { 100.0 } else { 1000.0 }).collect())
}

fn run(setup: &Setup, strategy: &Strategy) -> Outcome {
    simulate(setup, strategy, &mut |_| {}).expect("non-empty setup")
}

fn policy(p: engine::Policy) -> Strategy {
    Strategy::Policy { name: "policy".into(), policy: Box::new(p), starting_pods_at_zero: false, headroom: 1.0 }
}

/// The HPA baseline at `target` % within the range it had before baselines took the policy's: 1 to 100.
fn hpa(target: f64) -> Strategy {
    Strategy::Hpa { target, min: 1, max: 100 }
}

/// The KPA baseline at `target` % within 1 to 100.
fn kpa(target: f64) -> Strategy {
    Strategy::Kpa { target, min: 1, max: 100 }
}

/// Track the request rate at exactly one replica's capacity (100 per 60 s), HPA default rate limits.
fn rps_target() -> engine::Policy {
    let mut p = PolicyBuilder::new(1, 20).target("rps", MetricKind::RequestRate, 100.0 / 60.0).no_cooldowns().build();
    p.targets[0].kind = TargetKind::AverageValue;
    p
}

#[test]
fn oracle_is_ready_in_time_and_pays_only_for_the_delay() {
    let o = run(&step_up(), &Strategy::Oracle);
    assert_eq!(o.scores.violation_minutes, 0.0);
    assert_eq!(o.scores.dropped_load_fraction, 0.0);
    // Scales 1 -> 10 at t=540 (60 s before the step): 36 ticks at 1, 84 ticks at 10.
    assert_eq!(o.events, vec![(540, 1, 10)]);
    assert!((o.scores.replica_hours - (36.0 + 840.0) * 15.0 / 3600.0).abs() < 1e-9);
    assert_eq!((o.scores.scale_actions, o.scores.flaps, o.scores.max_replicas), (1, 0, 10));
}

#[test]
fn static_never_violates_and_never_scales() {
    let o = run(&step_up(), &Strategy::Static);
    assert_eq!(o.scores.violation_minutes, 0.0);
    assert_eq!(o.scores.scale_actions, 0);
    assert_eq!(o.scores.replica_hours, 10.0 * 0.5);
}

#[test]
fn a_reactive_policy_violates_for_the_delay_and_the_rate_limit() {
    let o = run(&step_up(), &policy(rps_target()));
    // t=600: wants 10, the rate limit allows max(2x, +4) = 5; t=615: 10. Ready: 1 until 660, 5 until 675.
    assert_eq!(o.events, vec![(600, 1, 5), (615, 5, 10)]);
    assert_eq!(o.scores.violation_minutes, 5.0 * 15.0 / 60.0);
    // Dropped: 4 ticks of 900 and one of 500, of 40 x 100 + 80 x 1000.
    let dropped = (4.0 * 900.0 + 500.0) / (40.0 * 100.0 + 80.0 * 1000.0);
    assert!((o.scores.dropped_load_fraction - dropped).abs() < 1e-12);
    assert_eq!(o.scores.max_replicas, 10);
}

#[test]
fn a_threshold_policy_waits_for_its_for_duration_then_steps_until_the_episode_ends() {
    // 1 replica at 100 % load; at t=600 the load triples. Up above 70 % CPU for 2 m, one pod at a time.
    let p = PolicyBuilder::new(1, 20).metric("cpu", MetricKind::Cpu).threshold("cpu", Some((70.0, 120)), None);
    let s = setup((0..80).map(|k| if k < 40 { 70.0 } else { 300.0 }).collect());
    let o = run(&s, &policy(p.no_cooldowns().build()));
    // Sustained only once a sample at or before now - 2 m breaches: t=720, not 705. CPU saturates at 100 %,
    // so each step asks for ceil(ready x 100 / 70); the episode goes on while CPU stays above 70 %, so the
    // next step comes as soon as the last one's pods are ready (60 s), not 2 minutes after it: 5 replicas
    // (the load at 60 % of them, under the bound) at t=840, where restarting the window after each step
    // reached 5 only at t=1080.
    assert_eq!(o.events, vec![(720, 1, 2), (780, 2, 3), (840, 3, 5)]);
    assert_eq!(o.scores.max_replicas, 5);
}

#[test]
fn hpa_scales_to_its_target_then_holds_within_tolerance() {
    // Load for exactly 7 replicas at 100 %: the HPA (target 70 %) wants ceil(7 x 100 / 70) = 10 at once.
    let o = run(&setup(vec![700.0; 80]), &hpa(70.0));
    assert_eq!(o.events, vec![(0, 7, 10)]);
    assert_eq!(o.scores.violation_minutes, 0.0);
}

#[test]
fn hpa_scale_down_waits_for_the_stabilization_window() {
    // 700 until t=1200, then 350: at 10 replicas CPU is 35 %, the HPA wants 5 but holds for 300 s.
    let s = setup((0..160).map(|k| if k < 80 { 700.0 } else { 350.0 }).collect());
    let o = run(&s, &hpa(70.0));
    assert_eq!(o.events, vec![(0, 7, 10), (1500, 10, 5)]);
}

/// Runs the HPA baseline's policy once on a steady CPU reading.
fn hpa_once(current: u32, cpu: f64, target: f64) -> u32 {
    let metrics: BTreeMap<String, Series> = [("cpu".to_string(), steady(at(0), at(60), 15, cpu))].into();
    let snap = Snapshot {
        now: at(60),
        current_replicas: current,
        ready_replicas: None,
        metrics: &metrics,
        history: &[],
        recommendations: &[],
        consecutive_failures: 0,
        forecast: None,
    };
    engine::recommend(&hpa_policy(target, 1, 100), &snap).desired
}

#[test]
fn hpa_follows_the_documented_examples() {
    // kubernetes.io HPA: "if the current metric value is 200m, and the desired value is 100m, the number of
    // replicas will be doubled".
    assert_eq!(hpa_once(4, 100.0, 50.0), 8);
    // desiredReplicas = ceil[currentReplicas * (currentMetricValue / desiredMetricValue)]: 3 x 90/70 = 3.86 -> 4.
    assert_eq!(hpa_once(3, 90.0, 70.0), 4);
    // Within the 0.1 tolerance (ratio 1.05): no change.
    assert_eq!(hpa_once(10, 73.5, 70.0), 10);
    // Default scale-up limit: max(100 %, 4 pods) per 15 s, so 1 replica may become 5, not 10.
    assert_eq!(hpa_once(1, 100.0, 10.0), 5);
    // Scale-down is held by the 300 s stabilization window only when there are earlier, higher
    // recommendations; with none recorded it halves at once ("50m: halve the number of replicas").
    assert_eq!(hpa_once(8, 25.0, 50.0), 4);
    // min 1, max 100.
    assert_eq!(hpa_once(80, 100.0, 10.0), 100);
    assert_eq!(hpa_once(2, 1.0, 70.0), 1);
}

#[test]
fn hpa_counts_starting_pods_at_zero_cpu() {
    // After 7 -> 10 at t=0 the 3 new pods start until t=60; CPU averaged over 10 pods is 70 %, not 100 %, so
    // the HPA does not pile on more pods while they start (the engine alone, fed ready pods' CPU, would).
    let o = run(&setup(vec![700.0; 8]), &hpa(70.0));
    assert_eq!(o.scores.max_replicas, 10);
}

#[test]
fn json_has_the_documented_schema() {
    let trace = Trace::parse("timestamp,value\n0,100\n600,100\n601,1000\n1800,1000\n").unwrap();
    let named = NamedPolicy { name: "rps".into(), policy: rps_target() };
    let opts = Options { capacity: Capacity::PerReplica(100.0), ..Options::default() };
    let plan = plan(&trace, &named, &opts).unwrap();
    let (report, _) = super::run(&plan, "t.csv", "rps", &mut |_| {}).unwrap();
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["policy", "results", "steps", "trace"]);
    assert_eq!(v["trace"], "t.csv");
    assert_eq!(v["policy"], "rps");
    assert!(v["steps"].is_u64());
    let results = v["results"].as_array().unwrap();
    let names: Vec<&str> = results.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["rps", "hpa", "oracle", "static"]);
    for r in results {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "cost_vs_oracle",
                "dropped_load_fraction",
                "flaps",
                "forecast_coverage",
                "max_replicas",
                "name",
                "replica_hours",
                "scale_actions",
                "violation_fraction",
                "violation_minutes"
            ]
        );
        for f in ["replica_hours", "cost_vs_oracle", "violation_minutes", "violation_fraction", "dropped_load_fraction"]
        {
            assert!(r[f].is_f64(), "{f} is {:?}", r[f]);
        }
        for i in ["scale_actions", "flaps", "max_replicas"] {
            assert!(r[i].is_u64(), "{i} is {:?}", r[i]);
        }
    }
    assert_eq!(results[2]["cost_vs_oracle"].as_f64(), Some(1.0));
    assert!(results[0]["cost_vs_oracle"].as_f64().unwrap() >= 1.0);
}

#[test]
fn peak_replicas_sizes_capacity_from_the_99th_percentile() {
    let rows: String = (0..100).map(|i| format!("{},{}\n", i * 60, i + 1)).collect();
    let trace = Trace::parse(&format!("timestamp,value\n{rows}")).unwrap();
    let named = NamedPolicy { name: "p".into(), policy: rps_target() };
    let opts = Options { capacity: Capacity::PeakReplicas(11), ..Options::default() };
    let plan = plan(&trace, &named, &opts).unwrap();
    assert_eq!(plan.setup.capacity, 99.0 / 11.0);
    assert_eq!(plan.setup.needed(99.0), 11);
    assert_eq!(plan.setup.tick_secs, 15);
    assert!(matches!(
        super::plan(&trace, &named, &Options { capacity: Capacity::PeakReplicas(0), ..Options::default() }),
        Err(BacktestError::PeakReplicas)
    ));
}

#[test]
fn example_policies_parse_and_bad_files_say_why() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let named = read_policy(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!named.name.is_empty());
    }
    let missing = read_policy(std::path::Path::new("/nonexistent/policy.yaml")).unwrap_err();
    assert!(missing.to_string().contains("cannot read policy /nonexistent/policy.yaml"), "{missing}");
    let tmp = std::env::temp_dir().join(format!("foresight-bad-policy-{}.yaml", std::process::id()));
    std::fs::write(&tmp, "apiVersion: autoscaling.foresight.dev/v1alpha1\nkind: ScalingPolicy\nspec: 3\n").unwrap();
    let bad = read_policy(&tmp).unwrap_err();
    let _ = std::fs::remove_file(&tmp);
    assert!(matches!(bad, BacktestError::ParsePolicy { .. }), "{bad}");
}

#[test]
fn startup_delay_shapes_the_tick() {
    let trace = Trace::parse("timestamp,value\n0,1\n3600,1\n").unwrap();
    let named = NamedPolicy { name: "p".into(), policy: rps_target() };
    let opts = Options { startup_delay: Duration::from_secs(50), ..Options::default() };
    assert_eq!(plan(&trace, &named, &opts).unwrap().setup.tick_secs, 5);
}

#[test]
fn the_policys_startup_delay_is_the_simulated_clusters() {
    let trace = Trace::parse("timestamp,value\n0,1\n3600,1\n").unwrap();
    let mut p = PolicyBuilder::new(1, 20).predictive("rps", 100.0, engine::policy::PredictiveMode::Scale).build();
    let opts = Options::default();
    let named = NamedPolicy { name: "p".into(), policy: p.clone() };
    assert_eq!(plan(&trace, &named, &opts).unwrap().setup.delay_secs, 60, "--startup-delay without one");
    if let Some(rule) = p.predictive.as_mut() {
        rule.startup_delay = Some(Duration::from_secs(150));
    }
    let plan = plan(&trace, &NamedPolicy { name: "p".into(), policy: p }, &opts).unwrap();
    assert_eq!(plan.setup.delay_secs, 150);
    assert!(plan.notes.iter().any(|n| n.contains("startupDelay")), "{:?}", plan.notes);
}

#[test]
fn a_cpu_target_does_not_compound_while_pods_start() {
    // 7 ready replicas at 100 % CPU, target 70 %, 60 s start-up. CPU over ready pods stays at 100 % while new
    // pods start; the engine counts starting pods at 0 % (as the HPA does), so it stops at 10 instead of
    // multiplying `current` again at every evaluation. Averaging CPU over every requested pod gives the same.
    let p = PolicyBuilder::new(1, 100).target("cpu", MetricKind::Cpu, 70.0).no_cooldowns().build();
    let s = setup(vec![700.0; 8]);
    let ready_only = run(&s, &policy(p.clone()));
    let counted = run(
        &s,
        &Strategy::Policy { name: "p".into(), policy: Box::new(p), starting_pods_at_zero: true, headroom: 1.0 },
    );
    assert_eq!(ready_only.scores.max_replicas, 10);
    assert_eq!(counted.scores.max_replicas, 10);
}

#[test]
fn timeline_has_a_row_per_change_and_trace_point() {
    let s = step_up();
    let outcomes = vec![run(&s, &policy(rps_target())), run(&s, &Strategy::Oracle)];
    let dir = std::env::temp_dir().join(format!("foresight-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("timeline.csv");
    output::write_timeline(&path, &s, &[0, 1785], &outcomes).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "time,load,policy_replicas,policy_ready,policy_utilization,oracle_replicas,oracle_ready,oracle_utilization"
    );
    // Ticks 0, 36 (oracle scales), 40, 41 (policy scales), 44, 45 (policy pods ready), 119 (end).
    let times: Vec<&str> = lines[1..].iter().map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(times.len(), 7, "{text}");
    assert_eq!(lines[1], "1970-01-01T00:00:00Z,100,1,1,1.0000,1,1,1.0000");
    assert!(lines.contains(&"1970-01-01T00:11:00Z,1000,10,5,2.0000,10,10,1.0000"), "{text}");
}

#[test]
fn a_forecast_scales_ahead_of_a_daily_rise_that_a_reactive_policy_trails() {
    // Four days of a daily cycle between 1 and 19 replicas' worth, a 5-minute start-up, 60 s evaluations.
    let day = 86_400.0;
    let loads: Vec<f64> = (0..4 * 1440)
        .map(|k| {
            let t = k as f64 * 60.0;
            1000.0 - 900.0 * (std::f64::consts::TAU * t / day).cos()
        })
        .collect();
    let s = Setup { tick_secs: 60, delay_secs: 300, record: false, ..setup(loads) };
    let reactive = {
        let mut p = rps_target();
        p.interval = Duration::from_secs(60);
        p
    };
    let predictive = {
        let mut p = PolicyBuilder::new(1, 20)
            .predictive("rps", 100.0 / 60.0, engine::policy::PredictiveMode::Scale)
            .no_cooldowns()
            .build();
        p.interval = Duration::from_secs(60);
        p.targets = reactive.targets.clone();
        p
    };
    let r = run(&s, &policy(reactive));
    let p = run(&s, &policy(predictive));
    assert!(r.scores.violation_minutes > 0.0, "the reactive policy trails a rising load by its start-up");
    assert_eq!(r.scores.forecast_coverage, None);
    let coverage = p.scores.forecast_coverage.expect("forecasts were checked");
    assert!(coverage > 0.9, "a noiseless cycle's look-aheads are covered, got {coverage}");
    assert!(
        p.scores.violation_minutes < r.scores.violation_minutes / 2.0,
        "predictive {} vs reactive {} violation minutes",
        p.scores.violation_minutes,
        r.scores.violation_minutes
    );
}

#[test]
fn request_rates_are_in_the_policys_units_so_an_average_value_target_means_what_it_says() {
    // The policy's own units: one replica serves 50 req/s (capacityPerReplica); its target keeps 40 req/s per
    // replica, 80 % of one. The simulated replica serves 100 per 60 s trace step. Eight replicas' worth of load
    // must end at ceil(8 / 0.8) = 10 replicas, whatever the trace's units.
    let mut p = PolicyBuilder::new(1, 20)
        .predictive("rps", 50.0, engine::policy::PredictiveMode::Scale)
        .target("rps", MetricKind::RequestRate, 40.0)
        .no_cooldowns()
        .build();
    p.targets[0].kind = TargetKind::AverageValue;
    let o = run(&setup(vec![800.0; 40]), &policy(p));
    assert_eq!(o.scores.max_replicas, 10, "{:?}", o.events);
    assert_eq!(o.events.last().map(|e| e.2), Some(10), "{:?}", o.events);
    assert_eq!(o.scores.violation_minutes, 0.0);
}

/// Four days at one replica's worth of load, with ten replicas' worth for 100 minutes from `jump` (a tick).
fn four_days_with_a_burst(jump: usize) -> Setup {
    let day = 5760; // 15 s ticks
    setup((0..4 * day).map(|k| if (jump..jump + 400).contains(&k) { 1000.0 } else { 100.0 }).collect())
}

#[test]
fn the_zoomed_plot_shows_the_day_with_the_most_unserved_load() {
    let jump = 3 * 5760 + 100;
    let s = four_days_with_a_burst(jump);
    let reactive = run(&s, &policy(rps_target()));
    assert!(reactive.scores.violation_minutes > 0.0, "the burst outruns the start-up delay");
    let window = plot::worst_window(&s, &reactive, 5760).expect("a four-day run gets a zoomed plot");
    assert_eq!(window.len(), 5760);
    assert!(window.contains(&jump) && window.contains(&(jump + 4)), "{window:?} misses the burst at {jump}");
    let middle = (window.start + window.end) / 2;
    assert!(middle.abs_diff(jump) < 60, "the burst at {jump} is not in the middle of {window:?}");

    // Without unserved load (the oracle), the day with the highest load.
    let oracle = run(&s, &Strategy::Oracle);
    assert_eq!(oracle.scores.violation_minutes, 0.0);
    let window = plot::worst_window(&s, &oracle, 5760).expect("zoom");
    assert!(window.contains(&jump) && window.contains(&(jump + 399)), "{window:?}");

    // A run of two days or less is readable as it is.
    assert_eq!(plot::worst_window(&step_up(), &reactive, 5760), None);

    let dir = std::env::temp_dir().join(format!("foresight-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let written = plot::write(&dir, "burst", &s, &[reactive, oracle]).expect("plots");
    let zoom = std::fs::read_to_string(dir.join("worst-day.svg")).unwrap_or_default();
    let png = std::fs::metadata(dir.join("worst-day.png")).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(written, ["plot.svg", "plot.png", "worst-day.svg", "worst-day.png"]);
    assert!(zoom.contains("the day with the most unserved load for policy"), "worst-day.svg has no such title");
    assert!(png > 1000, "worst-day.png is {png} bytes");
}

// --- The KPA baseline, against Knative's documented rules ---------------------------------------------------

#[test]
fn kpa_tracks_70_percent_of_capacity_in_stable_mode() {
    // 7 replicas' worth of load (700 per 60 s step = 11.67/s; a replica serves 1.67/s, 70 % of it 1.17/s):
    // ceil(700 / 70) = 10 replicas, like the HPA at 70 %, and then nothing changes.
    let o = run(&setup(vec![700.0; 80]), &kpa(70.0));
    assert_eq!(o.events, vec![(0, 7, 10)]);
    assert_eq!(o.scores.violation_minutes, 0.0);
}

#[test]
fn kpa_panics_on_a_burst_and_goes_there_in_one_step() {
    // 3 replicas' worth of load, which at 70 % needs ceil(300 / 70) = 5; then 3x at t=600: the panic window
    // (6 s: the latest sample) sees 900 per step, which needs ceil(900 / 70) = 13 >= 200 % of the 5 ready
    // pods. Knative goes to 13 at once (its max scale-up rate of 1000 allows it) and stays; the HPA sees CPU
    // saturated at 100 % and needs several steps.
    let s = setup((0..120).map(|k| if k < 40 { 300.0 } else { 900.0 }).collect());
    let o = run(&s, &kpa(70.0));
    assert_eq!(o.events, vec![(0, 3, 5), (600, 5, 13)]);
    let h = run(&s, &hpa(70.0));
    assert!(h.events.iter().filter(|e| e.0 >= 600).count() > 1, "the HPA needs more than one step: {:?}", h.events);
}

#[test]
fn kpa_holds_scale_down_for_a_stable_window_after_panic_then_halves_at_most() {
    // 5 replicas' worth at 70 %, and one 15 s tick of 3x at t=600: panic, 5 -> 13. From t=615 the load is
    // back; the stable window's average alone would ask for ceil(7.5 / 1.17) = 7 at once, but Knative does
    // not scale down in panic mode and un-panics only once panicTime + stableWindow is before now (t > 660).
    // Then stable mode, at most halving per decision (max-scale-down-rate 2): floor(13 / 2) = 6, then 5.
    let s = setup((0..80).map(|k| if k == 40 { 900.0 } else { 300.0 }).collect());
    let o = run(&s, &kpa(70.0));
    assert_eq!(o.events, vec![(0, 3, 5), (600, 5, 13), (675, 13, 6), (690, 6, 5)]);
}

#[test]
fn baselines_scale_within_the_policys_range() {
    // The policy allows 4 to 6 replicas; the baselines answer the same question.
    let mut named = NamedPolicy { name: "p".into(), policy: rps_target() };
    named.policy.min_replicas = 4;
    named.policy.max_replicas = 6;
    let rows: Vec<(jiff::Timestamp, f64)> = (0..60)
        .map(|k| (jiff::Timestamp::from_second(k * 60).expect("valid"), if k < 30 { 10.0 } else { 1000.0 }))
        .collect();
    let trace = Trace::from_samples(&rows).expect("valid trace");
    let opts = Options {
        capacity: Capacity::PerReplica(100.0),
        compare: vec![Baseline::Hpa, Baseline::Kpa],
        ..Options::default()
    };
    let p = plan(&trace, &named, &opts).expect("plan");
    let (report, _) = super::run(&p, "t", "p", &mut |_| {}).expect("runs");
    for r in &report.results {
        assert_eq!(r.max_replicas, 6, "{} stays within maxReplicas", r.name);
    }
    let o = run(&Setup { record: true, ..p.setup.clone() }, &p.strategies[2]);
    assert_eq!(o.timeline.first().map(|c| c.requested), Some(4), "kpa starts at minReplicas");
}

#[test]
fn the_sweep_writes_a_frontier_with_every_curve() {
    let s = setup((0..1200).map(|k| if (400..800).contains(&k) { 1000.0 } else { 100.0 }).collect());
    let named = NamedPolicy { name: "policy".into(), policy: rps_target() };
    let strategies = vec![
        policy(rps_target()),
        Strategy::Hpa { target: 70.0, min: 1, max: 20 },
        Strategy::Kpa { target: 70.0, min: 1, max: 20 },
        Strategy::Oracle,
        Strategy::Static,
    ];
    let plan = Plan { setup: s, strategies, notes: vec![] };
    let swept = sweep::sweep(&plan, 2).expect("sweeps");
    let names: Vec<&str> = swept.curves.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec![named.name.as_str(), "hpa", "kpa", "oracle", "static"]);
    assert_eq!(swept.curves[0].points.len(), sweep::HEADROOM.len());
    assert_eq!(swept.curves[1].points.len(), sweep::TARGETS.len());
    assert_eq!(swept.curves[2].points.len(), sweep::TARGETS.len());
    // More headroom costs more: the policy at x0.6 pays more than at x1.4, and the HPA at 50 % more than at 95 %.
    let cost = |c: usize, i: usize| swept.curves[c].points[i].replica_hours;
    assert!(cost(0, 0) > cost(0, sweep::HEADROOM.len() - 1));
    assert!(cost(1, 0) > cost(1, sweep::TARGETS.len() - 1));
    assert!(cost(2, 0) > cost(2, sweep::TARGETS.len() - 1));
    assert_eq!(swept.curves[0].shipped.map(|i| swept.curves[0].points[i].setting), Some(1.0));
    assert_eq!(swept.curves[1].shipped.map(|i| swept.curves[1].points[i].setting), Some(70.0));

    let dir = std::env::temp_dir().join(format!("foresight-frontier-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = frontier::write(&dir, "sweep", &swept).expect("writes the frontier");
    assert_eq!(files, vec!["frontier.svg", "frontier.png"]);
    let svg = std::fs::read_to_string(dir.join("frontier.svg")).expect("svg");
    for label in ["policy (headroom x0.6-x1.4)", "hpa (target 50-95 %)", "kpa (target 50-95 %)", "oracle", "static"] {
        assert!(svg.contains(label), "the legend names {label}");
    }
    assert!(std::fs::metadata(dir.join("frontier.png")).expect("png").len() > 10_000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two days of a daily cycle with bursts every 3 hours, per minute; a predictive policy on the request rate
/// (5-minute step, a day of history) with a demand rule, deciding every minute.
fn predictive_sweep_case(metric: MetricKind) -> (Setup, engine::Policy) {
    let loads: Vec<f64> = (0..2 * 1440)
        .map(|k| {
            let t = k as f64 * 60.0;
            let burst = if k % 180 < 10 { 600.0 } else { 0.0 };
            1000.0 - 700.0 * (std::f64::consts::TAU * t / 86_400.0).cos() + burst + (k * 37 % 101) as f64
        })
        .collect();
    let s = Setup { tick_secs: 60, delay_secs: 120, record: false, ..setup(loads) };
    let mut p = PolicyBuilder::new(1, 40)
        .metric("cpu", MetricKind::Cpu)
        .predictive(
            if metric == MetricKind::Cpu { "cpu" } else { "rps" },
            100.0 / 60.0,
            engine::policy::PredictiveMode::Scale,
        )
        .demand("rps", 100.0 / 60.0)
        .no_cooldowns()
        .build();
    p.interval = Duration::from_secs(60);
    let rule = p.predictive.as_mut().expect("a predictive rule");
    rule.history = Duration::from_secs(86_400);
    if metric == MetricKind::Cpu {
        rule.capacity_per_replica = 70.0;
    }
    (s, p)
}

#[test]
fn the_sweeps_shared_fits_give_every_point_its_own_runs_scores() {
    let (s, p) = predictive_sweep_case(MetricKind::RequestRate);
    let plan = Plan { setup: s.clone(), strategies: vec![policy(p.clone())], notes: vec![] };
    let swept = sweep::sweep(&plan, 2).expect("sweeps");
    let (made, taken) = swept.shared_fits.expect("the policy's runs shared their fits");
    assert_eq!(taken, made * sweep::HEADROOM.len() as u64, "every fit made once, taken by every run");
    let points = &swept.curves[0].points;
    for (point, &h) in points.iter().zip(&sweep::HEADROOM) {
        let alone = run(
            &s,
            &Strategy::Policy {
                name: "policy".into(),
                policy: Box::new(p.clone()),
                starting_pods_at_zero: false,
                headroom: h,
            },
        )
        .scores;
        assert_eq!(
            (point.replica_hours, point.violation_minutes),
            (alone.replica_hours, alone.violation_minutes),
            "headroom {h}"
        );
    }
    assert!(points.windows(2).any(|w| w[0].replica_hours != w[1].replica_hours), "the headroom changes decisions");
}

#[test]
fn shared_fits_of_a_forecast_that_depends_on_the_replicas_are_the_runs_own() {
    // CPU depends on the replicas each run chose: runs sharing one cache still get their own fits, and their
    // own scores. (A cache keyed by time alone would hand the first run's fits to the others.)
    let (s, p) = predictive_sweep_case(MetricKind::Cpu);
    let headrooms = [0.7, 1.0, 1.3];
    let cache = crate::forecast::FitCache::new(headrooms.len());
    for &h in &headrooms {
        let strategy = Strategy::Policy {
            name: "policy".into(),
            policy: Box::new(p.clone()),
            starting_pods_at_zero: false,
            headroom: h,
        };
        let shared = simulate_shared(&s, &strategy, Some(&cache), &mut |_| {}).expect("runs").scores;
        let alone = run(&s, &strategy).scores;
        // Debug text: cost_vs_oracle is NaN without an oracle, and NaN != NaN.
        assert_eq!(format!("{shared:?}"), format!("{alone:?}"), "headroom {h}");
    }
    let one = crate::forecast::FitCache::new(1);
    simulate_shared(&s, &policy(p.clone()), Some(&one), &mut |_| {}).expect("runs");
    assert!(cache.stats().0 > one.stats().0, "the runs' CPU histories differ, so their fits do");
}
