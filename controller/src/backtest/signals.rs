//! The metrics a policy sees in the simulated cluster, synthesized from the load and the ready pods, as
//! metrics-server and Prometheus would report them.
//!
//! With `u = load / (ready x capacity)`: cpu = memory = 100 x min(u, 1) % (a saturated pod cannot use more
//! than its CPU); requestRate = query = load per second, in the policy's units (see [`Observation::rate_scale`]);
//! errorRate = the load beyond ready capacity, as a
//! fraction of the load; latency = 0.05 s / (1 - min(u, 0.99)), an M/M/1-like curve that is 50 ms when idle
//! and grows steeply near saturation. With no ready pod there is no pod to measure: cpu, memory and latency
//! get no sample (and go stale), while the request counters still count.
//!
//! Each series is a ring of samples covering the policy's lookback, reused between evaluations so a
//! month-long replay does not allocate per evaluation.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::engine::{
    Sample, Series,
    policy::{MetricKind, Policy},
};

/// Base latency of an idle pod, in seconds.
pub const BASE_LATENCY: f64 = 0.05;

/// What the cluster looks like at one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Offered load, per trace step.
    pub load: f64,
    pub ready: u32,
    pub requested: u32,
    /// Load per trace step one pod serves at 100 %.
    pub capacity: f64,
    /// The trace's step in seconds (load / step = load per second).
    pub step_secs: f64,
    /// Multiplier from load per second to the policy's request-rate units. A predictive rule on a request rate
    /// says what one replica serves (`capacityPerReplica`); the simulated replica serves `capacity`, so the
    /// rate is reported as if the trace had been recorded in the policy's units, and every rule on it (the
    /// forecast and an AverageValue target alike) means what it would mean in the user's cluster. 1 when the
    /// policy has no such rule.
    pub rate_scale: f64,
}

impl Observation {
    /// The value a metric of this kind reports, or `None` when no ready pod can report it.
    ///
    /// `starting_pods_at_zero` averages CPU and memory over every requested pod with starting pods at 0 %,
    /// which is how the HPA treats not-yet-ready pods when it considers a scale-up.
    pub fn value(&self, kind: MetricKind, starting_pods_at_zero: bool) -> Option<f64> {
        let per_second = self.load / self.step_secs;
        let ready_capacity = f64::from(self.ready) * self.capacity;
        let u = if self.ready == 0 { f64::INFINITY } else { self.load / ready_capacity };
        match kind {
            MetricKind::RequestRate | MetricKind::Query => Some(per_second * self.rate_scale),
            MetricKind::ErrorRate => {
                Some(if self.load > 0.0 { (self.load - ready_capacity).max(0.0) / self.load } else { 0.0 })
            }
            _ if self.ready == 0 => None,
            MetricKind::Cpu | MetricKind::Memory => {
                let busy = 100.0 * u.min(1.0);
                Some(if starting_pods_at_zero && self.requested > self.ready {
                    busy * f64::from(self.ready) / f64::from(self.requested)
                } else {
                    busy
                })
            }
            MetricKind::Latency => Some(BASE_LATENCY / (1.0 - u.min(0.99))),
        }
    }
}

/// The series of every metric of a policy, over its lookback.
#[derive(Clone, Debug)]
pub struct Signals {
    kinds: Vec<(String, MetricKind)>,
    map: BTreeMap<String, Series>,
    keep_secs: i64,
    starting_pods_at_zero: bool,
}

impl Signals {
    pub fn new(policy: &Policy, starting_pods_at_zero: bool) -> Self {
        let keep_secs = policy.lookback().as_secs() as i64;
        let capacity = (keep_secs / policy.interval.as_secs().max(1) as i64 + 2) as usize;
        Signals {
            kinds: policy.metrics.iter().map(|m| (m.name.clone(), m.kind)).collect(),
            map: policy
                .metrics
                .iter()
                .map(|m| (m.name.clone(), Series::Samples(Vec::with_capacity(capacity))))
                .collect(),
            keep_secs,
            starting_pods_at_zero,
        }
    }

