//! A token bucket per namespace: how many Prometheus queries one namespace may send.
//!
//! Every query actually sent (not one answered from a query another policy already sent) takes a token; tokens
//! come back at `per_second` up to `burst`. A namespace with thousands of policies with their own raw queries
//! runs out of tokens and its policies are held back (their metric reads fail with a "throttled" reason, which
//! the engine treats as missing: hold, never scale down), while every other namespace keeps its own bucket.
//! Pure: the clock is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How fast one namespace may query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Tokens regained per second.
    pub per_second: f64,
    /// The most tokens a namespace can save up (and the tokens it starts with).
    pub burst: f64,
}

impl Default for BudgetConfig {
    /// 20 queries/s with a burst of 300: 300 distinct queries per 15 s interval per namespace, far more than the
    /// handful of grouped queries a namespace of built-in templates sends.
    fn default() -> Self {
        Self { per_second: 20.0, burst: 300.0 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Every namespace's bucket.
#[derive(Debug, Default)]
pub struct Budgets {
    config: BudgetConfig,
    buckets: HashMap<String, Bucket>,
}

impl Budgets {
    pub fn new(config: BudgetConfig) -> Self {
        Self { config, buckets: HashMap::new() }
    }

    /// Takes a token for `namespace` at `now`; `Err(wait)` when there is none, with how long until one is back.
    pub fn take(&mut self, namespace: &str, now: Instant) -> Result<(), Duration> {
        let config = self.config;
        let bucket = self.buckets.entry(namespace.to_owned()).or_insert(Bucket { tokens: config.burst, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * config.per_second).min(config.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - bucket.tokens;
        let wait = if config.per_second > 0.0 { missing / config.per_second } else { f64::from(u32::MAX) };
        Err(Duration::from_secs_f64(wait.min(f64::from(u32::MAX))))
    }

    /// Forgets namespaces whose buckets are full again (nothing to remember), so namespace churn does not grow
    /// the map forever.
    pub fn prune(&mut self, now: Instant) {
        let config = self.config;
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * config.per_second < config.burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_that_spends_its_burst_waits_and_others_do_not() {
        let mut budgets = Budgets::new(BudgetConfig { per_second: 2.0, burst: 3.0 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(budgets.take("flood", t0), Ok(()));
        }
        let wait = budgets.take("flood", t0).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(budgets.take("quiet", t0), Ok(()), "another namespace has its own bucket");
        assert_eq!(budgets.take("flood", t0 + Duration::from_millis(500)), Ok(()), "a token came back");
        assert!(budgets.take("flood", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn tokens_never_exceed_the_burst_and_full_buckets_are_forgotten() {
        let mut budgets = Budgets::new(BudgetConfig { per_second: 1.0, burst: 2.0 });
        let t0 = Instant::now();
        budgets.take("a", t0).expect("token");
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..2 {
            budgets.take("a", later).expect("refilled to the burst");
        }
        assert!(budgets.take("a", later).is_err(), "an hour idle saves no more than the burst");
        budgets.prune(later);
        assert_eq!(budgets.buckets.len(), 1);
        budgets.prune(later + Duration::from_secs(2));
        assert!(budgets.buckets.is_empty());
    }
}
