//! The verbs' semantics, independent of HTTP: create, update, patch, delete, and the `/status` and `/scale`
//! subresources, with the real server's rules: optimistic concurrency on `resourceVersion`, `generation` bumped
//! on spec changes only, `.status` only writable through `/status` when that subresource exists, no-op writes
//! that change nothing keep the resourceVersion and emit no watch event, finalizers delay deletion.
//!
//! Simplifications (documented for test authors): deleting a Namespace removes its contents at once (no
//! Terminating phase); no garbage collection of dependents through `ownerReferences`.

use serde_json::{Value, json};

use super::admission::{admit, validate_name};
use super::errors::{ApiError, Cause, success_status};
use super::objects::{meta_mut, meta_nonempty, meta_str, pointer_of, set_at, without_meta};
use super::ownership::FieldOwners;
use super::patch::{PatchError, PatchKind, apply_patch, decode_body};
use super::resources::{ApiResourceSpec, spec_from_crd};
use super::selectors::label_selector_string;
use super::store::{ObjKey, Store, now_rfc3339};

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The object itself (`.status` ignored when the kind has a status subresource).
    Main,
    /// `/status`: only `.status` changes.
    Status,
}

/// Per-request write options.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `fieldManager` (or the user-agent-derived default).
    pub field_manager: String,
    /// Whether `fieldManager` was given explicitly (server-side apply requires it).
    pub explicit_manager: bool,
    /// `dryRun=All`: run everything, store nothing.
    pub dry_run: bool,
    /// `force=true` for server-side apply.
    pub force: bool,
}

/// Options of a DELETE (from its `DeleteOptions` body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

fn object_key(spec: &ApiResourceSpec, namespace: &str, name: &str) -> ObjKey {
    ObjKey::new(&spec.group, &spec.plural, if spec.namespaced { namespace } else { "" }, name)
}

fn set_type_meta(spec: &ApiResourceSpec, version: &str, obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(spec.api_version(version)));
        map.insert("kind".into(), json!(spec.kind));
    }
}

fn check_type_meta(spec: &ApiResourceSpec, version: &str, obj: &Value) -> Result<(), ApiError> {
    let expected = spec.api_version(version);
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != expected
        && !(spec.group == av.split('/').next().unwrap_or_default()
            && spec.serves(av.rsplit('/').next().unwrap_or_default()))
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({expected})"
        )));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && !kind.is_empty()
        && kind != spec.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            spec.kind
        )));
    }
    Ok(())
}

fn check_namespace(spec: &ApiResourceSpec, namespace: &str, obj: &mut Value) -> Result<(), ApiError> {
    let Some(meta) = meta_mut(obj) else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    if !spec.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(namespace));
            Ok(())
        }
    }
}

/// A request body that is an object of this kind and version, in `namespace` (filled in when absent), as both
/// create and update require.
fn checked_body(spec: &ApiResourceSpec, version: &str, namespace: &str, body: Value) -> Result<Value, ApiError> {
    let mut obj = body;
    if !obj.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    check_type_meta(spec, version, &obj)?;
    check_namespace(spec, namespace, &mut obj)?;
    Ok(obj)
}

