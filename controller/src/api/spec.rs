//! The `ScalingPolicy` spec: what to scale, on which signals, how fast.
//!
//! Every field's doc comment is what `kubectl explain scalingpolicy.spec...` prints, so it is written for the
//! person applying a policy, not for Rust readers. Cross-field rules are CEL `x-kubernetes-validations`, so a
//! bad policy is rejected by the API server at `kubectl apply` with a message naming the field; what CEL cannot
//! check is checked when the policy is converted for the engine and reported in the `Ready` condition.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{duration::Duration, status::ScalingPolicyStatus};

/// Joins the lines of each paragraph of every description below `schema`. Doc comments wrap at 120 columns, and
/// schemars keeps those line breaks; `kubectl explain` wraps descriptions itself and would print them too,
/// cutting sentences in the middle. Blank lines (paragraphs) and lines starting a list item are kept.
pub(crate) fn unwrap_descriptions(schema: &mut schemars::Schema) {
    use schemars::transform::{RecursiveTransform, Transform};
    RecursiveTransform(|s: &mut schemars::Schema| {
        if let Some(serde_json::Value::String(text)) = s.get_mut("description") {
            *text = unwrap_lines(text);
        }
    })
    .transform(schema);
}

fn unwrap_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        if let Some(next) = lines.peek() {
            let starts_item = next.trim_start().starts_with("- ") || next.trim_start().starts_with("* ");
            let joins = !line.trim().is_empty() && !next.trim().is_empty() && !starts_item;
            out.push(if joins { ' ' } else { '\n' });
        }
    }
    out
}

/// What to scale, on which signals, and how fast.
// kube's printcolumn attributes repeat `type_ = ...`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autoscaling.foresight.dev",
    version = "v1alpha1",
    kind = "ScalingPolicy",
    plural = "scalingpolicies",
    doc = "A ScalingPolicy scales one workload on Prometheus metrics (threshold rules, HPA-style target tracking and regression forecasts), with cooldowns, stabilization and rate limits, and records every decision in its status.",
    shortname = "sp",
    namespaced,
    cel,
    status = "ScalingPolicyStatus",
    derive = "PartialEq",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicas"),
    printcolumn(name = "Current", type_ = "integer", json_path = ".status.currentReplicas"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas"),
    printcolumn(name = "Last Scale", type_ = "date", json_path = ".status.lastScaleTime"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.lastEvaluation.reason", priority = "1")
)]
#[x_kube(
    validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas").message("minReplicas must not be greater than maxReplicas").field_path(".minReplicas"),
    validation = Rule::new("self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))").message("metric names must be unique").field_path(".metrics"),
    validation = Rule::new("(has(self.policies.threshold) && size(self.policies.threshold) > 0) || (has(self.policies.target) && size(self.policies.target) > 0) || (has(self.policies.demand) && size(self.policies.demand) > 0) || has(self.policies.predictive)").message("at least one policy (threshold, target, demand or predictive) is required").field_path(".policies"),
    validation = Rule::new("!has(self.policies.threshold) || self.policies.threshold.all(p, self.metrics.exists(m, m.name == p.metric))").message("every threshold policy must name a metric defined in spec.metrics").field_path(".policies.threshold"),
    validation = Rule::new("!has(self.policies.target) || self.policies.target.all(p, self.metrics.exists(m, m.name == p.metric))").message("every target policy must name a metric defined in spec.metrics").field_path(".policies.target"),
    validation = Rule::new("!has(self.policies.demand) || self.policies.demand.all(p, self.metrics.exists(m, m.name == p.metric))").message("every demand policy must name a metric defined in spec.metrics").field_path(".policies.demand"),
    validation = Rule::new("!has(self.policies.predictive) || self.metrics.exists(m, m.name == self.policies.predictive.metric)").message("the predictive policy must name a metric defined in spec.metrics").field_path(".policies.predictive.metric"),
    validation = Rule::new("!has(self.fallback) || !has(self.fallback.replicas) || self.fallback.replicas <= self.maxReplicas").message("fallback.replicas must not be greater than maxReplicas").field_path(".fallback.replicas"),
    validation = Rule::new("!has(self.interval) || self.interval.matches('(^|[a-z])[1-9][0-9]*([.][0-9]+)?(s|m|h|d|w)([0-9]|$)') || self.interval.matches('(^|[a-z])[1-9][0-9]{3,}ms')").message("interval must be at least 1s (e.g. 1s, 15s, 1m)").field_path(".interval")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = unwrap_descriptions)]
