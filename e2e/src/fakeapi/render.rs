//! How stored objects go out on the wire: in the requested version, as lists (`DeploymentList`, whose items
//! lack `apiVersion`/`kind` for built-in kinds, as on a real server), as `PartialObjectMetadata` when the client
//! asks for metadata only (kube's `Api::get_metadata`, metadata watchers), or as a `meta.k8s.io/v1` `Table` for
//! kubectl's human-readable output.

use serde_json::{Value, json};

use super::objects::meta_str;
use super::resources::ApiResourceSpec;

/// The representation an `Accept` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The object itself.
    Full,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
    /// `meta.k8s.io` `Table`.
    Table,
}

/// Picks the first representation the fake supports from an `Accept` header.
pub fn negotiate(accept: &str) -> Representation {
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let as_ = params.iter().find_map(|p| p.strip_prefix("as="));
        match as_ {
            Some("Table") => return Representation::Table,
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") => {
                return Representation::Metadata;
            }
            Some(_) => continue,
            None => return Representation::Full,
        }
    }
    Representation::Full
}

/// One object in `version`.
pub fn object(spec: &ApiResourceSpec, version: &str, obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".into(), json!(spec.api_version(version)));
        map.insert("kind".into(), json!(spec.kind));
    }
    out
}

/// One object as `PartialObjectMetadata`.
pub fn metadata_only(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// One object in the requested representation (a single-row table for `Table`).
pub fn single(spec: &ApiResourceSpec, version: &str, obj: &Value, repr: Representation, rv: u64) -> Value {
    match repr {
        Representation::Full => object(spec, version, obj),
        Representation::Metadata => metadata_only(obj),
        Representation::Table => table(spec, version, std::slice::from_ref(obj), rv),
    }
}

/// A list of objects in the requested representation.
pub fn list(spec: &ApiResourceSpec, version: &str, items: &[Value], rv: u64, repr: Representation) -> Value {
    match repr {
        Representation::Table => table(spec, version, items, rv),
        Representation::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items.iter().map(metadata_only).collect::<Vec<_>>(),
        }),
        Representation::Full => {
            let items: Vec<Value> = items
                .iter()
                .map(|o| {
                    let mut o = object(spec, version, o);
                    if !spec.custom
                        && let Some(map) = o.as_object_mut()
                    {
                        map.remove("apiVersion");
                        map.remove("kind");
                    }
                    o
                })
                .collect();
            json!({
                "kind": format!("{}List", spec.kind),
                "apiVersion": spec.api_version(version),
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            })
        }
    }
}

/// kubectl's human-readable age: `45s`, `3m12s`, `7h`, `2d3h`.
pub fn age(created: &str) -> String {
    let Ok(ts) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - ts.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86_400 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn column(name: &str, ty: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": 0})
}

fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The first value a CRD column's JSONPath finds (`.status.conditions[?(@.type=="Ready")].status`), as
/// kube-apiserver evaluates it: a missing key or an unparsable path gives no value.
pub fn column_value<'a>(obj: &'a Value, json_path: &str) -> Option<&'a Value> {
    use jsonpath_rust::JsonPath;
    let path = json_path.trim();
    let path = path.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(path);
    let path = if path.starts_with('$') { path.to_string() } else { format!("${path}") };
    obj.query(&path).ok()?.into_iter().next()
}

/// A column's cell as kube-apiserver's CRD table convertor types it: `integer`, `number`, `boolean` and
/// `string` cells only from values of that type, `date` as an age; anything else is empty.
fn cell(type_: &str, value: Option<&Value>) -> Value {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Value::Null;
    };
    match (type_, value) {
        ("integer", Value::Number(n)) => {
            n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).map_or(Value::Null, |i| json!(i))
        }
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        ("boolean", Value::Bool(b)) => json!(b),
        // A string column prints whatever the path found, as its JSONPath printer does.
        ("string", Value::String(s)) => json!(s),
        ("string", other) => json!(other.to_string()),
        ("date", Value::String(s)) => {
            json!(if s.parse::<jiff::Timestamp>().is_ok() { age(s) } else { "<invalid>".into() })
        }
        _ => Value::Null,
    }
}

/// A `Table`. Custom resources with printer columns get Name and those columns in the CRD's order, each with
/// its priority (kubectl shows priority > 0 only with `-o wide`), as kube-apiserver does; other kinds get Name,
/// kind-specific columns and Age.
pub fn table(spec: &ApiResourceSpec, version: &str, items: &[Value], rv: u64) -> Value {
    if spec.custom && !spec.printer_columns.is_empty() {
        return custom_table(spec, version, items, rv);
    }
    let workload = spec.group == "apps";
    let mut columns = vec![column("Name", "string")];
    if workload {
        columns.extend([column("Ready", "string"), column("Up-to-date", "integer"), column("Available", "integer")]);
    }
    columns.push(column("Age", "string"));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![json!(meta_str(o, "name").unwrap_or_default())];
            if workload {
                cells.push(json!(format!("{}/{}", int_at(o, "/status/readyReplicas"), int_at(o, "/spec/replicas"))));
                cells.push(json!(int_at(o, "/status/updatedReplicas")));
                cells.push(json!(int_at(o, "/status/availableReplicas")));
            }
            cells.push(json!(age(meta_str(o, "creationTimestamp").unwrap_or_default())));
            json!({"cells": cells, "object": metadata_only(&object(spec, version, o))})
        })
        .collect();
    table_of(columns, rows, rv)
}

fn custom_table(spec: &ApiResourceSpec, version: &str, items: &[Value], rv: u64) -> Value {
    let mut columns = vec![column("Name", "string")];
    for c in &spec.printer_columns {
        let description = format!("Custom resource definition column (in JSONPath format): {}", c.json_path);
        columns.push(json!({"name": c.name, "type": c.type_, "format": "", "description": description,
            "priority": c.priority}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![json!(meta_str(o, "name").unwrap_or_default())];
            cells.extend(spec.printer_columns.iter().map(|c| cell(&c.type_, column_value(o, &c.json_path))));
            json!({"cells": cells, "object": metadata_only(&object(spec, version, o))})
        })
        .collect();
    table_of(columns, rows, rv)
}

fn table_of(columns: Vec<Value>, rows: Vec<Value>, rv: u64) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_first_supported_form() {
        assert_eq!(negotiate("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"), Representation::Table);
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
            Representation::Metadata
        );
        assert_eq!(negotiate("application/json"), Representation::Full);
        assert_eq!(negotiate("application/json;as=Unknown,application/json"), Representation::Full);
    }

    #[test]
    fn crd_columns_take_jsonpath_filters_and_cells_are_typed() {
        let obj = json!({"status": {"conditions": [
            {"type": "MetricsAvailable", "status": "False"}, {"type": "Ready", "status": "True"}],
            "replicas": 3.0, "name": 7}});
        let ready = column_value(&obj, ".status.conditions[?(@.type==\"Ready\")].status");
        assert_eq!(ready, Some(&json!("True")));
        assert_eq!(column_value(&obj, "{.status.conditions[0].type}"), Some(&json!("MetricsAvailable")));
        assert_eq!(column_value(&obj, ".status.missing"), None);
        assert_eq!(column_value(&obj, ".status[?(@"), None, "an unparsable path is an empty cell");
        assert_eq!(cell("integer", column_value(&obj, ".status.replicas")), json!(3));
        assert_eq!(cell("string", column_value(&obj, ".status.name")), json!("7"));
        assert_eq!(cell("boolean", column_value(&obj, ".status.name")), Value::Null);
        assert_eq!(cell("date", Some(&json!("yesterday"))), json!("<invalid>"));
    }
}
