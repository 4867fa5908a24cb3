//! Where metric values come from: everything between a policy's `spec.metrics` and the samples the engine reads.
//!
//! ```text
//!   promql/       templates (mod.rs: the PromQL of each built-in source, escaping), planner (plan.rs: grouped
//!                 per-pod queries or a query of its own), tenancy.rs (--promql-tenancy)
//!   grouped.rs    one query per namespace, template and interval, shared by its policies; budget.rs: a token
//!                 bucket per namespace; aggregate.rs: each policy's number from the per-pod answers
//!   prometheus.rs the client (PrometheusSource); access.rs: which addresses and credentials a policy may use
//!   breaker.rs    circuit breakers; pool.rs: one breaker-wrapped client per Prometheus config and namespace
//!   memory.rs     InMemorySource, for tests and backtests
//! ```
//!
//! The engine never talks to Prometheus directly: it asks a [`MetricsSource`] for one series and gets plain
//! [`Sample`]s back. Two implementations live here, plus the plumbing that keeps a flaky Prometheus from
//! stalling every policy:
//!
//! ```text
//!   spec.prometheus ──► AccessPolicy (allowed addresses, opted-in Secrets, timeout ceiling) ──► PrometheusConfig
//!   policies ──► SourcePool::get_or_create(cfg, ns) ──► BreakerSource (shared breaker per address: transport
//!                                                        │  failures; own breaker per address+namespace)
//!                                                        │  fails fast with CircuitOpen while open
//!                                                        ▼
//!                                                  PrometheusSource (one reqwest client per config)
//!
//!   tests, backtests ──► InMemorySource
//! ```
//!
//! A query must name at most one series: an empty answer is `Ok(vec![])` (the engine calls that "missing"),
//! more than one is [`SourceError::MultipleSeries`]. Values are passed through untouched, NaN and ±Inf included:
//! deciding what a NaN means is the engine's job, and turning it into 0 here would hide an outage.

mod access;
pub mod aggregate;
mod breaker;
pub mod budget;
pub mod grouped;
mod memory;
mod pool;
mod prometheus;
pub mod promql;

pub use access::{
    AccessPolicy, CREDENTIALS_ADDRESS_KEY, CREDENTIALS_SECRET_TYPE, DEFAULT_MAX_QUERY_TIMEOUT, address_for_humans,
    is_dns1123_subdomain, same_address,
};
pub use breaker::{
    Admission, Breaker, BreakerConfig, BreakerSource, CircuitBreaker, CircuitState, Clock, Outcome, system_clock,
};
pub use grouped::{GroupedConfig, GroupedReader, QueryCounter, ReadError};
pub use memory::{InMemorySource, RecordedQuery};
pub use pool::SourcePool;
pub(crate) use prometheus::sanitise;
pub use prometheus::{Auth, ConfigError, Limits, PrometheusConfig, PrometheusSource};

use futures::future::BoxFuture;
use jiff::Timestamp;
use std::time::Duration;

/// One point of a series: the engine's own sample type, so what a source answers goes to the engine as it is.
/// Values are passed through as Prometheus returned them and may be NaN or ±Inf (the engine calls them missing).
pub use crate::engine::Sample;

/// "Give me this one series": the only thing the engine needs from a metrics backend.
///
/// Dyn-compatible so that it can be held as `Arc<dyn MetricsSource>` and swapped for an in-memory source in tests.
pub trait MetricsSource: Send + Sync {
    /// Evaluates `query` at `at`. Returns zero or one sample (timestamped `at`, as Prometheus does).
    fn instant<'a>(&'a self, query: &'a str, at: Timestamp) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>>;

    /// Evaluates `query` at `start`, `start + step`, ... up to `end`. Steps with no data are simply absent.
    fn range<'a>(
        &'a self,
        query: &'a str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>>;

