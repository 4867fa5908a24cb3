//! The PromQL Foresight sends for each metric source, built from the policy's target and namespace.
//!
//! ```text
//!   spec.metrics[i] ──► built-in template (cpu, memory, latency, errorRate, requestRate)
//!        │                 or the user's queryOverride / query.promql
//!        ▼
//!   placeholders {namespace} {pod_regex} ... substituted once, left to right, with escaped values ──► PromQL
//! ```
//!
//! Every value that comes from an object name goes into a double-quoted label matcher, so it is escaped for
//! PromQL strings (`\`, `"`, newline); the workload name inside the pod regex is first escaped for RE2, so a
//! name like `web.v2` matches only itself. Metric and label *names* (histogram, counter, codeLabel) cannot be
//! quoted in PromQL, so they are validated instead. Nothing a user or an object name contains can close a
//! string or add a matcher. The templates are documented for users in `docs/promql.md`. With
//! `--promql-tenancy=namespace` every query is then confined to the policy's namespace ([`tenancy`]).

mod plan;
pub mod tenancy;

pub use plan::{Combine, GroupedQuery, Plan, plan};

use std::time::Duration;

use tenancy::{Tenancy, TenancyError};

use crate::api::spec::{CounterMetric, LatencyMetric, Metric, ResourceMetric, TargetRef};

/// The rate window when a metric does not set one.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);
/// The histogram of the latency source when none is named.
pub const DEFAULT_HISTOGRAM: &str = "http_request_duration_seconds";
/// The counter of the errorRate and requestRate sources when none is named.
pub const DEFAULT_COUNTER: &str = "http_requests_total";
/// The status-code label of the errorRate source when none is named.
pub const DEFAULT_CODE_LABEL: &str = "code";

/// Why no query could be built for a metric.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromqlError {
    /// A histogram or counter name that PromQL would not parse as a metric name.
    #[error("metric {metric:?}: {field} {value:?} is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")]
    InvalidMetricName { metric: String, field: &'static str, value: String },
    /// A label name that PromQL would not parse.
    #[error("metric {metric:?}: {field} {value:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)")]
    InvalidLabelName { metric: String, field: &'static str, value: String },
    /// A container name that contains characters no Kubernetes container name can have.
    #[error("metric {metric:?}: container {value:?} is not a valid container name")]
    InvalidContainer { metric: String, value: String },
    /// The metric names no source, or several.
    #[error("metric {metric:?} needs exactly one source (cpu, memory, latency, errorRate, requestRate or query)")]
    NoSource { metric: String },
    /// A latency quantile outside (0, 1).
    #[error("metric {metric:?}: quantile {value} must be between 0 and 1 (exclusive)")]
    Quantile { metric: String, value: f64 },
    /// The query could not be confined to the policy's namespace (`--promql-tenancy=namespace`).
    #[error("metric {metric:?}: {error}")]
    Tenancy { metric: String, error: TenancyError },
}

impl PromqlError {
    /// A short, low-cardinality name for metric labels and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidMetricName { .. } => "invalid_metric_name",
            Self::InvalidLabelName { .. } => "invalid_label_name",
            Self::InvalidContainer { .. } => "invalid_container",
            Self::NoSource { .. } => "no_source",
            Self::Quantile { .. } => "quantile",
            Self::Tenancy { .. } => "tenancy",
        }
    }
}

/// The workload the queries select pods of, in the policy's namespace.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    /// Whether the query is confined to `namespace` (every selector gets `namespace="NS"`).
    pub tenancy: Tenancy,
}

impl<'a> Scope<'a> {
    pub fn new(namespace: &'a str, target: &'a TargetRef) -> Self {
        Scope { namespace, kind: &target.kind, name: &target.name, tenancy: Tenancy::Off }
    }

    pub fn with_tenancy(self, tenancy: Tenancy) -> Self {
        Scope { tenancy, ..self }
    }
}

/// The PromQL for one metric of a policy, confined to its namespace when the scope's tenancy says so.
pub fn query(metric: &Metric, scope: Scope<'_>) -> Result<String, PromqlError> {
    let query = unconfined(metric, scope)?;
    match scope.tenancy {
        Tenancy::Off => Ok(query),
        Tenancy::Namespace => tenancy::confine(&query, scope.namespace)
            .map_err(|error| PromqlError::Tenancy { metric: metric.name.clone(), error }),
    }
}

