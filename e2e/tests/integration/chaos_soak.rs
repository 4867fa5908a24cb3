//! The chaos soak (issue #10): many policies in several namespaces against the fake API server and a real
//! Prometheus, with random faults from one seeded RNG (Prometheus killed, refused, tarpitted, 5xx, 429, garbage
//! and oversized answers; 409/500 on /scale and status writes; API connections and watches cut; the controller
//! SIGKILLed mid-scale; hostile policies created and deleted), then a fault-free phase, with the invariants checked
//! every second (see `foresight_e2e::chaos::soak`). 3 minutes by default; `FORESIGHT_SOAK_SECS` runs longer and
//! `FORESIGHT_SOAK_SEED` replays a run.

use foresight_e2e::chaos::{SoakConfig, soak};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_keeps_every_invariant() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = SoakConfig::from_env();
    let seed = config.seed;
    let report = soak::run(config).await.unwrap_or_else(|e| panic!("the soak could not start (seed {seed}): {e:#}"));
    println!("{report}");
    assert!(report.checks > 1000, "too few invariant checks to mean anything: {}", report.checks);
    assert!(report.scale_downs > 0 && report.scale_ups > 0, "the load never moved replicas both ways:\n{report}");
    assert!(
        report.violations.is_empty(),
        "{} invariant violations; {}={seed} to replay\n{report}\ncontroller log tail:\n{}",
        report.violations.len(),
        soak::SEED_ENV,
        report.log_tail
    );
}
