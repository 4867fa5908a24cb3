//! `demo-app load`: offers a request rate that follows a [`Profile`] to one URL, for a bounded time.
//!
//! The generator is open-loop: requests are sent on the profile's schedule whatever the server's latency, as
//! real users would, so a slow server sees more requests in flight rather than fewer requests. In-flight
//! requests are capped by `concurrency`; a request due while the cap is reached is skipped and counted, never
//! queued, so the offered rate stays honest and memory stays bounded. Every request has a timeout, and the run
//! ends after `duration` (or on the stop signal) plus at most one timeout to drain.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Url};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::profile::{Profile, rate_at};

/// The longest the scheduler waits between two looks at the profile, so a rate rising from zero is noticed.
const TICK: f64 = 0.1;

/// What to send, where, and for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: Url,
    pub profile: Profile,
    pub duration: Duration,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("target {0} must be an http:// or https:// URL")]
    TargetScheme(Url),
    #[error("--concurrency must be at least 1")]
    Concurrency,
    #[error("cannot build the HTTP client: {0}")]
    BuildClient(reqwest::Error),
}

/// What a run achieved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub elapsed: Duration,
    /// Requests the profile asked for over the time actually run.
    pub offered: f64,
    /// Requests sent (answered or not).
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Any other status.
    pub other_status: u64,
    /// Connection errors and timeouts.
    pub failed: u64,
    /// Requests due while `concurrency` requests were already in flight.
    pub skipped: u64,
}

impl LoadReport {
    /// Requests sent per second of run time.
    pub fn achieved_rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.sent as f64 / secs } else { 0.0 }
    }

    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Status(s) if s.is_success() => self.ok += 1,
            Outcome::Status(s) if s.is_server_error() => self.server_errors += 1,
            Outcome::Status(_) => self.other_status += 1,
            Outcome::Failed => self.failed += 1,
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ran {:.1}s: offered {:.0} requests, sent {} ({:.1} req/s achieved); {} ok, {} 5xx, {} other status, \
             {} failed (connection/timeout), {} skipped (concurrency limit)",
            self.elapsed.as_secs_f64(),
            self.offered,
            self.sent,
            self.achieved_rps(),
            self.ok,
            self.server_errors,
            self.other_status,
            self.failed,
            self.skipped
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Status(reqwest::StatusCode),
    Failed,
}

/// The number of requests `profile` offers over the first `seconds` of a run (the integral of its rate).
pub fn expected_requests(profile: &Profile, seconds: f64) -> f64 {
    let steps = (seconds / 0.01).ceil().max(1.0) as u64;
    let dt = seconds / steps as f64;
    (0..steps).map(|i| rate_at(profile, (i as f64 + 0.5) * dt) * dt).sum()
}

/// An HTTP client for load: plain HTTP/1.1 keep-alive with a per-request timeout.
pub fn client(timeout: Duration, concurrency: usize) -> Result<Client, LoadError> {
    // reqwest is built without a default TLS crypto provider in this workspace; ring is the one we ship.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(LoadError::BuildClient)
}

