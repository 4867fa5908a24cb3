//! The kinds the fake serves: what each is called, where it lives, which subresources it has and how the real
//! server treats it (generation, defaulting, what DELETE returns). Built-in kinds are listed here; custom
//! resources are registered from a `CustomResourceDefinition` object exactly as kube-apiserver does.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::core::cel::CompiledSchema;
use serde_json::Value;

/// The CEL `x-kubernetes-validations` of one version's schema, compiled once when the CRD is registered
/// (kube-apiserver compiles them at CRD registration too). Equal only to itself.
#[derive(Clone)]
pub struct CelRules(pub Arc<CompiledSchema>);

impl PartialEq for CelRules {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for CelRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CelRules(..)")
    }
}

/// Where `/scale` reads and writes in the underlying object (JSON paths in the CRD form, `.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    /// Path of the desired replica count, e.g. `.spec.replicas`.
    pub spec_replicas_path: String,
    /// Path of the observed replica count, e.g. `.status.replicas`.
    pub status_replicas_path: String,
    /// Path of the label selector: a string (CRDs) or a `LabelSelector` object (built-in workloads).
    pub label_selector_path: Option<String>,
}

impl ScaleSpec {
    /// The paths built-in workloads use: `.spec.replicas`, `.status.replicas`, `.spec.selector`.
    pub fn workload() -> Self {
        Self {
            spec_replicas_path: ".spec.replicas".into(),
            status_replicas_path: ".status.replicas".into(),
            label_selector_path: Some(".spec.selector".into()),
        }
    }
}

/// One printer column of a custom resource (`additionalPrinterColumns`), used for `kubectl get` tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, ...).
    pub type_: String,
    /// JSONPath as in the CRD, e.g. `.spec.minReplicas` or `.status.conditions[?(@.type=="Ready")].status`.
    pub json_path: String,
    /// 0 for the default view; kubectl shows columns of a higher priority only with `-o wide`.
    pub priority: i64,
}

/// Everything the fake needs to know to serve one resource kind.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResourceSpec {
    /// API group; empty for the core group.
    pub group: String,
    /// Served versions, the preferred (storage) one first.
    pub versions: Vec<String>,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub plural: String,
    /// Singular name, e.g. `deployment`.
    pub singular: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl, e.g. `deploy`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (main-resource writes then ignore `.status`).
    pub status_subresource: bool,
    /// The `/scale` subresource, if any.
    pub scale: Option<ScaleSpec>,
    /// Whether the kind carries `metadata.generation` (workloads and custom resources do, ConfigMaps don't).
    pub has_generation: bool,
    /// Whether DELETE answers with the deleted object (custom resources) rather than a `Status`.
    pub returns_deleted_object: bool,
    /// Whether PUT without `metadata.resourceVersion` is allowed (built-ins yes; custom resources and CRDs
    /// no: the real server answers 422 "must be specified for an update").
    pub allow_unconditional_update: bool,
    /// Whether this kind came from a CRD (list items then keep `apiVersion`/`kind`, as the real server does).
    pub custom: bool,
    /// Per-version structural schemas (`openAPIV3Schema`) of a custom resource: pruning, defaulting, validation.
    pub schemas: BTreeMap<String, Value>,
    /// Per-version compiled CEL rules of a custom resource, enforced on every write like the schema.
    pub cel: BTreeMap<String, CelRules>,
    /// Fields usable in `fieldSelector` besides `metadata.name` and `metadata.namespace`: (label, JSON path).
    pub selectable_fields: Vec<(String, String)>,
    /// Extra `kubectl get` columns.
    pub printer_columns: Vec<PrinterColumn>,
}

