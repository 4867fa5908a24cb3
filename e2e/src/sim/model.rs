//! The workload model: pure functions from (load, ready pods) to what each pod's exporters would report.
//!
//! ```text
//!   load_at(t) req/s ──► ÷ ready pods ──► offered per pod ──► served = min(offered, capacity)
//!                                                              │        └─► 500s = overflow + extra errors
//!                                                              ├─► CPU cores = served × cpu-seconds/request
//!                                                              └─► utilization ρ ──► latency ~ Exp(base / (1 − ρ))
//! ```
//!
//! Latency follows an M/M/1 queue: response times are exponential with mean `base / (1 − ρ)`, so the p99 is
//! `ln 100 × mean` and grows sharply as utilization approaches 1. No I/O, no clock: the simulator runtime
//! integrates these rates over real time.

use std::time::Duration;

/// A load profile in requests per second, as a pure function of the time since the simulation started.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadProfile {
    /// The same rate all the time.
    Constant(f64),
    /// `initial` until the first step, then each step's rate from its offset on (offsets ascending).
    Steps { initial: f64, steps: Vec<(Duration, f64)> },
    /// From `from` to `to` linearly over `over`, starting at `start`; `to` afterwards.
    Ramp { from: f64, to: f64, start: Duration, over: Duration },
    /// A repeating cycle: `base + amplitude × (1 − cos(2π t / period)) / 2`, so it starts at its trough `base`
    /// and peaks at `base + amplitude` half a period later (a daily cycle compressed into `period`).
    Cycle { base: f64, amplitude: f64, period: Duration },
    /// `base`, plus `height` for `width` at the start of every `period` (an hourly cron job, a bot that calls
    /// at fixed minutes past the hour): pulse `k` covers `[k × period, k × period + width)`.
    Pulses { base: f64, height: f64, period: Duration, width: Duration },
}

impl LoadProfile {
    /// Requests per second at `t` after the start; never negative.
    pub fn load_at(&self, t: Duration) -> f64 {
        let rate = match self {
            Self::Constant(rate) => *rate,
            Self::Steps { initial, steps } => {
                steps.iter().take_while(|(at, _)| *at <= t).last().map_or(*initial, |(_, rate)| *rate)
            }
            Self::Ramp { from, to, start, over } => {
                if t <= *start {
                    *from
                } else if over.is_zero() || t >= *start + *over {
                    *to
                } else {
                    let done = (t - *start).as_secs_f64() / over.as_secs_f64();
                    from + (to - from) * done
                }
            }
            Self::Cycle { base, amplitude, period } => {
                if period.is_zero() {
                    *base
                } else {
                    let phase = t.as_secs_f64() / period.as_secs_f64() * std::f64::consts::TAU;
                    base + amplitude * (1.0 - phase.cos()) / 2.0
                }
            }
            Self::Pulses { base, height, period, width } => {
                if period.is_zero() {
                    *base
                } else {
                    let into = t.as_secs_f64() % period.as_secs_f64();
                    if into < width.as_secs_f64() { base + height } else { *base }
                }
            }
        };
        if rate.is_finite() { rate.max(0.0) } else { 0.0 }
    }
}

/// How one pod of the workload behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct PodModel {
    /// CPU seconds each request costs.
    pub cpu_seconds_per_request: f64,
    /// The CPU limit: a pod never uses more cores than this, and serves at most `limit / cost` req/s.
    pub cpu_limit_cores: f64,
    /// `kube_pod_container_resource_requests{resource="cpu"}`.
    pub cpu_request_cores: f64,
    /// `kube_pod_container_resource_requests{resource="memory"}`.
    pub memory_request_bytes: f64,
    /// Working set of an idle pod.
    pub memory_base_bytes: f64,
    /// Extra working set per request per second being served.
    pub memory_bytes_per_rps: f64,
    /// Mean response time of an idle pod, in seconds.
    pub base_latency_seconds: f64,
}

impl Default for PodModel {
    /// 10 ms of CPU per request, 0.5 cores requested, 1 core limit (at most 100 req/s per pod, 50 req/s is
    /// 100 % of the request), 256 MiB requested, 20 ms mean latency when idle.
    fn default() -> Self {
        Self {
            cpu_seconds_per_request: 0.01,
            cpu_limit_cores: 1.0,
            cpu_request_cores: 0.5,
            memory_request_bytes: 256.0 * 1024.0 * 1024.0,
            memory_base_bytes: 64.0 * 1024.0 * 1024.0,
            memory_bytes_per_rps: 512.0 * 1024.0,
            base_latency_seconds: 0.02,
        }
    }
}