/// POST: creates an object. `owners` carries field ownership computed by a server-side apply.
pub fn create(
    store: &mut Store,
    spec: &ApiResourceSpec,
    version: &str,
    namespace: &str,
    body: Value,
    opts: &WriteOpts,
    owners: Option<FieldOwners>,
) -> Result<Value, ApiError> {
    let mut obj = checked_body(spec, version, namespace, body)?;
    let name = match meta_nonempty(&obj, "name") {
        Some(n) => n.to_string(),
        None => match meta_nonempty(&obj, "generateName") {
            Some(prefix) => format!("{prefix}{}", store.random_suffix()),
            None => {
                return Err(ApiError::invalid(
                    &spec.group,
                    &spec.kind,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
        },
    };
    validate_name(spec, &name)?;
    if spec.namespaced && store.get(&ObjKey::new("", "namespaces", "", namespace)).is_none() {
        return Err(ApiError::not_found("", "namespaces", namespace));
    }
    if meta_nonempty(&obj, "resourceVersion").is_some() {
        return Err(ApiError::internal(
            "Internal error occurred: resourceVersion should not be set on objects to be created",
        ));
    }
    let key = object_key(spec, namespace, &name);
    if store.get(&key).is_some() {
        return Err(ApiError::already_exists(&spec.group, &spec.plural, &name));
    }
    let uid = store.new_uid();
    if let Some(meta) = meta_mut(&mut obj) {
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        for f in ["deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"] {
            meta.remove(f);
        }
        if spec.has_generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    if spec.status_subresource
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    set_type_meta(spec, version, &mut obj);
    admit(spec, version, &name, &mut obj, None)?;
    let owners = match owners {
        Some(mut o) => {
            o.prune(&obj);
            o
        }
        None => {
            let mut o = FieldOwners::default();
            o.record_update(&opts.field_manager, None, &obj);
            o
        }
    };
    if opts.dry_run {
        return Ok(obj);
    }
    let stored = store.write(key.clone(), obj, owners);
    after_write(store, spec, &stored)?;
    Ok(stored)
}

fn precondition_checks(spec: &ApiResourceSpec, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    if let Some(rv) = meta_nonempty(new, "resourceVersion")
        && Some(rv) != meta_str(old, "resourceVersion")
    {
        return Err(ApiError::conflict(&spec.group, &spec.plural, name));
    }
    if let Some(uid) = meta_nonempty(new, "uid")
        && Some(uid) != meta_str(old, "uid")
    {
        let what = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta_str(old, "uid").unwrap_or_default()
        );
        return Err(ApiError::precondition_failed(&spec.group, &spec.plural, name, &what));
    }
    Ok(())
}

/// PUT (main resource or `/status`), and the tail of every PATCH.
#[allow(clippy::too_many_arguments)]
pub fn update(
    store: &mut Store,
    spec: &ApiResourceSpec,
    version: &str,
    namespace: &str,
    name: &str,
    body: Value,
    sub: Sub,
    opts: &WriteOpts,
    owners: Option<FieldOwners>,
) -> Result<Value, ApiError> {
    let new = checked_body(spec, version, namespace, body)?;
    match meta_nonempty(&new, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    let key = object_key(spec, namespace, name);
    let Some(existing) = store.get(&key) else {
        return Err(ApiError::not_found(&spec.group, &spec.plural, name));
    };
    let old = existing.value.clone();
    let old_owners = existing.owners.clone();
    if !spec.allow_unconditional_update && meta_nonempty(&new, "resourceVersion").is_none() {
        return Err(ApiError::invalid(
            &spec.group,
            &spec.kind,
            name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: 0x0: must be specified for an update".into(),
                field: "metadata.resourceVersion".into(),
            }],
        ));
    }
    precondition_checks(spec, name, &old, &new)?;

    let mut obj = match sub {
        Sub::Main => {
            let mut obj = new;
            if spec.status_subresource
                && let Some(map) = obj.as_object_mut()
            {
                match old.get("status") {
                    Some(s) => map.insert("status".into(), s.clone()),
                    None => map.remove("status"),
                };
            }
            obj
        }
        Sub::Status => {
            let mut obj = old.clone();
            if let Some(map) = obj.as_object_mut() {
                match new.get("status") {
                    Some(s) => map.insert("status".into(), s.clone()),
                    None => map.remove("status"),
                };
            }
            obj
        }
    };
    // System-owned metadata always comes from the stored object.
    if let (Some(meta), Some(old_meta)) = (meta_mut(&mut obj), old.get("metadata")) {
        meta.insert("name".into(), json!(name));
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old_meta.get(f) {
                Some(v) => meta.insert(f.into(), v.clone()),
                None => meta.remove(f),
            };
        }
        meta.remove("managedFields");
    }
    set_type_meta(spec, version, &mut obj);
    admit(spec, version, name, &mut obj, Some(&old))?;
    if spec.has_generation
        && sub == Sub::Main
        && without_meta(&obj, spec.status_subresource) != without_meta(&old, spec.status_subresource)
    {
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        if let Some(meta) = meta_mut(&mut obj) {
            meta.insert("generation".into(), json!(generation));
        }
    }
    let mut old_cmp = old.clone();
    set_type_meta(spec, version, &mut old_cmp);
    if obj == old_cmp {
        // The real server does not write an unchanged object: same resourceVersion, no watch event.
        return Ok(old);
    }
    if deleting_and_unfinalized(&obj) {
        if opts.dry_run {
            return Ok(obj);
        }
        let removed = store.remove(&key).unwrap_or(obj);
        after_delete(store, spec, &key)?;
        return Ok(removed);
    }
    let owners = match owners {
        Some(mut o) => {
            o.prune(&obj);
            o
        }
        None => {
            let mut o = old_owners;
            o.record_update(&opts.field_manager, Some(&old), &obj);
            o
        }
    };
    if opts.dry_run {
        return Ok(obj);
    }
    let stored = store.write(key, obj, owners);
    after_write(store, spec, &stored)?;
    Ok(stored)
}

fn deleting_and_unfinalized(obj: &Value) -> bool {
    meta_nonempty(obj, "deletionTimestamp").is_some()
        && obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty)
}

