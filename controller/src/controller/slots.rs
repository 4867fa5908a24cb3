//! Evaluation slots shared fairly between namespaces, and each evaluation's deadline.
//!
//! ```text
//!  policy due ──► its namespace's semaphore (at most `per_namespace` at once) ──► the shared semaphore (FIFO)
//!                                                                                   │ at most `total` at once
//!                                                  evaluate, abandoned after its deadline ◄─┘
//! ```
//!
//! A policy waits for a slot of its namespace before it queues for a shared one, so one namespace never holds
//! more than `per_namespace` of the shared slots nor more than `per_namespace` places in their (first-come,
//! first-served) queue: a namespace with many policies, or with a Prometheus that never answers, delays the
//! others by at most its share, and every due policy is eventually served in arrival order.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shortest deadline of an evaluation, whatever its interval: a policy evaluated every second still gets
/// time for its queries.
pub const MIN_DEADLINE: Duration = Duration::from_secs(5);
/// The longest an evaluation may take, however long its interval or query timeout.
pub const MAX_DEADLINE: Duration = Duration::from_secs(60);

/// How long an evaluation of a policy evaluated every `interval` may take before it is abandoned: one
/// interval, within [`MIN_DEADLINE`, `MAX_DEADLINE`].
pub fn deadline(interval: Duration) -> Duration {
    interval.clamp(MIN_DEADLINE, MAX_DEADLINE)
}

/// Evaluation slots: `total` shared ones, at most `per_namespace` of them held by one namespace.
pub struct Slots {
    total: Arc<Semaphore>,
    per_namespace: usize,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A held slot, released when dropped.
pub struct Slot {
    _namespace: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(total: usize, per_namespace: usize) -> Self {
        Slots {
            total: Arc::new(Semaphore::new(total.max(1))),
            per_namespace: per_namespace.max(1),
            namespaces: Mutex::default(),
        }
    }

    /// The slots of one controller watching all namespaces with `concurrency`: a namespace may use half.
    pub fn shared(concurrency: u16) -> Self {
        let total = usize::from(concurrency.max(1));
        Slots::new(total, total.div_ceil(2))
    }

    /// Waits for a slot for an evaluation in `namespace`.
    pub async fn acquire(&self, namespace: &str) -> Slot {
        let own = {
            let mut namespaces = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
            namespaces
                .entry(namespace.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_namespace)))
                .clone()
        };
        // Neither semaphore is ever closed.
        let namespace = own.acquire_owned().await.expect("namespace semaphore is never closed");
        let total = self.total.clone().acquire_owned().await.expect("shared semaphore is never closed");
        Slot { _namespace: namespace, _total: total }
    }

    /// Shared slots free now.
    pub fn available(&self) -> usize {
        self.total.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_one_interval_within_bounds() {
        assert_eq!(deadline(Duration::from_secs(1)), MIN_DEADLINE);
        assert_eq!(deadline(Duration::from_secs(15)), Duration::from_secs(15));
        assert_eq!(deadline(Duration::from_secs(3600)), MAX_DEADLINE);
    }

    #[tokio::test]
    async fn a_busy_namespace_leaves_slots_for_the_others() {
        let slots = Arc::new(Slots::shared(4));
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(slots.acquire("hog").await);
        }
        // A third evaluation in the busy namespace waits although shared slots are free...
        let third = tokio::time::timeout(Duration::from_millis(50), slots.acquire("hog")).await;
        assert!(third.is_err(), "a namespace took more than half of the slots");
        assert_eq!(slots.available(), 2);
        // ...and another namespace gets one at once.
        let other = tokio::time::timeout(Duration::from_millis(50), slots.acquire("quiet")).await;
        assert!(other.is_ok(), "another namespace was starved");
        drop(held);
    }
}
