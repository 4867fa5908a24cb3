//! Sharding at scale: how 5 replicas split 50,000 policies, and how long after one dies every policy is owned
//! by exactly one survivor again.
//!
//! `cargo bench -p foresight-e2e --bench sharding [-- POLICIES REPLICAS SHARDS DURATION GRACE]` (defaults 50000 5
//! 32 15 5: the production lease timing). The real `foresight::shard` managers run against the in-process fake
//! API server. What is measured is ownership, the gate every reconcile checks before it reads or writes: a policy
//! is "evaluated by" the replica whose `Ownership::owns` admits it, and each gained shard triggers an immediate
//! evaluation of its policies in `controller::run`. Reconcile time itself is `controller_scale`'s subject.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use foresight::{
    metrics::Metrics,
    shard::{self, Ownership, ShardConfig, ShardObserver, Sharding},
};
use foresight_e2e::fakeapi::FakeApiServer;

struct Replica {
    ownership: Arc<Ownership>,
    sharding: Sharding,
}

/// For each policy, how many replicas own it now.
fn owners(policies: &[(String, String)], replicas: &[&Replica]) -> Vec<usize> {
    policies.iter().map(|(ns, name)| replicas.iter().filter(|r| r.ownership.owns(ns, name)).count()).collect()
}

/// Waits until every policy has exactly one owner and every replica holds its share of the shards; returns how long it took and the most policies seen with two
/// owners at once (which must be none).
async fn settle(policies: &[(String, String)], replicas: &[&Replica], limit: Duration) -> (Option<Duration>, usize) {
    let from = Instant::now();
    let mut doubly = 0usize;
    while from.elapsed() < limit {
        let o = owners(policies, replicas);
        doubly = doubly.max(o.iter().filter(|&&c| c > 1).count());
        let shards = replicas.first().map_or(1, |r| r.ownership.shards()) as usize;
        let fair = |r: &&Replica| {
            (shards / replicas.len()..=shards.div_ceil(replicas.len())).contains(&r.ownership.held().len())
        };
        if o.iter().all(|&c| c == 1) && replicas.iter().all(fair) {
            return (Some(from.elapsed()), doubly);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (None, doubly)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let arg = |i: usize, default: u64| args.get(i).copied().unwrap_or(default);
    let (count, replicas, shards, duration, grace) = (arg(0, 50_000), arg(1, 5), arg(2, 32), arg(3, 15), arg(4, 5));
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(bench(
        count as usize,
        replicas as usize,
        shards as u32,
        duration,
        grace,
    ))
}

async fn bench(
    count: usize,
    n: usize,
    shards: u32,
    duration: u64,
    grace: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let server = FakeApiServer::new();
    let policies: Vec<(String, String)> =
        (0..count).map(|i| (format!("ns-{}", i % 100), format!("policy-{i}"))).collect();
    let started = Instant::now();
    let mut all: Vec<Replica> = (0..n)
        .map(|i| {
            let config = ShardConfig {
                namespace: "default".into(),
                prefix: "foresight".into(),
                identity: format!("foresight-{i}"),
                shards,
                duration_seconds: duration,
                grace_seconds: grace,
            };
            let ownership = Arc::new(Ownership::new(shards, config.renew_deadline()));
            let observer: Arc<dyn ShardObserver> = Arc::new(Metrics::new());
            let sharding = shard::start(server.client(), config, ownership.clone(), observer);
            Replica { ownership, sharding }
        })
        .collect();

    let limit = Duration::from_secs(10 * duration);
    let (took, doubly) = settle(&policies, &all.iter().collect::<Vec<_>>(), limit).await;
    println!(
        "policies:                 {count} over {shards} shards, {n} replicas, lease {duration}s (stop writing {}s after a renewal)",
        duration - grace
    );
    println!(
        "owned once, balanced:    {:?} from start ({:?}); policies with two owners seen: {doubly}",
        took,
        started.elapsed()
    );
    let per: Vec<usize> =
        all.iter().map(|r| policies.iter().filter(|(ns, p)| r.ownership.owns(ns, p)).count()).collect();
    let shards_per: Vec<usize> = all.iter().map(|r| r.ownership.held().len()).collect();
    println!("policies per replica:     {per:?} (ideal {})", count / n);
    println!("shards per replica:       {shards_per:?}");

    // One replica dies without releasing: time until every policy is owned by exactly one survivor.
    let dead = all.remove(0);
    let orphaned = policies.iter().filter(|(ns, p)| dead.ownership.owns(ns, p)).count();
    dead.sharding.abandon();
    let (took, doubly) = settle(&policies, &all.iter().collect::<Vec<_>>(), limit).await;
    println!("one replica died:         {orphaned} policies orphaned");
    println!("owned once, rebalanced:  {took:?} after the death; policies with two owners seen: {doubly}");
    let per: Vec<usize> =
        all.iter().map(|r| policies.iter().filter(|(ns, p)| r.ownership.owns(ns, p)).count()).collect();
    println!("policies per survivor:    {per:?} (ideal {})", count / (n - 1));
    for r in all {
        r.sharding.stop().await;
    }
    Ok(())
}
