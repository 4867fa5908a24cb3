//! The CRD is generated, valid, and enforces the rules a user relies on at `kubectl apply`.
//!
//! The API server enforces the OpenAPI schema and the CEL `x-kubernetes-validations`; no API server can run
//! here, so the schema is checked with a JSON Schema validator and the CEL rules are evaluated with kube's
//! client-side CEL implementation (kube-cel), both against the very YAML we ship.

use std::path::{Path, PathBuf};

use foresight::{api::ScalingPolicy, crdgen::crd_yaml, engine::Policy};
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn crd() -> Value {
    let text = std::fs::read_to_string(repo().join("crds/scalingpolicy.yaml")).expect("crds/scalingpolicy.yaml exists");
    serde_saphyr::from_str(&text).expect("CRD parses")
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The schema errors (JSON Schema) and CEL errors of an object, as messages.
fn errors(object: &Value) -> Vec<String> {
    let schema = schema();
    let mut out: Vec<String> = Vec::new();
    let validator = jsonschema::draft4::new(&schema).expect("schema compiles");
    out.extend(validator.iter_errors(object).map(|e| format!("{} at {}", e, e.instance_path())));
    if let Err(errs) = Validator::new().validate(&schema, object, None) {
        out.extend(errs.as_slice().iter().map(|e| format!("{}: {}", e.field_path, e.message)));
    }
    out
}

fn valid_policy() -> Value {
    json!({
        "apiVersion": "autoscaling.foresight.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {
            "targetRef": {"name": "web"},
            "maxReplicas": 10,
            "metrics": [{"name": "cpu", "cpu": {}}, {"name": "p99", "latency": {"quantile": 0.99}}],
            "policies": {
                "threshold": [{"metric": "cpu", "scaleUpAbove": 70, "scaleDownBelow": 30}],
                "target": [{"metric": "p99", "value": 0.3}]
            }
        }
    })
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let committed = std::fs::read_to_string(repo().join("crds/scalingpolicy.yaml")).unwrap_or_default();
    let generated = crd_yaml().expect("CRD serializes");
    assert!(
        committed == generated,
        "crds/scalingpolicy.yaml is out of date with controller/src/api.\n\
         Regenerate it with: cargo run -q --bin foresight -- crdgen > crds/scalingpolicy.yaml"
    );
}

#[test]
fn every_cel_rule_compiles_and_fits_the_cost_budget() {
    let compiled = kube::core::cel::compile_schema(&schema());
    assert!(!compiled.has_errors(), "CEL compilation errors: {:?}", compiled.compilation_errors());
    let text = serde_json::to_string(&schema()).unwrap();
    assert!(text.matches("x-kubernetes-validations").count() >= 8, "the cross-field rules are in the schema");
}

#[test]
fn a_valid_policy_passes_schema_and_cel() {
    assert_eq!(errors(&valid_policy()), Vec::<String>::new());
}

