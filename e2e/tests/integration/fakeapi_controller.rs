//! The real kube-runtime `Controller` against the fake: it reconciles existing and new objects, reacts to
//! spec changes, and its server-side-apply status writes land on `/status` without triggering a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use foresight_e2e::fakeapi::FakeApiServer;
use foresight_e2e::fakeapi::fixtures::deployment;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

struct Ctx {
    api: Api<Deployment>,
    reconciles: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

/// Records `observedGeneration` in status with a forced server-side apply, as an operator would.
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let status = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "status": {"observedGeneration": d.meta().generation},
    });
    ctx.api.patch_status(&d.name_any(), &PatchParams::apply("test-controller").force(), &Patch::Apply(status)).await?;
    Ok(Action::await_change())
}

fn error_policy(_d: Arc<Deployment>, _e: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

async fn observed_generation(api: &Api<Deployment>, name: &str, want: i64) -> bool {
    for _ in 0..100 {
        let d = api.get(name).await.expect("get");
        if d.status.and_then(|s| s.observed_generation) == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn controller_reconciles_creates_and_spec_changes() {
    let server = FakeApiServer::new();
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &deployment("existing", 1)).await.expect("create");

    let ctx = Arc::new(Ctx { api: api.clone(), reconciles: AtomicUsize::new(0) });
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);

    assert!(observed_generation(&api, "existing", 1).await, "pre-existing object reconciled");
    api.create(&PostParams::default(), &deployment("new", 1)).await.expect("create");
    assert!(observed_generation(&api, "new", 1).await, "new object reconciled");
    api.patch("new", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}}))).await.expect("scale");
    assert!(observed_generation(&api, "new", 2).await, "spec change reconciled");

    // Status writes are changes too, so each one triggers one more reconcile; the second write is a no-op
    // (same content, no new resourceVersion, no event), so the controller settles instead of looping.
    let settled = ctx.reconciles.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ctx.reconciles.load(Ordering::SeqCst), settled, "no reconcile loop");
    handle.abort();
}