fn patch_error(spec: &ApiResourceSpec, name: &str, err: PatchError) -> ApiError {
    match err {
        PatchError::JsonPatch(e) => ApiError::unprocessable_patch(&spec.group, &spec.kind, name, e.to_string()),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// PATCH of the main resource or `/status`, in any of the four patch flavours.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &mut Store,
    spec: &ApiResourceSpec,
    version: &str,
    namespace: &str,
    name: &str,
    kind: PatchKind,
    body: &[u8],
    sub: Sub,
    opts: &WriteOpts,
) -> Result<Value, ApiError> {
    let key = object_key(spec, namespace, name);
    let existing = store.get(&key).map(|s| (s.value.clone(), s.owners.clone()));
    if kind == PatchKind::Apply {
        if !opts.explicit_manager {
            return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set"));
        }
        let config = decode_body(body, true).map_err(|e| patch_error(spec, name, e))?;
        if !config.is_object() {
            return Err(ApiError::bad_request("apply patch must be a JSON or YAML object"));
        }
        if let Some(n) = meta_nonempty(&config, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        return match existing {
            None if sub == Sub::Main => {
                let mut owners = FieldOwners::default();
                let mut merged = owners
                    .apply(&opts.field_manager, opts.force, None, &config)
                    .map_err(|c| ApiError::apply_conflict(&spec.group, &spec.plural, name, &c))?;
                if let Some(meta) = meta_mut(&mut merged) {
                    meta.insert("name".into(), json!(name));
                }
                create(store, spec, version, namespace, merged, opts, Some(owners))
            }
            None => Err(ApiError::not_found(&spec.group, &spec.plural, name)),
            Some((old, mut owners)) => {
                precondition_checks(spec, name, &old, &config)?;
                let merged = owners
                    .apply(&opts.field_manager, opts.force, Some(&old), &config)
                    .map_err(|c| ApiError::apply_conflict(&spec.group, &spec.plural, name, &c))?;
                update(store, spec, version, namespace, name, merged, sub, opts, Some(owners))
            }
        };
    }
    let Some((old, _)) = existing else {
        return Err(ApiError::not_found(&spec.group, &spec.plural, name));
    };
    let mut base = old;
    set_type_meta(spec, version, &mut base);
    let patched = apply_patch(kind, &base, body).map_err(|e| patch_error(spec, name, e))?;
    update(store, spec, version, namespace, name, patched, sub, opts, None)
}

/// DELETE of one object. Returns the body to answer with: the object (while finalizers hold it, or for kinds
/// that return the deleted object) or a success `Status`.
pub fn delete(
    store: &mut Store,
    spec: &ApiResourceSpec,
    namespace: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Value, ApiError> {
    let key = object_key(spec, namespace, name);
    let Some(existing) = store.get(&key) else {
        return Err(ApiError::not_found(&spec.group, &spec.plural, name));
    };
    let old = existing.value.clone();
    let owners = existing.owners.clone();
    if let Some(uid) = &opts.uid
        && Some(uid.as_str()) != meta_str(&old, "uid")
    {
        let what = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta_str(&old, "uid").unwrap_or_default()
        );
        return Err(ApiError::precondition_failed(&spec.group, &spec.plural, name, &what));
    }
    if let Some(rv) = &opts.resource_version
        && Some(rv.as_str()) != meta_str(&old, "resourceVersion")
    {
        let what = format!(
            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
            meta_str(&old, "resourceVersion").unwrap_or_default()
        );
        return Err(ApiError::precondition_failed(&spec.group, &spec.plural, name, &what));
    }
    let has_finalizers = old.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if meta_nonempty(&old, "deletionTimestamp").is_some() || opts.dry_run {
            return Ok(old);
        }
        let mut obj = old.clone();
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64);
        if let Some(meta) = meta_mut(&mut obj) {
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(g) = generation {
                meta.insert("generation".into(), json!(g + 1));
            }
        }
        return Ok(store.write(key, obj, owners));
    }
    if opts.dry_run {
        return Ok(old);
    }
    let removed = store.remove(&key).unwrap_or(old);
    after_delete(store, spec, &key)?;
    if spec.returns_deleted_object {
        Ok(removed)
    } else {
        Ok(success_status(&spec.group, &spec.plural, name, meta_str(&removed, "uid").unwrap_or_default()))
    }
}

