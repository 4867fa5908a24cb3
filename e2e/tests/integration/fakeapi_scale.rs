//! `/scale` on Deployments and on a custom resource registered by creating its CRD, discovery of both, and
//! the test controls (fault injection, request log).

use foresight_e2e::fakeapi::fixtures::{deployment, scalable_crd};
use foresight_e2e::fakeapi::{FakeApiServer, Fault, Gvr};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube::{Error, ResourceExt};
use serde_json::json;

fn api_error(err: Error) -> Box<kube::core::Status> {
    match err {
        Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn install_widgets(server: &FakeApiServer) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    let crd: CustomResourceDefinition =
        serde_json::from_value(scalable_crd("example.com", "v1", "widgets", "Widget", &["wd"])).expect("crd");
    crds.create(&PostParams::default(), &crd).await.expect("create crd");
    let established = crds.get("widgets.example.com").await.expect("get crd");
    let conditions = established.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"), "CRD gets Established");
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets")
}

#[tokio::test]
async fn deployment_scale_get_patch_replace() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    let created = api.create(&PostParams::default(), &deployment("web", 2)).await.expect("create");

    let scale = api.get_scale("web").await.expect("get scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(scale.status.as_ref().map(|s| s.replicas), Some(0));
    assert_eq!(scale.status.as_ref().and_then(|s| s.selector.clone()).as_deref(), Some("app=web"));
    assert_eq!(scale.metadata.resource_version, created.metadata.resource_version);

    let patched = api
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .expect("patch scale");
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(5));
    let after = api.get("web").await.expect("get");
    assert_eq!(after.spec.as_ref().and_then(|s| s.replicas), Some(5));
    assert_eq!(after.metadata.generation, Some(2), "scaling is a spec change");
    assert_ne!(after.metadata.resource_version, created.metadata.resource_version);

    // A Scale carrying the old resourceVersion conflicts, like on a real server.
    let stale = Scale {
        metadata: kube::api::ObjectMeta {
            name: Some("web".into()),
            resource_version: created.metadata.resource_version,
            ..Default::default()
        },
        spec: Some(ScaleSpec { replicas: Some(1) }),
        status: None,
    };
    let err = api_error(api.replace_scale("web", &PostParams::default(), &stale).await.expect_err("stale"));
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));

    let err = api_error(
        api.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": -1}})))
            .await
            .expect_err("negative"),
    );
    assert_eq!(err.code, 422);

    let missing = api_error(api.get_scale("nope").await.expect_err("missing"));
    assert_eq!((missing.code, missing.message.as_str()), (404, "deployments.apps \"nope\" not found"));
}

#[tokio::test]
async fn kinds_without_scale_subresource_answer_404_status() {
    let server = FakeApiServer::new();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let err = api_error(cms.get_subresource("scale", "x").await.expect_err("no /scale"));
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "the server could not find the requested resource");
}

#[tokio::test]
async fn crd_registers_a_scalable_custom_resource() {
    let server = FakeApiServer::new();
    let ar = install_widgets(&server).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &ar);
    let mut w = DynamicObject::new("w1", &ar);
    w.data = json!({"spec": {"replicas": 1, "unknownField": true}});
    let created = widgets.create(&PostParams::default(), &w).await.expect("create widget");
    assert_eq!(created.data["spec"]["size"], "small", "schema default applied");
    assert!(created.data["spec"].get("unknownField").is_none(), "unknown fields pruned");
    assert_eq!(created.metadata.generation, Some(1));

    let mut bad = DynamicObject::new("w2", &ar);
    bad.data = json!({"spec": {"replicas": -3}});
    let err = api_error(widgets.create(&PostParams::default(), &bad).await.expect_err("schema minimum"));
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        "Widget.example.com \"w2\" is invalid: spec.replicas: Invalid value: -3: spec.replicas in body should be greater than or equal to 0"
    );

    widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1, "selector": "app=w1"}})),
        )
        .await
        .expect("status");
    let scale = widgets.get_scale("w1").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(scale.status.as_ref().and_then(|s| s.selector.clone()).as_deref(), Some("app=w1"));
    let patched = widgets
        .patch_scale("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .expect("patch scale");
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(4));
    let after = widgets.get("w1").await.expect("get");
    assert_eq!(after.data["spec"]["replicas"], 4);
    assert_eq!(after.metadata.generation, Some(2));

    // Deleting the CRD removes the kind and its objects.
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    crds.delete("widgets.example.com", &Default::default()).await.expect("delete crd");
    let err = api_error(widgets.get("w1").await.expect_err("kind gone"));
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn discovery_finds_builtins_subresources_and_registered_crds() {
    let server = FakeApiServer::new();
    install_widgets(&server).await;
    for aggregated in [false, true] {
        let discovery = Discovery::new(server.client());
        let discovery =
            if aggregated { discovery.run_aggregated().await } else { discovery.run().await }.expect("discovery");
        let (deploy, caps) =
            discovery.resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")).expect("deployments discovered");
        assert_eq!(deploy.plural, "deployments");
        assert_eq!(caps.scope, Scope::Namespaced);
        let subresources: Vec<String> = caps.subresources.iter().map(|(ar, _)| ar.plural.clone()).collect();
        assert!(subresources.iter().any(|s| s.contains("scale")), "aggregated={aggregated}: {subresources:?}");
        let (widget, _) =
            discovery.resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget")).expect("widget discovered");
        assert_eq!(widget.plural, "widgets");
        assert!(discovery.has_group("coordination.k8s.io"));
    }
}