    /// Like [`MetricsSource::range`], but keeps every series the query returns, with its labels: what a grouped
    /// query (`sum by (pod) (...)`) answers. `None` when this source cannot (the in-memory source does not parse
    /// PromQL), and callers fall back to one query per policy.
    fn range_labeled<'a>(
        &'a self,
        _query: &'a str,
        _start: Timestamp,
        _end: Timestamp,
        _step: Duration,
    ) -> Option<BoxFuture<'a, Result<Vec<LabeledSeries>, SourceError>>> {
        None
    }
}

/// One series of a query's answer with its labels (the metric name, if any, under `__name__`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabeledSeries {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// A series' labels, sorted by name, in one small vector: a grouped answer holds one series per pod of its
/// namespace (`sum by (pod)`, one or two labels each), and a `BTreeMap` node per series cost about 540 bytes
/// for a 1-label set, which made the cached answers a large part of the heap at 10,000 policies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// The value of label `name`.
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok().map(|i| &self.0[i].1)
    }

    /// Sets label `name` to `value`.
    pub fn insert(&mut self, name: String, value: String) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    /// The labels, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut labels = Labels::default();
        for (k, v) in pairs {
            labels.insert(k, v);
        }
        labels.0.shrink_to_fit();
        labels
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

/// Why a query gave no answer. Cheap to clone so that one failure can be reported to status, events and logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// Prometheus could not be reached, or the connection broke before an answer came back.
    #[error("cannot reach Prometheus: {message}")]
    Connect { message: String },
    /// No complete answer within the configured per-query timeout.
    #[error("Prometheus did not answer within {}", humantime::format_duration(*after))]
    Timeout { after: Duration },
    /// Something answered with an HTTP error status and no Prometheus error body (a proxy, an auth gateway).
    #[error("Prometheus answered HTTP {status}")]
    Http { status: u16 },
    /// Prometheus rejected or failed the query (`bad_data` for a PromQL syntax error, `execution`, `timeout`, ...).
    #[error("Prometheus rejected the query ({error_type}): {message}")]
    Prometheus { error_type: String, message: String },
    /// The answer could not be understood (not JSON, bad timestamps, ...).
    #[error("cannot decode the Prometheus answer: {message}")]
    Decode { message: String },
    /// The query's result had a shape Foresight cannot use (e.g. a range selector `x[5m]` as an instant query).
    #[error("the query returned a {result_type}; it must return an instant vector or a scalar")]
    UnexpectedResult { result_type: &'static str },
    /// The query selects several series; Foresight scales on exactly one number.
    #[error("the query returned {count} series; it must return at most one: aggregate it, e.g. sum(...) or max(...)")]
    MultipleSeries { count: usize },
    /// A range query with `start` after `end` or a zero `step`.
    #[error("invalid range query: {reason}")]
    InvalidRange { reason: &'static str },
    /// The answer was larger than the controller reads; reading stopped at the limit.
    #[error(
        "the Prometheus answer is larger than {limit} bytes (--max-response-bytes); reading stopped there: narrow the query"
    )]
    ResponseTooLarge { limit: usize },
    /// The answer held more series than the controller decodes.
    #[error(
        "the Prometheus answer has {count} series, more than the {limit} decoded (--max-series): aggregate it, e.g. sum(...)"
    )]
    TooManySeries { count: usize, limit: usize },
    /// `failures` failures in a row, the latest because of `cause`; not asking again until `until`. `shared`: the
    /// Prometheus server itself is unreachable (every namespace's queries wait); otherwise only this namespace's
    /// queries failed (timeouts, server errors) and only they wait. The message names the cause, not `until`: it
    /// is the same for every metric and every evaluation while the outage lasts, so a condition says it once.
    #[error("{}circuit open after {failures} failures: {cause}", if *shared { "" } else { "this namespace's Prometheus " })]
    CircuitOpen { until: Timestamp, shared: bool, failures: u32, cause: String },
}