/// Runs the profile against the target until `duration` passes or `stop` completes.
pub async fn run(config: LoadConfig, stop: impl Future<Output = ()>) -> Result<LoadReport, LoadError> {
    if !matches!(config.target.scheme(), "http" | "https") {
        return Err(LoadError::TargetScheme(config.target));
    }
    if config.concurrency == 0 {
        return Err(LoadError::Concurrency);
    }
    let client = client(config.timeout, config.concurrency)?;
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let mut inflight: JoinSet<Outcome> = JoinSet::new();
    let mut report = LoadReport::default();
    let run_for = config.duration.as_secs_f64();
    let start = tokio::time::Instant::now();
    let wall = Instant::now();
    // `t` is the schedule in seconds since start; `credit` accumulates the profile's integral, and a request is
    // due each time it reaches one.
    let (mut t, mut credit, mut next_log) = (0.0_f64, 0.0_f64, 10.0_f64);
    tokio::pin!(stop);
    while t < run_for {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep_until(start + Duration::from_secs_f64(t)) => {}
        }
        let rate = rate_at(&config.profile, t);
        if credit >= 1.0 - 1e-9 {
            credit -= 1.0;
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    report.sent += 1;
                    let (client, url) = (client.clone(), config.target.clone());
                    inflight.spawn(async move {
                        let outcome = send(&client, url).await;
                        drop(permit);
                        outcome
                    });
                }
                Err(_) => report.skipped += 1,
            }
        }
        let gap = if rate > 0.0 { (1.0 / rate).min(TICK) } else { TICK };
        credit += rate * gap;
        t += gap;
        while let Some(done) = inflight.try_join_next() {
            report.record(done.unwrap_or(Outcome::Failed));
        }
        if t >= next_log {
            next_log += 10.0;
            tracing::info!(
                t = t.round(),
                target_rps = rate,
                sent = report.sent,
                ok = report.ok,
                server_errors = report.server_errors,
                failed = report.failed,
                "load progress"
            );
        }
    }
    let ran = wall.elapsed();
    // Every request carries a timeout, so draining is bounded; the extra second covers scheduling.
    let drain = async {
        while let Some(done) = inflight.join_next().await {
            report.record(done.unwrap_or(Outcome::Failed));
        }
    };
    if tokio::time::timeout(config.timeout + Duration::from_secs(1), drain).await.is_err() {
        report.failed += inflight.len() as u64;
        inflight.abort_all();
    }
    report.elapsed = ran;
    report.offered = expected_requests(&config.profile, ran.as_secs_f64().min(run_for));
    Ok(report)
}

async fn send(client: &Client, url: Url) -> Outcome {
    match client.get(url).send().await {
        Ok(response) => {
            let status = response.status();
            // Read the body so the connection goes back to the pool.
            match response.bytes().await {
                Ok(_) => Outcome::Status(status),
                Err(_) => Outcome::Failed,
            }
        }
        Err(_) => Outcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileSpec;

    fn profile(s: &str) -> Profile {
        Profile::Shape(s.parse::<ProfileSpec>().expect("valid"))
    }

    #[test]
    fn expected_requests_integrates_the_profile() {
        assert!((expected_requests(&profile("constant:50"), 3.0) - 150.0).abs() < 1e-6);
        assert!((expected_requests(&profile("step:10,30@5"), 10.0) - 200.0).abs() < 1e-6);
        assert!((expected_requests(&profile("ramp:0,100@10"), 10.0) - 500.0).abs() < 1e-6);
        // A full cycle averages (min + max) / 2.
        assert!((expected_requests(&profile("cycle:0,100@60"), 60.0) - 3000.0).abs() < 1e-3);
    }

    #[tokio::test]
    async fn rejects_a_non_http_target() {
        let config = LoadConfig {
            target: Url::parse("ftp://127.0.0.1/").expect("url"),
            profile: profile("constant:1"),
            duration: Duration::from_secs(1),
            concurrency: 1,
            timeout: Duration::from_secs(1),
        };
        let err = run(config, std::future::pending()).await.expect_err("ftp is refused");
        assert!(err.to_string().contains("http://"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_target_counts_failures_and_stops_on_time() {
        // A port that was just free: every connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let config = LoadConfig {
            target: Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url"),
            profile: profile("constant:20"),
            duration: Duration::from_millis(500),
            concurrency: 4,
            timeout: Duration::from_secs(1),
        };
        let report = run(config, std::future::pending()).await.expect("runs");
        assert!(report.sent >= 5, "{report}");
        assert_eq!(report.failed, report.sent, "{report}");
        assert_eq!(report.ok, 0);
        assert!(report.elapsed < Duration::from_secs(2), "{report}");
    }
}