/// Reactions the real cluster's controllers would have to a committed write.
fn after_write(store: &mut Store, spec: &ApiResourceSpec, obj: &Value) -> Result<(), ApiError> {
    match (spec.group.as_str(), spec.plural.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => establish_crd(store, obj),
        ("apps", "deployments" | "statefulsets" | "replicasets") if store.simulate_workloads => {
            converge_workload(store, spec, obj);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Registers the kind a CRD defines and marks it `NamesAccepted` and `Established` in a second write, as the
/// apiextensions controllers do.
fn establish_crd(store: &mut Store, crd: &Value) -> Result<(), ApiError> {
    let kind = spec_from_crd(crd).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let storage = kind.preferred_version().to_string();
    store.registry.register(kind);
    let established = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    if established {
        return Ok(());
    }
    let Some(name) = meta_str(crd, "name") else {
        return Ok(());
    };
    let key = ObjKey::new("apiextensions.k8s.io", "customresourcedefinitions", "", name);
    let Some(stored) = store.get(&key) else {
        return Ok(());
    };
    let owners = stored.owners.clone();
    let mut obj = stored.value.clone();
    let now = now_rfc3339();
    let condition = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    set_at(
        &mut obj,
        ".status",
        json!({
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "acceptedNames": names,
            "storedVersions": [storage],
        }),
    );
    store.write(key, obj, owners);
    Ok(())
}

/// What a Deployment/StatefulSet/ReplicaSet controller with instantly ready pods would report.
fn converge_workload(store: &mut Store, spec: &ApiResourceSpec, obj: &Value) {
    let replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
    let status = obj.get("status").cloned().unwrap_or(json!({}));
    if status.get("replicas").and_then(Value::as_i64) == Some(replicas)
        && status.get("observedGeneration").and_then(Value::as_i64) == Some(generation)
    {
        return;
    }
    let (Some(ns), Some(name)) = (meta_str(obj, "namespace"), meta_str(obj, "name")) else {
        return;
    };
    let key = ObjKey::new(&spec.group, &spec.plural, ns, name);
    let Some(stored) = store.get(&key) else {
        return;
    };
    let owners = stored.owners.clone();
    let mut updated = stored.value.clone();
    let mut new_status = status;
    for field in ["replicas", "readyReplicas", "availableReplicas", "updatedReplicas", "currentReplicas"] {
        set_at(&mut new_status, field, json!(replicas));
    }
    set_at(&mut new_status, "observedGeneration", json!(generation));
    if let Some(map) = updated.as_object_mut() {
        map.insert("status".into(), new_status);
    }
    store.write(key, updated, owners);
}

/// Cascades the real cluster performs after an object is gone.
fn after_delete(store: &mut Store, spec: &ApiResourceSpec, key: &ObjKey) -> Result<(), ApiError> {
    match (spec.group.as_str(), spec.plural.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            if let Some((plural, group)) = key.name.split_once('.') {
                let keys: Vec<ObjKey> = store.list(group, plural, None).into_iter().map(|(k, _)| k.clone()).collect();
                for k in keys {
                    store.remove(&k);
                }
                store.registry.unregister(group, plural);
            }
        }
        ("", "namespaces") => {
            let kinds: Vec<ApiResourceSpec> = store.registry.all().iter().filter(|k| k.namespaced).cloned().collect();
            for kind in kinds {
                let keys: Vec<ObjKey> = store
                    .list(&kind.group, &kind.plural, Some(&key.name))
                    .into_iter()
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    store.remove(&k);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The `autoscaling/v1` `Scale` view of an object.
pub fn scale_of(spec: &ApiResourceSpec, obj: &Value) -> Result<Value, ApiError> {
    let scale = spec.scale.as_ref().ok_or_else(ApiError::no_such_path)?;
    let int_at = |path: &str| obj.pointer(&pointer_of(path)).and_then(Value::as_i64).unwrap_or(0);
    let selector = scale
        .label_selector_path
        .as_deref()
        .and_then(|p| obj.pointer(&pointer_of(p)))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => label_selector_string(other),
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut status = json!({"replicas": int_at(&scale.status_replicas_path)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": int_at(&scale.spec_replicas_path)},
        "status": status,
    }))
}

/// GET `/scale`.
pub fn get_scale(store: &Store, spec: &ApiResourceSpec, namespace: &str, name: &str) -> Result<Value, ApiError> {
    spec.scale.as_ref().ok_or_else(ApiError::no_such_path)?;
    let key = object_key(spec, namespace, name);
    let stored = store.get(&key).ok_or_else(|| ApiError::not_found(&spec.group, &spec.plural, name))?;
    scale_of(spec, &stored.value)
}

/// PUT `/scale`: sets the underlying object's replicas (a spec change: generation and resourceVersion move).
#[allow(clippy::too_many_arguments)]
pub fn update_scale(
    store: &mut Store,
    spec: &ApiResourceSpec,
    version: &str,
    namespace: &str,
    name: &str,
    body: &Value,
    opts: &WriteOpts,
) -> Result<Value, ApiError> {
    let scale = spec.scale.clone().ok_or_else(ApiError::no_such_path)?;
    if body.get("kind").and_then(Value::as_str).is_some_and(|k| k != "Scale") {
        return Err(ApiError::bad_request("the body of a /scale request must be an autoscaling/v1 Scale"));
    }
    let key = object_key(spec, namespace, name);
    let stored = store.get(&key).ok_or_else(|| ApiError::not_found(&spec.group, &spec.plural, name))?;
    let mut obj = stored.value.clone();
    if let Some(rv) = meta_nonempty(body, "resourceVersion")
        && Some(rv) != meta_str(&obj, "resourceVersion")
    {
        return Err(ApiError::conflict(&spec.group, &spec.plural, name));
    }
    let replicas = match body.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: {v} is not an integer"
            ))
        })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                field: "spec.replicas".into(),
            }],
        ));
    }
    set_at(&mut obj, &scale.spec_replicas_path, json!(replicas));
    let updated = update(store, spec, version, namespace, name, obj, Sub::Main, opts, None)?;
    scale_of(spec, &updated)
}

