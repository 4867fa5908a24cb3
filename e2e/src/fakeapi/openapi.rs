//! OpenAPI v3 as kube-apiserver publishes it for custom resources: `/openapi/v3` (which group versions have a
//! document, each at a `serverRelativeURL` carrying a content hash) and `/openapi/v3/apis/<group>/<version>` (one
//! document per group version, every CRD served in it merged). This is what `kubectl explain` reads.
//!
//! Each served version's `openAPIV3Schema` becomes `components.schemas["<reversed group>.<version>.<Kind>"]` as
//! apiextensions-apiserver's `BuildOpenAPIV3` builds it: `apiVersion` and `kind` described as in `TypeMeta`,
//! `metadata` a `$ref` to `ObjectMeta`, `x-kubernetes-int-or-string` unfolded into `anyOf`, embedded resources given
//! `apiVersion`/`kind`/`metadata`, and the `x-kubernetes-group-version-kind` extension; plus the `<Kind>List`.
//!
//! Simplifications:
//! * Only group versions with custom resources are listed: built-in kinds (apps/v1, v1, ...) have no document, so
//!   `kubectl explain deployment` fails against the fake. A made-up schema for them would mislead kubectl's
//!   client-side apply, which computes strategic merge patches from these documents.
//! * `paths` holds the read operations only (`get` of one object, `list`), which is where `kubectl explain` finds
//!   a resource's kind. The write operations are left out: kubectl reads their `fieldValidation` parameter to
//!   decide whether the server rejects unknown fields, and the fake does not implement `fieldValidation`.
//! * `ObjectMeta`, `ListMeta` and `Time` are short versions of the real definitions (the common fields).
//! * JSON only: a client asking only for the protobuf form gets 406. The hash is std's SipHash of the JSON, not
//!   SHA-512; clients treat it as opaque.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value, json};

use super::resources::{ApiResourceSpec, Registry};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers \
    should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: \
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. Servers may \
    infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: \
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DOC: &str = "Standard object's metadata. More info: \
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_METADATA_DOC: &str = "Standard list metadata. More info: \
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

fn reference(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

/// `autoscaling.foresight.dev` → `dev.foresight.autoscaling`, as kube-openapi's `ToRESTFriendlyName` names
/// definitions.
fn definition_prefix(group: &str, version: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}", reversed.join("."))
}

/// The group versions that have a document, as `api/v1` or `apis/<group>/<version>` (the discovery keys).
fn documented(registry: &Registry) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for spec in registry.all().iter().filter(|k| k.custom) {
        for version in &spec.versions {
            let key =
                if spec.group.is_empty() { format!("api/{version}") } else { format!("apis/{}/{version}", spec.group) };
            out.insert(key, (spec.group.clone(), version.clone()));
        }
    }
    out
}

