//! Leader election (`foresight::leader`, kube-lease-manager) between two controller replicas on the fake API
//! server's Lease: exactly one leads; when it stops (lease released) or dies (lease left to expire), the other
//! takes over, and a deposed leader's flag, which gates every write, is cleared.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use foresight::{
    leader::{self, Election, LeaseConfig},
    metrics::Metrics,
};
use foresight_e2e::fakeapi::FakeApiServer;

struct Replica {
    flag: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    election: Election,
}

impl Replica {
    fn leads(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

async fn replica(server: &FakeApiServer, identity: &str) -> Replica {
    let config = LeaseConfig {
        duration_seconds: 2,
        grace_seconds: 1,
        ..LeaseConfig::new("default", "foresight-leader", identity)
    };
    let flag = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new());
    let election =
        leader::start(server.client(), &config, flag.clone(), metrics.clone()).await.expect("election starts");
    Replica { flag, metrics, election }
}

/// Waits up to `within` for `check`, polling every 50 ms; returns how long it took.
async fn within(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_leads_and_the_other_takes_over_when_it_stops() {
    let server = FakeApiServer::new();
    let a = replica(&server, "foresight-a").await;
    let b = replica(&server, "foresight-b").await;

    within("a leader", Duration::from_secs(10), || a.leads() || b.leads()).await;
    // Several lease periods later, still exactly one.
    for _ in 0..30 {
        assert!(a.leads() != b.leads(), "exactly one replica leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, standby) = if a.leads() { (a, b) } else { (b, a) };
    assert!(leader.metrics.encode().expect("metrics").contains("foresight_leader 1"));
    assert!(standby.metrics.encode().expect("metrics").contains("foresight_leader 0"));

    let flag = leader.flag.clone();
    leader.election.stop().await;
    assert!(!flag.load(Ordering::SeqCst), "a stopped replica no longer leads");
    let took = within("the standby to take over", Duration::from_secs(10), || standby.leads()).await;
    println!("takeover after a released lease: {took:?}");
    standby.election.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_after_its_lease_expires() {
    let server = FakeApiServer::new();
    let a = replica(&server, "foresight-a").await;
    within("a to lead", Duration::from_secs(10), || a.leads()).await;
    let b = replica(&server, "foresight-b").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.leads(), "the lease is held");

    a.election.abandon();
    let took = within("the standby to take over", Duration::from_secs(15), || b.leads()).await;
    println!("takeover after a crash: {took:?}");
    b.election.stop().await;
}
