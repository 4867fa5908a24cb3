//! Two autoscalers on one target, in the real reconcile loop against the fake API server: of two
//! ScalingPolicies on one Deployment only the older one patches `/scale` (until it is deleted, then the other
//! takes over); an HPA or a KEDA ScaledObject on the target makes a policy stand down unless it sets
//! `spec.onConflict: Act`; and a cluster without the KEDA CRD works as before. Every policy involved says so in
//! its Conflict condition and one Warning Event.
//!
//! Metrics come from an in-memory source: `load` is 150 with an AverageValue target, so a policy asks for
//! ceil(150 / target) replicas whatever the current count, and the Deployment's replicas tell which policy
//! acted.

use std::{sync::Arc, time::Duration};

use foresight::{
    api::ScalingPolicy,
    controller::{Context, Sources},
    source::{InMemorySource, Sample},
};
use foresight_e2e::{
    fakeapi::{FakeApiServer, Gvr},
    testkit::{self, NAMESPACE, eventually},
};
use jiff::Timestamp;
use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, events::v1::Event},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const QUERY: &str = "sum(jobs_waiting)";

/// A policy on Deployment `web` asking for ceil(150 / per_replica) replicas.
fn spec(per_replica: u32) -> serde_json::Value {
    json!({
        "targetRef": { "name": "web" },
        "minReplicas": 1,
        "maxReplicas": 10,
        "interval": "1s",
        "metrics": [ { "name": "load", "query": { "promql": QUERY } } ],
        "policies": { "target": [ { "metric": "load", "value": per_replica, "type": "AverageValue" } ] }
    })
}

/// The controller over `shop`, reading `load` = 150 from memory.
fn start(server: &FakeApiServer) -> testkit::RunningController {
    let source = Arc::new(InMemorySource::new());
    let now = Timestamp::now();
    source.set(QUERY, (-40..=400).map(|i| Sample::new(now + jiff::SignedDuration::from_secs(15 * i), 150.0)).collect());
    let ctx = Context::new(server.client(), Sources::Fixed(source), Some("http://unused:9090".into()), "conflicts");
    testkit::spawn_controller(Arc::new(ctx), &[NAMESPACE], 4)
}

async fn replicas(deployments: &Api<Deployment>) -> Option<i32> {
    deployments.get("web").await.ok().and_then(|d| d.spec?.replicas)
}

/// The (status, reason, message) of a condition of a policy.
async fn condition(policies: &Api<ScalingPolicy>, name: &str, type_: &str) -> Option<(String, String, String)> {
    let status = policies.get(name).await.ok()?.status?;
    let c = status.conditions.into_iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

/// Warning Events on a policy with this reason.
async fn warnings(server: &FakeApiServer, policy: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(server.client(), NAMESPACE);
    let list = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(policy))
        .collect()
}

