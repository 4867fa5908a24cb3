//! One closed loop per scenario: a Kubernetes API, a real Prometheus scraping the workload simulator every
//! second, and the `foresight` binary as separate processes.
//!
//! ```text
//!   FakeApiServer (TCP, CRD applied) ◄── foresight run (process, KUBECONFIG) ──► Prometheus (scrapes 1 s)
//!        ▲   │ spec.replicas                                                        │
//!        │   ▼                                                                      ▼
//!        └── Simulator (pods, Deployment status) ───────── /metrics ────────────────┘
//! ```
//!
//! With `FORESIGHT_E2E_KUBECONFIG` set, that cluster replaces the fake API server (the simulator then writes no
//! pods or status: the cluster's own controllers do), and `FORESIGHT_E2E_PROMETHEUS` replaces the local
//! Prometheus (outage scenarios need a local one and say so).
//!
//! Every wait is [`Harness::wait_for`] with a bounded timeout. When a scenario panics, dropping the harness
//! prints a timeline (time, load, replicas, ready, decision) and the tail of each controller's log.

pub mod controller;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use foresight::api::{ScalingPolicy, ScalingPolicyStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};

use crate::fakeapi::FakeApiServer;
use crate::fakeapi::fixtures::deployment;
use crate::prometheus::{PromServer, ScrapeConfig};
use crate::sim::{LoadProfile, SimConfig, Simulator};

pub use controller::{ControllerOptions, ControllerProcess, foresight_binary};

/// The kubeconfig of a real cluster to run against instead of the fake API server.
pub const KUBECONFIG_ENV: &str = "FORESIGHT_E2E_KUBECONFIG";
/// The URL of a Prometheus to use instead of starting one.
pub const PROMETHEUS_ENV: &str = "FORESIGHT_E2E_PROMETHEUS";

/// Why a scenario's environment could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("cannot start {what}: {reason}")]
    Start { what: &'static str, reason: String },
    #[error("cannot build the foresight binary: {output}")]
    BuildController { output: String },
    #[error("kubernetes API, {action}: {source}")]
    Kube { action: String, source: kube::Error },
    #[error("invalid ScalingPolicy YAML: {0}")]
    PolicyYaml(serde_saphyr::Error),
    #[error("this scenario needs {what}, which a run against {KUBECONFIG_ENV}/{PROMETHEUS_ENV} does not have")]
    NotAvailable { what: &'static str },
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> HarnessError {
    let action = action.into();
    move |source| HarnessError::Kube { action, source }
}

/// What a scenario starts with.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub namespace: String,
    pub deployment: String,
    pub replicas: i32,
    pub profile: LoadProfile,
    pub startup_delay: Duration,
    /// OpenMetrics history backfilled into the local Prometheus before it starts.
    pub history: String,
    /// How far back the simulator's profile clock starts (to continue backfilled history).
    pub started_ago: Duration,
    /// Controllers to start; none for a scenario that starts its own.
    pub controllers: Vec<ControllerOptions>,
}

impl Scenario {
    /// Deployment `web` with 2 replicas in namespace `<name>`, constant 20 req/s, 5 s start-up delay, one
    /// controller without leader election.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            namespace: name.into(),
            deployment: "web".into(),
            replicas: 2,
            profile: LoadProfile::Constant(20.0),
            startup_delay: Duration::from_secs(5),
            history: String::new(),
            started_ago: Duration::ZERO,
            controllers: vec![ControllerOptions { identity: "foresight-0".into(), leader_election: false }],
        }
    }

    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }

    pub fn profile(mut self, profile: LoadProfile) -> Self {
        self.profile = profile;
        self
    }

    pub fn history(mut self, openmetrics: String, started_ago: Duration) -> Self {
        self.history = openmetrics;
        self.started_ago = started_ago;
        self
    }

    pub fn controllers(mut self, controllers: Vec<ControllerOptions>) -> Self {
        self.controllers = controllers;
        self
    }
}

/// One row of the failure report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub at: f64,
    pub load: f64,
    pub replicas: i32,
    pub ready: usize,
    pub decision: String,
}

enum Api_ {
    Fake { _server: FakeApiServer },
    Cluster,
}

