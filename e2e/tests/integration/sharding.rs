//! Sharding (`foresight::shard`) between controller replicas on the fake API server's Leases: replicas split
//! the shards evenly, never hold one shard together, take over a dead replica's shards once its Leases expire,
//! and a new replica takes only its share. The last test runs the real reconcile loop in three replicas and
//! checks that each policy is evaluated by exactly one of them, before and after one dies.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use foresight::{
    api::ScalingPolicy,
    controller::{Context, ReconcileObserver, Sources},
    engine::{Forecast, Policy, Recommendation},
    metrics::Metrics,
    shard::{self, Ownership, ShardConfig, ShardObserver, Sharding},
    source::{InMemorySource, Sample},
};
use foresight_e2e::{
    fakeapi::{FakeApiServer, fixtures::deployment},
    testkit::{self, NAMESPACE, RunningController},
};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};

const SHARDS: u32 = 12;
const DURATION: u64 = 2;
const GRACE: u64 = 1;

struct Replica {
    identity: String,
    ownership: Arc<Ownership>,
    metrics: Arc<Metrics>,
    sharding: Sharding,
}

fn config(identity: &str) -> ShardConfig {
    ShardConfig {
        namespace: "default".into(),
        prefix: "foresight".into(),
        identity: identity.into(),
        shards: SHARDS,
        duration_seconds: DURATION,
        grace_seconds: GRACE,
    }
}

fn replica(server: &FakeApiServer, identity: &str) -> Replica {
    let config = config(identity);
    let ownership = Arc::new(Ownership::new(SHARDS, config.renew_deadline()));
    let metrics = Arc::new(Metrics::new());
    let observer: Arc<dyn ShardObserver> = metrics.clone();
    let sharding = shard::start(server.client(), config, ownership.clone(), observer);
    Replica { identity: identity.into(), ownership, metrics, sharding }
}

/// Which replica holds each shard now; fails if two hold the same one.
fn assignment(replicas: &[&Replica]) -> BTreeMap<u32, String> {
    let mut owners = BTreeMap::new();
    for r in replicas {
        for s in r.ownership.held() {
            if let Some(other) = owners.insert(s, r.identity.clone()) {
                panic!("shard {s} held by both {other} and {}", r.identity);
            }
        }
    }
    owners
}

