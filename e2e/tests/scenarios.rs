//! The closed-loop scenarios: the `foresight` binary against the fake API server (or a real cluster, see
//! `foresight_e2e::harness`), a real Prometheus scraping the workload simulator every second.
//!
//! Durations are short (interval 2 s, `for` 10 s, cooldowns 15 s, 5 s start-up) so the whole file runs in a few
//! minutes. Every wait is bounded; on failure the harness prints the timeline and the controller's log tail.
//! Run with `--test-threads=1`: each scenario starts its own Prometheus and controller processes.

use std::time::{Duration, Instant};

use foresight_e2e::harness::{ControllerOptions, Harness, Scenario};
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
    let status = h.policy_status().await.expect("status");
    let up = &status.history[0];
    assert_eq!((up.from, up.to, up.policy.as_str()), (2, 3, "threshold/cpu"), "{up:?}");
    assert!(!h.events_with_reason("ScaledUp").await.is_empty(), "no ScaledUp event");
    // 80 req/s over 3 pods is 53 %: between the bounds, so it stays.
    h.wait_for("the third pod to become ready", Duration::from_secs(20), || async { (h.sim.ready() == 3).then_some(()) })
        .await;

    // 20 req/s over 3 pods is 13 %: below 30 %, so one pod goes, after the cooldown.
    h.sim.set_profile(LoadProfile::Constant(20.0));
    h.wait_for_replicas("scale-in to 2 replicas on CPU below 30 %", MINUTE, |r| r == 2).await;
    let status = h.policy_status().await.expect("status");
    let (down, up) = (&status.history[0], &status.history[1]);
    assert_eq!((down.from, down.to), (3, 2), "{:?}", status.history);
    let gap = down.time.0.duration_since(up.time.0).as_secs_f64();
    assert!(gap >= 15.0, "scaled in {gap}s after scaling out, inside the 15 s cooldown: {:?}", status.history);
    assert!(!h.events_with_reason("ScaledDown").await.is_empty(), "no ScaledDown event");
    done(&h, started);
}
