//! The conflict index with many policies and HPAs: how long indexing a LIST takes, what one watch event (a
//! policy's status write) and one verdict (every reconcile) cost, and the resident memory the index adds.
//!
//! `cargo bench -p foresight-e2e --bench conflicts [-- POLICIES]` (default 10,000 policies, as many HPAs on
//! other Deployments, and one Deployment with 14 policies). No API server: the events are fed to the index
//! as the watches deliver them. The memory figure is the growth of the process's resident set while indexing,
//! an upper bound (it includes the parsing's freed allocations the allocator keeps).

use std::time::Instant;

use foresight::{
    api::{RawScalingPolicy, ScalingPolicy},
    controller::conflicts::{Conflicts, Hpa, ScaleTargetOwner},
};
use kube::runtime::watcher::Event;
use serde_json::json;

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn policy(i: usize, target: &str, namespace: &str) -> serde_json::Value {
    json!({
        "apiVersion": "autoscaling.foresight.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": { "name": format!("p-{i}"), "namespace": namespace,
                      "creationTimestamp": format!("2024-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60) },
        "spec": {
            "targetRef": { "name": target },
            "maxReplicas": 10,
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 60 } ] }
        },
        "status": { "currentReplicas": 3, "desiredReplicas": 3 }
    })
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let conflicts = Conflicts::default();
    let before = rss_kib();

    let raws: Vec<RawScalingPolicy> = (0..n)
        .map(|i| {
            // The first 14 share one Deployment; the others each have their own.
            let (target, namespace) = if i < 14 {
                ("shared".to_string(), "ns-0".to_string())
            } else {
                (format!("web-{i}"), format!("ns-{}", i % 100))
            };
            serde_json::from_value(policy(i, &target, &namespace)).expect("policy")
        })
        .collect();
    let hpas: Vec<ScaleTargetOwner<Hpa>> = (0..n)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": { "name": format!("h-{i}"), "namespace": format!("ns-{}", i % 100) },
                "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": format!("api-{i}") },
                          "maxReplicas": 5, "metrics": [] }
            }))
            .expect("hpa")
        })
        .collect();
    let built = rss_kib();

    let mut policies = conflicts.register();
    let mut autoscalers = conflicts.register();
    let started = Instant::now();
    conflicts.observe(&mut policies, &Event::<RawScalingPolicy>::Init);
    for raw in &raws {
        conflicts.observe(&mut policies, &Event::InitApply(raw.clone()));
    }
    conflicts.observe(&mut policies, &Event::<RawScalingPolicy>::InitDone);
    let policy_list = started.elapsed();
    let started = Instant::now();
    conflicts.observe(&mut autoscalers, &Event::<ScaleTargetOwner<Hpa>>::Init);
    for hpa in &hpas {
        conflicts.observe(&mut autoscalers, &Event::InitApply(hpa.clone()));
    }
    conflicts.observe(&mut autoscalers, &Event::<ScaleTargetOwner<Hpa>>::InitDone);
    let hpa_list = started.elapsed();
    let indexed = rss_kib();

    // A status write of every policy: one Apply event each (the spec is parsed again).
    let started = Instant::now();
    for raw in &raws {
        conflicts.observe(&mut policies, &Event::Apply(raw.clone()));
    }
    let per_event = started.elapsed() / n as u32;

    // One verdict per reconcile.
    let typed: Vec<ScalingPolicy> = raws.iter().map(|r| r.parse().expect("parses")).collect();
    let started = Instant::now();
    let mut standing_down = 0;
    for sp in &typed {
        standing_down += usize::from(conflicts.verdict_for(sp).stand_down);
    }
    let per_verdict = started.elapsed() / n as u32;

    let kib = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{} KiB", b.saturating_sub(a)),
        _ => "n/a".into(),
    };
    println!("conflict index: {n} policies (14 on one Deployment), {n} HPAs");
    println!("  index the policy LIST: {policy_list:?} ({:?} per policy)", policy_list / n as u32);
    println!("  index the HPA LIST: {hpa_list:?}");
    println!("  one policy watch event (status write): {per_event:?}");
    println!("  one verdict (per reconcile): {per_verdict:?}");
    println!("  policies standing down: {standing_down} (expected 13)");
    println!("  resident memory: objects {}, index {}", kib(before, built), kib(built, indexed));
}
