//! What a strategy cost and what it broke, accumulated tick by tick.

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
