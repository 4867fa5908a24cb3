//! The controller's own metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Label values are bounded: result and reason are error categories, direction is up/down, namespace/policy/
//! metric name come from policy objects (one series per policy), and the Prometheus address has its
//! credentials and query string removed. No Debug text ever becomes a label. A deleted policy's series are
//! removed (see [`ReconcileObserver::forgotten`]), so policy churn does not grow the exposition forever.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

mod policies;

use policies::PolicySeries;

use crate::{
    controller::ReconcileObserver,
    engine::{Forecast, Policy, Recommendation},
    source::{CircuitState, QueryCounter, QueryObserver},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: u32,
}

fn query_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Every metric the controller exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    query_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    query_errors: Family<ReasonLabels, Counter>,
    circuit_state: Family<AddressLabels, Gauge>,
    queries_sent: Family<KindLabels, Counter>,
    queries_deduplicated: Family<KindLabels, Counter>,
    queries_throttled: Family<NamespaceLabels, Counter>,
    policies_managed: Gauge,
    leader: Gauge,
    shard_held: Family<ShardLabels, Gauge>,
    /// Every policy's series.
    policies: Arc<PolicySeries>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("foresight");
        let m = Metrics {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            query_duration: Family::new_with_constructor(query_histogram as fn() -> Histogram),
            query_errors: Family::default(),
            circuit_state: Family::default(),
            queries_sent: Family::default(),
            queries_deduplicated: Family::default(),
            queries_throttled: Family::default(),
            policies_managed: Gauge::default(),
            leader: Gauge::default(),
            shard_held: Family::default(),
            registry: Registry::default(),
            policies: Arc::default(),
        };
        registry.register("reconciles", "Reconciles by result (success or the error category)", m.reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile, Prometheus queries included",
            m.reconcile_duration.clone(),
        );
        registry.register_collector(Box::new(m.policies.clone()));
        registry.register(
            "prometheus_query_duration_seconds",
            "Prometheus query time by outcome (success or the error category)",
            m.query_duration.clone(),
        );
        registry.register("prometheus_query_errors", "Failed Prometheus queries by reason", m.query_errors.clone());
        registry.register(
            "prometheus_circuit_state",
            "Circuit breaker per Prometheus address: 0 closed, 1 half-open, 2 open",
            m.circuit_state.clone(),
        );
        registry.register(
            "prometheus_queries_sent",
            "Prometheus queries sent by kind: grouped (per pod, shared by a namespace) or single",
            m.queries_sent.clone(),
        );
        registry.register(
            "prometheus_queries_deduplicated",
            "Metric reads answered by a query already sent this interval, by kind",
            m.queries_deduplicated.clone(),
        );
        registry.register(
            "prometheus_queries_throttled",
            "Queries held back because their namespace spent its query budget",
            m.queries_throttled.clone(),
        );
        registry.register("policies_managed", "ScalingPolicy objects watched", m.policies_managed.clone());
        registry.register("leader", "1 while this replica holds the leader Lease", m.leader.clone());
        registry.register(
            "shard_held",
            "1 while this replica holds the shard's Lease (sharding)",
            m.shard_held.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl ReconcileObserver for Metrics {
    fn reconciled(&self, result: &'static str, seconds: f64) {
        self.reconciles.get_or_create(&ResultLabels { result: result.into() }).inc();
        self.reconcile_duration.observe(seconds);
    }

    fn evaluated(
        &self,
        namespace: &str,
        name: &str,
        policy: &Policy,
        rec: &Recommendation,
        forecast: Option<&Forecast>,
    ) {
        self.policies.evaluated(namespace, name, policy, rec, forecast);
    }

    fn scaled(&self, namespace: &str, name: &str, direction: &'static str) {
        self.policies.scaled(namespace, name, direction == "up");
    }

    fn forgotten(&self, namespace: &str, name: &str) {
        self.policies.forgotten(namespace, name);
    }

    fn policies_managed(&self, count: usize) {
        self.policies_managed.set(count.try_into().unwrap_or(i64::MAX));
    }
}

impl crate::shard::ShardObserver for Metrics {
    fn shard_held(&self, shard: u32, held: bool) {
        self.shard_held.get_or_create(&ShardLabels { shard }).set(i64::from(held));
    }
}

impl QueryObserver for Metrics {
    fn query_finished(&self, outcome: &'static str, seconds: f64) {
        self.query_duration.get_or_create(&OutcomeLabels { outcome: outcome.into() }).observe(seconds);
        if outcome != "success" {
            self.query_errors.get_or_create(&ReasonLabels { reason: outcome.into() }).inc();
        }
    }

    fn circuit_changed(&self, address: &str, state: CircuitState) {
        self.circuit_state.get_or_create(&AddressLabels { address: address.into() }).set(state.gauge_value());
    }
}

impl QueryCounter for Metrics {
    fn sent(&self, kind: &'static str) {
        self.queries_sent.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }

    fn deduplicated(&self, kind: &'static str) {
        self.queries_deduplicated.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }

    fn throttled(&self, namespace: &str) {
        self.queries_throttled.get_or_create(&NamespaceLabels { namespace: namespace.into() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Decision, Missing, Reading};
    use std::time::Duration;

    fn rec(value: Result<f64, Missing>) -> Recommendation {
        Recommendation {
            current: 2,
            desired: 3,
            decision: Decision::ScaleUp,
            readings: vec![Reading { metric: "cpu".into(), value }],
            proposals: vec![],
            winner: None,
            limited_by: vec![],
            reason: String::new(),
            recommendations: vec![],
            consecutive_failures: 0,
            fallback_active: false,
        }
    }

    fn policy() -> Policy {
        Policy {
            min_replicas: 1,
            max_replicas: 10,
            interval: Duration::from_secs(15),
            metrics: vec![],
            thresholds: vec![crate::engine::policy::ThresholdRule {
                metric: "cpu".into(),
                up: Some(crate::engine::policy::Bound {
                    value: 70.0,
                    for_: Duration::from_secs(60),
                    step: crate::engine::policy::Amount::Pods(1),
                }),
                down: None,
            }],
            targets: vec![],
            demand: vec![],
            predictive: None,
            up: crate::engine::policy::DirectionRules::default_up(),
            down: crate::engine::policy::DirectionRules::default_down(),
            fallback: crate::engine::policy::Fallback { failure_threshold: 3, replicas: None },
            staleness: Duration::from_secs(120),
        }
    }

    #[test]
    fn every_documented_metric_is_exported_with_its_labels() {
        let m = Metrics::new();
        m.reconciled("success", 0.01);
        m.reconciled("patch_scale", 0.02);
        m.evaluated(
            "shop",
            "web",
            &policy(),
            &rec(Ok(86.0)),
            Some(&Forecast::Ready {
                peak: 120.0,
                samples: 50,
                error: 0.1,
                detail: crate::engine::ForecastDetail {
                    periods: vec![3600.0, 86_400.0],
                    margin: 12.5,
                    margin_basis: String::new(),
                },
            }),
        );
        m.scaled("shop", "web", "up");
        m.policies_managed(7);
        m.set_leader(true);
        crate::shard::ShardObserver::shard_held(&m, 3, true);
        crate::shard::ShardObserver::shard_held(&m, 4, false);
        m.query_finished("success", 0.05);
        m.query_finished("timeout", 5.0);
        m.circuit_changed("http://prometheus:9090", CircuitState::Open);
        let text = m.encode().expect("encodes");
        for line in [
            r#"foresight_reconciles_total{result="success"} 1"#,
            r#"foresight_reconciles_total{result="patch_scale"} 1"#,
            "foresight_reconcile_duration_seconds_count 2",
            r#"foresight_scale_actions_total{namespace="shop",policy="web",direction="up"} 1"#,
            r#"foresight_policy_current_replicas{namespace="shop",policy="web"} 2"#,
            r#"foresight_policy_desired_replicas{namespace="shop",policy="web"} 3"#,
            r#"foresight_policy_metric_value{namespace="shop",policy="web",metric="cpu"} 86.0"#,
            r#"foresight_policy_metric_threshold{namespace="shop",policy="web",metric="cpu",bound="scale_up"} 70.0"#,
            r#"foresight_policy_forecast{namespace="shop",policy="web"} 120.0"#,
            r#"foresight_policy_forecast_error{namespace="shop",policy="web"} 0.1"#,
            r#"foresight_policy_forecast_margin{namespace="shop",policy="web"} 12.5"#,
            r#"foresight_policy_forecast_period_seconds{namespace="shop",policy="web",rank="1"} 3600.0"#,
            r#"foresight_policy_forecast_period_seconds{namespace="shop",policy="web",rank="2"} 86400.0"#,
            r#"foresight_prometheus_query_duration_seconds_count{outcome="timeout"} 1"#,
            r#"foresight_prometheus_query_errors_total{reason="timeout"} 1"#,
            r#"foresight_prometheus_circuit_state{address="http://prometheus:9090"} 2"#,
            "foresight_policies_managed 7",
            "foresight_leader 1",
            r#"foresight_shard_held{shard="3"} 1"#,
            r#"foresight_shard_held{shard="4"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains(r#"query_errors_total{reason="success"}"#));
        assert!(!text.contains(r#"rank="3""#), "only the periods the forecast has:\n{text}");
    }

    #[test]
    fn a_deleted_policys_series_are_removed_and_others_kept() {
        let m = Metrics::new();
        let forecast = Forecast::Ready { peak: 120.0, samples: 50, error: 0.1, detail: Default::default() };
        for name in ["web", "api"] {
            m.evaluated("shop", name, &policy(), &rec(Ok(86.0)), Some(&forecast));
            m.scaled("shop", name, "up");
        }
        m.forgotten("shop", "web");
        let text = m.encode().expect("encodes");
        assert!(!text.contains(r#"policy="web""#), "series of the deleted policy remain:\n{text}");
        for line in [
            r#"foresight_scale_actions_total{namespace="shop",policy="api",direction="up"} 1"#,
            r#"foresight_policy_current_replicas{namespace="shop",policy="api"} 2"#,
            r#"foresight_policy_metric_value{namespace="shop",policy="api",metric="cpu"} 86.0"#,
            r#"foresight_policy_metric_threshold{namespace="shop",policy="api",metric="cpu",bound="scale_up"} 70.0"#,
            r#"foresight_policy_forecast{namespace="shop",policy="api"} 120.0"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn grouped_query_counts_are_exported() {
        let m = Metrics::new();
        m.sent("grouped");
        m.sent("grouped");
        m.deduplicated("single");
        m.throttled("flood");
        let text = m.encode().expect("encodes");
        for line in [
            r#"foresight_prometheus_queries_sent_total{kind="grouped"} 2"#,
            r#"foresight_prometheus_queries_deduplicated_total{kind="single"} 1"#,
            r#"foresight_prometheus_queries_throttled_total{namespace="flood"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn a_missing_metric_is_absent_not_zero() {
        let m = Metrics::new();
        m.evaluated("shop", "web", &policy(), &rec(Ok(86.0)), None);
        m.evaluated("shop", "web", &policy(), &rec(Err(Missing::Empty)), None);
        let text = m.encode().expect("encodes");
        assert!(!text.contains("foresight_policy_metric_value{"), "{text}");
    }

    #[test]
    fn the_series_follow_the_policy_as_last_evaluated() {
        let m = Metrics::new();
        let mut both = policy();
        both.thresholds[0].down = Some(crate::engine::policy::Bound {
            value: 20.0,
            for_: Duration::from_secs(300),
            step: crate::engine::policy::Amount::Pods(1),
        });
        let forecast = Forecast::Ready {
            peak: 120.0,
            samples: 50,
            error: 0.1,
            detail: crate::engine::ForecastDetail { periods: vec![3600.0, 86_400.0], ..Default::default() },
        };
        m.evaluated("shop", "web", &both, &rec(Ok(86.0)), Some(&forecast));
        let down =
            r#"foresight_policy_metric_threshold{namespace="shop",policy="web",metric="cpu",bound="scale_down"} 20.0"#;
        assert!(m.encode().expect("encodes").contains(down));

        // The spec loses its scale-down bound and the forecast its model: their series go, the rest stay.
        m.evaluated("shop", "web", &policy(), &rec(Ok(90.0)), None);
        let text = m.encode().expect("encodes");
        assert!(!text.contains(r#"bound="scale_down""#), "a bound no longer in the spec:\n{text}");
        assert!(!text.contains("foresight_policy_forecast"), "a forecast no longer made:\n{text}");
        for line in [
            r#"foresight_policy_metric_threshold{namespace="shop",policy="web",metric="cpu",bound="scale_up"} 70.0"#,
            r#"foresight_policy_metric_value{namespace="shop",policy="web",metric="cpu"} 90.0"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
