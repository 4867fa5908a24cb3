//! How stored objects go out on the wire: in the requested version, as lists (`DeploymentList`, whose items
//! lack `apiVersion`/`kind` for built-in kinds, as on a real server), as `PartialObjectMetadata` when the client
//! asks for metadata only (kube's `Api::get_metadata`, metadata watchers), or as a `meta.k8s.io/v1` `Table` for
//! kubectl's human-readable output.

use serde_json::{Value, json};

use super::objects::{meta_str, pointer_of};
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

/// A `Table` with Name, kind-specific columns and Age.
pub fn table(spec: &ApiResourceSpec, version: &str, items: &[Value], rv: u64) -> Value {
    let workload = spec.group == "apps";
    let mut columns = vec![column("Name", "string")];
    if workload {
        columns.extend([column("Ready", "string"), column("Up-to-date", "integer"), column("Available", "integer")]);
    }
    for c in &spec.printer_columns {
        if c.json_path != ".metadata.creationTimestamp" {
            columns.push(column(&c.name, &c.type_));
        }
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
            for c in spec.printer_columns.iter().filter(|c| c.json_path != ".metadata.creationTimestamp") {
                cells.push(o.pointer(&pointer_of(&c.json_path)).cloned().unwrap_or(Value::Null));
            }
            cells.push(json!(age(meta_str(o, "creationTimestamp").unwrap_or_default())));
            json!({"cells": cells, "object": metadata_only(&object(spec, version, o))})
        })
        .collect();
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
}