/// The histogram buckets of `http_request_duration_seconds` (the Prometheus client defaults).
pub const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Utilization is capped here so that the mean latency stays finite when a pod is saturated.
pub const MAX_UTILIZATION: f64 = 0.98;

/// What one ready pod reports while the workload receives `load` req/s spread over `ready` pods.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRates {
    /// Requests offered to this pod per second.
    pub offered_rps: f64,
    /// Requests answered 200 per second.
    pub ok_rps: f64,
    /// Requests answered 500 per second (overflow beyond capacity plus the extra error fraction).
    pub error_rps: f64,
    /// CPU cores in use (the rate of `container_cpu_usage_seconds_total`).
    pub cpu_cores: f64,
    /// `container_memory_working_set_bytes`.
    pub memory_bytes: f64,
    /// Served requests over capacity, capped at [`MAX_UTILIZATION`].
    pub utilization: f64,
    /// Mean response time in seconds.
    pub mean_latency_seconds: f64,
}

impl PodModel {
    /// Requests per second one pod serves at its CPU limit.
    pub fn capacity_rps(&self) -> f64 {
        if self.cpu_seconds_per_request > 0.0 { self.cpu_limit_cores / self.cpu_seconds_per_request } else { f64::MAX }
    }

    /// Rates for each of `ready` pods under `load` req/s with `extra_error_fraction` of served requests
    /// failing regardless of load. With no ready pod there is nothing to report (`None`).
    pub fn rates(&self, load: f64, ready: usize, extra_error_fraction: f64) -> Option<PodRates> {
        if ready == 0 {
            return None;
        }
        let offered = load.max(0.0) / ready as f64;
        let capacity = self.capacity_rps();
        let served = offered.min(capacity);
        let extra = extra_error_fraction.clamp(0.0, 1.0);
        let utilization = if capacity > 0.0 { (served / capacity).min(MAX_UTILIZATION) } else { MAX_UTILIZATION };
        Some(PodRates {
            offered_rps: offered,
            ok_rps: served * (1.0 - extra),
            error_rps: (offered - served) + served * extra,
            cpu_cores: served * self.cpu_seconds_per_request,
            memory_bytes: self.memory_base_bytes + served * self.memory_bytes_per_rps,
            utilization,
            mean_latency_seconds: self.base_latency_seconds / (1.0 - utilization),
        })
    }
}

/// The fraction of requests at or below `le` seconds when response times are exponential with `mean`.
pub fn latency_cdf(le: f64, mean: f64) -> f64 {
    if mean <= 0.0 { 1.0 } else { 1.0 - (-le / mean).exp() }
}

/// The `q` quantile of exponential response times with `mean` (what `histogram_quantile` approximates).
pub fn latency_quantile(q: f64, mean: f64) -> f64 {
    -mean * (1.0 - q.clamp(0.0, 0.999_999)).ln()
}