impl ApiResourceSpec {
    /// A namespaced or cluster-scoped kind with no subresources; refine with the `with_*` methods.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_string(),
            versions: vec![version.to_string()],
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            kind: kind.to_string(),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            status_subresource: false,
            scale: None,
            has_generation: false,
            returns_deleted_object: false,
            allow_unconditional_update: true,
            custom: false,
            schemas: BTreeMap::new(),
            cel: BTreeMap::new(),
            selectable_fields: Vec::new(),
            printer_columns: Vec::new(),
        }
    }

    /// A custom resource kind as a CRD would register it: generation, deleted object returned on DELETE.
    pub fn custom(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        let mut spec = Self::new(group, version, plural, kind, namespaced);
        spec.custom = true;
        spec.allow_unconditional_update = false;
        spec.has_generation = true;
        spec.returns_deleted_object = true;
        spec
    }

    /// Adds the `/status` subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// Adds the `/scale` subresource.
    pub fn with_scale(mut self, scale: ScaleSpec) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Requires `metadata.resourceVersion` on PUT, as for custom resources and CRDs.
    pub fn conditional_updates_only(mut self) -> Self {
        self.allow_unconditional_update = false;
        self
    }

    /// Sets kubectl short names.
    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets categories.
    pub fn with_categories(mut self, names: &[&str]) -> Self {
        self.categories = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Marks the kind as carrying `metadata.generation`.
    pub fn with_generation(mut self) -> Self {
        self.has_generation = true;
        self
    }

    /// Adds selectable fields (label, JSON path without the leading dot).
    pub fn with_selectable_fields(mut self, fields: &[(&str, &str)]) -> Self {
        self.selectable_fields = fields.iter().map(|(l, p)| (l.to_string(), p.to_string())).collect();
        self
    }

    /// `apps/v1` or `v1` for a version of this kind.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{version}", self.group) }
    }

    /// The preferred (first) version.
    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    /// Whether `version` is served.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }
}

fn workload(plural: &str, kind: &str, short: &[&str]) -> ApiResourceSpec {
    ApiResourceSpec::new("apps", "v1", plural, kind, true)
        .with_status()
        .with_scale(ScaleSpec::workload())
        .with_generation()
        .with_short_names(short)
        .with_categories(&["all"])
}

/// The kinds every fake server starts with.
pub fn builtin_kinds() -> Vec<ApiResourceSpec> {
    let event_fields: &[(&str, &str)] = &[
        ("involvedObject.kind", "involvedObject.kind"),
        ("involvedObject.namespace", "involvedObject.namespace"),
        ("involvedObject.name", "involvedObject.name"),
        ("involvedObject.uid", "involvedObject.uid"),
        ("involvedObject.apiVersion", "involvedObject.apiVersion"),
        ("involvedObject.resourceVersion", "involvedObject.resourceVersion"),
        ("involvedObject.fieldPath", "involvedObject.fieldPath"),
        ("reason", "reason"),
        ("reportingComponent", "reportingComponent"),
        ("source", "source.component"),
        ("type", "type"),
    ];
    vec![
        ApiResourceSpec::new("", "v1", "namespaces", "Namespace", false).with_status().with_short_names(&["ns"]),
        ApiResourceSpec::new("", "v1", "pods", "Pod", true)
            .with_status()
            .with_generation()
            .with_short_names(&["po"])
            .with_categories(&["all"])
            .with_selectable_fields(&[("spec.nodeName", "spec.nodeName"), ("status.phase", "status.phase")]),
        ApiResourceSpec::new("", "v1", "secrets", "Secret", true).with_selectable_fields(&[("type", "type")]),
        ApiResourceSpec::new("", "v1", "configmaps", "ConfigMap", true).with_short_names(&["cm"]),
        ApiResourceSpec::new("", "v1", "services", "Service", true)
            .with_status()
            .with_short_names(&["svc"])
            .with_categories(&["all"]),
        ApiResourceSpec::new("", "v1", "serviceaccounts", "ServiceAccount", true).with_short_names(&["sa"]),
        ApiResourceSpec::new("", "v1", "events", "Event", true)
            .with_short_names(&["ev"])
            .with_selectable_fields(event_fields),
        workload("deployments", "Deployment", &["deploy"]),
        workload("statefulsets", "StatefulSet", &["sts"]),
        workload("replicasets", "ReplicaSet", &["rs"]),
        ApiResourceSpec::new("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", true)
            .with_status()
            .with_generation()
            .with_short_names(&["hpa"])
            .with_categories(&["all"]),
        ApiResourceSpec::new("coordination.k8s.io", "v1", "leases", "Lease", true),
        ApiResourceSpec::new("events.k8s.io", "v1", "events", "Event", true).with_short_names(&["ev"]),
        ApiResourceSpec::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )
        .with_status()
        .with_generation()
        .with_short_names(&["crd", "crds"])
        .conditional_updates_only(),
    ]
}

