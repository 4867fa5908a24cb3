//! The closed-loop scenarios: the `foresight` binary against the fake API server (or a real cluster, see
//! `foresight_e2e::harness`), a real Prometheus scraping the workload simulator every second.
//!
//! Durations are short (interval 2 s, `for` 10 s, cooldowns 15 s, 5 s start-up) so the whole file runs in a few
//! minutes. Every wait is bounded; on failure the harness prints the timeline and the controller's log tail.
//! Scenarios run in parallel: each has its own namespace, Prometheus and controller processes.

use std::time::{Duration, Instant};

use foresight_e2e::harness::{ControllerOptions, Harness, Scenario, condition};
use foresight_e2e::sim::LoadProfile;

const MINUTE: Duration = Duration::from_secs(60);

async fn start(scenario: Scenario) -> Harness {
    let name = scenario.name.clone();
    Harness::start(scenario).await.unwrap_or_else(|e| panic!("cannot set up scenario {name}: {e}"))
}

fn done(h: &Harness, started: Instant) {
    println!("scenario {} passed in {:.1}s", h.scenario.name, started.elapsed().as_secs_f64());
}

/// CPU step scaling as the seeds describe it: above 70 % for the `for` duration adds a pod; below 30 % removes
/// one, but not before the scale-down cooldown after the last change.
const CPU_THRESHOLD: &str = r#"
apiVersion: autoscaling.foresight.dev/v1alpha1
kind: ScalingPolicy
metadata: { name: web-cpu }
spec:
  targetRef: { apiVersion: apps/v1, kind: Deployment, name: web }
  minReplicas: 2
  maxReplicas: 6
  interval: 2s
  metrics:
    - name: cpu
      cpu: { container: app, window: 10s }
  policies:
    threshold:
      - metric: cpu
        scaleUpAbove: 70
        scaleUpFor: 10s
        scaleUpStep: { type: Pods, value: 1 }
        scaleDownBelow: 30
        scaleDownFor: 10s
  behavior:
    scaleUp: { stabilizationWindow: 0s }
    scaleDown: { stabilizationWindow: 0s, cooldown: 15s }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_on_cpu_threshold_then_scale_in_after_cooldown() {
    let started = Instant::now();
    // 80 req/s over 2 pods: 0.4 cores of 0.5 requested, 80 % CPU.
    let h = start(Scenario::new("cpu-threshold").replicas(2).profile(LoadProfile::Constant(80.0))).await;
    h.apply_policy(CPU_THRESHOLD).await.expect("apply policy");

    h.wait_for_replicas("scale-out to 3 replicas on CPU above 70 %", MINUTE, |r| r == 3).await;
    // The status write and the Event follow the /scale patch: wait for them instead of reading once.
    let up = h
        .wait_for("the scale-out in status.history", Duration::from_secs(20), || async {
            h.policy_status().await.and_then(|s| s.history.first().cloned()).filter(|e| e.to == 3)
        })
        .await;
    assert_eq!((up.from, up.to, up.policy.as_str()), (2, 3, "threshold/cpu"), "{up:?}");
    h.wait_for_event("ScaledUp", Duration::from_secs(20)).await;
    // 80 req/s over 3 pods is 53 %: between the bounds, so it stays.
    h.wait_for("the third pod to become ready", Duration::from_secs(20), || async {
        (h.sim.ready() == 3).then_some(())
    })
    .await;

    // 20 req/s over 3 pods is 13 %: below 30 %, so one pod goes, after the cooldown.
    h.sim.set_profile(LoadProfile::Constant(20.0));
    h.wait_for_replicas("scale-in to 2 replicas on CPU below 30 %", MINUTE, |r| r == 2).await;
    let status = h
        .wait_for("the scale-in in status.history", Duration::from_secs(20), || async {
            h.policy_status().await.filter(|s| s.history.first().is_some_and(|e| e.to == 2))
        })
        .await;
    let (down, up) = (&status.history[0], &status.history[1]);
    assert_eq!((down.from, down.to), (3, 2), "{:?}", status.history);
    let gap = down.time.0.duration_since(up.time.0).as_secs_f64();
    assert!(gap >= 15.0, "scaled in {gap}s after scaling out, inside the 15 s cooldown: {:?}", status.history);
    h.wait_for_event("ScaledDown", Duration::from_secs(20)).await;
    done(&h, started);
}

