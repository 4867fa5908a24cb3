//! End to end on loopback: `serve` in-process on an ephemeral port, `load` against it, then what a Prometheus
//! scrape of `/metrics` would see.

use std::time::Duration;

use foresight_demo_app::load::{self, LoadConfig, LoadReport};
use foresight_demo_app::profile::ProfileSpec;
use foresight_demo_app::server::{self, ErrorRate, ServeConfig};
use reqwest::Url;
use tokio::sync::oneshot;

/// The value of the sample line whose name and labels are exactly `series`, e.g. `http_requests_total{code="200"}`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

async fn scrape(base: &Url) -> String {
    let response = reqwest::get(base.join("metrics").expect("url")).await.expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("body")
}

async fn drive(base: &Url, profile: &str, seconds: f64) -> LoadReport {
    let config = LoadConfig {
        target: base.clone(),
        profile: profile.parse::<ProfileSpec>().expect("profile").resolve(100.0).expect("no file"),
        duration: Duration::from_secs_f64(seconds),
        concurrency: 32,
        timeout: Duration::from_secs(2),
    };
    load::run(config, std::future::pending()).await.expect("load runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shows_up_in_the_scraped_metrics() {
    // The reqwest helpers below build their own clients; the load module installs the TLS provider they need.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = server::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
    let config = ServeConfig {
        cpu_per_request: Duration::from_millis(1),
        error_rate: ErrorRate::new(0.0).expect("valid"),
        latency_base: Duration::from_millis(2),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listener, config, async {
        let _ = stopped.await;
    }));

    for probe in ["healthz", "readyz"] {
        let status = reqwest::get(base.join(probe).expect("url")).await.expect("probe").status();
        assert_eq!(status, 200, "/{probe}");
    }
    let before = scrape(&base).await;
    let ok_before = sample(&before, "http_requests_total{code=\"200\"}");
    assert_eq!(sample(&before, "http_request_duration_seconds_count"), 0.0);

    // 50 req/s for 3 s is 150 requests, less the one the schedule's last tick can miss.
    let report = drive(&base, "constant:50", 3.0).await;
    assert!((140..=155).contains(&report.sent), "{report}");
    assert_eq!(report.ok, report.sent, "no errors at rate 0: {report}");
    assert!((report.achieved_rps() - 50.0).abs() < 5.0, "{report}");

    let after = scrape(&base).await;
    let ok_delta = sample(&after, "http_requests_total{code=\"200\"}") - ok_before;
    assert_eq!(ok_delta, report.ok as f64, "every answered request is counted once");
    assert_eq!(sample(&after, "http_requests_total{code=\"500\"}"), 0.0);
    let observations = sample(&after, "http_request_duration_seconds_count");
    assert_eq!(observations, ok_delta);
    // Each request waits 2 ms and burns 1 ms, so none is under the 1 ms bucket and the sum is at least 3 ms each.
    assert_eq!(sample(&after, "http_request_duration_seconds_bucket{le=\"0.001\"}"), 0.0);
    assert!(sample(&after, "http_request_duration_seconds_sum") >= observations * 0.003);

    // Every request fails once the error rate is 1.0; a bad rate is refused with a message.
    let admin = reqwest::Client::new();
    let refused = admin.post(base.join("admin/errors?rate=2").expect("url")).send().await.expect("admin");
    assert_eq!(refused.status(), 400);
    let set = admin.post(base.join("admin/errors?rate=1.0").expect("url")).send().await.expect("admin");
    assert_eq!(set.status(), 200);
    let failing = drive(&base, "constant:50", 1.0).await;
    assert!(failing.sent >= 40, "{failing}");
    assert_eq!(failing.server_errors, failing.sent, "{failing}");
    let errors = scrape(&base).await;
    assert_eq!(sample(&errors, "http_requests_total{code=\"500\"}"), failing.server_errors as f64);
    assert_eq!(sample(&errors, "http_requests_total{code=\"200\"}") - ok_before, ok_delta, "no new successes");

    stop.send(()).expect("server still running");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("graceful shutdown completes")
        .expect("server task")
        .expect("server exits cleanly");
}