/// Why a CRD object could not be turned into a served kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrdError {
    /// A required field is missing.
    #[error("{0}: Required value")]
    MissingField(&'static str),
    /// `metadata.name` is not `<plural>.<group>`.
    #[error("metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group")]
    NameMismatch {
        /// The CRD's name.
        name: String,
    },
    /// No version is served.
    #[error("spec.versions: Invalid value: must have at least one served version")]
    NoServedVersion,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Reads a `CustomResourceDefinition` (apiextensions.k8s.io/v1, as JSON) into the kind it registers.
pub fn spec_from_crd(crd: &Value) -> Result<ApiResourceSpec, CrdError> {
    let group = str_at(crd, "/spec/group").ok_or(CrdError::MissingField("spec.group"))?;
    let plural = str_at(crd, "/spec/names/plural").ok_or(CrdError::MissingField("spec.names.plural"))?;
    let kind = str_at(crd, "/spec/names/kind").ok_or(CrdError::MissingField("spec.names.kind"))?;
    let scope = str_at(crd, "/spec/scope").ok_or(CrdError::MissingField("spec.scope"))?;
    let name = str_at(crd, "/metadata/name").unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(CrdError::NameMismatch { name: name.to_string() });
    }
    let versions =
        crd.pointer("/spec/versions").and_then(Value::as_array).ok_or(CrdError::MissingField("spec.versions"))?;
    let mut spec = ApiResourceSpec::custom(group, "v1", plural, kind, scope == "Namespaced");
    spec.versions.clear();
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    spec.singular = str_at(crd, "/spec/names/singular").map(str::to_string).unwrap_or_else(|| kind.to_lowercase());
    spec.short_names = strings(crd.pointer("/spec/names/shortNames"));
    spec.categories = strings(crd.pointer("/spec/names/categories"));
    // Storage version first, then the other served ones in declaration order.
    let mut ordered: Vec<&Value> = versions.iter().collect();
    ordered.sort_by_key(|v| !v.get("storage").and_then(Value::as_bool).unwrap_or(false));
    for version in ordered {
        if !version.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        let Some(vname) = version.get("name").and_then(Value::as_str) else {
            continue;
        };
        spec.versions.push(vname.to_string());
        if let Some(schema) = version.pointer("/schema/openAPIV3Schema") {
            spec.schemas.insert(vname.to_string(), schema.clone());
            let rules = CelRules(Arc::new(kube::core::cel::compile_schema(schema)));
            spec.cel.insert(vname.to_string(), rules);
        }
        let subresources = version.get("subresources");
        if subresources.and_then(|s| s.get("status")).is_some() {
            spec.status_subresource = true;
        }
        if let Some(scale) = subresources.and_then(|s| s.get("scale")) {
            spec.scale = Some(ScaleSpec {
                spec_replicas_path: scale
                    .get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas")
                    .to_string(),
                status_replicas_path: scale
                    .get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas")
                    .to_string(),
                label_selector_path: scale.get("labelSelectorPath").and_then(Value::as_str).map(str::to_string),
            });
        }
        if spec.printer_columns.is_empty()
            && let Some(cols) = version.get("additionalPrinterColumns").and_then(Value::as_array)
        {
            spec.printer_columns = cols
                .iter()
                .filter_map(|c| {
                    Some(PrinterColumn {
                        name: c.get("name")?.as_str()?.to_string(),
                        type_: c.get("type").and_then(Value::as_str).unwrap_or("string").to_string(),
                        json_path: c.get("jsonPath")?.as_str()?.to_string(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    })
                })
                .collect();
        }
        if spec.selectable_fields.is_empty()
            && let Some(fields) = version.get("selectableFields").and_then(Value::as_array)
        {
            spec.selectable_fields = fields
                .iter()
                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                .map(|p| {
                    let p = p.trim_start_matches('.').to_string();
                    (p.clone(), p)
                })
                .collect();
        }
    }
    if spec.versions.is_empty() {
        return Err(CrdError::NoServedVersion);
    }
    Ok(spec)
}

/// All served kinds, looked up by URL parts.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: Vec<ApiResourceSpec>,
}