/// Scales out when p99 latency stays above 500 ms; an error rate above 1 % vetoes scaling in on low CPU.
const SLO_GUARD: &str = r#"
apiVersion: autoscaling.foresight.dev/v1alpha1
kind: ScalingPolicy
metadata: { name: web-slo }
spec:
  targetRef: { apiVersion: apps/v1, kind: Deployment, name: web }
  minReplicas: 2
  maxReplicas: 6
  interval: 2s
  metrics:
    - name: cpu
      cpu: { container: app, window: 10s }
    - name: p99
      latency: { quantile: 0.99, window: 5s }
    - name: errors
      errorRate: { window: 5s }
      vetoScaleDown: { above: 0.01 }
  policies:
    threshold:
      - metric: p99
        scaleUpAbove: 0.5
        scaleUpFor: 10s
        scaleUpStep: { type: Pods, value: 1 }
      - metric: cpu
        scaleDownBelow: 30
        scaleDownFor: 10s
  behavior:
    scaleUp: { stabilizationWindow: 0s }
    scaleDown: { stabilizationWindow: 0s, cooldown: 15s }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latency_slo_scales_out_and_errors_veto_scale_in() {
    let started = Instant::now();
    // 170 req/s over 2 pods: 85 % of each pod's capacity, p99 about 0.6 s (with 3 pods: 0.2 s).
    let h = start(Scenario::new("slo-guard").replicas(2).profile(LoadProfile::Constant(170.0))).await;
    h.apply_policy(SLO_GUARD).await.expect("apply policy");
    h.wait_for_replicas("scale-out on p99 above 0.5 s", MINUTE, |r| r >= 3).await;
    let status = h.policy_status().await.expect("status");
    assert_eq!(status.history[0].policy, "threshold/p99", "{:?}", status.history);
    // The new pods take load and the 5 s latency window forgets the overload.
    h.wait_for("p99 back under 0.5 s", MINUTE, || async {
        let e = h.policy_status().await?.last_evaluation?;
        let p99 = e.metrics.iter().find(|m| m.name == "p99")?.value?;
        (p99 < 0.5).then_some(())
    })
    .await;
    let replicas = h.replicas().await;

    // Low load (CPU about 5 %) would scale in, but 5 % of requests fail.
    h.sim.set_extra_error_fraction(0.05);
    h.sim.set_profile(LoadProfile::Constant(10.0));
    let vetoed = |s: &foresight::api::ScalingPolicyStatus| {
        s.last_evaluation.as_ref().is_some_and(|e| e.limited_by.iter().any(|l| l.to_lowercase().contains("veto")))
    };
    h.wait_for("an evaluation whose scale-in the error rate vetoed", MINUTE, || async {
        vetoed(&h.policy_status().await?).then_some(())
    })
    .await;
    // The veto holds for longer than scaleDownFor + cooldown would need.
    h.holds_for("the veto held for 20 s of evaluations", Duration::from_secs(20), || async {
        let s = h.policy_status().await.expect("status");
        assert!(vetoed(&s), "veto lifted while errors were above 1 %: {:?}", s.last_evaluation);
        assert_eq!(h.replicas().await, replicas, "scaled despite the error-rate veto");
    })
    .await;

    // Errors stop: the scale-in goes ahead.
    h.sim.set_extra_error_fraction(0.0);
    h.wait_for_replicas("scale-in once errors stop", MINUTE, |r| r < replicas).await;
    done(&h, started);
}

