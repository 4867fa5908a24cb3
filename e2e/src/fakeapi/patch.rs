//! PATCH bodies: JSON Patch (RFC 6902) and JSON merge patch (RFC 7386) through the `json-patch` crate, and the
//! fake's approximation of strategic merge patch, which server-side apply reuses for merging.
//!
//! Simplification: Kubernetes' strategic merge patch reads `patchStrategy`/`patchMergeKey` from the Go types.
//! Here lists whose field name is in [`merge_key_for`] (containers, env, volumes, ports, conditions, ...) are merged
//! element-wise by that key, every other list is replaced, `$patch: delete` removes a keyed list element,
//! `$patch: replace` replaces a map, and other `$` directives (`$setElementOrder/...`, `$retainKeys`) are dropped.

use serde_json::{Map, Value};

/// The PATCH flavours kube-apiserver accepts, keyed by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    /// The kind for a `Content-Type` header value (parameters after `;` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" | "application/apply-patch+cbor" => {
                Some(Self::Apply)
            }
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body is not JSON (or YAML for apply).
    #[error("error decoding patch: {0}")]
    Decode(String),
    /// A JSON Patch operation failed (including a failed `test`).
    #[error("{0}")]
    JsonPatch(#[from] json_patch::PatchError),
    /// A merge patch that is not a JSON object.
    #[error("merge patch must be a JSON object, got {0}")]
    NotAnObject(&'static str),
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Decodes a body as JSON, or as YAML for apply patches (JSON is valid YAML, kubectl may send either).
pub fn decode_body(body: &[u8], allow_yaml: bool) -> Result<Value, PatchError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_err) if allow_yaml => {
            serde_saphyr::from_slice::<Value>(body).map_err(|e| PatchError::Decode(format!("{json_err}; as YAML: {e}")))
        }
        Err(e) => Err(PatchError::Decode(e.to_string())),
    }
}

/// Applies a JSON, merge or strategic patch body to `target`, returning the patched copy.
/// Apply patches are handled by the caller (they need field ownership); here they merge like strategic ones.
pub fn apply_patch(kind: PatchKind, target: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let mut doc = target.clone();
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body).map_err(|e| PatchError::Decode(e.to_string()))?;
            json_patch::patch(&mut doc, &ops)?;
        }
        PatchKind::Merge => {
            let patch = decode_body(body, false)?;
            if !patch.is_object() {
                return Err(PatchError::NotAnObject(type_name(&patch)));
            }
            json_patch::merge(&mut doc, &patch);
        }
        PatchKind::Strategic | PatchKind::Apply => {
            let patch = decode_body(body, kind == PatchKind::Apply)?;
            if !patch.is_object() {
                return Err(PatchError::NotAnObject(type_name(&patch)));
            }
            strategic_merge(&mut doc, &patch);
        }
    }
    Ok(doc)
}

/// The merge key of a list field, by field name (the fake's stand-in for Go `patchMergeKey` tags).
pub fn merge_key_for(field: &str, elements: &[Value]) -> Option<&'static str> {
    let has = |key: &str| elements.iter().all(|e| e.get(key).is_some());
    let key = match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" if has("containerPort") => "containerPort",
        "ports" if has("port") => "port",
        _ => return None,
    };
    has(key).then_some(key)
}

/// Removes `null`s and `$` directives from a value that is inserted as new content.
pub fn clean(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
        other => other.clone(),
    }
}

/// Strategic merge of `patch` into `target` (see the module docs for what is and is not modelled).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    merge_value(target, patch, None);
}

fn merge_value(target: &mut Value, patch: &Value, field: Option<&str>) {
    match patch {
        Value::Object(pmap) => {
            if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
                *target = clean(patch);
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(tmap) = target {
                for (key, pval) in pmap {
                    if key.starts_with('$') {
                        continue;
                    }
                    if pval.is_null() {
                        tmap.remove(key);
                    } else if let Some(tval) = tmap.get_mut(key) {
                        merge_value(tval, pval, Some(key));
                    } else {
                        tmap.insert(key.clone(), clean(pval));
                    }
                }
            }
        }
        Value::Array(pitems) => {
            let key = field.and_then(|f| merge_key_for(f, pitems));
            match (key, target.as_array_mut()) {
                (Some(key), Some(titems)) => {
                    for pitem in pitems {
                        let id = pitem.get(key);
                        let pos = titems.iter().position(|t| t.get(key) == id);
                        let delete = pitem.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                titems.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => merge_value(&mut titems[i], pitem, None),
                            (None, false) => titems.push(clean(pitem)),
                        }
                    }
                }
                _ => *target = clean(patch),
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let target = json!({"a": {"b": 1, "c": 2}, "list": [1, 2]});
        let out = apply_patch(PatchKind::Merge, &target, br#"{"a": {"c": null, "d": 3}, "list": [3]}"#).expect("ok");
        assert_eq!(out, json!({"a": {"b": 1, "d": 3}, "list": [3]}));
    }

    #[test]
    fn json_patch_test_op_failure_is_an_error() {
        let target = json!({"spec": {"replicas": 2}});
        let body = br#"[{"op": "test", "path": "/spec/replicas", "value": 3}, {"op": "replace", "path": "/spec/replicas", "value": 5}]"#;
        assert!(apply_patch(PatchKind::Json, &target, body).is_err());
        let body = br#"[{"op": "test", "path": "/spec/replicas", "value": 2}, {"op": "replace", "path": "/spec/replicas", "value": 5}]"#;
        assert_eq!(apply_patch(PatchKind::Json, &target, body).expect("ok"), json!({"spec": {"replicas": 5}}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_replaces_plain_lists() {
        let target = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
            "args": ["x"]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "b:2"}], "args": ["y"],
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}]}});
        let mut out = target.clone();
        strategic_merge(&mut out, &patch);
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}],
            "args": ["y"]}})
        );
    }

    #[test]
    fn strategic_merge_delete_directive_removes_element() {
        let mut target = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        strategic_merge(&mut target, &json!({"env": [{"name": "A", "$patch": "delete"}]}));
        assert_eq!(target, json!({"env": [{"name": "B", "value": "2"}]}));
    }

    #[test]
    fn unknown_content_type_is_none() {
        assert_eq!(PatchKind::from_content_type("application/json"), None);
        assert_eq!(PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchKind::Merge));
    }
}