impl Registry {
    /// A registry holding `kinds`.
    pub fn new(kinds: Vec<ApiResourceSpec>) -> Self {
        Self { kinds }
    }

    /// Adds or replaces (same group and plural) a kind.
    pub fn register(&mut self, spec: ApiResourceSpec) {
        self.kinds.retain(|k| !(k.group == spec.group && k.plural == spec.plural));
        self.kinds.push(spec);
    }

    /// Removes a kind; returns whether it was there.
    pub fn unregister(&mut self, group: &str, plural: &str) -> bool {
        let before = self.kinds.len();
        self.kinds.retain(|k| !(k.group == group && k.plural == plural));
        before != self.kinds.len()
    }

    /// The kind served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ApiResourceSpec> {
        self.kinds.iter().find(|k| k.group == group && k.plural == plural && k.serves(version))
    }

    /// The kind stored as `group/plural`, whatever version.
    pub fn find_any_version(&self, group: &str, plural: &str) -> Option<&ApiResourceSpec> {
        self.kinds.iter().find(|k| k.group == group && k.plural == plural)
    }

    /// All kinds.
    pub fn all(&self) -> &[ApiResourceSpec] {
        &self.kinds
    }

    /// Groups (besides core) with their versions, preferred first, in a stable order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for k in self.kinds.iter().filter(|k| !k.group.is_empty()) {
            let entry = match out.iter_mut().position(|(g, _)| *g == k.group) {
                Some(i) => &mut out[i].1,
                None => {
                    out.push((k.group.clone(), Vec::new()));
                    let last = out.len() - 1;
                    &mut out[last].1
                }
            };
            for v in &k.versions {
                if !entry.contains(v) {
                    entry.push(v.clone());
                }
            }
        }
        out
    }

    /// Kinds served in `group/version`.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&ApiResourceSpec> {
        self.kinds.iter().filter(|k| k.group == group && k.serves(version)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_with_scale_registers_paths_and_scope() {
        let crd = json!({
            "metadata": {"name": "scalingpolicies.autoscaling.foresight.dev"},
            "spec": {
                "group": "autoscaling.foresight.dev",
                "scope": "Namespaced",
                "names": {"plural": "scalingpolicies", "kind": "ScalingPolicy", "shortNames": ["sp"]},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}}}]
            }
        });
        let spec = spec_from_crd(&crd).expect("valid crd");
        assert_eq!(spec.versions, vec!["v1alpha1"]);
        assert!(spec.namespaced && spec.status_subresource && spec.custom);
        assert_eq!(spec.short_names, vec!["sp"]);
        assert_eq!(spec.scale.and_then(|s| s.label_selector_path).as_deref(), Some(".status.selector"));
    }

    #[test]
    fn crd_name_must_be_plural_dot_group() {
        let crd = json!({"metadata": {"name": "wrong"}, "spec": {"group": "g.io", "scope": "Cluster",
            "names": {"plural": "things", "kind": "Thing"}, "versions": [{"name": "v1", "served": true, "storage": true}]}});
        assert_eq!(spec_from_crd(&crd), Err(CrdError::NameMismatch { name: "wrong".into() }));
    }
}
