//! A `ScalingPolicy` as the watch reads it: metadata typed, spec and status kept as raw JSON.
//!
//! The API server stores what passes the CRD's schema, and that is more than the Rust types accept: it does not
//! enforce `format: int32` (kubernetes/kubernetes#136091), and an object written under an older, looser CRD
//! stays stored as it was. Watching the typed [`ScalingPolicy`] would make one such object fail the whole LIST,
//! so no policy in any namespace would be evaluated. Watching this type instead, every object is delivered;
//! [`RawScalingPolicy::parse`] converts it per reconcile, and an object that does not convert is reported on its
//! own status.
//!
//! Spec and status are kept as their compact JSON text ([`CompactJson`]), not as a `serde_json::Value` tree: the
//! store holds every policy for the process's life, and a tree of small maps costs many times its text (at 10,000
//! policies that tree was most of the controller's heap). Every reconcile parses the text into the typed policy,
//! as it converted the tree before.

use std::borrow::Cow;

use kube::{
    Resource,
    core::{NamespaceResourceScope, ObjectMeta},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{ScalingPolicy, ScalingPolicySpec, ScalingPolicyStatus};

/// A `ScalingPolicy` whose spec and status have not been checked against the Rust types yet.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RawScalingPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CompactJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CompactJson>,
}

/// A JSON value kept as its compact text (`null` by default). It reads from any JSON and writes back the same
/// value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactJson(Box<str>);

impl CompactJson {
    /// The compact JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// The value as a `serde_json::Value` (built on each call).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl Default for CompactJson {
    fn default() -> Self {
        CompactJson("null".into())
    }
}

impl From<&Value> for CompactJson {
    fn from(value: &Value) -> Self {
        CompactJson(value.to_string().into_boxed_str())
    }
}

impl<'de> Deserialize<'de> for CompactJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a transient Value, so that it reads wherever serde buffers content (untagged or adjacently
        // tagged enums such as watch events), then kept as text.
        Ok(CompactJson::from(&Value::deserialize(deserializer)?))
    }
}

impl Serialize for CompactJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value: Value = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        value.serialize(serializer)
    }
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
        let mut sp = self.parse_spec()?;
        sp.status = self.status.as_ref().and_then(|s| match serde_json::from_str::<ScalingPolicyStatus>(s.get()) {
            Ok(status) => Some(status),
            Err(error) => {
                let error = without_position(&error);
                tracing::warn!(%error, "ignoring an unreadable ScalingPolicy status");
                None
            }
        });
        Ok(sp)
    }

    /// [`RawScalingPolicy::parse`] without the status: for what reads only metadata and spec (the conflict
    /// index, at every watch event), so the status and its history are not parsed for nothing.
    pub fn parse_spec(&self) -> Result<ScalingPolicy, UnreadableSpec> {
        let mut text = serde_json::Deserializer::from_str(self.spec.get());
        let spec: ScalingPolicySpec = serde_path_to_error::deserialize(&mut text).map_err(|e| {
            let path = e.path().to_string();
            UnreadableSpec(describe(&format!("spec.{path}"), &without_position(&e.into_inner())))
        })?;
        Ok(ScalingPolicy { metadata: self.metadata.clone(), spec, status: None })
    }

    /// The same object with a spec that is never read: what a failure report needs (metadata, status) when the
    /// real spec cannot be parsed.
    pub fn unparsed(&self) -> ScalingPolicy {
        let status = self.status.as_ref().and_then(|s| serde_json::from_str(s.get()).ok());
        ScalingPolicy { metadata: self.metadata.clone(), spec: placeholder_spec(), status }
    }

    /// Drops what no reconcile reads and the API server repeats in every event: `metadata.managedFields` and
    /// kubectl's `last-applied-configuration` annotation (each about the size of the spec, per policy).
    pub fn trim(&mut self) {
        self.metadata.managed_fields = None;
        if let Some(annotations) = &mut self.metadata.annotations {
            annotations.remove(LAST_APPLIED);
        }
    }
}

/// The annotation `kubectl apply` writes with the whole object it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// serde_json's message without the " at line 1 column 42" it adds when reading text: the position in the
/// compact text means nothing to a user, the field path says where.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    message.strip_suffix(&position).map(str::to_owned).unwrap_or(message)
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
        r.status = Some(CompactJson::from(&json!({"currentReplicas": "many"})));
        assert_eq!(r.parse().expect("spec is fine").status, None);
    }

    #[test]
    fn spec_and_status_round_trip_through_the_compact_text() {
        let mut r = raw(spec());
        r.status = Some(CompactJson::from(&json!({"currentReplicas": 3, "desiredReplicas": 4})));
        let sp = r.parse().expect("valid");
        assert_eq!(sp.status.as_ref().and_then(|s| s.desired_replicas), Some(4));
        // What the controller writes back (tests, failure reports) is the same object.
        let written = serde_json::to_value(&r).expect("serializes");
        assert_eq!(written["spec"], spec());
        assert_eq!(written["status"]["currentReplicas"], 3);
        // A watch event is an adjacently tagged enum, which serde may buffer: the compact form still reads.
        let event: kube::core::WatchEvent<RawScalingPolicy> =
            serde_json::from_value(json!({"object": written, "type": "MODIFIED"})).expect("a watch event reads");
        let kube::core::WatchEvent::Modified(back) = event else { panic!("not a modification") };
        assert_eq!(back, r);
    }

    #[test]
    fn trimming_drops_managed_fields_and_last_applied_but_keeps_what_reconciles_read() {
        let mut r: RawScalingPolicy = serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "shop", "generation": 3,
                "annotations": {
                    "autoscaling.foresight.dev/paused": "true",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": spec(),
        }))
        .expect("reads");
        let before = r.parse().expect("valid");
        r.trim();
        assert_eq!(r.metadata.managed_fields, None);
        let after = r.parse().expect("valid");
        assert_eq!(after.spec, before.spec);
        assert_eq!(after.metadata.generation, Some(3));
        let annotations = after.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["autoscaling.foresight.dev/paused"]);
    }
}
