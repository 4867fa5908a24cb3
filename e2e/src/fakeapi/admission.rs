//! Defaulting and validation the real server applies before it stores an object: name format, the few
//! built-in rules a test is likely to trip over (a Deployment needs a selector that matches its template),
//! built-in defaults (`spec.replicas: 1`), and for custom resources the CRD schema (prune, default, validate).
//!
//! The CRD's CEL `x-kubernetes-validations` are enforced with kube's CEL implementation (kube-cel), with
//! `oldSelf` bound on updates, and a rule that already failed on the stored object is not held against an
//! update (validation ratcheting, GA in Kubernetes 1.33; the real server ratchets per unchanged value, this
//! per failing rule and path).
//!
//! Simplification: only these built-in rules are checked, not the full validation of every core type.

use serde_json::{Value, json};

use super::errors::{ApiError, Cause};
use super::resources::{ApiResourceSpec, CelRules, spec_from_crd};
use super::schema;
use super::selectors::{LabelSelector, label_selector_string, labels_of};

fn required(field: &str) -> Cause {
    Cause { reason: "FieldValueRequired".into(), message: "Required value".into(), field: field.into() }
}

fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

const SUBDOMAIN_HELP: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_HELP: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Checks `metadata.name` the way the real server does for this kind.
pub fn validate_name(spec: &ApiResourceSpec, name: &str) -> Result<(), ApiError> {
    let label_only = spec.group.is_empty() && matches!(spec.plural.as_str(), "namespaces" | "services");
    let ok = if label_only { is_label(name) } else { is_subdomain(name) };
    if ok {
        return Ok(());
    }
    let help = if label_only { LABEL_HELP } else { SUBDOMAIN_HELP };
    Err(ApiError::invalid(&spec.group, &spec.kind, name, vec![invalid("metadata.name", &json!(name), help)]))
}

fn check_pod_spec(pod_spec: Option<&Value>, prefix: &str, causes: &mut Vec<Cause>) {
    let containers = pod_spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    match containers {
        None => causes.push(required(&format!("{prefix}.containers"))),
        Some(list) if list.is_empty() => causes.push(required(&format!("{prefix}.containers"))),
        Some(list) => {
            for (i, c) in list.iter().enumerate() {
                if c.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(required(&format!("{prefix}.containers[{i}].name")));
                }
                if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(required(&format!("{prefix}.containers[{i}].image")));
                }
            }
        }
    }
}