#[test]
fn invalid_policies_are_rejected_with_a_message_naming_the_problem() {
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "min above max",
            Box::new(|p| p["spec"]["minReplicas"] = json!(20)),
            "minReplicas must not be greater than maxReplicas",
        ),
        ("negative min", Box::new(|p| p["spec"]["minReplicas"] = json!(-1)), "minimum"),
        ("zero max", Box::new(|p| p["spec"]["maxReplicas"] = json!(0)), "minimum"),
        (
            "up bound below down bound",
            Box::new(|p| p["spec"]["policies"]["threshold"][0]["scaleUpAbove"] = json!(20)),
            "scaleUpAbove must be greater than scaleDownBelow",
        ),
        (
            "quantile of 1",
            Box::new(|p| p["spec"]["metrics"][1]["latency"]["quantile"] = json!(1.0)),
            "quantile must be between 0 and 1",
        ),
        (
            "quantile of 0",
            Box::new(|p| p["spec"]["metrics"][1]["latency"]["quantile"] = json!(0.0)),
            "quantile must be between 0 and 1",
        ),
        (
            "two sources",
            Box::new(|p| p["spec"]["metrics"][0]["memory"] = json!({})),
            "each metric needs exactly one source",
        ),
        (
            "no source",
            Box::new(|p| p["spec"]["metrics"][0] = json!({"name": "cpu"})),
            "each metric needs exactly one source",
        ),
        (
            "unknown metric",
            Box::new(|p| p["spec"]["policies"]["threshold"][0]["metric"] = json!("memory")),
            "every threshold policy must name a metric defined in spec.metrics",
        ),
        (
            "unknown target metric",
            Box::new(|p| p["spec"]["policies"]["target"][0]["metric"] = json!("rps")),
            "every target policy must name a metric defined in spec.metrics",
        ),
        ("no metric", Box::new(|p| p["spec"]["metrics"] = json!([])), "less than 1 item"),
        ("no policy", Box::new(|p| p["spec"]["policies"] = json!({})), "at least one policy"),
        (
            "duplicate metric names",
            Box::new(|p| p["spec"]["metrics"][1] = json!({"name": "cpu", "memory": {}})),
            "metric names must be unique",
        ),
        ("bad duration", Box::new(|p| p["spec"]["interval"] = json!("five minutes")), "does not match"),
        ("duration without unit", Box::new(|p| p["spec"]["interval"] = json!("15")), "does not match"),
        (
            "bad for-duration",
            Box::new(|p| p["spec"]["policies"]["threshold"][0]["scaleUpFor"] = json!("2 min")),
            "does not match",
        ),
        (
            "zero target",
            Box::new(|p| p["spec"]["policies"]["target"][0]["value"] = json!(0)),
            "target value must be greater than 0",
        ),
        (
            "bad rate-limit type",
            Box::new(|p| {
                p["spec"]["behavior"] =
                    json!({"scaleUp": {"policies": [{"type": "Replicas", "value": 2, "periodSeconds": 15}]}})
            }),
            "is not one of",
        ),
        (
            "period too long",
            Box::new(|p| {
                p["spec"]["behavior"] =
                    json!({"scaleDown": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 3600}]}})
            }),
            "maximum",
        ),
        (
            "fallback above max",
            Box::new(|p| p["spec"]["fallback"] = json!({"replicas": 50})),
            "fallback.replicas must not be greater than maxReplicas",
        ),
        (
            "both auth kinds",
            Box::new(|p| {
                p["spec"]["prometheus"] = json!({
                    "address": "http://prom:9090",
                    "auth": {"bearerToken": {"name": "s", "key": "t"}, "basic": {"username": {"name": "s", "key": "u"}, "password": {"name": "s", "key": "p"}}}
                })
            }),
            "set exactly one of bearerToken or basic",
        ),
        (
            "address without scheme",
            Box::new(|p| p["spec"]["prometheus"] = json!({"address": "prom:9090"})),
            "address must start with http:// or https://",
        ),
        (
            "predictive on unknown metric",
            Box::new(|p| p["spec"]["policies"]["predictive"] = json!({"metric": "rps", "capacityPerReplica": 100})),
            "the predictive policy must name a metric defined in spec.metrics",
        ),
        ("bad metric name", Box::new(|p| p["spec"]["metrics"][0]["name"] = json!("CPU Usage")), "does not match"),
        (
            "path traversal in the target name",
            Box::new(|p| p["spec"]["targetRef"]["name"] = json!("../../team-b/deployments/victim")),
            "does not match",
        ),
        ("upper-case target name", Box::new(|p| p["spec"]["targetRef"]["name"] = json!("Web")), "does not match"),
        (
            "target name too long",
            Box::new(|p| p["spec"]["targetRef"]["name"] = json!("a".repeat(254))),
            "longer than 253",
        ),
        (
            "target kind with a slash",
            Box::new(|p| p["spec"]["targetRef"]["kind"] = json!("apps/Deployment")),
            "does not match",
        ),
        (
            "target apiVersion with ..",
            Box::new(|p| p["spec"]["targetRef"]["apiVersion"] = json!("../v1")),
            "does not match",
        ),
        ("int64 maxReplicas", Box::new(|p| p["spec"]["maxReplicas"] = json!(99_999_999_999u64)), "maximum"),
        ("int64 minReplicas", Box::new(|p| p["spec"]["minReplicas"] = json!(3_000_000_000u64)), "maximum"),
        (
            "int64 step",
            Box::new(|p| {
                p["spec"]["policies"]["threshold"][0]["scaleUpStep"] =
                    json!({"type": "Pods", "value": 99_999_999_999u64})
            }),
            "maximum",
        ),
        (
            "huge failure threshold",
            Box::new(|p| p["spec"]["fallback"] = json!({"failureThreshold": 100_000})),
            "maximum",
        ),
        ("interval of 0s", Box::new(|p| p["spec"]["interval"] = json!("0s")), "interval must be at least 1s"),
        ("interval under 1s", Box::new(|p| p["spec"]["interval"] = json!("500ms")), "interval must be at least 1s"),
        ("interval of 0.5s", Box::new(|p| p["spec"]["interval"] = json!("0.5s")), "interval must be at least 1s"),
        (
            "duration with too many digits",
            Box::new(|p| p["spec"]["interval"] = json!("99999999999999999999999s")),
            "does not match",
        ),
        ("duration with too many parts", Box::new(|p| p["spec"]["interval"] = json!("1s1s1s1s1s")), "does not match"),
        (
            "counter that is not a metric name",
            Box::new(|p| p["spec"]["metrics"][0] = json!({"name": "cpu", "errorRate": {"counter": "http requests"}})),
            "does not match",
        ),
        (
            "codeLabel that is not a label name",
            Box::new(|p| p["spec"]["metrics"][0] = json!({"name": "cpu", "errorRate": {"codeLabel": "code\"}"}})),
            "does not match",
        ),
        (
            "histogram that is not a metric name",
            Box::new(|p| p["spec"]["metrics"][1]["latency"]["histogram"] = json!("latency{le=\"1\"}")),
            "does not match",
        ),
        (
            "container that is not a container name",
            Box::new(|p| p["spec"]["metrics"][0]["cpu"] = json!({"container": "app\",pod=~\".*"})),
            "does not match",
        ),
        (
            "policy metric that is not a metric name",
            Box::new(|p| p["spec"]["policies"]["target"][0]["metric"] = json!("P99 ")),
            "does not match",
        ),
        (
            "predictive step longer than its history",
            Box::new(|p| p["spec"]["policies"]["predictive"] = predictive(json!({"history": "1h", "step": "1h30m"}))),
            "step must not be longer than history",
        ),
        (
            "predictive step longer than the default history of 7d",
            Box::new(|p| p["spec"]["policies"]["predictive"] = predictive(json!({"step": "1w1m"}))),
            "step must not be longer than history",
        ),
        (
            "predictive history shorter than the default step of 5m",
            Box::new(|p| p["spec"]["policies"]["predictive"] = predictive(json!({"history": "299s"}))),
            "step must not be longer than history",
        ),
        (
            "queryOverride too long",
            Box::new(|p| p["spec"]["metrics"][0]["cpu"] = json!({"queryOverride": "x".repeat(5000)})),
            "longer than 4096",
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut policy = valid_policy();
        mutate(&mut policy);
        let errs = errors(&policy);
        assert!(
            errs.iter().any(|e| e.contains(expected)),
            "{name}: expected an error containing {expected:?}, got {errs:?}"
        );
    }
}

