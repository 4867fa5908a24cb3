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

/// The project's CRD file, as a user installs it.
fn crd_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/scalingpolicy.yaml")
}

/// The text after `heading` (`DESCRIPTION:`) up to the next blank line, as one line.
fn section(out: &str, heading: &str) -> String {
    let rest = out.split_once(heading).map(|(_, r)| r).unwrap_or_default();
    rest.lines().skip(1).take_while(|l| !l.trim().is_empty()).map(str::trim).collect::<Vec<_>>().join(" ")
}

/// `(name, type)` of the top-level fields under `FIELDS:`.
fn fields(out: &str) -> Vec<(String, String)> {
    let rest = out.split_once("FIELDS:\n").map(|(_, r)| r).unwrap_or_default();
    rest.lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.contains('\t'))
        .filter_map(|l| l.trim().split_once('\t'))
        .map(|(n, t)| (n.to_string(), t.split_whitespace().next().unwrap_or_default().to_string()))
        .collect()
}

/// The description kubectl prints under one field of the list, as one line.
fn field_description(out: &str, field: &str) -> String {
    let rest = out.split_once(&format!("\n  {field}\t")).map(|(_, r)| r).unwrap_or_default();
    rest.lines().skip(1).take_while(|l| l.starts_with("    ")).map(str::trim).collect::<Vec<_>>().join(" ")
}