/// The hash in a `serverRelativeURL` and the document's `ETag` (uppercase hex, like kube-apiserver's).
pub fn hash(document: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    document.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// The `Expires` of a document fetched by its current hash: a year from now, in HTTP-date form, as kube-openapi
/// sets it.
pub fn a_year_from_now() -> String {
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(365 * 24);
    later.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The URL of a group version's document: `/openapi/v3/apis/<group>/<version>?hash=<hash>`.
pub fn server_relative_url(key: &str, document: &Value) -> String {
    format!("/openapi/v3/{key}?hash={}", hash(document))
}

/// `/openapi/v3`: `{"paths": {"apis/<group>/<version>": {"serverRelativeURL": ...}}}`.
pub fn discovery(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (key, (group, version)) in documented(registry) {
        if let Some(doc) = document(registry, &group, &version) {
            paths.insert(key.clone(), json!({"serverRelativeURL": server_relative_url(&key, &doc)}));
        }
    }
    json!({"paths": paths})
}

/// The document of one group version, or `None` if no custom resource is served there.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&ApiResourceSpec> =
        registry.in_group_version(group, version).into_iter().filter(|k| k.custom).collect();
    if kinds.is_empty() {
        return None;
    }
    let prefix = definition_prefix(group, version);
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for kind in kinds {
        let name = format!("{prefix}.{}", kind.kind);
        schemas.insert(name.clone(), kind_schema(kind, group, version));
        schemas.insert(format!("{name}List"), list_schema(kind, group, version, &name));
        read_paths(&mut paths, kind, group, version, &name);
    }
    schemas.insert(OBJECT_META.into(), object_meta());
    schemas.insert(LIST_META.into(), list_meta());
    schemas.insert(TIME.into(), time());
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `get` of one object and `list` (per namespace and across namespaces for a namespaced kind), each naming its
/// group, version and kind as the CRD builder's routes do.
fn read_paths(paths: &mut Map<String, Value>, kind: &ApiResourceSpec, group: &str, version: &str, name: &str) {
    let root = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let gvk = json!({"group": group, "version": version, "kind": kind.kind});
    let op = |action: &str, description: String, schema: &str| {
        json!({"get": {
            "description": description,
            "responses": {"200": {"description": "OK", "content": {
                "application/json": {"schema": {"$ref": reference(schema)}},
                "application/yaml": {"schema": {"$ref": reference(schema)}}}},
                "401": {"description": "Unauthorized"}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        }})
    };
    let list = format!("{name}List");
    let list_doc = format!("list objects of kind {}", kind.kind);
    let collection = if kind.namespaced {
        paths.insert(format!("{root}/{}", kind.plural), op("list", list_doc.clone(), &list));
        format!("{root}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{root}/{}", kind.plural)
    };
    paths.insert(collection.clone(), op("list", list_doc, &list));
    paths.insert(format!("{collection}/{{name}}"), op("get", format!("read the specified {}", kind.kind), name));
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{"group": group, "version": version, "kind": kind}])
}

fn type_meta(props: &mut Map<String, Value>) {
    props.insert("apiVersion".into(), json!({"description": API_VERSION_DOC, "type": "string"}));
    props.insert("kind".into(), json!({"description": KIND_DOC, "type": "string"}));
}

fn kind_schema(kind: &ApiResourceSpec, group: &str, version: &str) -> Value {
    let mut schema = match kind.schemas.get(version) {
        Some(s) => {
            let mut s = s.clone();
            unfold(&mut s);
            s
        }
        // No schema: an object of any shape, as the builder publishes it.
        None => json!({"type": "object"}),
    };
    if let Some(map) = schema.as_object_mut() {
        if kind.schemas.contains_key(version) {
            let props = map.entry("properties").or_insert_with(|| json!({}));
            if let Some(props) = props.as_object_mut() {
                props.insert("metadata".into(), json!({"$ref": reference(OBJECT_META), "description": METADATA_DOC}));
                type_meta(props);
            }
        }
        map.insert("x-kubernetes-group-version-kind".into(), gvk(group, version, &kind.kind));
    }
    schema
}

fn list_schema(kind: &ApiResourceSpec, group: &str, version: &str, item: &str) -> Value {
    let list_kind = format!("{}List", kind.kind);
    let items_doc = format!(
        "List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
        kind.plural
    );
    let mut props = Map::new();
    props
        .insert("items".into(), json!({"description": items_doc, "type": "array", "items": {"$ref": reference(item)}}));
    props.insert("metadata".into(), json!({"$ref": reference(LIST_META), "description": LIST_METADATA_DOC}));
    type_meta(&mut props);
    json!({
        "description": format!("{list_kind} is a list of {}", kind.kind),
        "type": "object",
        "required": ["items"],
        "properties": props,
        "x-kubernetes-group-version-kind": gvk(group, version, &list_kind),
    })
}

/// What the structural schema's `Unfold` adds: `anyOf: [integer, string]` for int-or-string fields, and
/// `apiVersion`/`kind`/`metadata` in embedded resources.
fn unfold(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let flag = |m: &Map<String, Value>, key: &str| m.get(key).and_then(Value::as_bool).unwrap_or(false);
    if flag(map, "x-kubernetes-int-or-string") && !map.contains_key("anyOf") {
        map.insert("anyOf".into(), json!([{"type": "integer"}, {"type": "string"}]));
    }
    if flag(map, "x-kubernetes-embedded-resource") {
        let props = map.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert("metadata".into(), json!({"$ref": reference(OBJECT_META), "description": METADATA_DOC}));
            type_meta(props);
        }
    }
    if let Some(props) = map.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(unfold);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get_mut(key).filter(|c| c.is_object()) {
            unfold(child);
        }
    }
}

