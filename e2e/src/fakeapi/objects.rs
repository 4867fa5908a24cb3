//! Small helpers for reading and writing Kubernetes objects held as JSON.

use serde_json::{Map, Value};

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// A non-empty string field of `metadata`.
pub fn meta_nonempty<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta_str(obj, field).filter(|s| !s.is_empty())
}

/// `metadata` as a mutable map, created if missing (the object itself must be a JSON object).
pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

/// `.spec.replicas` (CRD path syntax) as a JSON pointer, `/spec/replicas`.
pub fn pointer_of(path: &str) -> String {
    path.trim_start_matches('.').split('.').filter(|s| !s.is_empty()).fold(String::new(), |mut acc, seg| {
        acc.push('/');
        acc.push_str(seg);
        acc
    })
}

/// Sets the value at a CRD-style path, creating intermediate objects.
pub fn set_at(obj: &mut Value, path: &str, value: Value) {
    let segs: Vec<&str> = path.trim_start_matches('.').split('.').filter(|s| !s.is_empty()).collect();
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        cur = map.entry(seg.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Some(map) = cur.as_object_mut() {
        map.insert(last.to_string(), value);
    }
}

/// The object without `metadata` (and without `status` when `drop_status`), for "did the spec change" checks.
pub fn without_meta(obj: &Value, drop_status: bool) -> Value {
    let mut copy = obj.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        if drop_status {
            map.remove("status");
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_at_creates_parents() {
        let mut obj = json!({"metadata": {}});
        set_at(&mut obj, ".spec.scale.replicas", json!(3));
        assert_eq!(obj.pointer(&pointer_of(".spec.scale.replicas")), Some(&json!(3)));
    }
}