impl SourceError {
    /// A short, low-cardinality name for metric labels and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Http { .. } => "http",
            Self::Prometheus { error_type, .. } => match error_type.as_str() {
                "bad_data" => "prometheus_bad_data",
                "execution" => "prometheus_execution",
                "timeout" => "prometheus_timeout",
                "canceled" => "prometheus_canceled",
                "internal" => "prometheus_internal",
                "unavailable" => "prometheus_unavailable",
                "not_found" => "prometheus_not_found",
                _ => "prometheus_other",
            },
            Self::Decode { .. } => "decode",
            Self::UnexpectedResult { .. } => "unexpected_result",
            Self::MultipleSeries { .. } => "multiple_series",
            Self::InvalidRange { .. } => "invalid_range",
            Self::ResponseTooLarge { .. } => "response_too_large",
            Self::TooManySeries { .. } => "too_many_series",
            Self::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// Whether this failure says the Prometheus *server* cannot be reached at all, whatever is asked of it:
    /// refused or reset connections, TLS failures, a gateway answering 502 or 503 without a Prometheus error
    /// (its upstream is gone). Only these count towards the breaker shared by every namespace, because nothing
    /// one tenant's queries can do (slow or expensive queries, tiny timeouts, huge answers) produces them; a
    /// gateway's 504 can be provoked by a slow query, so it counts against the tenant only.
    pub fn is_transport_failure(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Http { status } => matches!(*status, 502 | 503),
            _ => false,
        }
    }

    /// Whether this failure says the Prometheus server itself is unhealthy (and so counts towards opening its
    /// circuit). A bad query from one policy says nothing about the server and must not cut off the others.
    pub fn is_server_failure(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Http { status } => *status >= 500 || *status == 429,
            Self::Prometheus { error_type, .. } => {
                matches!(error_type.as_str(), "timeout" | "internal" | "unavailable")
            }
            Self::Decode { .. }
            | Self::UnexpectedResult { .. }
            | Self::MultipleSeries { .. }
            | Self::InvalidRange { .. }
            | Self::CircuitOpen { .. } => false,
            // Too much data is the query's doing, but it costs the server: count it against the tenant.
            Self::ResponseTooLarge { .. } | Self::TooManySeries { .. } => true,
        }
    }
}

