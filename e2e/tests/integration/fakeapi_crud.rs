//! CRUD, optimistic concurrency, `/status`, generation, errors and server-side apply through the real
//! `kube::Client`, each asserting what a real API server answers.

use foresight_e2e::fakeapi::fixtures::deployment;
use foresight_e2e::fakeapi::{FakeApiServer, Gvr};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Error, ResourceExt};
use serde_json::json;

fn api_error(err: Error) -> Box<kube::core::Status> {
    match err {
        Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_round_trip_assigns_server_fields() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");

    let created = api.create(&PostParams::default(), &deployment("web", 2)).await.expect("create");
    assert!(created.metadata.uid.is_some(), "uid assigned");
    assert!(created.metadata.creation_timestamp.is_some(), "creationTimestamp assigned");
    assert_eq!(created.metadata.generation, Some(1));
    let rv1: u64 = created.resource_version().expect("rv").parse().expect("numeric rv");

    let fetched = api.get("web").await.expect("get");
    assert_eq!(fetched.metadata.uid, created.metadata.uid);
    let listed = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items.iter().map(|d| d.name_any()).collect::<Vec<_>>(), vec!["web"]);

    let mut changed = fetched.clone();
    changed.spec.as_mut().expect("spec").replicas = Some(5);
    let replaced = api.replace("web", &PostParams::default(), &changed).await.expect("replace");
    let rv2: u64 = replaced.resource_version().expect("rv").parse().expect("numeric rv");
    assert!(rv2 > rv1, "resourceVersion moves forward: {rv1} -> {rv2}");
    assert_eq!(replaced.metadata.generation, Some(2));

    let deleted = api.delete("web", &DeleteParams::default()).await.expect("delete");
    assert!(deleted.is_right(), "a Deployment DELETE answers with a Status, like the real server");
    assert_eq!(api.get_opt("web").await.expect("get_opt"), None);
    let err = api_error(api.get("web").await.expect_err("gone"));
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "deployments.apps \"web\" not found");
}

#[tokio::test]
async fn create_twice_is_already_exists_and_generate_name_makes_unique_names() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some("c".into()), ..Default::default() },
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm).await.expect("first");
    let err = api_error(api.create(&PostParams::default(), &cm).await.expect_err("second"));
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert!(err.is_already_exists());
    assert_eq!(err.message, "configmaps \"c\" already exists");

    let generated = ConfigMap {
        metadata: kube::api::ObjectMeta { generate_name: Some("gen-".into()), ..Default::default() },
        ..Default::default()
    };
    let a = api.create(&PostParams::default(), &generated).await.expect("a").name_any();
    let b = api.create(&PostParams::default(), &generated).await.expect("b").name_any();
    assert!(a.starts_with("gen-") && a.len() == 9, "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn create_in_missing_namespace_is_not_found() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "nowhere");
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some("c".into()), ..Default::default() },
        ..Default::default()
    };
    let err = api_error(api.create(&PostParams::default(), &cm).await.expect_err("no namespace"));
    assert_eq!((err.code, err.message.as_str()), (404, "namespaces \"nowhere\" not found"));
}

#[tokio::test]
async fn invalid_deployment_is_rejected_with_422() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    let mut bad = deployment("web", 1);
    bad.spec.as_mut().expect("spec").template.metadata = None;
    let err = api_error(api.create(&PostParams::default(), &bad).await.expect_err("labels do not match"));
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.starts_with("Deployment.apps \"web\" is invalid: spec.template.metadata.labels"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn stale_replace_and_stale_patch_conflict() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    let v1 = api.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    // Someone else writes in between.
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.expect("patch");

    let mut stale = v1.clone();
    stale.spec.as_mut().expect("spec").replicas = Some(7);
    let err = api_error(api.replace("web", &PostParams::default(), &stale).await.expect_err("stale replace"));
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message
            .starts_with("Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified")
    );

    let stale_patch = json!({"metadata": {"resourceVersion": v1.resource_version()}, "spec": {"replicas": 7}});
    let err = api_error(
        api.patch("web", &PatchParams::default(), &Patch::Merge(stale_patch)).await.expect_err("stale patch"),
    );
    assert_eq!(err.code, 409);

    // A replace with the current resourceVersion succeeds; one without a resourceVersion is unconditional.
    let mut current = api.get("web").await.expect("get");
    current.spec.as_mut().expect("spec").replicas = Some(4);
    api.replace("web", &PostParams::default(), &current).await.expect("fresh replace");
    assert_eq!(api.get("web").await.expect("get").spec.expect("spec").replicas, Some(4));

    let missing =
        api_error(api.replace("nope", &PostParams::default(), &deployment("nope", 1)).await.expect_err("missing"));
    assert_eq!(missing.code, 404);
}

#[tokio::test]
async fn status_and_main_resource_writes_are_separated() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    let mut with_status = deployment("web", 2);
    with_status.status = Some(DeploymentStatus { replicas: Some(9), ..Default::default() });
    let created = api.create(&PostParams::default(), &with_status).await.expect("create");
    assert_eq!(created.status, None, "status is dropped on create when /status is a subresource");

    let pp = PatchParams::default();
    let after_status = api
        .patch_status(
            "web",
            &pp,
            &Patch::Merge(json!({"spec": {"replicas": 50}, "status": {"replicas": 2, "readyReplicas": 1}})),
        )
        .await
        .expect("patch status");
    assert_eq!(after_status.spec.as_ref().and_then(|s| s.replicas), Some(2), "/status never changes spec");
    assert_eq!(after_status.status.as_ref().and_then(|s| s.ready_replicas), Some(1));
    assert_eq!(after_status.metadata.generation, Some(1), "status writes do not bump generation");

    let after_main = api
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 99}})))
        .await
        .expect("patch main");
    assert_eq!(after_main.status.as_ref().and_then(|s| s.ready_replicas), Some(1), "main writes never change status");
    assert_eq!(after_main.metadata.generation, Some(2));
}