/// Waits (up to `limit`) until every shard is held and each replica holds `SHARDS / N` or one more; checks at
/// every poll that no shard has two holders. Returns how long it took.
async fn balanced(replicas: &[&Replica], limit: Duration) -> Duration {
    let started = Instant::now();
    let n = replicas.len() as u32;
    while started.elapsed() < limit {
        let owners = assignment(replicas);
        let even = replicas.iter().all(|r| {
            let held = r.ownership.held().len() as u32;
            held == SHARDS / n || held == SHARDS / n + 1
        });
        if owners.len() == SHARDS as usize && even {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts: Vec<(String, usize)> =
        replicas.iter().map(|r| (r.identity.clone(), r.ownership.held().len())).collect();
    panic!("shards not balanced over {n} replicas within {limit:?}: {counts:?}");
}

/// Watches for `period` that no shard ever has two holders.
async fn never_shared(replicas: &[&Replica], period: Duration) {
    let started = Instant::now();
    while started.elapsed() < period {
        assignment(replicas);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_split_the_shards_and_survivors_take_over_a_dead_ones() {
    let server = FakeApiServer::new();
    let (a, b, c) = (replica(&server, "foresight-a"), replica(&server, "foresight-b"), replica(&server, "foresight-c"));
    let took = balanced(&[&a, &b, &c], Duration::from_secs(20)).await;
    println!("3 replicas balanced {SHARDS} shards after {took:?}");
    never_shared(&[&a, &b, &c], Duration::from_secs(3)).await;
    balanced(&[&a, &b, &c], Duration::from_millis(1)).await;
    for r in [&a, &b, &c] {
        let text = r.metrics.encode().expect("metrics");
        for s in 0..SHARDS {
            let line = format!("foresight_shard_held{{shard=\"{s}\"}} {}", i32::from(r.ownership.holds(s)));
            assert!(text.contains(&line), "{} misses {line:?}", r.identity);
        }
    }

    // c dies without releasing anything: a and b take its shards once its Leases expire.
    let orphaned = c.ownership.held();
    c.sharding.abandon();
    let died = Instant::now();
    let took = balanced(&[&a, &b], Duration::from_secs(4 * DURATION)).await;
    println!("survivors hold all {SHARDS} shards {took:?} after a replica died (lease duration {DURATION}s)");
    assert!(took >= Duration::from_millis(500), "the dead replica's Leases were taken before they could expire");
    let owners = assignment(&[&a, &b]);
    assert!(orphaned.iter().all(|s| owners.contains_key(s)), "{orphaned:?} not all taken over: {owners:?}");
    assert!(died.elapsed() < Duration::from_secs(4 * DURATION));
    never_shared(&[&a, &b], Duration::from_secs(2)).await;

    a.sharding.stop().await;
    assert!(a.ownership.held().is_empty(), "a stopped replica holds nothing");
    balanced(&[&b], Duration::from_secs(4 * DURATION)).await;
    b.sharding.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_takes_only_its_share() {
    let server = FakeApiServer::new();
    let (a, b, c) = (replica(&server, "foresight-a"), replica(&server, "foresight-b"), replica(&server, "foresight-c"));
    balanced(&[&a, &b, &c], Duration::from_secs(20)).await;
    let before = assignment(&[&a, &b, &c]);

    let d = replica(&server, "foresight-d");
    let took = balanced(&[&a, &b, &c, &d], Duration::from_secs(20)).await;
    let after = assignment(&[&a, &b, &c, &d]);
    let moved: BTreeSet<u32> = (0..SHARDS).filter(|s| before.get(s) != after.get(s)).collect();
    println!("a 4th replica balanced after {took:?}; {} of {SHARDS} shards moved: {moved:?}", moved.len());
    let to_d: BTreeSet<u32> = d.ownership.held().into_iter().collect();
    assert_eq!(moved, to_d, "only the shards the new replica took changed hands");
    assert_eq!(moved.len() as u32, SHARDS / 4, "the new replica took its quarter and no more moved");
    for r in [a, b, c, d] {
        r.sharding.stop().await;
    }
}

/// Every evaluation, by policy: which replica, when.
#[derive(Default)]
struct Evaluations {
    by: Mutex<Vec<(String, String, Instant)>>,
}

struct Counting {
    identity: String,
    log: Arc<Evaluations>,
}

impl ReconcileObserver for Counting {
    fn reconciled(&self, _: &'static str, _: f64) {}
    fn evaluated(&self, _: &str, name: &str, _: &Policy, _: &Recommendation, _: Option<&Forecast>) {
        let mut by = self.log.by.lock().unwrap_or_else(|p| p.into_inner());
        by.push((name.to_string(), self.identity.clone(), Instant::now()));
    }
    fn scaled(&self, _: &str, _: &str, _: &'static str) {}
    fn policies_managed(&self, _: usize) {}
    fn forgotten(&self, _: &str, _: &str) {}
}

impl Evaluations {
    /// For each policy, the replicas that evaluated it in `[from, to)`.
    fn evaluators(&self, from: Instant, to: Instant) -> HashMap<String, BTreeSet<String>> {
        let by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (policy, replica, at) in by.iter().filter(|(_, _, at)| *at >= from && *at < to) {
            let _ = at;
            out.entry(policy.clone()).or_default().insert(replica.clone());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_is_evaluated_by_exactly_one_replica_before_and_after_one_dies() {
    const POLICIES: usize = 30;
    let server = testkit::api_server();
    let client = server.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let policies: Api<ScalingPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    let source = Arc::new(InMemorySource::new());
    let now = Timestamp::now();
    source.set("load", (-40..=400).map(|i| Sample::new(now + jiff::SignedDuration::from_secs(15 * i), 50.0)).collect());
    for i in 0..POLICIES {
        let name = format!("app-{i}");
        deployments.create(&PostParams::default(), &deployment(&name, 2)).await.expect("deployment");
        let spec = serde_json::json!({
            "targetRef": { "name": name },
            "maxReplicas": 10,
            "interval": "1s",
            "metrics": [ { "name": "load", "query": { "promql": "load" } } ],
            "policies": { "target": [ { "metric": "load", "value": 50 } ] }
        });
        testkit::create_policy(&policies, &name, spec).await;
    }

    let log = Arc::new(Evaluations::default());
    let start = |identity: &str| -> (Replica, RunningController) {
        let r = replica(&server, identity);
        let telemetry = Arc::new(Counting { identity: identity.into(), log: log.clone() });
        let ctx =
            Context::new(client.clone(), Sources::Fixed(source.clone()), Some("http://unused:9090".into()), identity)
                .with_telemetry(telemetry)
                .with_shards(r.ownership.clone());
        let running = testkit::spawn_controller(Arc::new(ctx), &[NAMESPACE], 8);
        (r, running)
    };
    let (a, run_a) = start("foresight-a");
    let (b, run_b) = start("foresight-b");
    let (c, run_c) = start("foresight-c");
    balanced(&[&a, &b, &c], Duration::from_secs(20)).await;
    // A settling interval, then three intervals in which every policy must be evaluated, each by one replica.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(assignment(&[&a, &b, &c]).len(), SHARDS as usize, "the shards stayed put");
    let evaluators = log.evaluators(from, Instant::now());
    assert_eq!(evaluators.len(), POLICIES, "every policy was evaluated: {evaluators:?}");
    for (policy, by) in &evaluators {
        assert_eq!(by.len(), 1, "{policy} evaluated by {by:?}");
        let owner = [&a, &b, &c].into_iter().find(|r| r.ownership.owns(NAMESPACE, policy)).map(|r| r.identity.clone());
        assert_eq!(by.iter().next().cloned(), owner, "{policy} evaluated by the holder of its shard");
    }

    // c dies (its loop and its Lease renewals stop, nothing released): its policies go to a and b.
    c.sharding.abandon();
    run_c.stop().await;
    let died = Instant::now();
    balanced(&[&a, &b], Duration::from_secs(4 * DURATION)).await;
    let taken_over = died.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let evaluators = log.evaluators(from, Instant::now());
    assert_eq!(evaluators.len(), POLICIES, "every policy is evaluated again: {evaluators:?}");
    for (policy, by) in &evaluators {
        assert_eq!(by.len(), 1, "{policy} evaluated by {by:?} after the failover");
        assert!(!by.contains("foresight-c"), "{policy} evaluated by the dead replica");
    }
    println!("survivors took over after {taken_over:?}");
    run_a.stop().await;
    run_b.stop().await;
    a.sharding.stop().await;
    b.sharding.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_renewing_stops_writing_before_its_leases_expire() {
    let server = FakeApiServer::new();
    let a = replica(&server, "foresight-a");
    balanced(&[&a], Duration::from_secs(10)).await;
    let ownership = a.ownership.clone();
    // The manager hangs (no more renewals) while the reconcile loop, holding `ownership`, goes on.
    a.sharding.abandon();
    let stopped = Instant::now();
    while !ownership.held().is_empty() {
        assert!(stopped.elapsed() < Duration::from_secs(DURATION), "still writing a lease duration later");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fenced_after = stopped.elapsed();
    // At this moment every shard Lease is still valid: nobody else could have taken one yet.
    let now = Timestamp::now();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(server.client(), "default");
    let shards: Vec<_> = leases
        .list(&Default::default())
        .await
        .expect("leases")
        .items
        .into_iter()
        .filter(|l| l.metadata.name.as_deref().is_some_and(|n| n.starts_with("foresight-shard-")))
        .collect();
    assert_eq!(shards.len(), SHARDS as usize);
    for lease in &shards {
        let spec = lease.spec.as_ref().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("foresight-a"));
        let renewed = spec.renew_time.as_ref().expect("renewTime").0;
        let expires = renewed + jiff::SignedDuration::from_secs(DURATION as i64);
        assert!(expires > now, "{:?} expired before its holder stopped writing", lease.metadata.name);
    }
    println!("a replica that stopped renewing stopped writing after {fenced_after:?} (lease duration {DURATION}s)");
}
