//! What kube-apiserver does with a custom resource's structural schema (`openAPIV3Schema`) on every write:
//! prune unknown fields, apply `default`s, and validate types, `required`, `enum`, bounds, lengths, `pattern`.
//!
//! CEL rules (`x-kubernetes-validations`) are enforced next to this, in [`super::admission`].
//! Not modelled: `format`, `minProperties`/`maxProperties`, list-type uniqueness (`x-kubernetes-list-type`).
//! A controller that depends on those must be tested elsewhere.

use serde_json::{Map, Value};

use super::errors::Cause;

fn is_true(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Removes fields the schema does not declare (keeping `apiVersion`, `kind`, `metadata` at the root).
pub fn prune(obj: &mut Value, schema: &Value) {
    if let Value::Object(map) = obj {
        for (key, value) in map.iter_mut() {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = schema.pointer(&format!("/properties/{key}")) {
                prune_value(value, s);
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        if !is_true(schema, "x-kubernetes-preserve-unknown-fields") {
            map.retain(|k, _| {
                matches!(k.as_str(), "apiVersion" | "kind" | "metadata") || props.is_some_and(|p| p.contains_key(k))
            });
        }
    }
}

fn prune_value(v: &mut Value, schema: &Value) {
    let preserve = is_true(schema, "x-kubernetes-preserve-unknown-fields");
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let embedded = is_true(schema, "x-kubernetes-embedded-resource");
            map.retain(|k, _| {
                preserve
                    || additional.is_some()
                    || props.is_some_and(|p| p.contains_key(k))
                    || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            });
            for (k, child) in map.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    prune_value(child, s);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    prune_value(item, s);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default` values for absent fields, recursively (never inside the root `metadata`).
pub fn apply_defaults(obj: &mut Value, schema: &Value) {
    default_value(obj, schema, true);
}

fn default_value(obj: &mut Value, schema: &Value, root: bool) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, s) in props {
                    if !map.contains_key(key)
                        && let Some(d) = s.get("default")
                    {
                        map.insert(key.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(key)
                        && !(root && key == "metadata")
                    {
                        default_value(child, s, false);
                    }
                }
            }
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    default_value(child, additional, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    default_value(item, s, false);
                }
            }
        }
        _ => {}
    }
}

/// Validates an object against its schema; an empty result means valid.
pub fn validate(obj: &Value, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let (Value::Object(map), Some(props)) = (obj, schema.get("properties").and_then(Value::as_object)) {
        check_required(map, schema, "", &mut causes);
        for (key, s) in props {
            if key == "metadata" || key == "apiVersion" || key == "kind" {
                continue;
            }
            if let Some(child) = map.get(key) {
                check(child, s, key, &mut causes);
            }
        }
    }
    causes
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn check_required(map: &Map<String, Value>, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                causes.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: join(path, r),
                });
            }
        }
    }
}

fn invalid(path: &str, value: &Value, text: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {path} in body {text}"),
        field: path.to_string(),
    }
}

fn type_matches(v: &Value, schema: &Value) -> bool {
    if is_true(schema, "x-kubernetes-int-or-string") {
        return v.is_i64() || v.is_u64() || v.is_string();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    }
}

fn check(v: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if !is_true(schema, "nullable") && schema.get("type").is_some() {
            let ty = schema.get("type").and_then(Value::as_str).unwrap_or("object");
            causes.push(Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!("Invalid value: \"null\": {path} in body must be of type {ty}: \"null\""),
                field: path.to_string(),
            });
        }
        return;
    }
    if !type_matches(v, schema) {
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("int-or-string");
        let actual = match v {
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            _ => "object",
        };
        causes.push(Cause {
            reason: "FieldValueTypeInvalid".into(),
            message: format!("Invalid value: \"{actual}\": {path} in body must be of type {ty}: \"{actual}\""),
            field: path.to_string(),
        });
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        let supported: Vec<String> = options.iter().map(Value::to_string).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: {v}: supported values: {}", supported.join(", ")),
            field: path.to_string(),
        });
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                let exclusive = is_true(schema, "exclusiveMinimum");
                if (exclusive && x <= min) || (!exclusive && x < min) {
                    let rel = if exclusive { "greater than" } else { "greater than or equal to" };
                    causes.push(invalid(path, v, format!("should be {rel} {}", fmt_num(min))));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                let exclusive = is_true(schema, "exclusiveMaximum");
                if (exclusive && x >= max) || (!exclusive && x > max) {
                    let rel = if exclusive { "less than" } else { "less than or equal to" };
                    causes.push(invalid(path, v, format!("should be {rel} {}", fmt_num(max))));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                causes.push(invalid(path, v, format!("should be at least {min} chars long")));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                causes.push(invalid(path, v, format!("should be at most {max} chars long")));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && let Ok(re) = regex::Regex::new(pattern)
                && !re.is_match(s)
            {
                causes.push(invalid(path, v, format!("should match '{pattern}'")));
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                causes.push(invalid(path, v, format!("should have at least {min} items")));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                causes.push(invalid(path, v, format!("should have at most {max} items")));
            }
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, s, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(map) => {
            check_required(map, schema, path, causes);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                if let Some(s) = props.and_then(|p| p.get(key)).or(additional) {
                    check(child, s, &join(path, key), causes);
                }
            }
        }
        _ => {}
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 { format!("{}", x as i64) } else { x.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["target"], "properties": {
                "target": {"type": "string", "minLength": 1},
                "minReplicas": {"type": "integer", "minimum": 1, "default": 1},
                "mode": {"type": "string", "enum": ["Auto", "Off"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
        }})
    }

    #[test]
    fn unknown_fields_are_pruned_known_and_preserved_kept() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "junk": 1,
            "spec": {"target": "t", "bogus": true, "labels": {"a": "b"}, "free": {"anything": 1}},
            "status": {"replicas": 2, "made_up": "x"}});
        prune(&mut obj, &schema());
        assert_eq!(
            obj,
            json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"target": "t", "labels": {"a": "b"}, "free": {"anything": 1}}, "status": {"replicas": 2}})
        );
    }

    #[test]
    fn defaults_fill_absent_fields_only() {
        let mut obj = json!({"spec": {"target": "t"}});
        apply_defaults(&mut obj, &schema());
        assert_eq!(obj["spec"]["minReplicas"], 1);
        let mut obj = json!({"spec": {"target": "t", "minReplicas": 4}});
        apply_defaults(&mut obj, &schema());
        assert_eq!(obj["spec"]["minReplicas"], 4);
    }

    #[test]
    fn an_int64_in_an_int32_field_is_accepted_as_kube_apiserver_does() {
        // kube-apiserver validates `format` for strings only; an integer field's int32 format is not enforced
        // (kubernetes/kubernetes#136091). Only `maximum` bounds it.
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "max": {"type": "integer", "format": "int32", "minimum": 1},
            "bounded": {"type": "integer", "format": "int32", "maximum": 2147483647}
        }}}});
        assert_eq!(validate(&json!({"spec": {"max": 99_999_999_999u64}}), &schema), Vec::new());
        let causes = validate(&json!({"spec": {"bounded": 99_999_999_999u64}}), &schema);
        assert_eq!(causes.len(), 1);
        assert!(causes[0].message.contains("less than or equal to 2147483647"), "{}", causes[0].message);
    }

    #[test]
    fn validation_reports_each_violation_with_its_path() {
        let obj = json!({"spec": {"minReplicas": 0, "mode": "Sometimes"}});
        let causes = validate(&obj, &schema());
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.target", "spec.minReplicas", "spec.mode"]);
        assert_eq!(
            causes[1].message,
            "Invalid value: 0: spec.minReplicas in body should be greater than or equal to 1"
        );
        let obj = json!({"spec": {"target": "t", "minReplicas": "two"}});
        assert_eq!(validate(&obj, &schema())[0].reason, "FieldValueTypeInvalid");
    }
}