#[tokio::test]
async fn generation_moves_on_spec_changes_only_and_noop_writes_keep_resource_version() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    let pp = PatchParams::default();
    let labelled = api
        .patch("web", &pp, &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}, "annotations": {"x": "y"}}})))
        .await
        .expect("label");
    assert_eq!(labelled.metadata.generation, Some(1), "metadata changes keep generation");
    let same =
        api.patch("web", &pp, &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}}))).await.expect("noop");
    assert_eq!(same.resource_version(), labelled.resource_version(), "an unchanged object is not rewritten");
    let scaled = api.patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 2}}))).await.expect("spec");
    assert_eq!(scaled.metadata.generation, Some(2));
}

#[tokio::test]
async fn json_patch_test_op_guards_the_write() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 5},
        {"op": "replace", "path": "/spec/replicas", "value": 6}
    ]))
    .expect("patch");
    let err = api_error(
        api.patch("web", &PatchParams::default(), &Patch::<()>::Json(failing)).await.expect_err("test fails"),
    );
    assert_eq!(err.code, 422);
    let passing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 6}
    ]))
    .expect("patch");
    let out = api.patch("web", &PatchParams::default(), &Patch::<()>::Json(passing)).await.expect("test passes");
    assert_eq!(out.spec.and_then(|s| s.replicas), Some(6));
}

#[tokio::test]
async fn strategic_merge_keeps_other_containers() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    let mut d = deployment("web", 1);
    let pod = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()).expect("pod spec");
    let mut sidecar = pod.containers[0].clone();
    sidecar.name = "sidecar".into();
    pod.containers.push(sidecar);
    api.create(&PostParams::default(), &d).await.expect("create");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}});
    let out = api.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.expect("smp");
    let containers = out.spec.and_then(|s| s.template.spec).map(|p| p.containers).expect("containers");
    let images: Vec<(String, Option<String>)> = containers.into_iter().map(|c| (c.name, c.image)).collect();
    assert_eq!(
        images,
        vec![
            ("app".to_string(), Some("app:2".to_string())),
            ("sidecar".to_string(), Some("registry.k8s.io/pause:3.10".to_string()))
        ]
    );
}

#[tokio::test]
async fn server_side_apply_creates_then_conflicts_between_managers() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cfg = |value: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"owner": value}});
    let created =
        api.patch("c", &PatchParams::apply("alice"), &Patch::Apply(cfg("alice"))).await.expect("apply creates");
    assert_eq!(created.data.as_ref().and_then(|d| d.get("owner")).map(String::as_str), Some("alice"));

    let err =
        api_error(api.patch("c", &PatchParams::apply("bob"), &Patch::Apply(cfg("bob"))).await.expect_err("conflict"));
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(err.message, "Apply failed with 1 conflict: conflict with \"alice\": .data.owner");

    let forced = api.patch("c", &PatchParams::apply("bob").force(), &Patch::Apply(cfg("bob"))).await.expect("forced");
    assert_eq!(forced.data.and_then(|d| d.get("owner").cloned()).as_deref(), Some("bob"));
    let managers = server.field_managers(&Gvr::of::<ConfigMap>(), Some("default"), "c");
    assert!(
        managers.iter().any(|(m, apply, fields)| m == "bob" && *apply && fields.contains(&".data.owner".to_string()))
    );
    assert!(!managers.iter().any(|(m, _, _)| m == "alice"), "alice lost her only field: {managers:?}");
}

#[tokio::test]
async fn finalizers_delay_deletion_until_cleared() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("c".into()),
            finalizers: Some(vec!["example.com/cleanup".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm).await.expect("create");
    let pending = api.delete("c", &DeleteParams::default()).await.expect("delete");
    let pending = pending.left().expect("object returned while finalizers are pending");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(api.get_opt("c").await.expect("get").is_some(), "still there");
    api.patch("c", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .expect("clear");
    assert!(api.get_opt("c").await.expect("get").is_none(), "gone once finalizers are cleared");
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for (name, tier) in [("a", Some("web")), ("b", Some("db")), ("c", None)] {
        let labels = tier.map(|t| [("tier".to_string(), t.to_string())].into_iter().collect());
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), labels, ..Default::default() },
            ..Default::default()
        };
        api.create(&PostParams::default(), &cm).await.expect("create");
    }
    let names = |list: kube::api::ObjectList<ConfigMap>| list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(api.list(&q("tier=web")).await.expect("eq")), vec!["a"]);
    assert_eq!(names(api.list(&q("tier in (web,db)")).await.expect("in")), vec!["a", "b"]);
    assert_eq!(names(api.list(&q("tier notin (web)")).await.expect("notin")), vec!["b", "c"]);
    assert_eq!(names(api.list(&q("tier")).await.expect("exists")), vec!["a", "b"]);
    assert_eq!(names(api.list(&q("!tier")).await.expect("!exists")), vec!["c"]);
    let by_name = ListParams::default().fields("metadata.name=b");
    assert_eq!(names(api.list(&by_name).await.expect("field")), vec!["b"]);
    let paged = ListParams::default().limit(1);
    assert_eq!(api.list(&paged).await.expect("limit is accepted").items.len(), 3);
    let err = api_error(api.list(&ListParams::default().fields("data.x=1")).await.expect_err("unsupported field"));
    assert_eq!((err.code, err.message.as_str()), (400, "field label not supported: data.x"));
}