fn check_workload(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec");
    if let Some(r) = spec.and_then(|s| s.get("replicas"))
        && r.as_i64().is_some_and(|n| n < 0)
    {
        causes.push(invalid("spec.replicas", r, "must be greater than or equal to 0"));
    }
    let selector = spec.and_then(|s| s.get("selector"));
    match selector {
        None => causes.push(required("spec.selector")),
        Some(sel) => {
            let rendered = label_selector_string(sel);
            if rendered.is_empty() {
                causes.push(invalid("spec.selector", sel, "empty selector is invalid for deployment"));
            } else if let Ok(parsed) = LabelSelector::parse(&rendered) {
                let template = spec.and_then(|s| s.get("template")).cloned().unwrap_or(Value::Null);
                if !parsed.matches(&labels_of(&template)) {
                    let labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
                    causes.push(invalid(
                        "spec.template.metadata.labels",
                        &labels,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    check_pod_spec(spec.and_then(|s| s.pointer("/template/spec")), "spec.template.spec", causes);
}

/// Built-in defaults (what the real server's defaulting functions set that clients observe).
fn default_builtin(spec: &ApiResourceSpec, obj: &mut Value) {
    match (spec.group.as_str(), spec.plural.as_str()) {
        ("apps", "deployments" | "statefulsets" | "replicasets") => {
            if let Some(s) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                s.entry("replicas").or_insert(json!(1));
            }
        }
        ("", "namespaces") => {
            if let Some(m) = obj.as_object_mut() {
                let spec = m.entry("spec").or_insert(json!({}));
                if let Some(s) = spec.as_object_mut() {
                    s.entry("finalizers").or_insert(json!(["kubernetes"]));
                }
                m.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        ("", "services") => {
            if let Some(s) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                s.entry("type").or_insert(json!("ClusterIP"));
            }
        }
        _ => {}
    }
}

/// The CEL rule failures of `obj`, as the real server words them (`spec: Invalid value: "object": <message>`);
/// on an update, failures the stored object `old` already had are dropped (ratcheting).
fn cel_causes(rules: &CelRules, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let failures = |object: &Value, old: Option<&Value>| -> Vec<(String, String, String)> {
        match kube::core::cel::validate_compiled(&rules.0, object, old) {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .as_slice()
                .iter()
                .map(|e| {
                    let reason = e.reason.clone().unwrap_or_else(|| "FieldValueInvalid".into());
                    (e.field_path.clone(), e.message.clone(), reason)
                })
                .collect(),
        }
    };
    let now = failures(obj, old);
    // The stored object is checked only when there is something to ratchet.
    let before = match old {
        Some(o) if !now.is_empty() => failures(o, None),
        _ => Vec::new(),
    };
    now.into_iter()
        .filter(|f| !before.contains(f))
        .map(|(field, message, reason)| Cause {
            field: if field.is_empty() { "<nil>".into() } else { field },
            message: format!("Invalid value: \"object\": {message}"),
            reason,
        })
        .collect()
}

/// Defaults and validates an object about to be stored (create or update, any subresource); `old` is the
/// stored object on an update.
pub fn admit(
    spec: &ApiResourceSpec,
    version: &str,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    default_builtin(spec, obj);
    let mut causes = Vec::new();
    match (spec.group.as_str(), spec.plural.as_str()) {
        ("apps", "deployments" | "statefulsets" | "replicasets") => check_workload(obj, &mut causes),
        ("", "pods") => check_pod_spec(obj.get("spec"), "spec", &mut causes),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            if let Err(e) = spec_from_crd(obj) {
                let text = e.to_string();
                let (field, message) = text.split_once(": ").unwrap_or(("spec", text.as_str()));
                causes.push(Cause { reason: "FieldValueInvalid".into(), message: message.into(), field: field.into() });
            }
        }
        _ => {}
    }
    if spec.custom
        && let Some(s) = spec.schemas.get(version)
    {
        schema::prune(obj, s);
        schema::apply_defaults(obj, s);
        causes.extend(schema::validate(obj, s));
        // The real server runs CEL rules only on objects that pass the structural schema.
        if causes.is_empty()
            && let Some(rules) = spec.cel.get(version)
        {
            causes.extend(cel_causes(rules, obj, old));
        }
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(&spec.group, &spec.kind, name, causes)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakeapi::resources::builtin_kinds;

    fn deployments() -> ApiResourceSpec {
        builtin_kinds().into_iter().find(|k| k.plural == "deployments").expect("builtin")
    }

    #[test]
    fn deployment_without_selector_is_invalid_like_the_real_server() {
        let mut obj = json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let err = admit(&deployments(), "v1", "web", &mut obj, None).expect_err("invalid");
        assert_eq!(err.code, 422);
        assert_eq!(err.message, "Deployment.apps \"web\" is invalid: spec.selector: Required value");
    }

    #[test]
    fn deployment_replicas_default_to_one() {
        let mut obj = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        admit(&deployments(), "v1", "web", &mut obj, None).expect("valid");
        assert_eq!(obj["spec"]["replicas"], 1);
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        assert!(validate_name(&deployments(), "web.v2").is_ok());
        assert_eq!(validate_name(&deployments(), "Web").map_err(|e| e.code), Err(422));
    }

    /// A CRD whose spec has a cross-field rule (`min <= max`) and an immutable field (a transition rule).
    fn ranges() -> ApiResourceSpec {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "ranges.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object",
                            "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
                            "properties": {
                                "min": {"type": "integer"}, "max": {"type": "integer"},
                                "owner": {"type": "string",
                                    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "owner is immutable"}]}}}}}}}]}
        });
        spec_from_crd(&crd).expect("valid CRD")
    }

    fn range(min: i64, max: i64, owner: &str) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Range", "metadata": {"name": "r"},
            "spec": {"min": min, "max": max, "owner": owner}})
    }

    #[test]
    fn cel_rules_reject_a_custom_resource_with_the_real_servers_wording() {
        let err = admit(&ranges(), "v1", "r", &mut range(5, 2, "a"), None).expect_err("min > max");
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "Range.example.com \"r\" is invalid: spec: Invalid value: \"object\": min must not exceed max"
        );
        admit(&ranges(), "v1", "r", &mut range(2, 5, "a"), None).expect("min <= max is valid");
    }

    #[test]
    fn transition_rules_see_the_stored_object_on_update() {
        let stored = range(1, 2, "a");
        let err = admit(&ranges(), "v1", "r", &mut range(1, 2, "b"), Some(&stored)).expect_err("owner changed");
        assert!(err.message.contains("owner is immutable"), "{}", err.message);
        admit(&ranges(), "v1", "r", &mut range(1, 3, "a"), Some(&stored)).expect("owner unchanged");
    }

    #[test]
    fn a_rule_the_stored_object_already_broke_is_not_held_against_an_update() {
        // Stored before the rule existed (or under an older CRD): still 5 > 2, but an update elsewhere is
        // accepted, as the real server's validation ratcheting does. Breaking a rule anew is not.
        let stored = range(5, 2, "a");
        admit(&ranges(), "v1", "r", &mut range(5, 2, "a"), Some(&stored)).expect("unchanged failure ratchets");
        let valid = range(1, 2, "a");
        admit(&ranges(), "v1", "r", &mut range(5, 2, "a"), Some(&valid)).expect_err("a new failure is rejected");
    }
}