/// Kubernetes' alphabet for generated name suffixes (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A Deployment pod's name, `<deployment>-<10 hex>-<5 alnum>`, as the ReplicaSet controller would choose it:
/// the template hash is derived from the Deployment's name, the suffix from `serial`.
pub fn pod_name(deployment: &str, serial: u64) -> String {
    let hash = splitmix64(fnv1a(deployment.as_bytes()));
    let mut suffix = String::with_capacity(5);
    let mut bits = splitmix64(hash ^ serial.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for _ in 0..5 {
        suffix.push(char::from(SUFFIX_ALPHABET[(bits % SUFFIX_ALPHABET.len() as u64) as usize]));
        bits /= SUFFIX_ALPHABET.len() as u64;
    }
    format!("{deployment}-{:010x}-{suffix}", hash & 0xff_ffff_ffff)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn profiles_give_the_rate_at_each_time() {
        let steps = LoadProfile::Steps { initial: 10.0, steps: vec![(s(5), 50.0), (s(10), 20.0)] };
        let got: Vec<f64> = [0, 4, 5, 9, 10, 100].map(|t| steps.load_at(s(t))).to_vec();
        assert_eq!(got, [10.0, 10.0, 50.0, 50.0, 20.0, 20.0]);

        let ramp = LoadProfile::Ramp { from: 0.0, to: 100.0, start: s(10), over: s(20) };
        let got: Vec<f64> = [0, 10, 20, 30, 40].map(|t| ramp.load_at(s(t))).to_vec();
        assert_eq!(got, [0.0, 0.0, 50.0, 100.0, 100.0]);

        let cycle = LoadProfile::Cycle { base: 20.0, amplitude: 80.0, period: s(120) };
        assert!((cycle.load_at(s(0)) - 20.0).abs() < 1e-9);
        assert!((cycle.load_at(s(60)) - 100.0).abs() < 1e-9, "peak half a period in");
        assert!((cycle.load_at(s(30)) - 60.0).abs() < 1e-9);
        assert!((cycle.load_at(s(180)) - 100.0).abs() < 1e-9, "repeats");

        let pulses = LoadProfile::Pulses { base: 10.0, height: 90.0, period: s(3600), width: s(300) };
        let got: Vec<f64> = [0, 299, 300, 3599, 3600, 3899, 3900].map(|t| pulses.load_at(s(t))).to_vec();
        assert_eq!(got, [100.0, 100.0, 10.0, 10.0, 100.0, 100.0, 10.0]);

        assert_eq!(LoadProfile::Constant(-3.0).load_at(s(1)), 0.0, "never negative");
        assert_eq!(LoadProfile::Constant(f64::NAN).load_at(s(1)), 0.0);
    }

    #[test]
    fn per_pod_cpu_is_load_over_ready_pods_and_saturates_at_the_limit() {
        let model = PodModel::default();
        let two = model.rates(70.0, 2, 0.0).expect("ready pods");
        assert!((two.cpu_cores - 0.35).abs() < 1e-9, "35 req/s × 10 ms = 0.35 cores: {two:?}");
        assert_eq!(two.error_rps, 0.0);
        let seven = model.rates(70.0, 7, 0.0).expect("ready pods");
        assert!((seven.cpu_cores - 0.1).abs() < 1e-9);

        let overloaded = model.rates(300.0, 2, 0.0).expect("ready pods");
        assert!((overloaded.cpu_cores - 1.0).abs() < 1e-9, "capped at the 1-core limit");
        assert!((overloaded.ok_rps - 100.0).abs() < 1e-9);
        assert!((overloaded.error_rps - 50.0).abs() < 1e-9, "what exceeds capacity fails");
        assert!(model.rates(10.0, 0, 0.0).is_none());
    }

    #[test]
    fn extra_errors_are_a_fraction_of_served_requests() {
        let rates = PodModel::default().rates(20.0, 1, 0.05).expect("ready");
        let fraction = rates.error_rps / (rates.ok_rps + rates.error_rps);
        assert!((fraction - 0.05).abs() < 1e-9, "{rates:?}");
    }

    #[test]
    fn latency_grows_as_utilization_approaches_one() {
        let model = PodModel::default();
        let p99 = |load: f64| latency_quantile(0.99, model.rates(load, 1, 0.0).expect("ready").mean_latency_seconds);
        let (idle, half, busy, saturated) = (p99(1.0), p99(50.0), p99(90.0), p99(500.0));
        assert!(idle < half && half < busy && busy < saturated, "{idle} {half} {busy} {saturated}");
        assert!(half < 0.25, "half-loaded p99 {half}");
        assert!(busy > 0.5, "90 % loaded p99 {busy}");
        assert!(saturated.is_finite());
    }

    #[test]
    fn cdf_and_quantile_agree() {
        let mean = 0.1;
        let q = latency_quantile(0.99, mean);
        assert!((latency_cdf(q, mean) - 0.99).abs() < 1e-9);
        assert_eq!(latency_cdf(1.0, 0.0), 1.0);
    }

    #[test]
    fn pod_names_have_the_deployment_shape() {
        let re = regex::Regex::new(r"^web-[0-9a-f]{10}-[bcdfghjklmnpqrstvwxz2456789]{5}$").expect("regex");
        let names: Vec<String> = (0..50).map(|i| pod_name("web", i)).collect();
        for name in &names {
            assert!(re.is_match(name), "{name}");
        }
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "suffixes repeat");
        assert_eq!(names[0].split('-').nth(1), pod_name("web", 99).split('-').nth(1), "one template hash");
        assert_eq!(pod_name("web", 7), pod_name("web", 7), "deterministic");
    }
}