/// PATCH `/scale`: the patch applies to the `Scale` view, then as PUT `/scale`.
#[allow(clippy::too_many_arguments)]
pub fn patch_scale(
    store: &mut Store,
    spec: &ApiResourceSpec,
    version: &str,
    namespace: &str,
    name: &str,
    kind: PatchKind,
    body: &[u8],
    opts: &WriteOpts,
) -> Result<Value, ApiError> {
    let current = get_scale(store, spec, namespace, name)?;
    let patched = apply_patch(kind, &current, body).map_err(|e| patch_error(spec, name, e))?;
    update_scale(store, spec, version, namespace, name, &patched, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakeapi::resources::{Registry, builtin_kinds};

    fn store() -> (Store, ApiResourceSpec) {
        let mut store = Store::new(Registry::new(builtin_kinds()));
        let ns = builtin_kinds().into_iter().find(|k| k.plural == "namespaces").expect("ns");
        create(&mut store, &ns, "v1", "", json!({"metadata": {"name": "d"}}), &WriteOpts::default(), None).expect("ns");
        let cm = builtin_kinds().into_iter().find(|k| k.plural == "configmaps").expect("cm");
        (store, cm)
    }

    #[test]
    fn unchanged_update_keeps_resource_version() {
        let (mut store, cm) = store();
        let opts = WriteOpts::default();
        let created =
            create(&mut store, &cm, "v1", "d", json!({"metadata": {"name": "a"}, "data": {"k": "v"}}), &opts, None)
                .expect("create");
        let rv = store.current_rv();
        let same = update(&mut store, &cm, "v1", "d", "a", created.clone(), Sub::Main, &opts, None).expect("update");
        assert_eq!(same["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
        assert_eq!(store.current_rv(), rv);
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let (mut store, cm) = store();
        let opts = WriteOpts::default();
        create(&mut store, &cm, "v1", "d", json!({"metadata": {"name": "a", "finalizers": ["x/y"]}}), &opts, None)
            .expect("create");
        let pending = delete(&mut store, &cm, "d", "a", &DeleteOpts::default()).expect("delete");
        assert!(pending["metadata"]["deletionTimestamp"].is_string());
        let patch = br#"{"metadata": {"finalizers": null}}"#;
        patch_fn(&mut store, &cm, patch);
        assert!(store.get(&ObjKey::new("", "configmaps", "d", "a")).is_none());
    }

    fn patch_fn(store: &mut Store, cm: &ApiResourceSpec, body: &[u8]) {
        patch(store, cm, "v1", "d", "a", PatchKind::Merge, body, Sub::Main, &WriteOpts::default()).expect("patch");
    }
}