/// Receives what telemetry needs about queries and circuits, so that this module needs no metrics crate.
///
/// Feeds `foresight_prometheus_query_duration_seconds{outcome}`, `foresight_prometheus_query_errors_total{reason}`
/// and `foresight_prometheus_circuit_state{address}`.
pub trait QueryObserver: Send + Sync {
    /// One query finished. `outcome` is `"success"` or the error's [`SourceError::category`] (including
    /// `"circuit_open"` for a query refused without touching the network).
    fn query_finished(&self, outcome: &'static str, seconds: f64);

    /// The circuit for `address` (credentials and query string stripped) moved to `state`.
    fn circuit_changed(&self, address: &str, state: CircuitState);
}

/// An observer that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl QueryObserver for NoopObserver {
    fn query_finished(&self, _outcome: &'static str, _seconds: f64) {}
    fn circuit_changed(&self, _address: &str, _state: CircuitState) {}
}

/// Sample timestamps to the nearest millisecond; `None` outside jiff's range.
pub(crate) fn timestamp_from_seconds(seconds: f64) -> Option<Timestamp> {
    if !seconds.is_finite() {
        return None;
    }
    let millis = (seconds * 1000.0).round();
    if millis.abs() > 1e17 {
        return None;
    }
    Timestamp::from_millisecond(millis as i64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_found_by_name_whatever_the_order_they_came_in_and_a_repeat_replaces() {
        let s = |v: &str| v.to_string();
        let mut labels: Labels = [(s("pod"), s("web-0")), (s("le"), s("0.5")), (s("__name__"), s("x"))].into();
        assert_eq!(labels.get("pod").map(String::as_str), Some("web-0"));
        assert_eq!(labels.get("le").map(String::as_str), Some("0.5"));
        assert_eq!(labels.get("code"), None);
        labels.insert(s("pod"), s("web-1"));
        let all: Vec<(&String, &String)> = labels.iter().collect();
        assert_eq!(all, [(&s("__name__"), &s("x")), (&s("le"), &s("0.5")), (&s("pod"), &s("web-1"))]);
    }

    #[test]
    fn categories_are_distinct_per_variant() {
        let errors = [
            SourceError::Connect { message: "refused".into() },
            SourceError::Timeout { after: Duration::from_secs(5) },
            SourceError::Http { status: 502 },
            SourceError::Prometheus { error_type: "bad_data".into(), message: "parse error".into() },
            SourceError::Decode { message: "not json".into() },
            SourceError::UnexpectedResult { result_type: "matrix" },
            SourceError::MultipleSeries { count: 3 },
            SourceError::InvalidRange { reason: "zero step" },
            SourceError::ResponseTooLarge { limit: 1 },
            SourceError::TooManySeries { count: 2, limit: 1 },
            SourceError::CircuitOpen { until: Timestamp::UNIX_EPOCH, shared: true, failures: 5, cause: String::new() },
        ];
        let mut categories: Vec<_> = errors.iter().map(SourceError::category).collect();
        categories.sort_unstable();
        categories.dedup();
        assert_eq!(categories.len(), errors.len());
    }

    #[test]
    fn only_server_trouble_counts_towards_the_breaker() {
        let cases = [
            (SourceError::Connect { message: "refused".into() }, true),
            (SourceError::Timeout { after: Duration::from_secs(5) }, true),
            (SourceError::Http { status: 503 }, true),
            (SourceError::Http { status: 429 }, true),
            (SourceError::Http { status: 401 }, false),
            (SourceError::Prometheus { error_type: "unavailable".into(), message: String::new() }, true),
            (SourceError::Prometheus { error_type: "bad_data".into(), message: String::new() }, false),
            (SourceError::MultipleSeries { count: 2 }, false),
            (
                SourceError::CircuitOpen {
                    until: Timestamp::UNIX_EPOCH,
                    shared: true,
                    failures: 5,
                    cause: String::new(),
                },
                false,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.is_server_failure(), expected, "{error:?}");
        }
    }

    #[test]
    fn only_an_unreachable_server_counts_towards_the_shared_breaker() {
        let cases = [
            (SourceError::Connect { message: "refused".into() }, true),
            (SourceError::Http { status: 502 }, true),
            (SourceError::Http { status: 503 }, true),
            // What one tenant's slow or expensive queries can provoke.
            (SourceError::Http { status: 504 }, false),
            (SourceError::Http { status: 500 }, false),
            (SourceError::Timeout { after: Duration::from_millis(1) }, false),
            (SourceError::Prometheus { error_type: "timeout".into(), message: String::new() }, false),
            (SourceError::Prometheus { error_type: "execution".into(), message: String::new() }, false),
            (SourceError::ResponseTooLarge { limit: 1 }, false),
            (SourceError::TooManySeries { count: 2, limit: 1 }, false),
        ];
        for (error, expected) in cases {
            assert_eq!(error.is_transport_failure(), expected, "{error:?}");
        }
    }

    #[test]
    fn multiple_series_message_tells_the_user_to_aggregate() {
        let message = SourceError::MultipleSeries { count: 2 }.to_string();
        assert!(message.contains("2 series") && message.contains("sum("), "{message}");
    }

    #[test]
    fn seconds_convert_to_millisecond_timestamps() {
        let t = timestamp_from_seconds(1_700_000_000.25).expect("in range");
        assert_eq!(t.as_millisecond(), 1_700_000_000_250);
        assert_eq!(timestamp_from_seconds(f64::NAN), None);
        assert_eq!(timestamp_from_seconds(1e20), None);
    }
}
