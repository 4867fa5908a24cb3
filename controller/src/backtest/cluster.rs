//! The simulated cluster: replicas that take a start-up delay to become ready, and go away at once.
//!
//! Pods form a stack: a scale-up pushes new pods stamped with the time they were requested; a scale-down pops
//! the newest first, so pods still starting are the first to go (as the ReplicaSet controller prefers deleting
//! not-ready pods). A pod is ready `delay` after it was requested. With this rule the ready count at `t` is
//! the least of the requested counts over `[t - delay, t]`.

/// The pods of one strategy.
#[derive(Clone, Debug)]
pub struct Cluster {
    delay: i64,
    /// (requested at, count), oldest at the bottom.
    groups: Vec<(i64, u32)>,
    requested: u32,
}

impl Cluster {
    /// A cluster with `replicas` pods that are already ready.
    pub fn new(replicas: u32, delay_secs: i64) -> Self {
        let groups = if replicas > 0 { vec![(i64::MIN / 2, replicas)] } else { Vec::new() };
        Cluster { delay: delay_secs.max(0), groups, requested: replicas }
    }

    /// The replicas asked for (the workload's spec.replicas): every one of them costs.
    pub fn requested(&self) -> u32 {
        self.requested
    }

    /// Pods whose start-up delay has passed by `now`.
    pub fn ready(&self, now: i64) -> u32 {
        self.groups.iter().take_while(|(t, _)| t.saturating_add(self.delay) <= now).map(|(_, n)| n).sum()
    }

    /// Sets the requested replicas at `now`: new pods start, removed ones stop at once (newest first).
    pub fn scale(&mut self, now: i64, replicas: u32) {
        if replicas > self.requested {
            self.groups.push((now, replicas - self.requested));
        } else {
            let mut remove = self.requested - replicas;
            while remove > 0 {
                let Some(top) = self.groups.last_mut() else { break };
                let n = top.1.min(remove);
                top.1 -= n;
                remove -= n;
                if top.1 == 0 {
                    self.groups.pop();
                }
            }
        }
        self.requested = replicas;
        // Pods that are all ready behave alike: merge them so the stack stays short.
        let ready_prefix = self.groups.iter().take_while(|(t, _)| t.saturating_add(self.delay) <= now).count();
        if ready_prefix > 1 {
            let merged: u32 = self.groups[..ready_prefix].iter().map(|g| g.1).sum();
            self.groups.drain(..ready_prefix);
            self.groups.insert(0, (i64::MIN / 2, merged));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_pods_become_ready_after_the_delay() {
        let mut c = Cluster::new(2, 60);
        assert_eq!(c.ready(0), 2);
        c.scale(0, 5);
        assert_eq!((c.requested(), c.ready(0), c.ready(59)), (5, 2, 2));
        assert_eq!(c.ready(60), 5);
    }

    #[test]
    fn scale_down_removes_starting_pods_first() {
        let mut c = Cluster::new(4, 60);
        c.scale(0, 8);
        c.scale(30, 6);
        // Two of the four starting pods went; the four ready ones stay.
        assert_eq!((c.requested(), c.ready(30)), (6, 4));
        assert_eq!(c.ready(60), 6);
        c.scale(40, 3);
        assert_eq!((c.requested(), c.ready(40), c.ready(100)), (3, 3, 3));
    }

    #[test]
    fn ready_is_the_least_request_over_the_delay() {
        // requested: 3 at t<0, 6 at 0, 4 at 20, 9 at 40; delay 60.
        let mut c = Cluster::new(3, 60);
        c.scale(0, 6);
        c.scale(20, 4);
        c.scale(40, 9);
        assert_eq!(c.ready(59), 3);
        assert_eq!(c.ready(60), 4, "min over [0, 60] of 6, 4, 9");
        assert_eq!(c.ready(99), 4);
        assert_eq!(c.ready(100), 9);
    }

    #[test]
    fn zero_delay_is_ready_at_once() {
        let mut c = Cluster::new(0, 0);
        assert_eq!(c.ready(0), 0);
        c.scale(10, 3);
        assert_eq!(c.ready(10), 3);
    }
}