/// The PromQL for one metric of a policy, as its template or the user wrote it.
fn unconfined(metric: &Metric, scope: Scope<'_>) -> Result<String, PromqlError> {
    let name = metric.name.as_str();
    if let Some(r) = &metric.cpu {
        return resource(name, r, scope, Resource::Cpu);
    }
    if let Some(r) = &metric.memory {
        return resource(name, r, scope, Resource::Memory);
    }
    if let Some(l) = &metric.latency {
        return latency(name, l, scope);
    }
    if let Some(c) = &metric.error_rate {
        return counter(name, c, scope, CounterQuery::ErrorRate);
    }
    if let Some(c) = &metric.request_rate {
        return counter(name, c, scope, CounterQuery::RequestRate);
    }
    if let Some(q) = &metric.query {
        let vars = [("namespace", label_value(scope.namespace)), ("pod_regex", label_value(&pod_regex(scope)))];
        return Ok(substitute(&q.promql, &vars));
    }
    Err(PromqlError::NoSource { metric: name.into() })
}

/// `C` of the resource templates (validated by [`query`] before this is called).
fn container_matcher(r: &ResourceMetric) -> String {
    match &r.container {
        Some(c) => format!(r#"container="{}""#, label_value(c)),
        None => r#"container!="",container!="POD""#.to_string(),
    }
}

#[derive(Clone, Copy)]
enum Resource {
    Cpu,
    Memory,
}

/// cpu: cores used over cores requested; memory: working set over memory requested; both in percent.
fn resource(metric: &str, r: &ResourceMetric, scope: Scope<'_>, kind: Resource) -> Result<String, PromqlError> {
    let container = match &r.container {
        Some(c) if !valid_container(c) => {
            return Err(PromqlError::InvalidContainer { metric: metric.into(), value: c.clone() });
        }
        Some(c) => format!(r#"container="{}""#, label_value(c)),
        None => r#"container!="",container!="POD""#.to_string(),
    };
    let window = window(r.window.map(|w| w.std()));
    let vars = [
        ("namespace", label_value(scope.namespace)),
        ("pod_regex", label_value(&pod_regex(scope))),
        ("container_matcher", container),
        ("window", window),
    ];
    let template = match (&r.query_override, kind) {
        (Some(t), _) => t.as_str(),
        (None, Resource::Cpu) => {
            r#"100 * sum(rate(container_cpu_usage_seconds_total{namespace="{namespace}",pod=~"{pod_regex}",{container_matcher}}[{window}])) / sum(kube_pod_container_resource_requests{namespace="{namespace}",pod=~"{pod_regex}",{container_matcher},resource="cpu"})"#
        }
        (None, Resource::Memory) => {
            r#"100 * sum(container_memory_working_set_bytes{namespace="{namespace}",pod=~"{pod_regex}",{container_matcher}}) / sum(kube_pod_container_resource_requests{namespace="{namespace}",pod=~"{pod_regex}",{container_matcher},resource="memory"})"#
        }
    };
    Ok(substitute(template, &vars))
}

/// A quantile of a histogram over all the target's pods.
fn latency(metric: &str, l: &LatencyMetric, scope: Scope<'_>) -> Result<String, PromqlError> {
    if !(l.quantile > 0.0 && l.quantile < 1.0) {
        return Err(PromqlError::Quantile { metric: metric.into(), value: l.quantile });
    }
    let histogram = l.histogram.as_deref().unwrap_or(DEFAULT_HISTOGRAM);
    let histogram = histogram.strip_suffix("_bucket").unwrap_or(histogram);
    if !valid_metric_name(histogram) {
        return Err(PromqlError::InvalidMetricName {
            metric: metric.into(),
            field: "histogram",
            value: histogram.into(),
        });
    }
    let vars = [
        ("namespace", label_value(scope.namespace)),
        ("pod_regex", label_value(&pod_regex(scope))),
        ("histogram", histogram.to_string()),
        ("quantile", l.quantile.to_string()),
        ("window", window(l.window.map(|w| w.std()))),
    ];
    let template = l.query_override.as_deref().unwrap_or(
        r#"histogram_quantile({quantile}, sum by (le) (rate({histogram}_bucket{namespace="{namespace}",pod=~"{pod_regex}"}[{window}])))"#,
    );
    Ok(substitute(template, &vars))
}

#[derive(Clone, Copy)]
enum CounterQuery {
    ErrorRate,
    RequestRate,
}

/// errorRate: the fraction of requests answered 5xx; requestRate: requests per second over all pods.
fn counter(metric: &str, c: &CounterMetric, scope: Scope<'_>, kind: CounterQuery) -> Result<String, PromqlError> {
    let counter = c.counter.as_deref().unwrap_or(DEFAULT_COUNTER);
    if !valid_metric_name(counter) {
        return Err(PromqlError::InvalidMetricName { metric: metric.into(), field: "counter", value: counter.into() });
    }
    let code = c.code_label.as_deref().unwrap_or(DEFAULT_CODE_LABEL);
    if !valid_label_name(code) {
        return Err(PromqlError::InvalidLabelName { metric: metric.into(), field: "codeLabel", value: code.into() });
    }
    let vars = [
        ("namespace", label_value(scope.namespace)),
        ("pod_regex", label_value(&pod_regex(scope))),
        ("counter", counter.to_string()),
        ("code_label", code.to_string()),
        ("window", window(c.window.map(|w| w.std()))),
    ];
    let template = match (&c.query_override, kind) {
        (Some(t), _) => t.as_str(),
        (None, CounterQuery::ErrorRate) => {
            // 5xx over all requests; 0 (not 0/0 = NaN) when there are no requests or no 5xx series yet, and no
            // answer (missing) only when the counter does not exist at all.
            r#"(sum(rate({counter}{namespace="{namespace}",pod=~"{pod_regex}",{code_label}=~"5.."}[{window}])) or sum(rate({counter}{namespace="{namespace}",pod=~"{pod_regex}"}[{window}])) * 0) / (sum(rate({counter}{namespace="{namespace}",pod=~"{pod_regex}"}[{window}])) > 0) or sum(rate({counter}{namespace="{namespace}",pod=~"{pod_regex}"}[{window}])) * 0"#
        }
        (None, CounterQuery::RequestRate) => {
            r#"sum(rate({counter}{namespace="{namespace}",pod=~"{pod_regex}"}[{window}]))"#
        }
    };
    Ok(substitute(template, &vars))
}

/// The regex (unescaped for PromQL strings) that matches the pod names of a workload.
///
/// Deployments name pods `<name>-<replicaset hash>-<pod hash>`, StatefulSets `<name>-<ordinal>`, ReplicaSets
/// `<name>-<pod hash>`; anything else (a custom resource) `<name>-` followed by anything. The name is escaped for
/// RE2, and the regex is anchored (Prometheus anchors it anyway), so `web` never matches pods of `web-api`'s
/// Deployment unless their names have the same shape.
pub fn pod_regex(scope: Scope<'_>) -> String {
    let name = regex_escape(scope.name);
    let suffix = match scope.kind {
        "Deployment" => "-[a-z0-9]+-[a-z0-9]+",
        "StatefulSet" => "-[0-9]+",
        "ReplicaSet" => "-[a-z0-9]+",
        _ => "-.*",
    };
    format!("^{name}{suffix}$")
}

/// Escapes a string for a double-quoted PromQL string literal.
pub fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str(r#"\""#),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes RE2 metacharacters so that the string matches only itself.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A window as PromQL writes durations: whole seconds, or milliseconds when finer.
fn window(w: Option<Duration>) -> String {
    let w = w.unwrap_or(DEFAULT_WINDOW);
    if w.subsec_millis() == 0 { format!("{}s", w.as_secs().max(1)) } else { format!("{}ms", w.as_millis()) }
}

/// Replaces `{name}` for the given names in one left-to-right pass: a substituted value is never scanned again,
/// and braces that are not a known placeholder (label matchers) are kept.
pub fn substitute(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let replaced = after.find('}').and_then(|close| {
            let key = &after[..close];
            vars.iter().find(|(k, _)| *k == key).map(|(_, v)| (v, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Kubernetes container names are DNS labels; anything else cannot match a real container.
fn valid_container(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::spec::QueryMetric;

    fn target(kind: &str, name: &str) -> TargetRef {
        TargetRef { api_version: "apps/v1".into(), kind: kind.into(), name: name.into() }
    }

    fn metric(name: &str) -> Metric {
        Metric {
            name: name.into(),
            cpu: None,
            memory: None,
            latency: None,
            error_rate: None,
            request_rate: None,
            query: None,
            veto_scale_down: None,
        }
    }

    fn q(m: &Metric, ns: &str, t: &TargetRef) -> String {
        query(m, Scope::new(ns, t)).expect("query builds")
    }

    #[test]
    fn cpu_is_usage_over_requests_in_percent() {
        let m = Metric { cpu: Some(ResourceMetric::default()), ..metric("cpu") };
        assert_eq!(
            q(&m, "shop", &target("Deployment", "web")),
            r#"100 * sum(rate(container_cpu_usage_seconds_total{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$",container!="",container!="POD"}[120s])) / sum(kube_pod_container_resource_requests{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$",container!="",container!="POD",resource="cpu"})"#
        );
    }

    #[test]
    fn cpu_restricted_to_one_container_with_its_window() {
        let r = ResourceMetric {
            container: Some("app".into()),
            window: Some("5m".parse().expect("duration")),
            query_override: None,
        };
        let m = Metric { cpu: Some(r), ..metric("cpu") };
        assert_eq!(
            q(&m, "shop", &target("StatefulSet", "db")),
            r#"100 * sum(rate(container_cpu_usage_seconds_total{namespace="shop",pod=~"^db-[0-9]+$",container="app"}[300s])) / sum(kube_pod_container_resource_requests{namespace="shop",pod=~"^db-[0-9]+$",container="app",resource="cpu"})"#
        );
    }

    #[test]
    fn memory_is_working_set_over_requests() {
        let m = Metric { memory: Some(ResourceMetric::default()), ..metric("mem") };
        assert_eq!(
            q(&m, "shop", &target("ReplicaSet", "web-7d9f")),
            r#"100 * sum(container_memory_working_set_bytes{namespace="shop",pod=~"^web-7d9f-[a-z0-9]+$",container!="",container!="POD"}) / sum(kube_pod_container_resource_requests{namespace="shop",pod=~"^web-7d9f-[a-z0-9]+$",container!="",container!="POD",resource="memory"})"#
        );
    }

    #[test]
    fn latency_is_a_histogram_quantile() {
        let l = LatencyMetric { quantile: 0.99, histogram: None, window: None, query_override: None };
        let m = Metric { latency: Some(l), ..metric("p99") };
        assert_eq!(
            q(&m, "shop", &target("Deployment", "web")),
            r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$"}[120s])))"#
        );
    }

    #[test]
    fn latency_accepts_a_histogram_named_with_its_bucket_suffix() {
        let l = LatencyMetric {
            quantile: 0.5,
            histogram: Some("rpc_seconds_bucket".into()),
            window: Some("1m".parse().expect("duration")),
            query_override: None,
        };
        let m = Metric { latency: Some(l), ..metric("p50") };
        assert_eq!(
            q(&m, "a", &target("Rollout", "web")),
            r#"histogram_quantile(0.5, sum by (le) (rate(rpc_seconds_bucket{namespace="a",pod=~"^web-.*$"}[60s])))"#
        );
    }

    #[test]
    fn error_rate_is_5xx_over_all_requests() {
        let m = Metric { error_rate: Some(CounterMetric::default()), ..metric("errors") };
        assert_eq!(
            q(&m, "shop", &target("Deployment", "web")),
            r#"(sum(rate(http_requests_total{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$",code=~"5.."}[120s])) or sum(rate(http_requests_total{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$"}[120s])) * 0) / (sum(rate(http_requests_total{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$"}[120s])) > 0) or sum(rate(http_requests_total{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$"}[120s])) * 0"#
        );
        let c = CounterMetric {
            counter: Some("grpc_requests_total".into()),
            code_label: Some("status".into()),
            ..Default::default()
        };
        let m = Metric { error_rate: Some(c), ..metric("errors") };
        assert!(
            q(&m, "shop", &target("Deployment", "web"))
                .contains(r#"grpc_requests_total{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$",status=~"5.."}"#)
        );
    }

    #[test]
    fn request_rate_is_the_summed_counter_rate() {
        let m = Metric { request_rate: Some(CounterMetric::default()), ..metric("rps") };
        assert_eq!(
            q(&m, "shop", &target("Deployment", "web")),
            r#"sum(rate(http_requests_total{namespace="shop",pod=~"^web-[a-z0-9]+-[a-z0-9]+$"}[120s]))"#
        );
    }

    #[test]
    fn query_substitutes_placeholders_and_keeps_label_braces() {
        let m = Metric {
            query: Some(QueryMetric {
                promql: r#"max(queue_depth{namespace="{namespace}",pod=~"{pod_regex}",q="{unknown}"})"#.into(),
                allow_negative: false,
            }),
            ..metric("queue")
        };
        assert_eq!(
            q(&m, "shop", &target("Deployment", "worker")),
            r#"max(queue_depth{namespace="shop",pod=~"^worker-[a-z0-9]+-[a-z0-9]+$",q="{unknown}"})"#
        );
    }

    #[test]
    fn overrides_get_every_documented_placeholder() {
        let r = ResourceMetric {
            container: None,
            window: Some("30s".parse().expect("duration")),
            query_override: Some("f({namespace},{pod_regex},{container_matcher},{window})".into()),
        };
        let m = Metric { cpu: Some(r), ..metric("cpu") };
        assert_eq!(
            q(&m, "ns", &target("StatefulSet", "db")),
            r#"f(ns,^db-[0-9]+$,container!="",container!="POD",30s)"#
        );
        let l = LatencyMetric {
            quantile: 0.9,
            histogram: Some("h".into()),
            window: None,
            query_override: Some("{quantile} {histogram} {window}".into()),
        };
        assert_eq!(q(&Metric { latency: Some(l), ..metric("l") }, "ns", &target("Deployment", "x")), "0.9 h 120s");
        let c = CounterMetric {
            counter: Some("c_total".into()),
            code_label: Some("rc".into()),
            window: None,
            query_override: Some("{counter}/{code_label}".into()),
        };
        assert_eq!(q(&Metric { request_rate: Some(c), ..metric("r") }, "ns", &target("Deployment", "x")), "c_total/rc");
    }

    #[test]
    fn pod_regexes_per_kind_match_real_pod_names_only() {
        let re = |kind, name| {
            regex::Regex::new(&pod_regex(Scope { namespace: "ns", kind, name, tenancy: Tenancy::Off }))
                .expect("valid regex")
        };
        let deploy = re("Deployment", "web");
        assert!(deploy.is_match("web-7c9f8d6b5-x2k4q"));
        assert!(!deploy.is_match("web-api-7c9f8d6b5-x2k4q"), "another deployment's pods");
        assert!(!deploy.is_match("web-0"));
        let sts = re("StatefulSet", "db");
        assert!(sts.is_match("db-0") && sts.is_match("db-12"));
        assert!(!sts.is_match("db-backup-0"));
        let rs = re("ReplicaSet", "web-7c9f8d6b5");
        assert!(rs.is_match("web-7c9f8d6b5-x2k4q"));
        let dotted = re("Deployment", "web.v2");
        assert!(dotted.is_match("web.v2-abc-def"));
        assert!(!dotted.is_match("webxv2-abc-def"), "a dot in the name must match only a dot");
    }

    #[test]
    fn label_values_cannot_close_the_string() {
        assert_eq!(label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label_value("a\nb"), r"a\nb");
    }

    #[test]
    fn injected_names_stay_inside_their_matcher() {
        // A namespace or workload name that tries to close the string and add its own matcher or expression.
        let evil_ns = r#"x"} or vector(1) or up{a=""#;
        let evil_name = "web\"}|.*\\\n";
        let m = Metric { request_rate: Some(CounterMetric::default()), ..metric("rps") };
        let out = q(&m, evil_ns, &target("Deployment", evil_name));
        assert_eq!(
            out,
            r#"sum(rate(http_requests_total{namespace="x\"} or vector(1) or up{a=\"",pod=~"^web\"\\}\\|\\.\\*\\\\\n-[a-z0-9]+-[a-z0-9]+$"}[120s]))"#
        );
        // Every quote in the output is either a delimiter or escaped: exactly 4 delimiters remain.
        let unescaped_quotes = unescaped(&out, '"');
        assert_eq!(unescaped_quotes, 4, "{out}");
        assert!(!out.contains('\n'));
    }

    #[test]
    fn injection_through_a_query_placeholder_is_escaped() {
        let m = Metric {
            query: Some(QueryMetric { promql: r#"sum(x{namespace="{namespace}"})"#.into(), allow_negative: false }),
            ..metric("q")
        };
        let out = q(&m, r#"a"}) or vector(99) or sum(x{b=""#, &target("Deployment", "w"));
        assert_eq!(unescaped(&out, '"'), 2, "{out}");
        // A value that looks like a placeholder is not substituted again.
        let out = q(&m, "{pod_regex}", &target("Deployment", "w"));
        assert_eq!(out, r#"sum(x{namespace="{pod_regex}"})"#);
    }

    #[test]
    fn names_that_cannot_be_quoted_are_rejected() {
        let c = CounterMetric { counter: Some(r#"up{a="b"}"#.into()), ..Default::default() };
        let err = query(&Metric { request_rate: Some(c), ..metric("r") }, Scope::new("ns", &target("Deployment", "w")));
        assert!(matches!(err, Err(PromqlError::InvalidMetricName { field: "counter", .. })), "{err:?}");
        let c = CounterMetric { code_label: Some("code=~\".*\"".into()), ..Default::default() };
        let err = query(&Metric { error_rate: Some(c), ..metric("e") }, Scope::new("ns", &target("Deployment", "w")));
        assert!(matches!(err, Err(PromqlError::InvalidLabelName { field: "codeLabel", .. })), "{err:?}");
        let l = LatencyMetric {
            quantile: 0.9,
            histogram: Some("h) or vector(1".into()),
            window: None,
            query_override: None,
        };
        let err = query(&Metric { latency: Some(l), ..metric("l") }, Scope::new("ns", &target("Deployment", "w")));
        assert!(matches!(err, Err(PromqlError::InvalidMetricName { field: "histogram", .. })), "{err:?}");
        let r = ResourceMetric { container: Some("app\",x=\"".into()), ..Default::default() };
        let err = query(&Metric { cpu: Some(r), ..metric("c") }, Scope::new("ns", &target("Deployment", "w")));
        assert!(matches!(err, Err(PromqlError::InvalidContainer { .. })), "{err:?}");
        let err = query(&metric("none"), Scope::new("ns", &target("Deployment", "w")));
        assert!(matches!(err, Err(PromqlError::NoSource { .. })), "{err:?}");
    }

    #[test]
    fn built_in_templates_plan_namespace_wide_per_pod_queries_and_overrides_keep_their_own() {
        let web = target("Deployment", "web");
        let plan_of = |m: &Metric| plan(m, Scope::new("shop", &web)).expect("plan builds");
        let cpu = Metric { cpu: Some(ResourceMetric::default()), ..metric("cpu") };
        let Plan::Grouped(g) = plan_of(&cpu) else { panic!("cpu is grouped") };
        assert_eq!(
            g.parts,
            [
                r#"sum by (pod) (rate(container_cpu_usage_seconds_total{namespace="shop",container!="",container!="POD"}[120s]))"#,
                r#"sum by (pod) (kube_pod_container_resource_requests{namespace="shop",container!="",container!="POD",resource="cpu"})"#,
            ]
        );
        assert_eq!((g.combine, g.pod_regex.as_str()), (Combine::Ratio { scale: 100.0 }, "^web-[a-z0-9]+-[a-z0-9]+$"));
        assert_eq!(g.per_policy, q(&cpu, "shop", &web));
        let l = LatencyMetric { quantile: 0.9, histogram: None, window: None, query_override: None };
        let Plan::Grouped(g) = plan_of(&Metric { latency: Some(l), ..metric("p90") }) else { panic!("grouped") };
        assert_eq!(
            g.parts,
            [r#"sum by (pod, le) (rate(http_request_duration_seconds_bucket{namespace="shop"}[120s]))"#]
        );
        let Plan::Grouped(errors) = plan_of(&Metric { error_rate: Some(CounterMetric::default()), ..metric("e") })
        else {
            panic!("grouped")
        };
        let Plan::Grouped(rps) = plan_of(&Metric { request_rate: Some(CounterMetric::default()), ..metric("r") })
        else {
            panic!("grouped")
        };
        assert_eq!(errors.parts[1], rps.parts[0], "errorRate's denominator is requestRate's query: sent once");
        let r = ResourceMetric { query_override: Some("my_cpu".into()), ..Default::default() };
        assert_eq!(plan_of(&Metric { cpu: Some(r), ..metric("c") }), Plan::Single("my_cpu".into()));
        let raw = Metric { query: Some(QueryMetric { promql: "up".into(), allow_negative: false }), ..metric("q") };
        assert_eq!(plan_of(&raw), Plan::Single("up".into()));
        let bad = ResourceMetric { container: Some("a\"".into()), ..Default::default() };
        assert!(plan(&Metric { memory: Some(bad), ..metric("m") }, Scope::new("shop", &web)).is_err());
    }

    #[test]
    fn sub_second_windows_are_written_in_milliseconds() {
        assert_eq!(window(Some(Duration::from_millis(1500))), "1500ms");
        assert_eq!(window(Some(Duration::from_secs(3600))), "3600s");
        assert_eq!(window(None), "120s");
    }

    /// Quotes not preceded by an odd number of backslashes.
    fn unescaped(s: &str, quote: char) -> usize {
        let mut count = 0;
        let mut backslashes = 0;
        for c in s.chars() {
            if c == quote && backslashes % 2 == 0 {
                count += 1;
            }
            backslashes = if c == '\\' { backslashes + 1 } else { 0 };
        }
        count
    }
}