/// PATCHes of the Deployment's /scale so far.
fn scale_patches(server: &FakeApiServer) -> usize {
    server.requests().iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/deployments/web/scale")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_policies_on_one_deployment_only_the_older_scales_until_it_is_deleted() {
    let server = testkit::api_server();
    let (deployments, policies) = testkit::web_deployment(&server, 1).await;
    // "web-b" is created first: it is the older one although "web-a" sorts first by name.
    testkit::create_policy(&policies, "web-b", spec(50)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    testkit::create_policy(&policies, "web-a", spec(25)).await;
    let running = start(&server);
    running.synced(WAIT).await;

    // The older asks for 3 and acts; the newer asks for 6 and never gets them.
    eventually("the Deployment at web-b's 3 replicas", WAIT, || async { replicas(&deployments).await == Some(3) })
        .await;
    eventually("Conflict=True on both policies", WAIT, || async {
        let a = condition(&policies, "web-a", "Conflict").await;
        let b = condition(&policies, "web-b", "Conflict").await;
        a.is_some_and(|(s, _, _)| s == "True") && b.is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    // Several more intervals: the newer one still does not touch /scale.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&deployments).await, Some(3));
    assert_eq!(scale_patches(&server), 1, "only web-b's one scale: {:?}", server.requests().len());

    let (_, reason, message) = condition(&policies, "web-a", "Conflict").await.expect("Conflict on web-a");
    assert_eq!(reason, "ConflictingScalingPolicy");
    assert!(message.starts_with("also targeted by ScalingPolicy shop/web-b (older; it acts)"), "{message}");
    let (_, reason, message) = condition(&policies, "web-b", "Conflict").await.expect("Conflict on web-b");
    assert_eq!(reason, "ConflictingScalingPolicy");
    assert!(message.starts_with("also targeted by ScalingPolicy shop/web-a (newer; it stands down)"), "{message}");
    let (ready, reason, message) = condition(&policies, "web-a", "Ready").await.expect("Ready on web-a");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "StandingDown"), "{message}");
    let newer = policies.get("web-a").await.expect("web-a").status.expect("status");
    assert_eq!(newer.desired_replicas, Some(6), "it still evaluates");
    assert!(newer.history.iter().all(|h| h.policy == "external"), "it never scaled: {:?}", newer.history);
    let reason = newer.last_evaluation.expect("evaluation").reason;
    assert!(reason.starts_with("standing down (ScalingPolicy shop/web-b acts)"), "{reason}");
    assert_eq!(condition(&policies, "web-b", "Ready").await.map(|c| c.0).as_deref(), Some("True"));

    // One Warning on each, not one per evaluation.
    for name in ["web-a", "web-b"] {
        let found = warnings(&server, name, "ConflictingScalingPolicy").await;
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert_eq!(found[0].series, None, "{name}: not repeated: {found:?}");
    }

    // The older one goes: the newer one takes over within an interval or two.
    policies.delete("web-b", &DeleteParams::default()).await.expect("delete web-b");
    eventually("web-a to scale to its 6 replicas", WAIT, || async { replicas(&deployments).await == Some(6) }).await;
    eventually("web-a's conflict to clear", WAIT, || async {
        condition(&policies, "web-a", "Conflict").await.is_some_and(|(s, r, _)| s == "False" && r == "NoConflict")
    })
    .await;
    assert_eq!(condition(&policies, "web-a", "Ready").await.map(|c| c.0).as_deref(), Some("True"));
    running.stop().await;
}

fn hpa() -> HorizontalPodAutoscaler {
    serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": { "name": "web-hpa", "namespace": NAMESPACE },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [ { "type": "Resource", "resource": { "name": "cpu",
                "target": { "type": "Utilization", "averageUtilization": 70 } } } ]
        }
    }))
    .expect("valid HPA")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_on_the_target_makes_a_policy_stand_down_unless_it_overrides() {
    let server = testkit::api_server();
    let (deployments, policies) = testkit::web_deployment(&server, 1).await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(server.client(), NAMESPACE);
    hpas.create(&PostParams::default(), &hpa()).await.expect("create HPA");
    testkit::create_policy(&policies, "web", spec(50)).await;
    let running = start(&server);
    running.synced(WAIT).await;

    eventually("Conflict=True naming the HPA", WAIT, || async {
        condition(&policies, "web", "Conflict").await.is_some_and(|(s, r, m)| {
            s == "True"
                && r == "ConflictingHorizontalPodAutoscaler"
                && m.starts_with("also targeted by HorizontalPodAutoscaler shop/web-hpa: ")
                && m.contains("spec.onConflict: Act")
        })
    })
    .await;
    eventually("the policy to have evaluated (desired 3)", WAIT, || async {
        policies.get("web").await.ok().and_then(|p| p.status?.desired_replicas) == Some(3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&deployments).await, Some(1), "the HPA's workload is left alone");
    assert_eq!(scale_patches(&server), 0);
    let (ready, reason, _) = condition(&policies, "web", "Ready").await.expect("Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "StandingDown"));
    assert_eq!(warnings(&server, "web", "ConflictingHorizontalPodAutoscaler").await.len(), 1);

    // The explicit override: it scales next to the HPA, and still says there is one.
    let patch = json!({ "spec": { "onConflict": "Act" } });
    policies.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("set onConflict");
    eventually("the policy to scale to 3 despite the HPA", WAIT, || async { replicas(&deployments).await == Some(3) })
        .await;
    // The scale patch lands before the status write of the same evaluation: wait for that write.
    eventually("Conflict=True saying the policy acts anyway, and Ready=True", WAIT, || async {
        let conflict = condition(&policies, "web", "Conflict").await.is_some_and(|(s, r, m)| {
            s == "True" && r == "ConflictingHorizontalPodAutoscaler" && m.contains("spec.onConflict is Act")
        });
        conflict && condition(&policies, "web", "Ready").await.map(|c| c.0).as_deref() == Some("True")
    })
    .await;
    running.stop().await;
}

/// A minimal KEDA ScaledObject CRD, as `helm install keda` would register it.
fn keda_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "scaledobjects.keda.sh" },
        "spec": {
            "group": "keda.sh",
            "scope": "Namespaced",
            "names": { "plural": "scaledobjects", "singular": "scaledobject", "kind": "ScaledObject",
                       "shortNames": ["so"] },
            "versions": [ { "name": "v1alpha1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": { "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true } } } ]
        }
    }))
    .expect("valid CRD")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_object_installed_after_the_controller_started_makes_a_policy_stand_down() {
    let server = testkit::api_server();
    let (deployments, policies) = testkit::web_deployment(&server, 1).await;
    testkit::create_policy(&policies, "web", spec(50)).await;
    let running = start(&server);
    running.synced(WAIT).await;
    // No KEDA yet: the policy scales as usual.
    eventually("the policy to scale to 3", WAIT, || async { replicas(&deployments).await == Some(3) }).await;

    // KEDA arrives, with a ScaledObject on web (kind and apiVersion left to their defaults, as KEDA allows).
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    crds.create(&PostParams::default(), &keda_crd()).await.expect("create KEDA CRD");
    let scaled_object = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": { "name": "web", "namespace": NAMESPACE },
        "spec": { "scaleTargetRef": { "name": "web" }, "triggers": [ { "type": "cpu", "metadata": { "value": "70" } } ] }
    });
    server
        .put_json(&Gvr::new("keda.sh", "v1alpha1", "scaledobjects"), Some(NAMESPACE), scaled_object)
        .expect("create ScaledObject");

    eventually("Conflict=True naming the ScaledObject", WAIT, || async {
        condition(&policies, "web", "Conflict").await.is_some_and(|(s, r, m)| {
            s == "True" && r == "ConflictingScaledObject" && m.starts_with("also targeted by ScaledObject shop/web: ")
        })
    })
    .await;
    // KEDA sets its own count; Foresight leaves it.
    let patches = scale_patches(&server);
    server
        .set_replicas_externally(&Gvr::new("apps", "v1", "deployments"), Some(NAMESPACE), "web", 2)
        .expect("KEDA scales");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&deployments).await, Some(2), "Foresight stood down");
    assert_eq!(scale_patches(&server), patches);
    assert_eq!(warnings(&server, "web", "ConflictingScaledObject").await.len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_keda_crd_policies_work_normally() {
    let server = testkit::api_server();
    let (deployments, policies) = testkit::web_deployment(&server, 1).await;
    testkit::create_policy(&policies, "web", spec(50)).await;
    let running = start(&server);
    running.synced(WAIT).await;

    eventually("the policy to scale to 3", WAIT, || async { replicas(&deployments).await == Some(3) }).await;
    // ScaledObjects were asked for and are not served here: that is "none", not an error.
    let asked =
        server.requests().into_iter().filter(|r| r.path.contains("/apis/keda.sh/v1alpha1/")).collect::<Vec<_>>();
    assert!(!asked.is_empty() && asked.iter().all(|r| r.status == 404), "{asked:?}");
    let hpas = server.requests().into_iter().filter(|r| r.path.contains("/horizontalpodautoscalers")).count();
    assert!(hpas > 0, "HPAs are watched too");
    eventually("Ready=True Evaluated", WAIT, || async {
        condition(&policies, "web", "Ready").await.is_some_and(|(s, r, _)| s == "True" && r == "Evaluated")
    })
    .await;
    assert_eq!(condition(&policies, "web", "Conflict").await, None, "no conflict, no condition");
    running.stop().await;
}

/// Two sharded replicas: the older policy's shard is held by one, the newer's by the other. Each decides from
/// the same watches, so still only the older one scales.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_shards_the_replica_holding_the_newer_policy_still_stands_it_down() {
    use foresight::{
        metrics::Metrics,
        shard::{self, Ownership, ShardConfig},
    };
    const SHARDS: u32 = 12;
    let server = testkit::api_server();
    let (deployments, policies) = testkit::web_deployment(&server, 1).await;
    let source = Arc::new(InMemorySource::new());
    let now = Timestamp::now();
    source.set(QUERY, (-40..=400).map(|i| Sample::new(now + jiff::SignedDuration::from_secs(15 * i), 150.0)).collect());
    let replica = |identity: &str| {
        let config = ShardConfig {
            namespace: "default".into(),
            prefix: "foresight".into(),
            identity: identity.into(),
            shards: SHARDS,
            duration_seconds: 2,
            grace_seconds: 1,
        };
        let ownership = Arc::new(Ownership::new(SHARDS, config.renew_deadline()));
        let sharding = shard::start(server.client(), config, ownership.clone(), Arc::new(Metrics::new()));
        let ctx =
            Context::new(server.client(), Sources::Fixed(source.clone()), Some("http://unused:9090".into()), identity)
                .with_shards(ownership.clone());
        (ownership, sharding, testkit::spawn_controller(Arc::new(ctx), &[NAMESPACE], 4))
    };
    let (a, sharding_a, run_a) = replica("foresight-a");
    let (b, sharding_b, run_b) = replica("foresight-b");
    eventually("both replicas to hold shards, all of them together", WAIT, || async {
        let (x, y) = (a.held().len(), b.held().len());
        x > 0 && y > 0 && x + y == SHARDS as usize
    })
    .await;
    let named = |owner: &Ownership, prefix: &str| {
        (0..1000).map(|i| format!("{prefix}-{i}")).find(|n| owner.owns(NAMESPACE, n)).expect("a name in its shards")
    };
    let (older, newer) = (named(&a, "old"), named(&b, "new"));
    testkit::create_policy(&policies, &older, spec(50)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    testkit::create_policy(&policies, &newer, spec(25)).await;

    eventually("the Deployment at the older policy's 3 replicas", WAIT, || async {
        replicas(&deployments).await == Some(3)
    })
    .await;
    eventually("the newer policy to stand down", WAIT, || async {
        condition(&policies, &newer, "Ready").await.is_some_and(|(s, r, _)| s == "False" && r == "StandingDown")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&deployments).await, Some(3), "{newer} (held by foresight-b) never scaled");
    assert!(a.owns(NAMESPACE, &older) && b.owns(NAMESPACE, &newer), "the shards stayed put");
    run_a.stop().await;
    run_b.stop().await;
    sharding_a.stop().await;
    sharding_b.stop().await;
}