/// A running scenario; tears everything down when dropped.
pub struct Harness {
    pub scenario: Scenario,
    pub client: kube::Client,
    pub sim: Arc<Simulator>,
    pub controllers: Vec<ControllerProcess>,
    prometheus: Option<PromServer>,
    prometheus_url: String,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    _api: Api_,
    started: Instant,
    rows: Arc<Mutex<Vec<Row>>>,
    policy: Arc<Mutex<Option<String>>>,
    recorder: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Sets up the API (fake unless [`KUBECONFIG_ENV`] is set), the namespace and Deployment, the simulator,
    /// Prometheus (local unless [`PROMETHEUS_ENV`] is set) and the scenario's controllers.
    pub async fn start(scenario: Scenario) -> Result<Self, HarnessError> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(&format!("foresight-e2e-{}-", scenario.name))
            .tempdir()
            .map_err(|source| HarnessError::Io { context: "temp dir".into(), source })?;
        let (client, kubeconfig, api) = match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) => {
                let path = PathBuf::from(path);
                let config = kube::Config::from_custom_kubeconfig(
                    kube::config::Kubeconfig::read_from(&path)
                        .map_err(|e| HarnessError::Start { what: "kube client", reason: e.to_string() })?,
                    &Default::default(),
                )
                .await
                .map_err(|e| HarnessError::Start { what: "kube client", reason: e.to_string() })?;
                let client = kube::Client::try_from(config).map_err(kube_error("client from kubeconfig"))?;
                (client, path, Api_::Cluster)
            }
            None => {
                let server = FakeApiServer::builder().build();
                server
                    .serve_tcp()
                    .await
                    .map_err(|source| HarnessError::Io { context: "serve fake API".into(), source })?;
                let path = dir.path().join("kubeconfig");
                server
                    .write_kubeconfig(&path)
                    .map_err(|e| HarnessError::Start { what: "kubeconfig", reason: e.to_string() })?;
                let client = server.client();
                apply_crd(&client).await?;
                (client, path, Api_::Fake { _server: server })
            }
        };
        let cluster = matches!(api, Api_::Cluster);
        let ns = scenario.namespace.clone();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))
            .map_err(|e| HarnessError::Start { what: "namespace", reason: e.to_string() })?;
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(kube_error("create namespace")(e)),
        }
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        deployments
            .create(&PostParams::default(), &deployment(&scenario.deployment, scenario.replicas))
            .await
            .map_err(kube_error("create deployment"))?;

        let sim_config = SimConfig::new(&ns, &scenario.deployment, scenario.profile.clone())
            .startup_delay(scenario.startup_delay)
            .started_ago(scenario.started_ago)
            .write_objects(!cluster);
        let sim = Arc::new(
            Simulator::start(client.clone(), sim_config)
                .await
                .map_err(|e| HarnessError::Start { what: "simulator", reason: e.to_string() })?,
        );

        let (prometheus, prometheus_url) = match std::env::var(PROMETHEUS_ENV) {
            Ok(url) => (None, url),
            Err(_) => {
                let scrape = ScrapeConfig { targets: vec![sim.metrics_addr()], interval: Duration::from_secs(1) };
                let history = scenario.history.clone();
                let server = tokio::task::spawn_blocking(move || PromServer::start_full(&history, &scrape))
                    .await
                    .map_err(|e| HarnessError::Start { what: "prometheus", reason: e.to_string() })?
                    .map_err(|e| HarnessError::Start { what: "prometheus", reason: e.to_string() })?;
                let url = server.url();
                (Some(server), url)
            }
        };

        let rows = Arc::new(Mutex::new(Vec::new()));
        let policy = Arc::new(Mutex::new(None::<String>));
        let recorder =
            tokio::spawn(record(client.clone(), ns.clone(), sim.clone(), started, rows.clone(), policy.clone()));
        let mut harness = Self {
            scenario,
            client,
            sim,
            controllers: Vec::new(),
            prometheus,
            prometheus_url,
            kubeconfig,
            dir,
            _api: api,
            started,
            rows,
            policy,
            recorder,
        };
        for options in harness.scenario.controllers.clone() {
            harness.start_controller(&options)?;
        }
        Ok(harness)
    }

    /// Starts another `foresight run` process (in a real-cluster run too: it then competes for the Lease
    /// with the installed one only if it uses the same Lease, which it does not).
    pub fn start_controller(&mut self, options: &ControllerOptions) -> Result<(), HarnessError> {
        let process = ControllerProcess::start(
            self.dir.path(),
            &self.kubeconfig,
            &self.prometheus_url,
            &self.scenario.namespace,
            options,
        )?;
        self.controllers.push(process);
        Ok(())
    }

    /// The fake API server, when the scenario runs against one (for its request log and faults).
    pub fn fake(&self) -> Option<&FakeApiServer> {
        match &self._api {
            Api_::Fake { _server } => Some(_server),
            Api_::Cluster => None,
        }
    }

    /// Writes to the Deployment's replicas the fake API server received (PATCH/PUT on the Deployment or its
    /// `/scale`), excluding status writes; `None` against a real cluster.
    pub fn replica_writes(&self) -> Option<usize> {
        let path = format!("/namespaces/{}/deployments/{}", self.scenario.namespace, self.scenario.deployment);
        let writes = self.fake()?.requests().into_iter().filter(|r| {
            (r.method == "PATCH" || r.method == "PUT")
                && r.path.contains(&path)
                && !r.path.ends_with("/status")
                && (200..300).contains(&r.status)
        });
        Some(writes.count())
    }

    /// The kubeconfig every process uses (for `kubectl --kubeconfig`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Seconds since the scenario started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The local Prometheus, for outages; an error in a real-cluster run.
    pub fn prometheus(&mut self) -> Result<&mut PromServer, HarnessError> {
        self.prometheus.as_mut().ok_or(HarnessError::NotAvailable { what: "a local Prometheus" })
    }

    /// Creates or updates a ScalingPolicy from YAML (server-side apply); its namespace is the scenario's.
    /// The recorder follows this policy's `status.lastEvaluation` from now on.
    pub async fn apply_policy(&self, yaml: &str) -> Result<ScalingPolicy, HarnessError> {
        let mut policy: ScalingPolicy = serde_saphyr::from_str(yaml).map_err(HarnessError::PolicyYaml)?;
        policy.metadata.namespace = Some(self.scenario.namespace.clone());
        policy.metadata.resource_version = None;
        let name = policy.metadata.name.clone().unwrap_or_default();
        let api: Api<ScalingPolicy> = Api::namespaced(self.client.clone(), &self.scenario.namespace);
        let params = PatchParams::apply("foresight-e2e").force();
        let applied = api.patch(&name, &params, &Patch::Apply(&policy)).await.map_err(kube_error("apply policy"))?;
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = Some(name);
        Ok(applied)
    }

    /// Merges `patch` into the policy's metadata/spec (e.g. an annotation).
    pub async fn patch_policy(&self, name: &str, patch: serde_json::Value) -> Result<(), HarnessError> {
        let api: Api<ScalingPolicy> = Api::namespaced(self.client.clone(), &self.scenario.namespace);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(kube_error("patch policy"))?;
        Ok(())
    }

    /// The followed policy's status, if it has one yet.
    pub async fn policy_status(&self) -> Option<ScalingPolicyStatus> {
        let name = self.policy.lock().unwrap_or_else(PoisonError::into_inner).clone()?;
        self.status_of(&name).await
    }

    /// The status of the scenario's policy `name`, if it has one yet.
    pub async fn status_of(&self, name: &str) -> Option<ScalingPolicyStatus> {
        let api: Api<ScalingPolicy> = Api::namespaced(self.client.clone(), &self.scenario.namespace);
        api.get_opt(name).await.ok().flatten()?.status
    }

    /// Deletes the scenario's policy `name`.
    pub async fn delete_policy(&self, name: &str) -> Result<(), HarnessError> {
        let api: Api<ScalingPolicy> = Api::namespaced(self.client.clone(), &self.scenario.namespace);
        api.delete(name, &Default::default()).await.map_err(kube_error("delete policy"))?;
        Ok(())
    }

    /// Events in the scenario's namespace (`events.k8s.io/v1`, as kube-runtime's Recorder writes them).
    pub async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.scenario.namespace);
        api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default()
    }

    /// Events whose reason is `reason`.
    pub async fn events_with_reason(&self, reason: &str) -> Vec<Event> {
        self.events().await.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect()
    }

    /// Waits until at least one Event with `reason` is stored and returns them (panics after `timeout`, as
    /// [`Harness::wait_for`] does). Events follow the status write that follows a `/scale` patch, so a scenario
    /// waits for them rather than reading once.
    pub async fn wait_for_event(&self, reason: &str, timeout: Duration) -> Vec<Event> {
        self.wait_for(&format!("a {reason} Event"), timeout, || async {
            let events = self.events_with_reason(reason).await;
            (!events.is_empty()).then_some(events)
        })
        .await
    }

    /// The Deployment's spec.replicas (0 when it cannot be read).
    pub async fn replicas(&self) -> i32 {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.scenario.namespace);
        api.get(&self.scenario.deployment).await.ok().and_then(|d| d.spec?.replicas).unwrap_or(0)
    }

    /// `kubectl scale deployment/<name> --replicas=<n>` against the scenario's API.
    pub async fn kubectl_scale(&self, replicas: i32) -> Result<String, HarnessError> {
        let output = tokio::process::Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.scenario.namespace, "scale"])
            .arg(format!("deployment/{}", self.scenario.deployment))
            .arg(format!("--replicas={replicas}"))
            .output()
            .await
            .map_err(|source| HarnessError::Io { context: "run kubectl".into(), source })?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if output.status.success() {
            Ok(text)
        } else {
            Err(HarnessError::Start { what: "kubectl scale", reason: text })
        }
    }

    /// Polls `check` every 250 ms until it yields a value; panics (printing the report) after `timeout`.
    pub async fn wait_for<T, F, Fut>(&self, description: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                println!("[{:6.1}s] {}: {description}", self.elapsed(), self.scenario.name);
                return value;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {description}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs `check` (which asserts) every 250 ms for `duration` of wall-clock time: what must hold while
    /// evaluations go on. Evaluations that change nothing readable do not rewrite status, so the time is the
    /// clock's, not `status.lastEvaluation.time`.
    pub async fn holds_for<F, Fut>(&self, description: &str, duration: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            check().await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!("[{:6.1}s] {}: {description}", self.elapsed(), self.scenario.name);
    }

    /// Waits until the Deployment has `predicate`-satisfying replicas; returns them.
    pub async fn wait_for_replicas(
        &self,
        description: &str,
        timeout: Duration,
        predicate: impl Fn(i32) -> bool,
    ) -> i32 {
        self.wait_for(description, timeout, || async {
            let replicas = self.replicas().await;
            predicate(replicas).then_some(replicas)
        })
        .await
    }

    /// The recorded rows so far.
    pub fn rows(&self) -> Vec<Row> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The timeline (one row per ~second, consecutive duplicates folded) and each controller's log tail.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "---- timeline of scenario {} (time, load, replicas, ready, decision) ----",
            self.scenario.name
        );
        let mut last: Option<(i32, usize, String)> = None;
        let rows = self.rows();
        for (i, row) in rows.iter().enumerate() {
            let key = (row.replicas, row.ready, row.decision.clone());
            let changed = last.as_ref() != Some(&key);
            if changed || i + 1 == rows.len() || i % 10 == 0 {
                let _ = writeln!(
                    out,
                    "{:6.1}s load {:6.1}/s replicas {:2} ready {:2}  {}",
                    row.at, row.load, row.replicas, row.ready, row.decision
                );
            }
            last = Some(key);
        }
        for controller in &self.controllers {
            let _ = writeln!(out, "---- last lines of {}'s log ----\n{}", controller.identity, controller.log_tail(12));
        }
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.recorder.abort();
        if std::thread::panicking() {
            eprintln!("{}", self.report());
            if let Some(prometheus) = &self.prometheus {
                let log = prometheus.log();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                eprintln!("---- prometheus log tail ----\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
        }
        for controller in &mut self.controllers {
            controller.kill();
        }
        // On a real cluster the scenario's namespace (and its Deployment's pods) would outlive the test;
        // deleting it without waiting keeps a reused cluster clean. The fake API server simply goes away.
        if matches!(self._api, Api_::Cluster) {
            let deleted = std::process::Command::new(kubectl())
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", "namespace", &self.scenario.namespace, "--wait=false", "--ignore-not-found"])
                .output();
            if let Err(e) = deleted {
                eprintln!("could not delete namespace {}: {e}", self.scenario.namespace);
            }
        }
    }
}

