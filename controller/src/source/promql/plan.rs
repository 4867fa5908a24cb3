//! The planner: how each metric is read. A built-in template without an override becomes grouped per-pod
//! queries shared by every policy of the namespace plus the in-process step that turns their answers into the
//! policy's number (`source::grouped` sends them, `source::aggregate` combines them); anything else is its own
//! query.

use super::{
    DEFAULT_CODE_LABEL, DEFAULT_COUNTER, DEFAULT_HISTOGRAM, PromqlError, Scope, container_matcher, label_value,
    pod_regex, query, window,
};
use crate::api::spec::Metric;

/// How a metric is read: its own query, or from grouped per-pod queries shared by every policy of the namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// One query that answers one series (a raw `query`, a `queryOverride`).
    Single(String),
    /// A built-in template answered from namespace-wide queries aggregated in process for the policy's pods.
    Grouped(GroupedQuery),
}

impl Plan {
    /// The query this metric sends on its own: what the grouped answer must equal.
    pub fn per_policy_query(&self) -> &str {
        match self {
            Plan::Single(q) => q,
            Plan::Grouped(g) => &g.per_policy,
        }
    }
}

/// A built-in template as grouped queries over the whole namespace plus the in-process step that turns their
/// per-pod answers into the policy's number.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedQuery {
    /// The namespace-wide queries, one series per pod (per pod and `le` for histograms). The same for every
    /// policy of the namespace with the same template, window and container selector.
    pub parts: Vec<String>,
    pub combine: Combine,
    /// The policy's pod regex (unescaped), matched against each series' `pod` label, anchored.
    pub pod_regex: String,
    /// The template's per-policy form, for sources that cannot answer labelled series.
    pub per_policy: String,
}

/// The in-process half of a grouped template, applied at each evaluation time to the series whose pod matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    /// `sum(parts[0])`.
    Sum,
    /// `scale * sum(parts[0]) / sum(parts[1])`.
    Ratio { scale: f64 },
    /// `histogram_quantile(q, sum by (le) (parts[0]))`.
    Quantile { q: f64 },
    /// The errorRate template: `sum(parts[0]) / sum(parts[1])` where both exist, 0 where requests exist but no
    /// failures (or the request rate is 0), and no value only where there are no requests at all.
    FailedFraction,
}

/// How `metric` is read: grouped for a built-in template without an override, its own query otherwise.
pub fn plan(metric: &Metric, scope: Scope<'_>) -> Result<Plan, PromqlError> {
    let per_policy = query(metric, scope)?;
    let ns = label_value(scope.namespace);
    let grouped = |parts: Vec<String>, combine| {
        Plan::Grouped(GroupedQuery { parts, combine, pod_regex: pod_regex(scope), per_policy: per_policy.clone() })
    };
    if let Some(r) = metric.cpu.as_ref().or(metric.memory.as_ref()).filter(|r| r.query_override.is_none()) {
        let c = container_matcher(r);
        let w = window(r.window.map(|w| w.std()));
        let (usage, resource) = if metric.cpu.is_some() {
            (format!(r#"sum by (pod) (rate(container_cpu_usage_seconds_total{{namespace="{ns}",{c}}}[{w}]))"#), "cpu")
        } else {
            (format!(r#"sum by (pod) (container_memory_working_set_bytes{{namespace="{ns}",{c}}})"#), "memory")
        };
        let requests = format!(
            r#"sum by (pod) (kube_pod_container_resource_requests{{namespace="{ns}",{c},resource="{resource}"}})"#
        );
        return Ok(grouped(vec![usage, requests], Combine::Ratio { scale: 100.0 }));
    }
    if let Some(l) = metric.latency.as_ref().filter(|l| l.query_override.is_none()) {
        let h = l.histogram.as_deref().unwrap_or(DEFAULT_HISTOGRAM);
        let h = h.strip_suffix("_bucket").unwrap_or(h);
        let w = window(l.window.map(|w| w.std()));
        let part = format!(r#"sum by (pod, le) (rate({h}_bucket{{namespace="{ns}"}}[{w}]))"#);
        return Ok(grouped(vec![part], Combine::Quantile { q: l.quantile }));
    }
    let counter = metric.error_rate.as_ref().map(|c| (c, true)).or(metric.request_rate.as_ref().map(|c| (c, false)));
    if let Some((c, errors)) = counter.filter(|(c, _)| c.query_override.is_none()) {
        let name = c.counter.as_deref().unwrap_or(DEFAULT_COUNTER);
        let w = window(c.window.map(|w| w.std()));
        let all = format!(r#"sum by (pod) (rate({name}{{namespace="{ns}"}}[{w}]))"#);
        if !errors {
            return Ok(grouped(vec![all], Combine::Sum));
        }
        let code = c.code_label.as_deref().unwrap_or(DEFAULT_CODE_LABEL);
        let failed = format!(r#"sum by (pod) (rate({name}{{namespace="{ns}",{code}=~"5.."}}[{w}]))"#);
        return Ok(grouped(vec![failed, all], Combine::FailedFraction));
    }
    Ok(Plan::Single(per_policy))
}