/// Lines of a description that end before kubectl's 76-column wrap needed them to: a line break that was in
/// the description itself, which cuts a sentence (a line ending a sentence may precede the items' description).
fn cut_lines(out: &str) -> Vec<String> {
    let lines: Vec<&str> = out.lines().collect();
    lines
        .windows(2)
        .filter(|w| {
            let is_text = |l: &str| l.starts_with("    ") && !l.contains('\t');
            let next_word = w[1].split_whitespace().next().unwrap_or_default();
            is_text(w[0])
                && is_text(w[1])
                && w[0].trim_start().len() + 1 + next_word.len() <= 76
                && !w[0].trim_end().ends_with(['.', ':'])
        })
        .map(|w| format!("{} / {}", w[0].trim(), w[1].trim()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_the_installed_crd() {
    let (_server, _dir, kubectl) = serve().await;
    kubectl.run(&["create", "--validate=false", "-f", crd_file().to_str().expect("utf8")]).await;

    let behavior = kubectl.run(&["explain", "scalingpolicy.spec.behavior"]).await;
    assert!(
        behavior
            .starts_with("GROUP:      autoscaling.foresight.dev\nKIND:       ScalingPolicy\nVERSION:    v1alpha1\n"),
        "{behavior}"
    );
    assert!(behavior.contains("FIELD: behavior <Object>"), "{behavior}");
    assert_eq!(
        section(&behavior, "DESCRIPTION:"),
        "How fast to scale in each direction: cooldowns, stabilization windows and rate limits."
    );
    assert_eq!(
        fields(&behavior),
        [("scaleDown".to_string(), "<Object>".to_string()), ("scaleUp".to_string(), "<Object>".to_string())]
    );
    assert_eq!(
        field_description(&behavior, "scaleDown"),
        "Scale-down behaviour. Defaults: cooldown 5m, stabilizationWindow 300s, at most 100 % per 15s."
    );
    assert_eq!(
        field_description(&behavior, "scaleUp"),
        "Scale-up behaviour. Defaults: cooldown 0s, stabilizationWindow 0s, at most max(100 %, 4 pods) per 15s."
    );

    // A nested field inside an array, with its required markers and enum.
    let rate = kubectl.run(&["explain", "sp.spec.behavior.scaleDown.policies"]).await;
    assert!(rate.contains("FIELD: policies <[]Object>"), "{rate}");
    let names: Vec<String> = fields(&rate).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["periodSeconds", "type", "value"], "{rate}");
    assert!(rate.contains("  type\t<string> -required-\n  enum: Pods, Percent\n"), "{rate}");

    let policies = kubectl.run(&["explain", "scalingpolicy.spec.policies"]).await;
    assert_eq!(
        section(&policies, "DESCRIPTION:"),
        "The rules that propose replica counts. Scale up if any rule asks (the largest proposal wins); scale down \
         only if every rule agrees (the largest of their proposals wins)."
    );
    let kinds: Vec<String> = fields(&policies).into_iter().map(|(n, t)| format!("{n} {t}")).collect();
    assert_eq!(kinds, ["demand <[]Object>", "predictive <Object>", "target <[]Object>", "threshold <[]Object>"]);

    let tree = kubectl.run(&["explain", "scalingpolicy.spec.policies", "--recursive"]).await;
    assert!(tree.contains("\n  threshold\t<[]Object>\n    metric\t<string> -required-\n"), "{tree}");
    assert!(tree.contains("\n    scaleUpStep\t<Object>\n      type\t<string> -required-\n"), "{tree}");

    // What a user reads at every level reads as sentences, not as the source's 120-column lines.
    let mut cut = cut_lines(&behavior);
    cut.extend(cut_lines(&policies));
    for field in [
        "scalingpolicy.spec",
        "scalingpolicy.spec.behavior.scaleDown",
        "scalingpolicy.spec.metrics",
        "scalingpolicy.spec.metrics.cpu",
        "scalingpolicy.spec.metrics.latency",
        "scalingpolicy.spec.policies.demand",
        "scalingpolicy.spec.policies.predictive",
        "scalingpolicy.spec.policies.target",
        "scalingpolicy.spec.prometheus",
        "scalingpolicy.spec.fallback",
        "scalingpolicy.status",
        "scalingpolicy.status.lastEvaluation.metrics",
    ] {
        cut.extend(cut_lines(&kubectl.run(&["explain", field]).await).into_iter().map(|l| format!("{field}: {l}")));
    }
    assert!(cut.is_empty(), "descriptions cut mid-sentence: {cut:#?}");
}

/// `kubectl get`'s columns as (header, cell) pairs for the first row, cut at the header's column starts.
fn row(table: &str) -> Vec<(String, String)> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let first = lines.next().unwrap_or_default();
    let mut starts: Vec<usize> = vec![0];
    let bytes = header.as_bytes();
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = starts.get(k + 1).copied().unwrap_or(usize::MAX);
            let cut = |l: &str| l.get(start..end.min(l.len())).unwrap_or_default().trim().to_string();
            (cut(header), cut(first))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_sp_fills_ready_and_shows_the_reason_only_wide() {
    let (server, dir, kubectl) = serve().await;
    kubectl.run(&["create", "--validate=false", "-f", crd_file().to_str().expect("utf8")]).await;
    let sp = json!({"apiVersion": "autoscaling.foresight.dev/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": "web"}, "spec": {"targetRef": {"name": "web"}, "minReplicas": 2, "maxReplicas": 10,
            "metrics": [{"name": "cpu", "cpu": {}}], "policies": {"target": [{"metric": "cpu", "value": 70}]}}});
    let sp_file = dir.path().join("sp.json");
    std::fs::write(&sp_file, sp.to_string()).expect("write sp");
    kubectl.run(&["apply", "--validate=false", "--server-side", "-f", sp_file.to_str().expect("utf8")]).await;
    let now = jiff::Timestamp::now();
    let earlier = (now - jiff::SignedDuration::from_secs(300)).to_string();
    let condition = |type_: &str, status: &str| json!({"type": type_, "status": status, "reason": "Evaluated", "message": "", "lastTransitionTime": earlier});
    // Ready is not the first condition: the column's filter must pick it by type.
    let status = json!({"currentReplicas": 3, "desiredReplicas": 4, "lastScaleTime": earlier,
        "lastEvaluation": {"time": now.to_string(), "decision": "ScaleUp", "reason": "cpu 86% > 70% for 2m"},
        "conditions": [condition("MetricsAvailable", "False"), condition("Ready", "True")]});
    let gvr = Gvr::new("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies");
    server.set_status(&gvr, Some("default"), "web", status).expect("status");

    let table = kubectl.run(&["get", "sp"]).await;
    let cells = row(&table);
    let headers: Vec<&str> = cells.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        headers,
        ["NAME", "TARGET", "MIN", "MAX", "CURRENT", "DESIRED", "LAST SCALE", "READY", "AGE"],
        "{table}"
    );
    let values: Vec<&str> = cells.iter().map(|(_, v)| v.as_str()).take(6).collect();
    assert_eq!(values, ["web", "web", "2", "10", "3", "4"], "{table}");
    assert!(cells[6].1.starts_with("5m"), "last scale 5 minutes ago: {table}");
    assert_eq!(cells[7].1, "True", "Ready filled from the Ready condition: {table}");

    let wide = kubectl.run(&["get", "sp", "-o", "wide"]).await;
    let cells = row(&wide);
    let headers: Vec<&str> = cells.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(headers.last(), Some(&"REASON"), "{wide}");
    assert_eq!(headers.len(), 10, "{wide}");
    assert_eq!(cells[9].1, "cpu 86% > 70% for 2m", "{wide}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_follows_a_crd_update_despite_its_cache() {
    let (_server, dir, kubectl) = serve().await;
    let mut crd = scalable_crd("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies", "ScalingPolicy", &["sp"]);
    let crd_file = dir.path().join("crd.json");
    let describe = |crd: &mut Value, text: &str| {
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["description"] = json!(text);
        std::fs::write(&crd_file, crd.to_string()).expect("write crd");
    };
    describe(&mut crd, "What the first release says.");
    kubectl.run(&["apply", "--validate=false", "--server-side", "-f", crd_file.to_str().expect("utf8")]).await;
    let first = kubectl.run(&["explain", "scalingpolicies.spec"]).await;
    assert_eq!(section(&first, "DESCRIPTION:"), "What the first release says.", "{first}");

    describe(&mut crd, "What the upgrade says.");
    kubectl.run(&["apply", "--validate=false", "--server-side", "-f", crd_file.to_str().expect("utf8")]).await;
    let second = kubectl.run(&["explain", "scalingpolicies.spec"]).await;
    assert_eq!(section(&second, "DESCRIPTION:"), "What the upgrade says.", "{second}");
}