pub struct ScalingPolicySpec {
    /// The workload to scale: anything with a /scale subresource (Deployment, StatefulSet, ReplicaSet, or a
    /// custom resource). It must live in the policy's namespace.
    pub target_ref: TargetRef,

    /// The fewest replicas Foresight will set. Default 1. Foresight never scales a workload that someone set
    /// to 0 replicas (like the HPA, it treats 0 as "autoscaling disabled").
    #[serde(default = "default_min_replicas", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub min_replicas: Option<i32>,

    /// The most replicas Foresight will set. Required, at least 1.
    #[schemars(range(min = 1, max = 2147483647))]
    pub max_replicas: i32,

    /// How often the policy is evaluated, at least 1s. Default 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,

    /// Decide, record in status and emit events, but never change the workload's replicas. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,

    /// What to do when a HorizontalPodAutoscaler (autoscaling/v2) or a KEDA ScaledObject (keda.sh) also scales
    /// the target. StandDown (default): evaluate and report, never change its replicas, and name the other
    /// autoscaler in the Conflict condition. Act: scale anyway; the two then fight over the replicas, so use it
    /// only for a short hand-over. Another ScalingPolicy on the same target is never overridden: the oldest one
    /// (by creationTimestamp, then name) scales and the others only evaluate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<OnConflict>,

    /// How many scaling events status.history keeps (newest first). Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: Option<i32>,

    /// Where to query metrics, overriding the controller's default Prometheus (its --prometheus-address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,

    /// The signals to watch. Each has a unique name that policies refer to, and exactly one source.
    #[schemars(length(min = 1, max = 20))]
    pub metrics: Vec<Metric>,

    /// The rules that propose replica counts. Scale up if any rule asks (the largest proposal wins); scale down
    /// only if every rule agrees (the largest of their proposals wins).
    pub policies: Policies,

    /// How fast to scale in each direction: cooldowns, stabilization windows and rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,

    /// What to do when no metric can be read for several evaluations in a row. Without it, replicas are held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// What a policy does when an HPA or a KEDA ScaledObject scales its target too.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum OnConflict {
    #[default]
    StandDown,
    Act,
}

fn default_min_replicas() -> Option<i32> {
    Some(1)
}

/// A reference to the scaled workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the workload (group/version, or version for the core group). Default apps/v1.
    #[serde(default = "default_target_api_version")]
    #[schemars(
        length(min = 1, max = 317),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9]+((alpha|beta)[0-9]+)?$"
        )
    )]
    pub api_version: String,
    /// Kind of the workload, e.g. Deployment (a CamelCase name). Default Deployment.
    #[serde(default = "default_target_kind")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Z][A-Za-z0-9]*$"))]
    pub kind: String,
    /// Name of the workload, in the policy's namespace (a DNS-1123 subdomain: lowercase letters, digits, - and .).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

fn default_target_api_version() -> String {
    "apps/v1".into()
}

fn default_target_kind() -> String {
    "Deployment".into()
}

/// An HTTP header value a policy may set: printable ASCII, spaces and tabs (no CR, LF or other control
/// characters, which would split or smuggle headers).
pub const HEADER_VALUE_PATTERN: &str = r"^[\t\x20-\x7e]*$";

/// Every header name is an RFC 7230 token of at most 256 characters.
const HEADER_NAMES_RULE: &str =
    r#"self.all(k, size(k) >= 1 && size(k) <= 256 && k.matches("^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"))"#;

