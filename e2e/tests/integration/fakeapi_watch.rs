//! Watch semantics through kube's raw `Api::watch` and kube-runtime's `watcher` (both initial-list strategies):
//! ordering, resume, 410 Gone after compaction with automatic re-list, selectors, metadata-only watches.

use std::time::Duration;

use foresight_e2e::fakeapi::FakeApiServer;
use foresight_e2e::fakeapi::fixtures::deployment;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde_json::json;

async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10s")
        .expect("stream still open")
}

/// A compact description of a watcher event: ("apply", name) etc.
fn describe<K: Resource>(ev: &Event<K>) -> (&'static str, String) {
    match ev {
        Event::Init => ("init", String::new()),
        Event::InitApply(o) => ("init-apply", o.name_any()),
        Event::InitDone => ("init-done", String::new()),
        Event::Apply(o) => ("apply", o.name_any()),
        Event::Delete(o) => ("delete", o.name_any()),
    }
}

async fn sees_create_modify_delete_in_order(config: watcher::Config) {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &deployment("before", 1)).await.expect("create");
    let mut stream = watcher(api.clone(), config).boxed();
    let mut initial = Vec::new();
    for _ in 0..3 {
        initial.push(describe(&next(&mut stream).await.expect("event")));
    }
    assert_eq!(initial, vec![("init", String::new()), ("init-apply", "before".into()), ("init-done", String::new())]);

    api.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.expect("patch");
    api.delete("web", &DeleteParams::default()).await.expect("delete");
    let created = next(&mut stream).await.expect("event");
    assert_eq!(describe(&created), ("apply", "web".into()));
    let modified = next(&mut stream).await.expect("event");
    match &modified {
        Event::Apply(d) => assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3)),
        other => panic!("expected the modification, got {:?}", describe(other)),
    }
    assert_eq!(describe(&next(&mut stream).await.expect("event")), ("delete", "web".into()));
}

fn watcher(
    api: Api<Deployment>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<Deployment>, watcher::Error>> {
    watcher::watcher(api, config)
}

#[tokio::test]
async fn list_watch_strategy_sees_changes_in_order() {
    sees_create_modify_delete_in_order(watcher::Config::default()).await;
}

#[tokio::test]
async fn streaming_list_strategy_sees_changes_in_order() {
    sees_create_modify_delete_in_order(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn raw_watch_resumes_from_a_resource_version() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cm = |name: &str| ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        ..Default::default()
    };
    let a = api.create(&PostParams::default(), &cm("a")).await.expect("a");
    api.create(&PostParams::default(), &cm("b")).await.expect("b");
    api.delete("a", &DeleteParams::default()).await.expect("delete a");

    let rv = a.resource_version().expect("rv");
    let mut stream = api.watch(&WatchParams::default().timeout(5), &rv).await.expect("watch").boxed();
    match next(&mut stream).await.expect("event") {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("expected ADDED b, got {other:?}"),
    }
    match next(&mut stream).await.expect("event") {
        WatchEvent::Deleted(o) => {
            assert_eq!(o.name_any(), "a");
            let deleted_rv: u64 = o.resource_version().expect("rv").parse().expect("numeric");
            assert_eq!(deleted_rv, server.current_resource_version(), "DELETED carries the deletion's resourceVersion");
        }
        other => panic!("expected DELETED a, got {other:?}"),
    }

    server.compact();
    let mut stale = api.watch(&WatchParams::default().timeout(5), &rv).await.expect("watch starts").boxed();
    match next(&mut stale).await.expect("event") {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_relists_after_410_gone() {
    let server = FakeApiServer::builder().bookmark_interval(Duration::from_secs(600)).build();
    let client = server.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &deployment("a", 1)).await.expect("create");
    // The server ends each watch after 1 s, so the watcher reconnects from its last resourceVersion.
    let mut stream = watcher(api.clone(), watcher::Config::default().timeout(1)).boxed();
    for _ in 0..3 {
        next(&mut stream).await.expect("initial events");
    }
    // Unrelated writes move the store past the watcher's resourceVersion; compaction then makes it too old.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some("x".into()), ..Default::default() },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.expect("cm");
    server.compact();

    let err = next(&mut stream).await.expect_err("the resumed watch is told 410");
    match err {
        watcher::Error::WatchError(status) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    let relist: Vec<_> = [next(&mut stream).await, next(&mut stream).await, next(&mut stream).await]
        .into_iter()
        .map(|e| describe(&e.expect("event")))
        .collect();
    assert_eq!(relist, vec![("init", String::new()), ("init-apply", "a".into()), ("init-done", String::new())]);
}

#[tokio::test]
async fn label_selector_watch_turns_relabels_into_added_and_deleted() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cm = |name: &str, tier: &str| ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some([("tier".to_string(), tier.to_string())].into_iter().collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    let start = api.create(&PostParams::default(), &cm("a", "web")).await.expect("a");
    let wp = WatchParams::default().labels("tier=web").timeout(5);
    let mut stream = api.watch(&wp, &start.resource_version().expect("rv")).await.expect("watch").boxed();
    api.create(&PostParams::default(), &cm("b", "db")).await.expect("b");
    let relabel = |t: &str| Patch::Merge(json!({"metadata": {"labels": {"tier": t}}}));
    api.patch("b", &PatchParams::default(), &relabel("web")).await.expect("b joins");
    api.patch("a", &PatchParams::default(), &relabel("db")).await.expect("a leaves");
    let events: Vec<(String, String)> = [next(&mut stream).await, next(&mut stream).await]
        .into_iter()
        .map(|e| match e.expect("event") {
            WatchEvent::Added(o) => ("ADDED".to_string(), o.name_any()),
            WatchEvent::Modified(o) => ("MODIFIED".to_string(), o.name_any()),
            WatchEvent::Deleted(o) => ("DELETED".to_string(), o.name_any()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(events, vec![("ADDED".to_string(), "b".to_string()), ("DELETED".to_string(), "a".to_string())]);
}

#[tokio::test]
async fn metadata_watcher_and_bookmarks_work() {
    let server = FakeApiServer::builder().bookmark_interval(Duration::from_millis(200)).build();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    let meta_api: Api<PartialObjectMeta<Deployment>> = Api::namespaced(server.client(), "default");
    let names: Vec<String> = watcher::watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .take(1)
        .map_ok(|m| m.name_any())
        .try_collect()
        .await
        .expect("metadata watch");
    assert_eq!(names, vec!["web"]);

    let rv = server.current_resource_version().to_string();
    let mut raw = api.watch(&WatchParams::default().timeout(5), &rv).await.expect("watch").boxed();
    match next(&mut raw).await.expect("event") {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
}
