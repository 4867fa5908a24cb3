//! Discovery documents: `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}` (legacy form)
//! and the aggregated `apidiscovery.k8s.io/v2` form kubectl and `Discovery::run_aggregated` ask for first, plus
//! `/version`. Subresources are listed the way the real server lists them: `deployments/scale` answers with an
//! `autoscaling/v1` `Scale`, which is how kubectl's scale client learns where to send `kubectl scale`.

use serde_json::{Value, json};

use super::resources::{ApiResourceSpec, Registry};

/// `Content-Type` of an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery first.
pub fn wants_aggregated(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList") && first.contains("g=apidiscovery.k8s.io"))
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const SUB_VERBS: &[&str] = &["get", "patch", "update"];

fn resources(spec: &ApiResourceSpec) -> Vec<Value> {
    let mut out = vec![json!({
        "name": spec.plural,
        "singularName": spec.singular,
        "namespaced": spec.namespaced,
        "kind": spec.kind,
        "verbs": VERBS,
        "shortNames": spec.short_names,
        "categories": spec.categories,
    })];
    if spec.status_subresource {
        out.push(json!({"name": format!("{}/status", spec.plural), "singularName": "", "namespaced": spec.namespaced,
            "kind": spec.kind, "verbs": SUB_VERBS}));
    }
    if spec.scale.is_some() {
        out.push(json!({"name": format!("{}/scale", spec.plural), "singularName": "", "namespaced": spec.namespaced,
            "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": SUB_VERBS}));
    }
    out
}

/// `APIResourceList` for one group version.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let kinds = registry.in_group_version(group, version);
    if kinds.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": kinds.iter().flat_map(|k| resources(k)).collect::<Vec<_>>(),
    }))
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
}

fn group_entry(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
    let preferred = vs.first().cloned().unwrap_or(json!({}));
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

/// `/apis`.
pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry.groups().iter().map(|(g, vs)| group_entry(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub fn group(registry: &Registry, name: &str) -> Option<Value> {
    let (g, vs) = registry.groups().into_iter().find(|(g, _)| g == name)?;
    let mut entry = group_entry(&g, &vs);
    if let Some(map) = entry.as_object_mut() {
        map.insert("kind".into(), json!("APIGroup"));
        map.insert("apiVersion".into(), json!("v1"));
    }
    Some(entry)
}

fn aggregated_resource(spec: &ApiResourceSpec, version: &str) -> Value {
    let mut subresources = Vec::new();
    if spec.status_subresource {
        subresources.push(json!({"subresource": "status",
            "responseKind": {"group": spec.group, "version": version, "kind": spec.kind}, "verbs": SUB_VERBS}));
    }
    if spec.scale.is_some() {
        subresources.push(json!({"subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": SUB_VERBS}));
    }
    json!({
        "resource": spec.plural,
        "responseKind": {"group": spec.group, "version": version, "kind": spec.kind},
        "scope": if spec.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": spec.singular,
        "verbs": VERBS,
        "shortNames": spec.short_names,
        "categories": spec.categories,
        "subresources": subresources,
    })
}

fn aggregated_group(registry: &Registry, name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> =
                registry.in_group_version(name, v).into_iter().map(|k| aggregated_resource(k, v)).collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name}, "versions": vs})
}

/// Aggregated discovery for `/api` (core) or `/apis` (every other group).
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(registry, "", &["v1".to_string()])]
    } else {
        registry.groups().iter().map(|(g, vs)| aggregated_group(registry, g, vs)).collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// `/version`.
pub fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-foresight-fake", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakeapi::resources::builtin_kinds;

    #[test]
    fn apps_v1_lists_scale_subresource_as_autoscaling_scale() {
        let reg = Registry::new(builtin_kinds());
        let list = resource_list(&reg, "apps", "v1").expect("apps/v1 served");
        let scale = list["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "deployments/scale"))
            .expect("deployments/scale listed");
        assert_eq!((scale["group"].as_str(), scale["kind"].as_str()), (Some("autoscaling"), Some("Scale")));
        assert!(resource_list(&reg, "apps", "v2").is_none());
    }
}