/// Connection settings for a Prometheus-compatible query API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090. The controller only queries
    /// its default Prometheus and the addresses its admin allows (--allowed-prometheus-addresses); any other
    /// address makes the policy Ready=False and nothing is sent.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("address must start with http:// or https://"))]
    pub address: String,
    /// Timeout of each query. Default 5s (the controller's --query-timeout); at most the controller's
    /// --max-query-timeout (default 30s), above which it is lowered and the Ready condition says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Credentials, read from Secrets in the policy's namespace, when the controller allows per-policy
    /// credentials (--policy-credentials). Each Secret must be of type foresight.dev/prometheus-credentials and
    /// name this address in its "address" key: its credentials are sent there and nowhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PrometheusAuth>,
    /// Extra HTTP headers sent with every query (e.g. X-Scope-OrgID for Cortex, Mimir or Thanos tenants). At
    /// most 20; names are HTTP tokens (RFC 7230: letters, digits and the symbols it allows, no spaces, colons or
    /// brackets) of up to 256 characters,
    /// values up to 1024 printable ASCII characters, spaces or tabs (no line breaks or control characters), and
    /// Host, Content-Length, Connection and similar headers that change how the request is sent are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20, "additionalProperties" = {"type": "string", "maxLength": 1024, "pattern": HEADER_VALUE_PATTERN}))]
    #[x_kube(validation = Rule::new(HEADER_NAMES_RULE).message("header names must be HTTP tokens (letters, digits and !#$%&'*+-.^_`|~) of at most 256 characters"))]
    pub headers: BTreeMap<String, String>,
    /// A PEM CA bundle to trust for an https address, read from a Secret key in the policy's namespace (same
    /// rules as auth: type foresight.dev/prometheus-credentials, "address" key naming this address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKeyRef>,
}

/// Prometheus credentials. Set exactly one of bearerToken or basic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.bearerToken) != has(self.basic)").message("set exactly one of bearerToken or basic"))]
pub struct PrometheusAuth {
    /// A bearer token, sent as "Authorization: Bearer <token>".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretKeyRef>,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
}

/// HTTP basic authentication, both parts read from Secrets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// The user name.
    pub username: SecretKeyRef,
    /// The password.
    pub password: SecretKeyRef,
}

/// A key of a Secret in the policy's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (an object name: lowercase letters, digits, '-' and '.').
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key within the Secret (letters, digits, '-', '_' and '.').
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// One signal, read from Prometheus. Set name and exactly one source: cpu, memory, latency, errorRate,
/// requestRate or query.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.cpu) ? 1 : 0) + (has(self.memory) ? 1 : 0) + (has(self.latency) ? 1 : 0) + (has(self.errorRate) ? 1 : 0) + (has(self.requestRate) ? 1 : 0) + (has(self.query) ? 1 : 0) == 1").message("each metric needs exactly one source: cpu, memory, latency, errorRate, requestRate or query"))]
pub struct Metric {
    /// The metric's name, used by policies and shown in status, events and logs (lowercase letters, digits, -).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Average CPU utilization of the target's pods, in percent of their CPU requests (cAdvisor usage over
    /// kube-state-metrics requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<ResourceMetric>,
    /// Average memory working set of the target's pods, in percent of their memory requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceMetric>,
    /// A latency quantile in seconds, from a Prometheus histogram the workload exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyMetric>,
    /// The fraction (0 to 1) of requests that failed with a 5xx code, from a request counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<CounterMetric>,
    /// Requests per second over all pods of the target, from a request counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<CounterMetric>,
    /// Any PromQL expression that returns a single series (aggregate with sum, avg or max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryMetric>,
    /// Block every scale-down while this metric is above a bound, whatever the other policies say. Meant for
    /// SLO guards such as error rate or latency, which are not proportional signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veto_scale_down: Option<Veto>,
}

/// Settings shared by the cpu and memory sources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMetric {
    /// Only count this container of each pod (a container name). Default: all containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub container: Option<String>,
    /// The rate window for CPU usage. Default 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// Replace the built-in PromQL template. Placeholders: {namespace}, {pod_regex}, {container_matcher},
    /// {window}; values are escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query_override: Option<String>,
}

/// A latency quantile from a Prometheus histogram.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.quantile > 0.0 && self.quantile < 1.0").message("quantile must be between 0 and 1 (exclusive), e.g. 0.99").field_path(".quantile"))]
pub struct LatencyMetric {
    /// The quantile, between 0 and 1 exclusive, e.g. 0.99 for p99.
    pub quantile: f64,
    /// The histogram's base name (without _bucket), a Prometheus metric name. Default
    /// http_request_duration_seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"))]
    pub histogram: Option<String>,
    /// The rate window. Default 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// Replace the built-in PromQL template. Placeholders: {namespace}, {pod_regex}, {histogram}, {quantile},
    /// {window}; values are escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query_override: Option<String>,
}