fn string_field(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn string_map(description: &str) -> Value {
    json!({"type": "object", "description": description, "additionalProperties": {"type": "string"}})
}

fn time() -> Value {
    json!({"description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.",
        "type": "string", "format": "date-time"})
}

fn object_meta() -> Value {
    let time_ref = |d: &str| json!({"$ref": reference(TIME), "description": d});
    json!({
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "type": "object",
        "properties": {
            "name": string_field("Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically."),
            "generateName": string_field("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
            "namespace": string_field("Namespace defines the space within which each name must be unique. An empty namespace is equivalent to the \"default\" namespace."),
            "labels": string_map("Map of string keys and values that can be used to organize and categorize (scope and select) objects."),
            "annotations": string_map("Annotations is an unstructured key value map stored with a resource that may be set by external tools to store and retrieve arbitrary metadata."),
            "uid": string_field("UID is the unique in time and space value for this object. It is typically generated by the server on successful creation of a resource and is not allowed to change on PUT operations."),
            "resourceVersion": string_field("An opaque value that represents the internal version of this object that can be used by clients to determine when objects have changed."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state. Populated by the system. Read-only."},
            "creationTimestamp": time_ref("CreationTimestamp is a timestamp representing the server time when this object was created."),
            "deletionTimestamp": time_ref("DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
        },
    })
}

fn list_meta() -> Value {
    json!({
        "description": "ListMeta describes metadata that synthetic resources must have, including lists and various status objects.",
        "type": "object",
        "properties": {
            "resourceVersion": string_field("String that identifies the server's internal version of this object that can be used by clients to determine when objects have changed."),
            "continue": string_field("continue may be set if the user set a limit on the number of items returned, and indicates that the server has more data available."),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakeapi::resources::{builtin_kinds, spec_from_crd};

    fn registry() -> Registry {
        let mut reg = Registry::new(builtin_kinds());
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "description": "A widget.", "properties": {"spec": {"type": "object", "properties": {
                        "port": {"x-kubernetes-int-or-string": true},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                            "x-kubernetes-preserve-unknown-fields": true}}}}}}}]}
        });
        reg.register(spec_from_crd(&crd).expect("valid crd"));
        reg
    }

    #[test]
    fn only_custom_group_versions_are_listed_with_a_hash_of_their_document() {
        let reg = registry();
        let disc = discovery(&reg);
        let paths = disc["paths"].as_object().expect("paths");
        assert_eq!(paths.keys().collect::<Vec<_>>(), ["apis/example.com/v1"]);
        let doc = document(&reg, "example.com", "v1").expect("document");
        assert_eq!(
            paths["apis/example.com/v1"]["serverRelativeURL"],
            format!("/openapi/v3/apis/example.com/v1?hash={}", hash(&doc))
        );
        assert!(document(&reg, "apps", "v1").is_none());
    }

    #[test]
    fn the_kind_schema_is_wrapped_as_the_crd_builder_wraps_it() {
        let doc = document(&registry(), "example.com", "v1").expect("document");
        let widget = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(
            widget["x-kubernetes-group-version-kind"],
            json!([{"group": "example.com", "version": "v1", "kind": "Widget"}])
        );
        assert_eq!(widget["description"], "A widget.");
        assert_eq!(
            widget["properties"]["metadata"]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_eq!(widget["properties"]["kind"]["type"], "string");
        let spec = &widget["properties"]["spec"]["properties"];
        assert_eq!(spec["port"]["anyOf"], json!([{"type": "integer"}, {"type": "string"}]));
        assert!(spec["template"]["properties"]["apiVersion"].is_object());
        let list = &doc["components"]["schemas"]["com.example.v1.WidgetList"];
        assert_eq!(list["properties"]["items"]["items"]["$ref"], "#/components/schemas/com.example.v1.Widget");
        assert_eq!(list["x-kubernetes-group-version-kind"][0]["kind"], "WidgetList");
        assert!(doc["components"]["schemas"][OBJECT_META]["properties"]["name"].is_object());
        let read = &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["get"];
        assert_eq!(read["x-kubernetes-group-version-kind"]["kind"], "Widget");
        let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(doc["paths"].as_object().expect("paths").values().all(|p| p.get("patch").is_none()));
    }
}