/// A predictive policy on the valid policy's cpu metric, with `extra` fields.
fn predictive(extra: Value) -> Value {
    let mut p = json!({"metric": "cpu", "capacityPerReplica": 100});
    p.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    p
}

#[test]
fn predictive_steps_within_their_history_pass_in_any_units() {
    for (history, step) in
        [("7d", "5m"), ("1h", "60m"), ("1w", "7d"), ("1h30m", "5400s"), ("2h", "0.5h"), ("10s", "9500ms")]
    {
        let mut policy = valid_policy();
        policy["spec"]["policies"]["predictive"] = predictive(json!({"history": history, "step": step}));
        assert_eq!(errors(&policy), Vec::<String>::new(), "history {history}, step {step}");
    }
    for only in [json!({}), json!({"step": "7d"}), json!({"history": "5m"})] {
        let mut policy = valid_policy();
        policy["spec"]["policies"]["predictive"] = predictive(only.clone());
        assert_eq!(errors(&policy), Vec::<String>::new(), "{only} with the other default");
    }
}

#[test]
fn intervals_of_a_second_or_more_pass_and_names_users_write_pass() {
    for interval in ["1s", "15s", "1m", "1m30s", "1.5s", "1000ms", "2h", "1d"] {
        let mut policy = valid_policy();
        policy["spec"]["interval"] = json!(interval);
        assert_eq!(errors(&policy), Vec::<String>::new(), "interval {interval}");
    }
    let mut policy = valid_policy();
    policy["spec"]["targetRef"] =
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web.v2-canary"});
    policy["spec"]["metrics"][0] =
        json!({"name": "cpu", "errorRate": {"counter": "nginx:requests_total", "codeLabel": "status_code"}});
    policy["spec"]["metrics"][1]["latency"]["histogram"] = json!("grpc_server_handling_seconds");
    assert_eq!(errors(&policy), Vec::<String>::new());
}

/// Every ScalingPolicy YAML under examples/ parses into the Rust type, passes the CRD's schema and CEL rules,
/// and converts into an engine policy.
#[test]
fn every_example_policy_is_valid() {
    let mut checked = 0;
    let mut stack = vec![repo().join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples/ is readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "yaml" && e != "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for value in docs {
                if value["kind"] != "ScalingPolicy" {
                    continue;
                }
                assert_eq!(errors(&value), Vec::<String>::new(), "{}", path.display());
                let sp: ScalingPolicy =
                    serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                Policy::try_from(&sp.spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "expected at least four example policies, found {checked}");
}