/// Step scaling on CPU with a quick fallback, for the outage scenario.
const CPU_OUTAGE: &str = r#"
apiVersion: autoscaling.foresight.dev/v1alpha1
kind: ScalingPolicy
metadata: { name: web-cpu }
spec:
  targetRef: { apiVersion: apps/v1, kind: Deployment, name: web }
  minReplicas: 1
  maxReplicas: 6
  interval: 2s
  metrics:
    - name: cpu
      cpu: { container: app, window: 10s }
  policies:
    threshold:
      - metric: cpu
        scaleUpAbove: 70
        scaleUpFor: 10s
        scaleDownBelow: 10
        scaleDownFor: 10s
  behavior:
    scaleUp: { stabilizationWindow: 0s }
    scaleDown: { stabilizationWindow: 0s, cooldown: 15s }
  fallback: { failureThreshold: 2 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_outage_holds_replicas_and_says_why_then_recovers() {
    let started = Instant::now();
    // 50 req/s over 2 pods: 50 % CPU, between the bounds.
    let mut h = start(Scenario::new("outage").replicas(2).profile(LoadProfile::Constant(50.0))).await;
    h.apply_policy(CPU_OUTAGE).await.expect("apply policy");
    h.wait_for("metrics to be read", MINUTE, || async {
        let s = h.policy_status().await?;
        (condition(&s, "MetricsAvailable")? == ("True".into(), "MetricsRead".into())).then_some(())
    })
    .await;

    h.prometheus().expect("local Prometheus").stop().expect("stop Prometheus");
    let reason = h
        .wait_for("MetricsAvailable=False during the outage", MINUTE, || async {
            let s = h.policy_status().await?;
            let (status, reason) = condition(&s, "MetricsAvailable")?;
            (status == "False").then_some(reason)
        })
        .await;
    assert!(["FailedGetMetric", "NoMetrics", "FallbackActive"].contains(&reason.as_str()), "reason {reason}");
    h.wait_for_event("MetricsUnavailable", Duration::from_secs(20)).await;
    h.wait_for("3 failed evaluations in a row", MINUTE, || async {
        (h.policy_status().await?.consecutive_metric_failures >= 3).then_some(())
    })
    .await;
    assert_eq!(h.replicas().await, 2, "replicas changed while no metric could be read");

    h.prometheus().expect("local Prometheus").restart().expect("restart Prometheus");
    h.wait_for("MetricsAvailable=True after the restart", Duration::from_secs(90), || async {
        let s = h.policy_status().await?;
        (condition(&s, "MetricsAvailable")?.0 == "True").then_some(())
    })
    .await;
    // And it scales again: 90 req/s over 2 pods is 90 % CPU.
    h.sim.set_profile(LoadProfile::Constant(90.0));
    h.wait_for_replicas("scale-out after recovery", MINUTE, |r| r >= 3).await;
    done(&h, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_records_decisions_without_patching_and_pause_stops_patching() {
    let started = Instant::now();
    // 80 % CPU: the policy wants 3.
    let h = start(Scenario::new("dry-run").replicas(2).profile(LoadProfile::Constant(80.0))).await;
    let dry_run = CPU_THRESHOLD.replace("interval: 2s", "interval: 2s\n  dryRun: true");
    h.apply_policy(&dry_run).await.expect("apply policy");
    h.wait_for_event("DryRunDecision", MINUTE).await;
    let status = h.policy_status().await.expect("status");
    let evaluation = status.last_evaluation.clone().expect("evaluation");
    assert_eq!(evaluation.decision, "ScaleUp", "{evaluation:?}");
    assert_eq!(status.desired_replicas, Some(3));
    assert_eq!(condition(&status, "ScalingActive"), Some(("False".into(), "DryRun".into())));
    assert_eq!(h.replicas().await, 2, "dry-run changed replicas");
    if let Some(writes) = h.replica_writes() {
        assert_eq!(writes, 0, "dry-run wrote the Deployment's replicas");
    }

    // Paused: the annotation, dry-run off. It keeps evaluating but does not patch.
    let paused = CPU_THRESHOLD.replace(
        "metadata: { name: web-cpu }",
        "metadata:\n  name: web-cpu\n  annotations: { autoscaling.foresight.dev/paused: \"true\" }",
    );
    h.apply_policy(&paused).await.expect("apply paused policy");
    h.wait_for("ScalingActive=False Paused", MINUTE, || async {
        let s = h.policy_status().await?;
        (condition(&s, "ScalingActive")? == ("False".into(), "Paused".into())).then_some(())
    })
    .await;
    h.holds_for("15 s of paused evaluations", Duration::from_secs(15), || async {
        assert_eq!(h.replicas().await, 2, "a paused policy changed replicas");
    })
    .await;
    assert_eq!(h.replicas().await, 2, "a paused policy changed replicas");
    if let Some(writes) = h.replica_writes() {
        assert_eq!(writes, 0, "a paused policy wrote the Deployment's replicas");
    }

    // Unpaused, the same policy scales: the pause was what held it.
    h.apply_policy(CPU_THRESHOLD).await.expect("apply unpaused policy");
    h.wait_for_replicas("scale-out once unpaused", MINUTE, |r| r == 3).await;
    done(&h, started);
}

/// Two policies on one Deployment (applying every example does this): only the older acts, both say so in a
/// Conflict condition and a Warning Event, and the newer takes over once the older is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_policies_on_one_target_only_the_older_acts_until_it_is_deleted() {
    let started = Instant::now();
    // 80 % CPU: the older policy scales to 3; the newer one is capped at 2 and would hold there.
    let h = start(Scenario::new("two-policies").replicas(2).profile(LoadProfile::Constant(80.0))).await;
    h.apply_policy(CPU_THRESHOLD).await.expect("apply the older policy");
    // Creation times have a resolution of a second: the second policy is younger by more than that.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let capped = CPU_THRESHOLD.replace("name: web-cpu", "name: web-capped").replace("maxReplicas: 6", "maxReplicas: 2");
    h.apply_policy(&capped).await.expect("apply the newer policy");

    h.wait_for_replicas("the older policy to scale out to 3", MINUTE, |r| r == 3).await;
    let newer = h
        .wait_for("the newer policy to stand down", MINUTE, || async {
            let s = h.status_of("web-capped").await?;
            (condition(&s, "Conflict")?.0 == "True"
                && condition(&s, "Ready")? == ("False".into(), "StandingDown".into()))
                .then_some(s)
        })
        .await;
    let message = newer.conditions.iter().find(|c| c.type_ == "Conflict").map(|c| c.message.clone());
    assert!(message.as_deref().is_some_and(|m| m.contains("web-cpu")), "names the policy that acts: {message:?}");
    h.wait_for("Conflict=True on the older policy, which stays Ready", MINUTE, || async {
        let s = h.status_of("web-cpu").await?;
        (condition(&s, "Conflict")?.0 == "True" && condition(&s, "Ready")?.0 == "True").then_some(())
    })
    .await;
    h.wait_for("a Warning Event on each policy", MINUTE, || async {
        let warned: std::collections::BTreeSet<String> = h
            .events()
            .await
            .into_iter()
            .filter(|e| {
                e.type_.as_deref() == Some("Warning") && e.reason.as_deref().is_some_and(|r| r.contains("Conflict"))
            })
            .filter_map(|e| e.regarding.and_then(|r| r.name))
            .collect();
        (warned.len() == 2).then_some(())
    })
    .await;
    assert_eq!(h.replicas().await, 3, "the newer, capped policy scaled the target while standing down");

    // Without the older one, the newer acts: its maxReplicas of 2 brings the target down.
    h.delete_policy("web-cpu").await.expect("delete the older policy");
    h.wait_for_replicas("the newer policy to take over and cap at 2", MINUTE, |r| r == 2).await;
    h.wait_for("the newer policy Ready without a conflict", MINUTE, || async {
        let s = h.status_of("web-capped").await?;
        (condition(&s, "Conflict")?.0 == "False" && condition(&s, "Ready")?.0 == "True").then_some(())
    })
    .await;
    done(&h, started);
}

/// Foresight records a replica change it did not make when it compares the target with the last change in
/// its history, so the policy scales once first (80 % CPU at 2 replicas asks for 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manual_kubectl_scale_is_recorded_as_an_external_change() {
    let started = Instant::now();
    let h = start(Scenario::new("kubectl-scale").replicas(2).profile(LoadProfile::Constant(80.0))).await;
    h.apply_policy(CPU_THRESHOLD).await.expect("apply policy");
    h.wait_for_replicas("Foresight to scale out to 3", MINUTE, |r| r == 3).await;

    // 80 req/s over 5 pods is 32 %: between the bounds, so the policy leaves the manual change alone.
    let out = h.kubectl_scale(5).await.expect("kubectl scale");
    assert!(out.contains("scaled"), "{out}");
    let entry = h
        .wait_for("the external change in status.history", MINUTE, || async {
            h.policy_status().await?.history.into_iter().find(|e| e.policy == "external")
        })
        .await;
    assert_eq!((entry.from, entry.to), (3, 5), "{entry:?}");
    assert!(entry.reason.contains("someone else"), "{entry:?}");
    h.wait_for("the simulator to follow to 5 ready pods", Duration::from_secs(20), || async {
        (h.sim.ready() == 5).then_some(())
    })
    .await;
    done(&h, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_failover_exactly_one_patches_and_the_standby_takes_over() {
    let started = Instant::now();
    let elected = |identity: &str| ControllerOptions { identity: identity.into(), leader_election: true };
    let mut h = start(
        Scenario::new("failover")
            .replicas(2)
            .profile(LoadProfile::Constant(80.0))
            .controllers(vec![elected("foresight-a"), elected("foresight-b")]),
    )
    .await;
    let leader = h
        .wait_for("one controller to lead", MINUTE, || async {
            let flags: Vec<Option<f64>> = h.controllers.iter().map(|c| c.metric("foresight_leader ")).collect();
            match flags[..] {
                [Some(a), Some(b)] if a + b == 1.0 => Some(if a == 1.0 { 0 } else { 1 }),
                _ => None,
            }
        })
        .await;
    let standby = 1 - leader;
    h.apply_policy(CPU_THRESHOLD).await.expect("apply policy");
    h.wait_for_replicas("the leader to scale out to 3", MINUTE, |r| r == 3).await;
    let actions = |h: &Harness, i: usize| -> f64 {
        h.controllers[i]
            .metrics_text()
            .lines()
            .filter(|l| l.starts_with("foresight_scale_actions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // The action is counted after the status write that follows the /scale patch: wait for the leader's count.
    h.wait_for("the leader to count its scale action", Duration::from_secs(20), || async {
        (actions(&h, leader) >= 1.0).then_some(())
    })
    .await;
    assert_eq!((actions(&h, leader), actions(&h, standby)), (1.0, 0.0), "exactly the leader patches");
    // The Event follows the status write, which follows the /scale patch the replicas show: wait for it.
    let events = h.wait_for_event("ScaledUp", MINUTE).await;
    let instances: Vec<_> = events.iter().filter_map(|e| e.reporting_instance.clone()).collect();
    assert_eq!(instances, [h.controllers[leader].identity.clone()], "events come from the leader only");

    // The leader crashes; after the lease expires the standby leads and scales: 130 req/s over 3 pods is 87 %.
    h.controllers[leader].kill();
    h.sim.set_profile(LoadProfile::Constant(130.0));
    h.wait_for("the standby to take the lease", MINUTE, || async {
        (h.controllers[standby].metric("foresight_leader ") == Some(1.0)).then_some(())
    })
    .await;
    h.wait_for_replicas("the new leader to scale out to 4", MINUTE, |r| r == 4).await;
    h.wait_for("the new leader to count its scale action", Duration::from_secs(20), || async {
        (actions(&h, standby) >= 1.0).then_some(())
    })
    .await;
    assert_eq!(actions(&h, standby), 1.0, "the new leader did not patch");
    done(&h, started);
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's single value at `at` (Unix seconds), from the harness's local Prometheus.
fn query_at(addr: std::net::SocketAddr, promql: &str, at: i64) -> Option<f64> {
    let body = foresight_e2e::harness::controller::http_get(
        addr,
        &format!("/api/v1/query?query={}&time={at}", encode(promql)),
    )?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// What the predictive scenario needs from the harness: cycles of backfilled history that the live simulator
/// continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfilled_cycle_history_is_continued_by_the_live_simulator() {
    let started = Instant::now();
    let period = Duration::from_secs(120);
    let profile = LoadProfile::Cycle { base: 20.0, amplitude: 80.0, period };
    let ago = 3 * period;
    let sim_config = foresight_e2e::sim::SimConfig::new("history", "web", profile.clone()).started_ago(ago);
    let epoch = sim_config.epoch();
    let end = jiff::Timestamp::now();
    let history = foresight_e2e::sim::history::openmetrics(&sim_config, 2, epoch, ago, end, Duration::from_secs(5))
        .expect("history");
    let mut h =
        start(Scenario::new("history").profile(profile.clone()).history(history, ago).controllers(vec![])).await;
    let prom = h.prometheus().expect("local Prometheus").addr();
    let rps = r#"sum(rate(http_requests_total{namespace="history"}[30s]))"#;
    let e = epoch.as_second();
    // Backfilled: the 30 s before the trough of the second cycle (t=240) average about 35 req/s, the 30 s
    // before its peak (t=180) about 85 req/s.
    let trough = query_at(prom, rps, e + 240).expect("backfilled trough");
    let peak = query_at(prom, rps, e + 180).expect("backfilled peak");
    assert!((28.0..42.0).contains(&trough), "trough {trough}");
    assert!((78.0..92.0).contains(&peak), "peak {peak}");
    // Live: the simulator's pods (2 replicas, ready after 5 s) continue the same cycle.
    let live = h
        .wait_for("live request rate over 15 s of scrapes", MINUTE, || {
            let now = jiff::Timestamp::now().as_second();
            let value = query_at(prom, r#"sum(rate(http_requests_total{namespace="history"}[10s]))"#, now);
            async move { value.filter(|_| now - end.as_second() > 20).map(|v| (now, v)) }
        })
        .await;
    let expected = profile.load_at(Duration::from_secs((live.0 - e - 5).max(0) as u64));
    assert!((live.1 - expected).abs() < 0.25 * expected + 5.0, "live {} vs profile {expected}", live.1);
    done(&h, started);
}

/// A scenario of two replicas of `web` in `namespace` whose simulator has been following `profile` for `ago`:
/// that history is backfilled at one-minute resolution (two steady pods), and the live simulator continues it.
async fn start_with_history(namespace: &str, profile: LoadProfile, ago: Duration) -> Harness {
    let sim_config = foresight_e2e::sim::SimConfig::new(namespace, "web", profile.clone()).started_ago(ago);
    let epoch = sim_config.epoch();
    let history = foresight_e2e::sim::history::openmetrics(
        &sim_config,
        2,
        epoch,
        ago,
        jiff::Timestamp::now(),
        Duration::from_secs(60),
    )
    .expect("history");
    start(Scenario::new(namespace).replicas(2).profile(profile).history(history, ago)).await
}

/// The policy's status once its first scale is in `status.history`: the status write follows the `/scale`
/// patch, so it is waited for rather than read once after the replicas change.
async fn first_scale_in_history(h: &Harness) -> foresight::api::ScalingPolicyStatus {
    h.wait_for("the scale-up in status.history", Duration::from_secs(20), || async {
        h.policy_status().await.filter(|s| !s.history.is_empty())
    })
    .await
}

/// Predictive scaling ahead of a daily peak. The forecaster's seasonal terms are daily and weekly (wall-clock
/// phase), so the cycle is a real day: two days and six hours of history are backfilled and the live
/// simulator continues at the steepest point of the rise, six hours before the peak. Load now (55 req/s over 2
/// pods, 55 % CPU) needs no reactive scaling; the forecast peak (100 req/s at 25 per replica) needs 4.
const PREDICTIVE: &str = r#"
apiVersion: autoscaling.foresight.dev/v1alpha1
kind: ScalingPolicy
metadata: { name: web-predictive }
spec:
  targetRef: { apiVersion: apps/v1, kind: Deployment, name: web }
  minReplicas: 2
  maxReplicas: 8
  interval: 2s
  metrics:
    - name: cpu
      cpu: { container: app, window: 10s }
    - name: rps
      requestRate: { window: 3m }
  policies:
    threshold:
      - metric: cpu
        scaleUpAbove: 70
        scaleUpFor: 10s
        scaleDownBelow: 20
        scaleDownFor: 10s
    predictive:
      metric: rps
      capacityPerReplica: 25
      lookahead: 6h
      history: 3d
      step: 1m
      seasonality: Daily
      mode: Scale
  behavior:
    scaleUp: { stabilizationWindow: 0s }
    scaleDown: { stabilizationWindow: 0s, cooldown: 15s }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn predictive_scales_up_ahead_of_the_daily_peak() {
    let started = Instant::now();
    let day = Duration::from_secs(86_400);
    let profile = LoadProfile::Cycle { base: 10.0, amplitude: 90.0, period: day };
    let ago = 2 * day + day / 4;
    let h = start_with_history("predictive", profile, ago).await;
    h.apply_policy(PREDICTIVE).await.expect("apply policy");

    let replicas = h.wait_for_replicas("scale-up ahead of the forecast peak", MINUTE, |r| r >= 4).await;
    assert!(replicas <= 5, "forecast peak 100 req/s at 25 per replica needs 4, got {replicas}");
    let load = h.sim.load();
    assert!(load < 3.0 * 25.0, "the load ({load} req/s) already needed {replicas} replicas: not ahead of it");
    // The status write and the Event follow the /scale patch: wait for them instead of reading once.
    let status = first_scale_in_history(&h).await;
    assert_eq!(status.history[0].policy, "predictive/rps", "{:?}", status.history);
    let prediction = status.last_evaluation.and_then(|e| e.prediction).expect("prediction in status");
    let forecast = prediction.forecast.expect("forecast");
    assert!((85.0..120.0).contains(&forecast), "forecast peak {forecast} (true peak 100)");
    h.wait_for_event("PredictiveScaleUp", Duration::from_secs(20)).await;
    done(&h, started);
}

/// Predictive scaling ahead of an hourly spike that no fixed daily or weekly cycle describes: a job calls the
/// service at the top of every hour for five minutes (10 -> 100 req/s). With `seasonality: Auto` the forecaster
/// must find the one-hour period in a day of backfilled history and provision for the next spike before it
/// arrives; the live simulator continues the history ten minutes before a spike.
const HOURLY: &str = r#"
apiVersion: autoscaling.foresight.dev/v1alpha1
kind: ScalingPolicy
metadata: { name: web-hourly }
spec:
  targetRef: { apiVersion: apps/v1, kind: Deployment, name: web }
  minReplicas: 2
  maxReplicas: 8
  interval: 2s
  metrics:
    - name: rps
      requestRate: { window: 2m }
  policies:
    predictive:
      metric: rps
      capacityPerReplica: 25
      lookahead: 15m
      history: 1d
      step: 1m
      seasonality: Auto
      mode: Scale
  behavior:
    scaleUp: { stabilizationWindow: 0s }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn predictive_finds_an_hourly_spike_and_provisions_before_it() {
    let started = Instant::now();
    let hour = Duration::from_secs(3600);
    let profile = LoadProfile::Pulses { base: 10.0, height: 90.0, period: hour, width: Duration::from_secs(300) };
    // 24 spikes of history; now is 50 minutes into the hour, the next spike 10 minutes away.
    let ago = 24 * hour + Duration::from_secs(50 * 60);
    let h = start_with_history("hourly", profile, ago).await;
    h.apply_policy(HOURLY).await.expect("apply policy");

    // The spike needs 100 / 25 = 4 replicas; the load now (10 req/s) needs the minimum.
    let replicas = h.wait_for_replicas("scale-up ahead of the hourly spike", MINUTE, |r| r >= 4).await;
    assert!(replicas <= 6, "the spike of 100 req/s at 25 per replica needs 4, got {replicas}");
    let load = h.sim.load();
    assert!(load < 25.0, "the load ({load} req/s) is already the spike's: not ahead of it");
    let status = first_scale_in_history(&h).await;
    assert_eq!(status.history[0].policy, "predictive/rps", "{:?}", status.history);
    let prediction = status.last_evaluation.and_then(|e| e.prediction).expect("prediction in status");
    assert!(prediction.periods.iter().any(|p| p == "1h"), "detected periods {:?}", prediction.periods);
    let forecast = prediction.forecast.expect("forecast");
    assert!((85.0..150.0).contains(&forecast), "forecast peak {forecast} (the spike is 100)");
    done(&h, started);
}

/// An invalid policy never reaches the controller: the CRD's CEL rules refuse it at apply, with a message
/// naming each broken rule. On kind the real API server enforces them; here the fake one does, with the same
/// CEL implementation the CRD tests use (kube-cel), so this also checks the fake keeps that promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_is_rejected_at_apply_by_the_crds_cel_rules() {
    let started = Instant::now();
    let h = start(Scenario::new("invalid-policy").controllers(vec![])).await;
    let invalid = include_str!("../kind/invalid-policy.yaml");
    let err = h.apply_policy(invalid).await.expect_err("the API server accepted minReplicas 5 > maxReplicas 2");
    let foresight_e2e::harness::HarnessError::Kube { source: kube::Error::Api(status), .. } = &err else {
        panic!("expected an API error, got {err}");
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    for rule in ["minReplicas must not be greater than maxReplicas", "scaleUpAbove must be greater than scaleDownBelow"]
    {
        assert!(status.message.contains(rule), "the error does not name {rule:?}: {}", status.message);
    }
    let policies: kube::Api<foresight::api::ScalingPolicy> = kube::Api::namespaced(h.client.clone(), "invalid-policy");
    assert!(policies.get_opt("invalid").await.expect("get").is_none(), "the rejected policy was stored");

    // The same policy made valid is accepted: the rules reject the mistakes, not the policy.
    let fixed = invalid.replace("minReplicas: 5", "minReplicas: 1").replace("scaleUpAbove: 30", "scaleUpAbove: 80");
    h.apply_policy(&fixed).await.expect("the corrected policy is accepted");
    done(&h, started);
}
