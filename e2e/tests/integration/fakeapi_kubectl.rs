//! The fake over TCP: a written kubeconfig works for kube's `Config::from_kubeconfig` and for kubectl 1.32
//! (`get -o json`, human-readable `get`, `scale`, `create -f` of a CRD and its custom resource by short name).

use std::path::{Path, PathBuf};

use foresight_e2e::fakeapi::fixtures::{deployment, scalable_crd};
use foresight_e2e::fakeapi::{FakeApiServer, Gvr};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tokio::process::Command;

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(dir: &Path) -> Self {
        Self { kubeconfig: dir.join("kubeconfig"), cache: dir.join("cache") }
    }

    /// Runs kubectl; returns stdout, failing the test with stderr if kubectl fails.
    async fn run(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--request-timeout=10s")
            .args(args)
            .output()
            .await
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "kubectl {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        stdout
    }
}

async fn serve() -> (FakeApiServer, tempfile::TempDir, Kubectl) {
    let server = FakeApiServer::new();
    server.serve_tcp().await.expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubectl = Kubectl::new(dir.path());
    server.write_kubeconfig(&kubectl.kubeconfig).expect("kubeconfig");
    (server, dir, kubectl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_client_from_written_kubeconfig_talks_plain_http() {
    let (server, _dir, kubectl) = serve().await;
    server.client(); // in-process and TCP clients share one state
    let kubeconfig = Kubeconfig::read_from(&kubectl.kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    assert_eq!(config.cluster_url.scheme_str(), Some("http"));
    let client = kube::Client::try_from(config).expect("client");
    let api: Api<Deployment> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &deployment("over-tcp", 1)).await.expect("create over tcp");
    assert!(server.get_json(&Gvr::of::<Deployment>(), Some("default"), "over-tcp").is_some());
    assert_eq!(api.list(&ListParams::default()).await.expect("list").items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_and_scales_deployments() {
    let (server, _dir, kubectl) = serve().await;
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    server.create_namespace("prod").expect("ns");
    let prod: Api<Deployment> = Api::namespaced(server.client(), "prod");
    prod.create(&PostParams::default(), &deployment("api", 2)).await.expect("create");

    let json: Value =
        serde_json::from_str(&kubectl.run(&["get", "deployments", "-A", "-o", "json"]).await).expect("json");
    let mut names: Vec<String> = json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["metadata"]["namespace"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["default/web", "prod/api"]);

    let out = kubectl.run(&["scale", "deployment", "web", "--replicas=3"]).await;
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    let web = api.get("web").await.expect("get");
    assert_eq!(web.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(web.metadata.generation, Some(2));
    let scale_writes = server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/deployments/web/scale") && r.method != "GET")
        .count();
    assert_eq!(scale_writes, 1, "kubectl scale goes through the /scale subresource");

    let table = kubectl.run(&["get", "deploy", "-n", "prod"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("READY") && lines[0].contains("AGE"), "{table}");
    assert!(lines[1].starts_with("api ") && lines[1].contains("0/2"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_a_crd_and_gets_its_objects_by_short_name() {
    let (server, dir, kubectl) = serve().await;
    let crd = scalable_crd("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies", "ScalingPolicy", &["sp"]);
    let crd_file = dir.path().join("crd.json");
    std::fs::write(&crd_file, crd.to_string()).expect("write crd");
    let out = kubectl.run(&["create", "--validate=false", "-f", crd_file.to_str().expect("utf8")]).await;
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/scalingpolicies.autoscaling.foresight.dev created"
    );

    let sp = json!({"apiVersion": "autoscaling.foresight.dev/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": "web-policy"}, "spec": {"replicas": 2}});
    let sp_file = dir.path().join("sp.json");
    std::fs::write(&sp_file, sp.to_string()).expect("write sp");
    kubectl.run(&["apply", "--validate=false", "--server-side", "-f", sp_file.to_str().expect("utf8")]).await;

    let json: Value = serde_json::from_str(&kubectl.run(&["get", "sp", "-o", "json"]).await).expect("json");
    let items = json["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], "web-policy");
    assert_eq!(items[0]["spec"]["size"], "small", "schema default visible to kubectl");
    let table = kubectl.run(&["get", "scalingpolicies"]).await;
    assert!(table.lines().nth(1).is_some_and(|l| l.starts_with("web-policy") && l.contains('2')), "{table}");

    let out = kubectl.run(&["scale", "sp", "web-policy", "--replicas=5"]).await;
    assert_eq!(out.trim(), "scalingpolicy.autoscaling.foresight.dev/web-policy scaled");
    let stored = server
        .get_json(&Gvr::new("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies"), Some("default"), "web-policy")
        .expect("stored");
    assert_eq!(stored["spec"]["replicas"], 5);
}