#[tokio::test]
async fn faults_fail_n_requests_and_the_log_counts_them() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    server.inject(Fault::new("PATCH", "/deployments/web/scale", 503, 1));
    let pp = PatchParams::default();
    let body = Patch::Merge(json!({"spec": {"replicas": 2}}));
    let err = api_error(api.patch_scale("web", &pp, &body).await.expect_err("injected"));
    assert_eq!((err.code, err.reason.as_str()), (503, "ServiceUnavailable"));
    api.patch_scale("web", &pp, &body).await.expect("second attempt passes");
    let scale_patches: Vec<_> =
        server.requests().into_iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/scale")).collect();
    assert_eq!(scale_patches.len(), 2);
    assert_eq!(scale_patches[0].status, 503);
    assert_eq!(scale_patches[1].content_type.as_deref(), Some("application/merge-patch+json"));
    assert!(scale_patches[1].body.contains("\"replicas\":2"));

    // The hook scales as an outside actor would; generation moves like any spec change.
    let out = server.set_replicas_externally(&Gvr::of::<Deployment>(), Some("default"), "web", 7).expect("hook");
    assert_eq!(out["spec"]["replicas"], 7);
    assert_eq!(api.get("web").await.expect("get").metadata.generation, Some(3));
    assert_eq!(api.get("web").await.expect("get").name_any(), "web");
}

#[tokio::test]
async fn custom_resources_need_a_resource_version_on_put() {
    let server = FakeApiServer::new();
    let ar = install_widgets(&server).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &ar);
    let mut w = DynamicObject::new("w1", &ar);
    w.data = json!({"spec": {"replicas": 1}});
    let created = widgets.create(&PostParams::default(), &w).await.expect("create");
    let mut unconditional = created.clone();
    unconditional.metadata.resource_version = None;
    let err = api_error(widgets.replace("w1", &PostParams::default(), &unconditional).await.expect_err("no rv"));
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        "Widget.example.com \"w1\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );
    let mut conditional = created;
    conditional.data["spec"]["replicas"] = json!(2);
    widgets.replace("w1", &PostParams::default(), &conditional).await.expect("with rv");
    // The test hooks write unconditionally whatever the kind.
    let gvr = Gvr::new("example.com", "v1", "widgets");
    let out = server.set_status(&gvr, Some("default"), "w1", json!({"replicas": 2})).expect("hook");
    assert_eq!(out["status"]["replicas"], 2);
}

#[tokio::test]
async fn simulated_workload_controller_converges_status_after_scaling() {
    let server = FakeApiServer::builder().simulate_workload_controllers(true).build();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &deployment("web", 2)).await.expect("create");
    let status = api.get("web").await.expect("get").status.expect("status written by the simulated controller");
    assert_eq!((status.replicas, status.ready_replicas, status.observed_generation), (Some(2), Some(2), Some(1)));
    api.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .expect("scale");
    let scale = api.get_scale("web").await.expect("scale");
    assert_eq!(scale.status.map(|s| s.replicas), Some(4), "status.replicas follows spec.replicas");
    let plain = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(plain.client(), "default");
    api.create(&PostParams::default(), &deployment("web", 2)).await.expect("create");
    assert_eq!(api.get("web").await.expect("get").status, None, "off by default: nothing writes status");
}
