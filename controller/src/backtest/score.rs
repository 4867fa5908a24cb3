//! What a strategy cost and what it broke, accumulated tick by tick.

use std::collections::VecDeque;

use serde::Serialize;

/// Two scale actions in opposite directions this close together are a flap.
pub const FLAP_WINDOW_SECS: i64 = 600;

/// The scores of one strategy over one trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    pub name: String,
    /// Every requested replica, ready or starting, for the whole trace.
    pub replica_hours: f64,
    /// replica_hours over the oracle's (1.0 = as cheap as perfect foresight).
    pub cost_vs_oracle: f64,
    /// Minutes with more load than the ready replicas can serve.
    pub violation_minutes: f64,
    /// violation_minutes over the trace's length.
    pub violation_fraction: f64,
    /// Load beyond ready capacity over all load.
    pub dropped_load_fraction: f64,
    pub scale_actions: u64,
    /// Scale actions that reverse the previous one within 10 minutes.
    pub flaps: u64,
    pub max_replicas: u32,
    /// Predictive policies: the fraction of evaluations whose provisioned forecast (peak plus margin) was at or
    /// above the highest load of the forecast metric that then arrived within the look-ahead (what the policy's
    /// `coverage` asks for). `None` without forecasts.
    pub forecast_coverage: Option<f64>,
}

/// Accumulates scores over ticks of equal length.
#[derive(Clone, Debug, Default)]
pub struct Scorer {
    tick_secs: f64,
    replica_secs: f64,
    violation_secs: f64,
    total_secs: f64,
    excess_load: f64,
    total_load: f64,
    actions: u64,
    flaps: u64,
    max_replicas: u32,
    last_action: Option<(i64, bool)>,
    coverage: Coverage,
}

/// Checks each provisioned forecast against the forecast metric's samples in its look-ahead.
#[derive(Clone, Debug, Default)]
struct Coverage {
    /// (made at, look-ahead ends, provisioned, highest sample so far), oldest first.
    pending: VecDeque<(i64, i64, f64, f64)>,
    covered: u64,
    windows: u64,
}

impl Scorer {
    pub fn new(tick_secs: i64, initial_replicas: u32) -> Self {
        Scorer { tick_secs: tick_secs as f64, max_replicas: initial_replicas, ..Scorer::default() }
    }

    /// Scores one tick: `load` (per trace step) against `ready` pods of `capacity` each.
    pub fn tick(&mut self, load: f64, requested: u32, ready: u32, capacity: f64) {
        let served = f64::from(ready) * capacity;
        let excess = load - served;
        // A relative tolerance, so that load exactly at capacity (after float division) is not a violation.
        if excess > 1e-9 * load.max(1.0) {
            self.violation_secs += self.tick_secs;
            self.excess_load += excess * self.tick_secs;
        }
        self.total_load += load * self.tick_secs;
        self.replica_secs += f64::from(requested) * self.tick_secs;
        self.total_secs += self.tick_secs;
        self.max_replicas = self.max_replicas.max(requested);
    }

    /// A forecast made at `now` provisions for `provisioned` (peak plus margin, in the forecast metric's unit)
    /// over `(now, now + lookahead_secs]`.
    pub fn provisioned(&mut self, now: i64, lookahead_secs: i64, provisioned: f64) {
        self.coverage.pending.push_back((now, now + lookahead_secs.max(0), provisioned, f64::NEG_INFINITY));
    }

    /// A sample of the forecast metric at `t`: it counts in every pending look-ahead that holds `t`, and closes
    /// those that end by `t`. A look-ahead that received no sample is not counted.
    pub fn forecast_metric(&mut self, t: i64, value: f64) {
        let c = &mut self.coverage;
        for w in c.pending.iter_mut() {
            if t > w.0 && t <= w.1 {
                w.3 = w.3.max(value);
            }
        }
        while let Some(&(_, end, provisioned, seen)) = c.pending.front() {
            if end > t {
                break;
            }
            c.pending.pop_front();
            if seen.is_finite() {
                c.windows += 1;
                c.covered += u64::from(seen <= provisioned + 1e-9 * provisioned.abs());
            }
        }
    }

    /// Records a change of the requested replicas at `now`.
    pub fn action(&mut self, now: i64, from: u32, to: u32) {
        if from == to {
            return;
        }
        let up = to > from;
        self.actions += 1;
        if let Some((then, was_up)) = self.last_action
            && was_up != up
            && now - then <= FLAP_WINDOW_SECS
        {
            self.flaps += 1;
        }
        self.last_action = Some((now, up));
    }

    /// The scores; `cost_vs_oracle` is filled in once the oracle's cost is known.
    pub fn finish(&self, name: &str) -> Scores {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Scores {
            name: name.to_string(),
            replica_hours: self.replica_secs / 3600.0,
            cost_vs_oracle: f64::NAN,
            violation_minutes: self.violation_secs / 60.0,
            violation_fraction: ratio(self.violation_secs, self.total_secs),
            dropped_load_fraction: ratio(self.excess_load, self.total_load),
            scale_actions: self.actions,
            flaps: self.flaps,
            max_replicas: self.max_replicas,
            forecast_coverage: (self.coverage.windows > 0)
                .then(|| self.coverage.covered as f64 / self.coverage.windows as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_and_dropped_load() {
        let mut s = Scorer::new(15, 2);
        // 4 ticks: at capacity, 50 % over, idle, at capacity.
        s.tick(200.0, 2, 2, 100.0);
        s.tick(300.0, 3, 2, 100.0);
        s.tick(0.0, 3, 3, 100.0);
        s.tick(300.0, 3, 3, 100.0);
        let r = s.finish("x");
        assert_eq!(r.violation_minutes, 0.25);
        assert_eq!(r.violation_fraction, 0.25);
        assert_eq!(r.dropped_load_fraction, 100.0 / 800.0);
        assert_eq!(r.replica_hours, 11.0 * 15.0 / 3600.0);
        assert_eq!(r.max_replicas, 3);
    }

    #[test]
    fn coverage_counts_look_aheads_whose_load_stayed_within_the_provision() {
        let mut s = Scorer::new(15, 1);
        assert_eq!(s.finish("x").forecast_coverage, None);
        s.provisioned(0, 600, 100.0); // sees 90 and 120: not covered
        s.provisioned(300, 600, 130.0); // sees 120 and 125: covered
        s.forecast_metric(0, 500.0); // at the origin: in no look-ahead
        s.forecast_metric(300, 90.0);
        s.forecast_metric(600, 120.0);
        s.forecast_metric(900, 125.0);
        s.provisioned(900, 600, 10.0); // no sample arrives: not counted
        assert_eq!(s.finish("x").forecast_coverage, Some(0.5));
    }

    #[test]
    fn flaps_are_quick_reversals() {
        let mut s = Scorer::new(15, 1);
        s.action(0, 1, 3);
        s.action(300, 3, 2); // reversal within 10 min: flap
        s.action(1000, 2, 4); // reversal after 700 s: not a flap
        s.action(1100, 4, 5); // same direction
        s.action(1200, 5, 5); // no change: not an action
        let r = s.finish("x");
        assert_eq!((r.scale_actions, r.flaps), (4, 1));
    }
}