/// Every second: load, replicas and readiness from the simulator, the decision from the followed policy's
/// `status.lastEvaluation`.
async fn record(
    client: kube::Client,
    namespace: String,
    sim: Arc<Simulator>,
    started: Instant,
    rows: Arc<Mutex<Vec<Row>>>,
    policy: Arc<Mutex<Option<String>>>,
) {
    let api: Api<ScalingPolicy> = Api::namespaced(client, &namespace);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let name = policy.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let decision = match name {
            None => "-".to_string(),
            Some(name) => match api.get_opt(&name).await {
                Ok(Some(p)) => p
                    .status
                    .and_then(|s| s.last_evaluation)
                    .map(|e| {
                        let limited = if e.limited_by.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", e.limited_by.join(","))
                        };
                        format!("{}: {}{limited}", e.decision, e.reason)
                    })
                    .unwrap_or_else(|| "(no evaluation yet)".into()),
                Ok(None) => "(policy missing)".into(),
                Err(e) => format!("(status unreadable: {e})"),
            },
        };
        let row = Row {
            at: started.elapsed().as_secs_f64(),
            load: sim.load(),
            replicas: sim.replicas(),
            ready: sim.ready(),
            decision,
        };
        rows.lock().unwrap_or_else(PoisonError::into_inner).push(row);
    }
}

/// Applies `crds/scalingpolicy.yaml` and waits until the kind is served.
pub async fn apply_crd(client: &kube::Client) -> Result<(), HarnessError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/scalingpolicy.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|source| HarnessError::Io { context: format!("read {}", path.display()), source })?;
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&text).map_err(|e| HarnessError::Start { what: "CRD", reason: e.to_string() })?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.map_err(kube_error("create CRD"))?;
    let policies: Api<ScalingPolicy> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match policies.list(&ListParams::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(kube_error("list ScalingPolicies after CRD")(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn kubectl() -> PathBuf {
    crate::prometheus::find_binary("kubectl").unwrap_or_else(|_| PathBuf::from("/usr/bin/kubectl"))
}

/// A condition's status and reason in a policy's status, e.g. `("False", "NoMetrics")`.
pub fn condition(status: &ScalingPolicyStatus, type_: &str) -> Option<(String, String)> {
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
}
