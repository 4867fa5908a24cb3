//! The predictive policy end to end on this machine: a week of request-rate history with a daily peak is
//! backfilled into a real Prometheus; the controller's reconcile (fake API server, real Prometheus queries,
//! the same `Predictor` the backtest uses) is stepped minute by minute through the next day's ramp. Replicas
//! must be in place before the load arrives: at every minute they cover the load one look-ahead minus one step
//! later.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use foresight::{
    controller::{self, Context, Sources},
    source::{BreakerConfig, NoopObserver, SourcePool},
};
use foresight_e2e::{
    prometheus::{OpenMetricsBuilder, PromServer, every},
    testkit::{self, T0},
};
use jiff::Timestamp;
use serde_json::json;

const DAY: i64 = 86_400;
const STEP: Duration = Duration::from_secs(60);
const CAPACITY: f64 = 100.0; // req/s per replica
const LOOKAHEAD: i64 = 15 * 60;
const FIT_STEP: i64 = 5 * 60;

/// Offered load in req/s at `t` seconds since T0: 200 at night and a smooth daily bump to 1,000 at 14:00
/// (a raised cosine from 08:00 to 20:00). The same every day.
fn load(t: i64) -> f64 {
    let h = (t.rem_euclid(DAY)) as f64 / 3600.0;
    let bump = if (h - 14.0).abs() < 6.0 { 0.5 * (1.0 + (std::f64::consts::PI * (h - 14.0) / 6.0).cos()) } else { 0.0 };
    200.0 + 800.0 * bump
}

/// Seven days and 16 hours of `http_requests_total` for two pods of Deployment `web`, one sample a minute.
fn history() -> String {
    let points = (7 * DAY + 16 * 3600) as usize / 60;
    let mut b = OpenMetricsBuilder::new();
    for pod in ["web-7c9f8d6b5-aaaaa", "web-7c9f8d6b5-bbbbb"] {
        let labels = [("namespace", "shop"), ("pod", pod), ("code", "200")];
        let mut total = 0.0;
        let samples = every(Timestamp::from_second(T0).unwrap(), STEP, points, |i, _| {
            // Each pod serves half of the load; the counter integrates it minute by minute.
            total += load(i as i64 * 60) / 2.0 * 60.0;
            total
        });
        b = b.counter("http_requests", &labels, samples);
    }
    b.build().expect("valid history")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_rise_ahead_of_the_daily_peak() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prometheus = PromServer::start(&history()).unwrap_or_else(|e| panic!("cannot start Prometheus: {e}"));
    let server = testkit::api_server();
    let client = server.client();
    let (deployments, policies) = testkit::web_deployment(&server, 2).await;
    testkit::create_policy(
        &policies,
        "web",
        json!({
            "targetRef": { "name": "web" },
            "minReplicas": 1,
            "maxReplicas": 30,
            "interval": "1m",
            "metrics": [ { "name": "rps", "requestRate": { "window": "2m" } } ],
            "policies": { "predictive": {
                "metric": "rps", "capacityPerReplica": CAPACITY,
                "lookahead": "15m", "history": "7d", "step": "5m"
            } }
        }),
    )
    .await;

    // A clock the test moves: day 8 from 07:00 to 14:30, one evaluation a minute.
    let now = Arc::new(AtomicI64::new(0));
    let clock_now = now.clone();
    let clock: controller::Clock =
        Arc::new(move || Timestamp::from_second(clock_now.load(Ordering::SeqCst)).expect("valid clock"));
    let pool = Arc::new(SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver)));
    let ctx = Arc::new(
        Context::new(client.clone(), Sources::Pool(pool), Some(prometheus.url()), "predictive-test").with_clock(clock),
    );

    let day8 = 7 * DAY;
    let mut timeline = Vec::new();
    for minute in (7 * 60)..=(14 * 60 + 30) {
        let t = day8 + minute * 60;
        now.store(T0 + t, Ordering::SeqCst);
        let sp = Arc::new(policies.get("web").await.expect("policy"));
        controller::reconcile(sp, ctx.clone()).await.unwrap_or_else(|e| panic!("reconcile at {minute} min: {e}"));
        let replicas = deployments.get("web").await.expect("deployment").spec.and_then(|s| s.replicas).unwrap_or(0);
        timeline.push((t, replicas));
    }

    let status = policies.get("web").await.expect("policy").status.expect("status");
    let prediction = status.last_evaluation.as_ref().and_then(|e| e.prediction.clone()).expect("prediction in status");
    assert!(prediction.used, "{prediction:?}");
    assert!(prediction.samples >= 2000, "fitted on a week at 5m steps: {prediction:?}");
    assert!(prediction.error.is_some_and(|e| e < 0.1), "a clean daily cycle forecasts well: {prediction:?}");

    // At every minute, replicas cover the load (lookahead - step) later: scaled ahead, not after.
    let ahead = LOOKAHEAD - FIT_STEP;
    let report = || {
        timeline
            .iter()
            .map(|(t, r)| format!("{:02}:{:02} load {:>5.0} replicas {r}", (t % DAY) / 3600, (t % 3600) / 60, load(*t)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for &(t, replicas) in &timeline {
        let needed = (load(t + ahead) / CAPACITY).ceil() as i32;
        assert!(replicas >= needed, "at {t}: {replicas} replicas but {needed} needed {ahead}s later\n{}", report());
    }
    // ...and the forecast, not the current load, set them: during the morning ramp replicas exceed what the load
    // of the moment needs.
    let ahead_of_load = timeline.iter().filter(|(t, r)| *r > (load(*t) / CAPACITY).ceil() as i32).count();
    assert!(ahead_of_load > 60, "only {ahead_of_load} minutes ahead of the load\n{}", report());
    let at_peak = timeline.iter().find(|(t, _)| *t == day8 + 14 * 3600).expect("14:00").1;
    assert!(at_peak >= 10, "{}", report());
    assert!(
        status.history.iter().any(|h| h.policy == "predictive/rps"),
        "history names the predictive policy: {:?}",
        status.history
    );
}
