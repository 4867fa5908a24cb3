//! A `ScalingPolicy` as the watch reads it: metadata typed, spec and status kept as raw JSON.
//!
//! The API server stores what passes the CRD's schema, and that is more than the Rust types accept: it does not
//! enforce `format: int32` (kubernetes/kubernetes#136091), and an object written under an older, looser CRD
//! stays stored as it was. Watching the typed [`ScalingPolicy`] would make one such object fail the whole LIST,
//! so no policy in any namespace would be evaluated. Watching this type instead, every object is delivered;
//! [`RawScalingPolicy::parse`] converts it per reconcile, and an object that does not convert is reported on its
//! own status.

use std::borrow::Cow;

use kube::{
    Resource,
    core::{NamespaceResourceScope, ObjectMeta},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ScalingPolicy, ScalingPolicySpec, ScalingPolicyStatus};

/// A `ScalingPolicy` whose spec and status have not been checked against the Rust types yet.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RawScalingPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl Resource for RawScalingPolicy {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        ScalingPolicy::kind(&())
    }

    fn group(_: &()) -> Cow<'_, str> {
        ScalingPolicy::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        ScalingPolicy::version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        ScalingPolicy::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Why a stored policy's spec cannot be read, naming the field: "spec.maxReplicas 99999999999 is out of range".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UnreadableSpec(pub String);

impl RawScalingPolicy {
    /// The typed policy. A spec that does not fit the Rust types is an error naming the field; a status that
    /// does not (written by hand through /status) is read as empty rather than blocking the policy.
    pub fn parse(&self) -> Result<ScalingPolicy, UnreadableSpec> {
        let spec: ScalingPolicySpec = serde_path_to_error::deserialize(&self.spec).map_err(|e| {
            let path = e.path().to_string();
            UnreadableSpec(describe(&format!("spec.{path}"), &e.into_inner().to_string()))
        })?;
        let status =
            self.status.as_ref().and_then(|s| match serde_json::from_value::<ScalingPolicyStatus>(s.clone()) {
                Ok(status) => Some(status),
                Err(error) => {
                    tracing::warn!(%error, "ignoring an unreadable ScalingPolicy status");
                    None
                }
            });
        Ok(ScalingPolicy { metadata: self.metadata.clone(), spec, status })
    }

    /// The same object with a spec that is never read: what a failure report needs (metadata, status) when the
    /// real spec cannot be parsed.
    pub fn unparsed(&self) -> ScalingPolicy {
        let status = self.status.as_ref().and_then(|s| serde_json::from_value(s.clone()).ok());
        ScalingPolicy { metadata: self.metadata.clone(), spec: placeholder_spec(), status }
    }
}

/// serde's "invalid value: integer `99999999999`, expected i32" as a user reads it.
fn describe(field: &str, error: &str) -> String {
    if let Some(rest) = error.strip_prefix("invalid value: integer `")
        && let Some((value, expected)) = rest.split_once("`, expected ")
        && matches!(expected.split_whitespace().next(), Some("i32" | "u32" | "i64" | "u64" | "u16" | "u8"))
    {
        return format!("{field} {value} is out of range (at most {})", i32::MAX);
    }
    let field = field.trim_end_matches(".");
    format!("{field}: {error}")
}

fn placeholder_spec() -> ScalingPolicySpec {
    ScalingPolicySpec {
        target_ref: super::TargetRef { api_version: String::new(), kind: String::new(), name: String::new() },
        min_replicas: None,
        max_replicas: 0,
        interval: None,
        dry_run: true,
        on_conflict: None,
        history_limit: None,
        prometheus: None,
        metrics: Vec::new(),
        policies: Default::default(),
        behavior: None,
        fallback: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(spec: Value) -> RawScalingPolicy {
        serde_json::from_value(json!({
            "apiVersion": "autoscaling.foresight.dev/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": spec,
        }))
        .expect("any spec reads as raw JSON")
    }

    fn spec() -> Value {
        json!({
            "targetRef": {"name": "web"},
            "maxReplicas": 10,
            "metrics": [{"name": "cpu", "cpu": {}}],
            "policies": {"target": [{"metric": "cpu", "value": 60}]}
        })
    }

    #[test]
    fn a_valid_spec_parses_into_the_typed_policy() {
        let sp = raw(spec()).parse().expect("valid");
        assert_eq!(sp.spec.max_replicas, 10);
        assert_eq!(sp.metadata.name.as_deref(), Some("web"));
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let mut s = spec();
        s["maxReplicas"] = json!(99_999_999_999u64);
        assert_eq!(raw(s).parse().unwrap_err().0, "spec.maxReplicas 99999999999 is out of range (at most 2147483647)");
        let mut s = spec();
        s["interval"] = json!("99999999999999999999999s");
        let error = raw(s).parse().unwrap_err().0;
        assert!(error.starts_with("spec.interval: invalid duration"), "{error}");
        let mut s = spec();
        s["metrics"][0]["cpu"] = json!({"window": 5});
        let error = raw(s).parse().unwrap_err().0;
        assert!(error.starts_with("spec.metrics[0].cpu.window: invalid type"), "{error}");
    }

    #[test]
    fn an_unreadable_status_does_not_block_the_policy() {
        let mut r = raw(spec());
        r.status = Some(json!({"currentReplicas": "many"}));
        assert_eq!(r.parse().expect("spec is fine").status, None);
    }
}