    /// Records every metric at `now` and drops samples older than the lookback.
    pub fn observe(&mut self, now: i64, obs: &Observation) {
        let time = Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH);
        let horizon = Timestamp::from_second(now - self.keep_secs).unwrap_or(Timestamp::UNIX_EPOCH);
        for (name, kind) in &self.kinds {
            let Some(Series::Samples(samples)) = self.map.get_mut(name) else { continue };
            if let Some(value) = obs.value(*kind, self.starting_pods_at_zero) {
                samples.push(Sample::new(time, value));
            }
            let old = samples.iter().take_while(|s| s.time < horizon).count();
            if old > 0 {
                samples.drain(..old);
            }
        }
    }

    pub fn metrics(&self) -> &BTreeMap<String, Series> {
        &self.map
    }
}

/// The forecast metric's past at the predictive rule's step, up to its history: all a forecast may see.
#[derive(Clone, Debug)]
pub struct History {
    samples: Vec<Sample>,
    /// Index of the oldest sample still inside the history.
    first: usize,
    keep_secs: i64,
}

impl History {
    pub fn new(keep_secs: i64, step_secs: i64) -> Self {
        let n = (keep_secs / step_secs.max(1)) as usize + 2;
        History { samples: Vec::with_capacity(2 * n), first: 0, keep_secs }
    }

    pub fn push(&mut self, now: i64, value: f64) {
        let time = Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH);
        self.samples.push(Sample::new(time, value));
        let horizon = now - self.keep_secs;
        while self.first < self.samples.len() && self.samples[self.first].time.as_second() < horizon {
            self.first += 1;
        }
        // Compact once the dropped prefix is as long as the kept part: amortized O(1) per sample.
        if self.first > 0 && self.first >= self.samples.len() - self.first {
            self.samples.drain(..self.first);
            self.first = 0;
        }
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples[self.first..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(load: f64, ready: u32, requested: u32) -> Observation {
        Observation { load, ready, requested, capacity: 100.0, step_secs: 60.0, rate_scale: 1.0 }
    }

    #[test]
    fn metrics_follow_utilization() {
        let o = obs(150.0, 2, 2);
        assert_eq!(o.value(MetricKind::Cpu, false), Some(75.0));
        assert_eq!(o.value(MetricKind::Memory, false), Some(75.0));
        assert_eq!(o.value(MetricKind::RequestRate, false), Some(2.5));
        assert_eq!(o.value(MetricKind::Query, false), Some(2.5));
        assert_eq!(o.value(MetricKind::ErrorRate, false), Some(0.0));
        assert_eq!(o.value(MetricKind::Latency, false), Some(0.2));
        // Overloaded: CPU saturates, a third of the load fails, latency is capped at 100x base.
        let o = obs(300.0, 2, 2);
        assert_eq!(o.value(MetricKind::Cpu, false), Some(100.0));
        assert_eq!(o.value(MetricKind::ErrorRate, false), Some(1.0 / 3.0));
        assert!((o.value(MetricKind::Latency, false).unwrap() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn no_ready_pod_means_no_pod_metrics() {
        let o = obs(50.0, 0, 3);
        assert_eq!(o.value(MetricKind::Cpu, false), None);
        assert_eq!(o.value(MetricKind::Latency, false), None);
        assert_eq!(o.value(MetricKind::ErrorRate, false), Some(1.0));
        assert_eq!(obs(0.0, 0, 0).value(MetricKind::ErrorRate, false), Some(0.0));
    }

    #[test]
    fn hpa_counts_starting_pods_at_zero() {
        let o = obs(200.0, 2, 4);
        assert_eq!(o.value(MetricKind::Cpu, false), Some(100.0));
        assert_eq!(o.value(MetricKind::Cpu, true), Some(50.0));
    }

    #[test]
    fn history_keeps_only_its_window() {
        let mut h = History::new(100, 10);
        for t in (0..=1000).step_by(10) {
            h.push(t, t as f64);
        }
        let s = h.samples();
        assert_eq!(s.first().map(|s| s.value), Some(900.0));
        assert_eq!(s.last().map(|s| s.value), Some(1000.0));
        assert_eq!(s.len(), 11);
    }
}
