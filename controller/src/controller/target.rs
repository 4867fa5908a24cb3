//! The scaled workload, seen only through its `/scale` subresource, so that any kind with one works.
//!
//! Deployments, StatefulSets and ReplicaSets are resolved without asking the API server; any other kind is
//! resolved once through discovery and cached for the life of the controller.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet, StatefulSet},
    autoscaling::v1::Scale,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery,
};
use serde_json::json;

use super::error::Error;
use crate::api::TargetRef;

/// The field manager Foresight's writes are recorded under.
pub const FIELD_MANAGER: &str = "foresight";

/// Resolves target kinds to API resources, asking discovery at most once per (apiVersion, kind).
#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Resolver {
    /// The API resource of a target's kind.
    pub async fn resolve(&self, client: &Client, target: &TargetRef) -> Result<ApiResource, Error> {
        if let Some(ar) = well_known(target) {
            return Ok(ar);
        }
        let key = (target.api_version.clone(), target.kind.clone());
        if let Some(ar) = self.lock().get(&key) {
            return Ok(ar.clone());
        }
        let (group, version) = match target.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", target.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &target.kind);
        let (ar, _caps) = discovery::pinned_kind(client, &gvk).await.map_err(|source| Error::ResolveTarget {
            api_version: target.api_version.clone(),
            kind: target.kind.clone(),
            source,
        })?;
        self.lock().insert(key, ar.clone());
        Ok(ar)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ApiResource>> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The built-in workload kinds, known without discovery.
fn well_known(target: &TargetRef) -> Option<ApiResource> {
    match (target.api_version.as_str(), target.kind.as_str()) {
        ("apps/v1", "Deployment") => Some(ApiResource::erase::<Deployment>(&())),
        ("apps/v1", "StatefulSet") => Some(ApiResource::erase::<StatefulSet>(&())),
        ("apps/v1", "ReplicaSet") => Some(ApiResource::erase::<ReplicaSet>(&())),
        _ => None,
    }
}

/// The target's `/scale`: its desired replicas and the resourceVersion they were read at.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetScale {
    pub replicas: u32,
    pub resource_version: Option<String>,
}

/// Reads the target's `/scale`. A 404 (no such object, or no /scale on its kind) is [`Error::TargetNotFound`].
pub async fn read_scale(api: &Api<DynamicObject>, target: &TargetRef) -> Result<TargetScale, Error> {
    match api.get_scale(&target.name).await {
        Ok(scale) => Ok(TargetScale {
            replicas: scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32,
            resource_version: scale.metadata.resource_version,
        }),
        Err(source) if Error::is_not_found(&source) => {
            Err(Error::TargetNotFound { kind: target.kind.clone(), name: target.name.clone() })
        }
        Err(source) => Err(Error::GetScale { kind: target.kind.clone(), name: target.name.clone(), source }),
    }
}

/// The merge patch that sets the replicas. It carries the resourceVersion the decision was based on, so that a
/// change made by someone else in between is a 409 conflict (retried with fresh data), not silently overwritten.
pub fn scale_patch(replicas: u32, resource_version: Option<&str>) -> serde_json::Value {
    match resource_version {
        Some(rv) => json!({ "metadata": { "resourceVersion": rv }, "spec": { "replicas": replicas } }),
        None => json!({ "spec": { "replicas": replicas } }),
    }
}

/// Sets the target's replicas through `/scale`.
pub async fn patch_scale(
    api: &Api<DynamicObject>,
    target: &TargetRef,
    replicas: u32,
    resource_version: Option<&str>,
) -> Result<Scale, Error> {
    let patch = scale_patch(replicas, resource_version);
    api.patch_scale(&target.name, &patch_params(), &Patch::Merge(&patch)).await.map_err(|source| {
        if Error::is_not_found(&source) {
            Error::TargetNotFound { kind: target.kind.clone(), name: target.name.clone() }
        } else {
            Error::PatchScale { kind: target.kind.clone(), name: target.name.clone(), source }
        }
    })
}

/// Patch parameters that record Foresight as the field manager.
pub fn patch_params() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(api_version: &str, kind: &str) -> TargetRef {
        TargetRef { api_version: api_version.into(), kind: kind.into(), name: "web".into() }
    }

    #[test]
    fn built_in_kinds_need_no_discovery() {
        let ar = well_known(&target("apps/v1", "Deployment")).expect("known");
        assert_eq!((ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()), ("apps", "v1", "deployments"));
        assert_eq!(well_known(&target("apps/v1", "StatefulSet")).map(|a| a.plural), Some("statefulsets".into()));
        assert!(well_known(&target("argoproj.io/v1alpha1", "Rollout")).is_none());
    }

    #[test]
    fn the_scale_patch_pins_the_resource_version() {
        assert_eq!(
            scale_patch(4, Some("17")),
            json!({ "metadata": { "resourceVersion": "17" }, "spec": { "replicas": 4 } })
        );
        assert_eq!(scale_patch(2, None), json!({ "spec": { "replicas": 2 } }));
    }
}