/// A request counter with a status-code label.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterMetric {
    /// The counter's name, a Prometheus metric name. Default http_requests_total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"))]
    pub counter: Option<String>,
    /// The label holding the HTTP status code, a Prometheus label name. Default code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$"))]
    pub code_label: Option<String>,
    /// The rate window. Default 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// Replace the built-in PromQL template. Placeholders: {namespace}, {pod_regex}, {counter}, {code_label},
    /// {window}; values are escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query_override: Option<String>,
}

/// Any PromQL expression returning one series.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryMetric {
    /// The PromQL expression. It may use the placeholders {namespace} and {pod_regex}; their values are escaped.
    #[schemars(length(min = 1, max = 4096))]
    pub promql: String,
    /// Negative values are meaningful for this query (e.g. a difference or a trend). Default false: a negative
    /// value is treated as missing (with the reason in status), as it is for every built-in source.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_negative: bool,
}

/// Block scale-down while the metric is above this bound.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Veto {
    /// The bound, in the metric's unit (a fraction for errorRate: 0.01 is 1 %).
    pub above: f64,
}

/// The policies that propose replica counts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Step scaling: up when a metric stays above a bound for a while, down when it stays below another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub threshold: Vec<ThresholdPolicy>,
    /// HPA-style target tracking: desired = ceil(current replicas x value / target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub target: Vec<TargetPolicy>,
    /// Knative-style demand scaling with a panic mode, on a metric that does not saturate (request rate,
    /// queue depth, concurrency): the stable window's average sets replicas; a burst seen in the short panic
    /// window is met in one step, and scale-down waits until a stable window has passed without panic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub demand: Vec<DemandPolicy>,
    /// Regression forecast of offered load, scaling ahead of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictive: Option<PredictivePolicy>,
}

/// Scale by a step when a metric stays beyond a bound for a duration. Separate up and down bounds give
/// hysteresis; the duration is judged from Prometheus samples, so a short spike never triggers it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.scaleUpAbove) || has(self.scaleDownBelow)").message("set scaleUpAbove, scaleDownBelow or both"),
    validation = Rule::new("!has(self.scaleUpAbove) || !has(self.scaleDownBelow) || self.scaleUpAbove > self.scaleDownBelow").message("scaleUpAbove must be greater than scaleDownBelow").field_path(".scaleUpAbove")
)]
pub struct ThresholdPolicy {
    /// The metric (a name from spec.metrics).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub metric: String,
    /// Scale up when every sample of the last scaleUpFor is above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_above: Option<f64>,
    /// How long the metric must stay above scaleUpAbove. Default 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_for: Option<Duration>,
    /// How many replicas to add. Default 1 pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_step: Option<Step>,
    /// Scale down when every sample of the last scaleDownFor is below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_below: Option<f64>,
    /// How long the metric must stay below scaleDownBelow. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_for: Option<Duration>,
    /// How many replicas to remove. Default 1 pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_step: Option<Step>,
}

/// A step size: a number of pods, or a percentage of the current replicas (rounded up, at least one pod).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Pods or Percent.
    #[serde(rename = "type")]
    pub type_: StepType,
    /// The number of pods, or the percentage.
    #[schemars(range(min = 1, max = 2147483647))]
    pub value: i32,
}

/// The unit of a step or rate limit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StepType {
    Pods,
    Percent,
}

/// Track a target value of a metric, like the HPA.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.value > 0.0").message("target value must be greater than 0").field_path(".value"))]
pub struct TargetPolicy {
    /// The metric (a name from spec.metrics).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub metric: String,
    /// The target value, in the metric's unit (e.g. 60 for 60 % CPU).
    pub value: f64,
    /// Value (default): the metric is a per-pod average or a ratio, desired = ceil(current x metric / value).
    /// AverageValue: the metric is a total over all pods (e.g. requests/s), desired = ceil(metric / value).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<TargetType>,
    /// No change while metric / value is within 1 +/- tolerance. Default 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub tolerance: Option<f64>,
}

