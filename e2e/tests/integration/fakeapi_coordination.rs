//! Leader election and events against the fake: the Lease conflict sequence leader election relies on,
//! kube-lease-manager electing exactly one leader, and kube-runtime's event `Recorder`.

use std::time::Duration;

use foresight_e2e::fakeapi::FakeApiServer;
use foresight_e2e::fakeapi::fixtures::deployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Error, Resource};
use kube_lease_manager::LeaseManagerBuilder;

#[tokio::test]
async fn lease_replace_race_has_exactly_one_winner() {
    let server = FakeApiServer::new();
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let lease = Lease {
        metadata: ObjectMeta { name: Some("leader".into()), ..Default::default() },
        spec: Some(LeaseSpec::default()),
    };
    leases.create(&PostParams::default(), &lease).await.expect("create");
    let err = leases.create(&PostParams::default(), &lease).await.expect_err("second create");
    assert!(matches!(err, Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"));

    // Both candidates read the same version, both try to take it.
    let seen_by_a = leases.get("leader").await.expect("a reads");
    let seen_by_b = leases.get("leader").await.expect("b reads");
    let take = |mut l: Lease, who: &str| {
        l.spec.get_or_insert_with(Default::default).holder_identity = Some(who.into());
        l
    };
    leases.replace("leader", &PostParams::default(), &take(seen_by_a, "a")).await.expect("a wins");
    let err = leases.replace("leader", &PostParams::default(), &take(seen_by_b, "b")).await.expect_err("b loses");
    assert!(matches!(err, Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"), "{err:?}");
    let holder = leases.get("leader").await.expect("get").spec.and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("a"));
}

#[tokio::test]
async fn lease_manager_elects_one_leader_and_hands_over_on_release() {
    let server = FakeApiServer::new();
    let build = |identity: &str| {
        LeaseManagerBuilder::new(server.client(), "foresight-leader")
            .with_namespace("default")
            .with_identity(identity)
            .with_duration(4)
            .with_grace(1)
            .build()
    };
    let a = build("a").await.expect("manager a");
    let b = build("b").await.expect("manager b");

    // Both race for the free lease; exactly one gets it within the window (shorter than the lease duration),
    // the other one's server-side apply conflicts and it keeps waiting.
    let window = Duration::from_millis(1500);
    let (ra, rb) = tokio::join!(tokio::time::timeout(window, a.changed()), tokio::time::timeout(window, b.changed()));
    let a_leads = matches!(ra, Ok(Ok(true)));
    let b_leads = matches!(rb, Ok(Ok(true)));
    assert!(a_leads ^ b_leads, "exactly one leader: a={ra:?} b={rb:?}");
    let (leader, follower, leader_id) = if a_leads { (a, b, "a") } else { (b, a, "b") };
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let holder = leases.get("foresight-leader").await.expect("lease").spec.and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some(leader_id));
    // The loser was stopped by a server-side apply field conflict, as on a real server.
    let conflicts = server
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH" && r.status == 409 && r.content_type.as_deref() == Some("application/apply-patch+yaml")
        })
        .count();
    assert_eq!(conflicts, 1);

    // kube-lease-manager's follower sleeps until the lease would expire, then finds it released and takes it.
    leader.release().await.expect("release");
    let took_over = tokio::time::timeout(Duration::from_secs(10), follower.changed()).await;
    assert!(matches!(took_over, Ok(Ok(true))), "the follower takes over after release: {took_over:?}");
}

#[tokio::test]
async fn recorder_publishes_and_aggregates_events() {
    let server = FakeApiServer::new();
    let client = server.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let web = deployments.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "foresight".into(), instance: Some("pod-0".into()) });
    let event = Event {
        type_: EventType::Normal,
        reason: "ScaledUp".into(),
        note: Some("scaled from 1 to 3".into()),
        action: "Scale".into(),
        secondary: None,
    };
    let reference = web.object_ref(&());
    recorder.publish(&event, &reference).await.expect("first publish");
    recorder.publish(&event, &reference).await.expect("second publish patches the series");

    let events: Api<EventV1> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1, "the repeat is aggregated into one Event");
    let ev = &list.items[0];
    assert_eq!(ev.reason.as_deref(), Some("ScaledUp"));
    assert_eq!(ev.note.as_deref(), Some("scaled from 1 to 3"));
    assert_eq!(ev.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("web"));
    assert_eq!(ev.series.as_ref().map(|s| s.count), Some(2));
}