/// Scale on demand like the Knative Pod Autoscaler (KPA), with its settings and defaults: desired replicas =
/// ceil(average demand / (target x targetUtilizationPercentage / 100)), averaged over the stable window; over
/// the panic window when that asks for at least panicThresholdPercentage of the ready replicas (panic mode:
/// scale up in one step, no scale-down until a stable window has passed without panic).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.target > 0.0").message("target must be greater than 0").field_path(".target"))]
pub struct DemandPolicy {
    /// The demand metric, a total over the target's pods (a name from spec.metrics; usually a requestRate).
    #[schemars(length(min = 1, max = 63))]
    pub metric: String,
    /// How much of the metric one replica takes at 100 % (Knative's autoscaling.knative.dev/target), e.g. 100
    /// requests/s.
    pub target: f64,
    /// The share of target to run replicas at, percent (Knative's target-utilization-percentage). Default 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub target_utilization_percentage: Option<f64>,
    /// The window the demand is averaged over in stable mode, and how long panic mode lasts after the last
    /// panic (Knative's stable-window). Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window: Option<Duration>,
    /// The panic window, as a percentage of the stable window (Knative's panic-window-percentage). Default 10
    /// (6s of a 60s stable window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub panic_window_percentage: Option<f64>,
    /// Panic when the panic window asks for at least this percentage of the ready replicas (Knative's
    /// panic-threshold-percentage). Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 110.0, max = 1000.0))]
    pub panic_threshold_percentage: Option<f64>,
    /// At most this multiple of the ready replicas in one decision (Knative's max-scale-up-rate). Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0))]
    pub max_scale_up_rate: Option<f64>,
    /// At least the ready replicas divided by this in one decision (Knative's max-scale-down-rate). Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0))]
    pub max_scale_down_rate: Option<f64>,
}

/// How a target value relates to replicas.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TargetType {
    #[default]
    Value,
    AverageValue,
}

/// CEL for the seconds of a duration field in the policy grammar (`1m30s`, `7d`, `500ms`): the sum of its parts.
/// CEL's own `duration()` knows no days or weeks.
macro_rules! cel_seconds {
    ($field:literal) => {
        concat!(
            $field,
            ".findAll('[0-9.]+(ms|s|m|h|d|w)').map(p, double(p.find('^[0-9.]+')) * (p.endsWith('ms') ? 0.001 : ",
            "p.endsWith('s') ? 1.0 : p.endsWith('m') ? 60.0 : p.endsWith('h') ? 3600.0 : p.endsWith('d') ? 86400.0 : ",
            "604800.0)).sum()"
        )
    };
}

/// Forecast offered load with linear regression over Prometheus history and provision for it ahead of time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.capacityPerReplica > 0.0").message("capacityPerReplica must be greater than 0").field_path(".capacityPerReplica"),
    validation = Rule::new(concat!(
        "(has(self.step) ? ", cel_seconds!("self.step"), " : 300.0) <= (has(self.history) ? ",
        cel_seconds!("self.history"), " : 604800.0)"
    )).message("step must not be longer than history (defaults: step 5m, history 7d)").field_path(".step")
)]
pub struct PredictivePolicy {
    /// The metric that measures offered load (a name from spec.metrics; usually a requestRate).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub metric: String,
    /// How much of that metric one replica serves at the utilization you want, e.g. 100 (requests/s).
    /// Required replicas = ceil(forecast / capacityPerReplica).
    pub capacity_per_replica: f64,
    /// How far ahead to forecast; replicas are provisioned for the highest forecast in [now, now + lookahead].
    /// At least startupDelay + interval when startupDelay is set (and that is the default then), else default 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<Duration>,
    /// How much history to fit on, at least one step. Default 7d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Duration>,
    /// Resolution of the history query, and how often the model is refitted. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Duration>,
    /// Seasonal terms of the model: Auto, None, Daily, Weekly or DailyWeekly. Default Auto: the periods the
    /// history repeats (10 minutes to a week, tested against noise), each modelled: daily and weekly cycles by
    /// Fourier terms, shorter ones (hourly cron spikes, bursts every few hours) by a profile per phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seasonality: Option<Seasonality>,
    /// Abstain (let the reactive policies decide alone) with fewer usable samples than this. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 100000))]
    pub min_samples: Option<i32>,
    /// Abstain when the forecast's error on the most recent held-out history is above this fraction
    /// (0.3 = 30 %). Default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_error: Option<f64>,
    /// Scale (default): act on the forecast. Shadow: compute, record and export the forecast and its error,
    /// but never act on it, to watch a forecast prove itself first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PredictiveMode>,
    /// The fraction of look-ahead windows whose highest load the provisioned forecast should cover, 0.5 to
    /// 0.999. The margin above the forecast is this quantile of the forecast's own out-of-sample errors over the
    /// look-ahead on recent history. Default 0.95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.999))]
    pub coverage: Option<f64>,
    /// How long the target's pods take from being requested to serving. Replicas are then provisioned for the
    /// forecast over at least [now, now + startupDelay + interval], and a backtest simulates this delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_delay: Option<Duration>,
}

/// Seasonal terms of the forecast model.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Seasonality {
    Auto,
    None,
    Daily,
    Weekly,
    DailyWeekly,
}

/// Whether the forecast acts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PredictiveMode {
    #[default]
    Scale,
    Shadow,
}

/// How fast to scale in each direction.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    /// Scale-up behaviour. Defaults: cooldown 0s, stabilizationWindow 0s, at most max(100 %, 4 pods) per 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// Scale-down behaviour. Defaults: cooldown 5m, stabilizationWindow 300s, at most 100 % per 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

/// Cooldown, stabilization and rate limits for one direction, with the HPA v2 semantics for the last two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Minimum time after the last change of replicas (in either direction) before this direction may act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,
    /// Use the lowest (scale-up) or highest (scale-down) recommendation of this past window, as the HPA does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window: Option<Duration>,
    /// Rate limits. Each allows a change of value pods or percent per periodSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10))]
    pub policies: Option<Vec<RatePolicy>>,
    /// Which rate limit applies: Max (the one allowing the largest change, default), Min (the smallest), or
    /// Disabled (never scale in this direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
}

/// One rate limit, as in the HPA's HPAScalingPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatePolicy {
    /// Pods or Percent.
    #[serde(rename = "type")]
    pub type_: StepType,
    /// The change allowed per period, greater than 0.
    #[schemars(range(min = 1, max = 2147483647))]
    pub value: i32,
    /// The period, 1 to 1800 seconds.
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: i32,
}

/// Which rate limit applies when several are given.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// Behaviour when metrics are unavailable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive evaluations with no usable metric before the fallback applies, 1 to 1000. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: Option<i32>,
    /// Scale to at least this many replicas. It is a floor: a higher replica count is kept. Without it,
    /// replicas are held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub replicas: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn descriptions(schema: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        if let Some(d) = schema.get("description").and_then(serde_json::Value::as_str) {
            out.push((path.to_string(), d.to_string()));
        }
        if let Some(props) = schema.get("properties").and_then(serde_json::Value::as_object) {
            for (k, v) in props {
                descriptions(v, &format!("{path}.{k}"), out);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = schema.get(key) {
                descriptions(child, &format!("{path}[]"), out);
            }
        }
    }

    #[test]
    fn crd_descriptions_have_no_line_breaks_inside_a_paragraph() {
        let crd = serde_json::to_value(ScalingPolicy::crd()).expect("crd serializes");
        let mut all = Vec::new();
        descriptions(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "", &mut all);
        assert!(all.len() > 100, "{} descriptions", all.len());
        let broken: Vec<&(String, String)> =
            all.iter().filter(|(_, d)| d.replace("\n\n", "").contains('\n') || d.contains('`')).collect();
        assert!(broken.is_empty(), "descriptions kubectl explain would print cut or with markdown: {broken:#?}");
    }

    #[test]
    fn paragraphs_and_list_items_keep_their_breaks() {
        assert_eq!(unwrap_lines("a b\nc\n\nd\n- e\n- f"), "a b c\n\nd\n- e\n- f");
    }
}
