//! The seeded chaos soak: many policies in several namespaces, each on a simulated Deployment scraped by a real
//! Prometheus, one `foresight run` process, and four lanes of faults drawn from one seeded RNG:
//!
//! - **Prometheus path**: Prometheus killed and restarted, the connection refused, tarpitted, 5xx, 429, garbage
//!   or oversized answers, for every query or for one or two namespaces;
//! - **API**: 409 and 500 on `/scale` and on status writes, every API connection (watches) cut;
//! - **controller**: SIGKILL, preferably while a scale is half-recorded (`status.pendingScale` set), restart;
//! - **hostile policies**: out-of-range integers (refused at apply), a forbidden Prometheus address, a huge
//!   query, created and deleted.
//!
//! Then a fault-free phase. Every second the invariants are checked against what the fake API server stored and
//! received and what the Prometheus proxy served (see [`Checker`]). The run is replayed from its seed
//! (`FORESIGHT_SOAK_SEED`); `FORESIGHT_SOAK_SECS` sets its length.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{PromChaosProxy, PromFault, TcpChaos};
use crate::fakeapi::faults::Fault;
use crate::fakeapi::fixtures::deployment;
use crate::fakeapi::{FakeApiServer, Gvr};
use crate::prometheus::{PromServer, StaticHttpServer};
use crate::sim::{LoadProfile, SimConfig, Simulator};

/// The environment variable holding the seed to replay.
pub const SEED_ENV: &str = "FORESIGHT_SOAK_SEED";
/// The environment variable holding the soak's length in seconds.
pub const SECS_ENV: &str = "FORESIGHT_SOAK_SECS";

/// The controller's per-query timeout in the soak.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The controller's --max-response-bytes; oversized answers are twice as long.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// The controller's --circuit-cool-off.
const COOL_OFF: Duration = Duration::from_secs(2);
/// How long after a (re)start the controller gets to list and evaluate before its cadence is judged.
const START_GRACE: f64 = 15.0;
/// How long after a failed write (an injected 409/500, a conflict) its policy's cadence is not judged: the
/// reconcile backs off 5 s, doubling per failure in a row; three in a row (the most injected at once) wait 20 s.
const FAILED_WRITE_SHADOW: f64 = 25.0;
/// Slack for a scale-down's data: its answer may be cached for one interval, the act takes API calls.
const DATA_SLACK: f64 = 2.0;
/// Slack on evaluation times (log flushing, a loaded machine).
const CADENCE_SLACK: f64 = 2.0;
const HOSTILE_NS: &str = "hostile";

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub seed: u64,
    /// Everything: warm-up, chaos and the fault-free phase.
    pub duration: Duration,
    pub namespaces: usize,
    pub policies_per_namespace: usize,
}

impl SoakConfig {
    /// From `FORESIGHT_SOAK_SEED` (default: from the clock) and `FORESIGHT_SOAK_SECS` (default 180):
    /// 6 namespaces of 6 policies.
    pub fn from_env() -> Self {
        let seed = std::env::var(SEED_ENV).ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        let secs = std::env::var(SECS_ENV).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(180u64);
        Self { seed, duration: Duration::from_secs(secs.max(90)), namespaces: 6, policies_per_namespace: 6 }
    }
}

/// What a soak did and found.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub seed: u64,
    pub policies: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Queries the proxy answered, by outcome.
    pub served: BTreeMap<String, usize>,
    /// Invariant checks made (one per invariant, object and poll).
    pub checks: u64,
    pub evaluations: usize,
    pub scale_ups: usize,
    pub scale_downs: usize,
    /// The slowest recovery after the faults stopped, in intervals of the policy.
    pub worst_recovery_intervals: f64,
    /// Seconds spent starting Prometheus, the simulators and the controller before the soak's clock started.
    pub setup_secs: f64,
    pub violations: Vec<String>,
    /// Where the controller's logs were kept (after violations).
    pub kept_logs: Option<PathBuf>,
    /// The tail of the controller's last log, for a failure report.
    pub log_tail: String,
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "chaos soak, seed {} ({SEED_ENV}={} to replay), {} policies", self.seed, self.seed, self.policies)?;
        writeln!(f, "faults injected:")?;
        for (kind, n) in &self.faults {
            writeln!(f, "  {kind:<34} {n}")?;
        }
        writeln!(f, "Prometheus answers served through the proxy:")?;
        for (kind, n) in &self.served {
            writeln!(f, "  {kind:<34} {n}")?;
        }
        writeln!(
            f,
            "evaluations seen: {}, scales: {} up / {} down, worst recovery: {:.1} intervals",
            self.evaluations, self.scale_ups, self.scale_downs, self.worst_recovery_intervals
        )?;
        writeln!(
            f,
            "setup: {:.1}s; invariant checks: {}, violations: {}",
            self.setup_secs,
            self.checks,
            self.violations.len()
        )?;
        for v in self.violations.iter().take(25) {
            writeln!(f, "  VIOLATION {v}")?;
        }
        if self.violations.len() > 25 {
            writeln!(f, "  ... and {} more", self.violations.len() - 25)?;
        }
        if let Some(dir) = &self.kept_logs {
            writeln!(f, "controller logs kept in {}", dir.display())?;
        }
        Ok(())
    }
}

/// One policy under test.
#[derive(Debug, Clone)]
struct PolicyInfo {
    namespace: String,
    name: String,
    min: i64,
    max: i64,
    interval: f64,
}

/// Something that disturbs policies' evaluations, from `start` to `end` (seconds since the soak started).
#[derive(Debug, Clone)]
struct Window {
    what: &'static str,
    end: f64,
    /// Namespaces it affects; `None`: all.
    namespaces: Option<Vec<String>>,
}

impl Window {
    fn affects(&self, namespace: &str) -> bool {
        self.namespaces.as_ref().is_none_or(|n| n.iter().any(|x| x == namespace))
    }
}

/// One history entry, as compared across polls.
type Entry = (String, i64, i64, String);

#[derive(Default)]
struct PolicyState {
    /// Log time (soak seconds) of the latest evaluation.
    last_evaluation: Option<f64>,
    /// Log times of metric reads that got data.
    good_reads: Vec<f64>,
    /// When a write for it (its /scale or its status) last failed.
    last_failed_write: Option<f64>,
    /// Every history entry ever seen, in the order first seen (oldest first).
    history: Vec<Entry>,
    history_set: HashSet<Entry>,
}

/// The invariants, checked against the fake's objects and requests, the proxy's log and the controller's log.
struct Checker {
    started: Instant,
    started_wall: jiff::Timestamp,
    policies: Vec<PolicyInfo>,
    by_target: HashMap<(String, String), usize>,
    state: Vec<PolicyState>,
    /// Per Deployment: replicas after each change the controller patched, from the initial count.
    replicas: HashMap<(String, String), i64>,
    transitions: HashMap<(String, String), Vec<(i64, i64)>>,
    windows: Vec<Window>,
    controller_started: f64,
    previous_take: f64,
    log_offset: u64,
    log_path: PathBuf,
    checks: u64,
    evaluations: usize,
    violations: Vec<String>,
}

impl Checker {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn at(&self, instant: Instant) -> f64 {
        instant.saturating_duration_since(self.started).as_secs_f64()
    }

    fn violation(&mut self, text: String) {
        let at = self.now();
        if self.violations.len() < 500 {
            self.violations.push(format!("+{at:.1}s {text}"));
        }
    }

    /// Scale patches since the last poll: within bounds, and never down without data from Prometheus.
    fn requests(&mut self, server: &FakeApiServer, proxy: &PromChaosProxy) {
        let earliest = self.previous_take;
        let taken = server.take_requests();
        self.previous_take = self.now();
        for request in taken {
            if request.method != "PATCH" {
                continue;
            }
            let parts: Vec<&str> = request.path.split('/').collect();
            let (Some(ns), Some(name)) = (
                parts.iter().position(|p| *p == "namespaces").and_then(|i| parts.get(i + 1)),
                parts
                    .iter()
                    .position(|p| *p == "deployments" || *p == "scalingpolicies")
                    .and_then(|i| parts.get(i + 1)),
            ) else {
                continue;
            };
            let key = ((*ns).to_owned(), (*name).to_owned());
            let ours = request.path.ends_with("/scale") || request.path.contains("/scalingpolicies/");
            if request.status >= 400 && ours {
                if let Some(&index) = self.by_target.get(&key) {
                    self.state[index].last_failed_write = Some(self.previous_take);
                }
                continue;
            }
            if !request.path.ends_with("/scale") || request.status != 200 {
                continue;
            }
            let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
            let Some(to) = body.pointer("/spec/replicas").and_then(Value::as_i64) else { continue };
            let Some(&index) = self.by_target.get(&key) else { continue };
            let policy = self.policies[index].clone();
            let from = self.replicas.get(&key).copied().unwrap_or(to);
            self.checks += 2;
            if !(policy.min..=policy.max).contains(&to) {
                self.violation(format!("{ns}/{name} scaled to {to}, outside [{}, {}]", policy.min, policy.max));
            }
            if to < from {
                // The decision's data came from an answer at most one interval (its cache) plus the act before
                // the patch, and the patch came after the previous poll.
                let needed = earliest - policy.interval - DATA_SLACK;
                let last = proxy.last_healthy(ns).map(|i| self.at(i));
                if last.is_none_or(|l| l < needed) {
                    let seen = last.map_or("never".to_owned(), |l| format!("last at +{l:.1}s"));
                    self.violation(format!(
                        "{ns}/{name} scaled DOWN {from} -> {to} while Prometheus had served no data for {ns} since \
                         +{needed:.1}s ({seen}): a scale-down on missing metrics"
                    ));
                }
            }
            if to != from {
                self.transitions.entry(key.clone()).or_default().push((from, to));
                self.replicas.insert(key, to);
            }
        }
    }

    /// Objects: replicas within bounds; history exactly once, never lost, never someone else's.
    fn objects(&mut self, server: &FakeApiServer) {
        let deployments = Gvr::new("apps", "v1", "deployments");
        let policies = Gvr::new("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies");
        for index in 0..self.policies.len() {
            let p = self.policies[index].clone();
            if let Some(d) = server.get_json(&deployments, Some(&p.namespace), &p.name) {
                let replicas = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(-1);
                self.checks += 1;
                if !(p.min..=p.max).contains(&replicas) {
                    self.violation(format!(
                        "{}/{} has {replicas} replicas, outside [{}, {}]",
                        p.namespace, p.name, p.min, p.max
                    ));
                }
            }
            let Some(sp) = server.get_json(&policies, Some(&p.namespace), &p.name) else { continue };
            let history = sp.pointer("/status/history").and_then(Value::as_array).cloned().unwrap_or_default();
            let entries: Vec<Entry> = history
                .iter()
                .map(|h| {
                    (
                        h["time"].as_str().unwrap_or("").to_owned(),
                        h["from"].as_i64().unwrap_or(-1),
                        h["to"].as_i64().unwrap_or(-1),
                        h["policy"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            self.checks += 3;
            let distinct: HashSet<&Entry> = entries.iter().collect();
            if distinct.len() != entries.len() {
                self.violation(format!("{}/{} status.history holds an entry twice: {entries:?}", p.namespace, p.name));
            }
            if let Some(external) = entries.iter().find(|e| e.3 == foresight::api::EXTERNAL) {
                self.violation(format!(
                    "{}/{} recorded a scale as someone else's ({external:?}): only Foresight scales here, so a \
                     scale of its own was lost",
                    p.namespace, p.name
                ));
            }
            let state = &mut self.state[index];
            let present: HashSet<&Entry> = entries.iter().collect();
            let full = entries.len() >= 100;
            let oldest = entries.last().map(|e| e.0.clone());
            let lost: Vec<Entry> = state
                .history
                .iter()
                .filter(|e| !present.contains(e))
                .filter(|e| !(full && oldest.as_ref().is_some_and(|o| e.0 <= *o)))
                .cloned()
                .collect();
            for entry in entries.iter().rev() {
                if state.history_set.insert(entry.clone()) {
                    state.history.push(entry.clone());
                }
            }
            if !lost.is_empty() {
                self.violation(format!("{}/{} lost history entries {lost:?}", p.namespace, p.name));
            }
        }
    }

    /// The controller's new log lines: panics, evaluations and good metric reads.
    fn log(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.log_path) else { return };
        if file.seek(SeekFrom::Start(self.log_offset)).is_err() {
            return;
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        // Only whole lines; the rest is read next time.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        self.log_offset += complete as u64;
        self.checks += 1;
        for line in text[..complete].lines() {
            if line.contains("panicked at") || line.contains("RUST_BACKTRACE") {
                self.violation(format!("the controller panicked: {}", line.chars().take(400).collect::<String>()));
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            let message = v["message"].as_str().unwrap_or("");
            let good_read = message.starts_with("metric read") && v["ok"].as_bool() == Some(true);
            if message != "evaluated" && !good_read {
                continue;
            }
            let (Some(ns), Some(name)) = (v["namespace"].as_str(), v["name"].as_str()) else { continue };
            let Some(&index) = self.by_target.get(&(ns.to_owned(), name.to_owned())) else { continue };
            let Some(at) = v["timestamp"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) else { continue };
            let secs = at.duration_since(self.started_wall).as_secs_f64();
            if message == "evaluated" {
                self.evaluations += 1;
                let last = &mut self.state[index].last_evaluation;
                *last = Some(last.map_or(secs, |l: f64| l.max(secs)));
            } else {
                self.state[index].good_reads.push(secs);
            }
        }
    }

    /// When `policy`'s evaluations are undisturbed from: after the controller's start, after every fault window
    /// touching its namespace.
    fn undisturbed_since(&self, index: usize) -> f64 {
        let policy = &self.policies[index];
        let mut since = self.controller_started + START_GRACE;
        if let Some(failed) = self.state[index].last_failed_write {
            since = since.max(failed + FAILED_WRITE_SHADOW);
        }
        for w in &self.windows {
            if w.affects(&policy.namespace) {
                since = since.max(w.end);
            }
        }
        since
    }

    /// Every policy whose path is healthy is evaluated at least once per two intervals.
    fn cadence(&mut self, controller_running: bool) {
        if !controller_running {
            return;
        }
        let now = self.now();
        for index in 0..self.policies.len() {
            let p = self.policies[index].clone();
            let since = self.undisturbed_since(index);
            let allowed = 2.0 * p.interval + CADENCE_SLACK;
            if now - since < allowed {
                continue;
            }
            self.checks += 1;
            let last = self.state[index].last_evaluation;
            if last.is_none_or(|l| now - l > allowed) {
                let seen = last.map_or("never".to_owned(), |l| format!("last at +{l:.1}s"));
                self.violation(format!(
                    "{}/{} (interval {}s) not evaluated for over two intervals while healthy since +{since:.1}s ({seen})",
                    p.namespace, p.name, p.interval
                ));
            }
        }
    }

    /// When every policy's recovery window after the faults stopped at `stopped` has passed: three intervals
    /// (and the slack) from the later of `stopped` and the end of its own retry backoff, as `recovery` judges.
    fn recovery_deadline(&self, stopped: f64) -> f64 {
        self.policies
            .iter()
            .zip(&self.state)
            .map(|(p, state)| {
                let backoff_end = state.last_failed_write.map_or(0.0, |f| f + FAILED_WRITE_SHADOW - 5.0);
                stopped.max(backoff_end) + 3.0 * p.interval + CADENCE_SLACK + 1.0
            })
            .fold(stopped, f64::max)
    }

    /// After the faults stopped at `stopped`: each policy read its metrics again within three intervals (from the
    /// end of its retry backoff if a write of its own failed just before). Returns the slowest recovery in
    /// intervals.
    fn recovery(&mut self, stopped: f64) -> f64 {
        let mut worst: f64 = 0.0;
        for index in 0..self.policies.len() {
            let p = self.policies[index].clone();
            let backoff_end = self.state[index].last_failed_write.map_or(0.0, |f| f + FAILED_WRITE_SHADOW - 5.0);
            let stopped = stopped.max(backoff_end);
            self.checks += 1;
            let first = self.state[index]
                .good_reads
                .iter()
                .copied()
                .filter(|t| *t >= stopped)
                .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.min(t))));
            match first {
                Some(t) => {
                    let intervals = (t - stopped) / p.interval;
                    worst = worst.max(intervals);
                    if t - stopped > 3.0 * p.interval + CADENCE_SLACK {
                        self.violation(format!(
                            "{}/{} read its metrics again only {:.1}s ({intervals:.1} intervals) after the faults stopped",
                            p.namespace,
                            p.name,
                            t - stopped
                        ));
                    }
                }
                None => self.violation(format!(
                    "{}/{} never read its metrics again after the faults stopped at +{stopped:.1}s",
                    p.namespace, p.name
                )),
            }
        }
        worst
    }

    /// At the end: every scale the controller patched is in its policy's history exactly once, in order, and no
    /// scale is left half-recorded.
    fn exactly_once(&mut self, server: &FakeApiServer) {
        let policies = Gvr::new("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies");
        for index in 0..self.policies.len() {
            let p = self.policies[index].clone();
            let key = (p.namespace.clone(), p.name.clone());
            let patched = self.transitions.get(&key).cloned().unwrap_or_default();
            let mut recorded: Vec<(i64, i64)> = self.state[index]
                .history
                .iter()
                .filter(|e| e.3 != foresight::api::EXTERNAL)
                .map(|e| (e.1, e.2))
                .collect();
            // Killed at the end between the /scale patch and the history entry: the announced entry is what the
            // next evaluation records (report::settle_pending), if the patch went through.
            let pending = server
                .get_json(&policies, Some(&p.namespace), &p.name)
                .and_then(|sp| sp.pointer("/status/pendingScale").cloned())
                .filter(|v| !v.is_null());
            if let Some(pending) = pending {
                let announced = (pending["from"].as_i64().unwrap_or(-1), pending["to"].as_i64().unwrap_or(-1));
                if patched.last() == Some(&announced) && recorded.len() + 1 == patched.len() {
                    recorded.push(announced);
                }
            }
            self.checks += 1;
            if patched != recorded {
                self.violation(format!(
                    "{}/{}: the scales patched {patched:?} are not the history recorded {recorded:?}",
                    p.namespace, p.name
                ));
            }
        }
    }
}

/// A `foresight run` process of the soak.
struct Controller {
    child: Option<Child>,
    log: PathBuf,
    starts: usize,
}

impl Controller {
    fn start(&mut self, dir: &Path, kubeconfig: &Path, prometheus: &str, attacker_allowed: &str) -> anyhow::Result<()> {
        let binary = crate::harness::foresight_binary()?;
        self.starts += 1;
        self.log = dir.join(format!("controller-{}.log", self.starts));
        let out = std::fs::File::create(&self.log)?;
        let err = out.try_clone()?;
        let port = crate::prometheus::free_port()?;
        let child = Command::new(binary)
            .arg("run")
            .args(["--prometheus-address", prometheus])
            .arg("--leader-election=false")
            .args(["--pod-name", "foresight-chaos"])
            .args(["--metrics-address", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json", "--log-level", "info,foresight=debug"])
            .args(["--query-timeout", &format!("{}s", QUERY_TIMEOUT.as_secs())])
            .args(["--max-response-bytes", &MAX_RESPONSE_BYTES.to_string()])
            .args(["--circuit-cool-off", &format!("{}s", COOL_OFF.as_secs())])
            // An address no policy may use: the hostile policy names another.
            .args(["--allowed-prometheus-addresses", attacker_allowed])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("spawn foresight")?;
        self.child = Some(child);
        Ok(())
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the schedule does at a moment.
#[derive(Debug, Clone)]
enum Action {
    PromFault { namespaces: Option<Vec<String>>, fault: PromFault, until: f64 },
    PromKill { until: f64 },
    PromRefuse { until: f64 },
    ApiFault { path: String, status: u16, times: usize, kind: &'static str },
    SeverApi,
    KillController { restart_after: f64 },
    Hostile { which: usize, create: bool },
}

/// The whole seeded schedule: (time, action), by time.
fn schedule(rng: &mut StdRng, policies: &[PolicyInfo], namespaces: &[String], chaos: (f64, f64)) -> Vec<(f64, Action)> {
    let (from, to) = chaos;
    let mut plan = Vec::new();
    // Prometheus path: one fault at a time.
    let mut t = from;
    while t < to - 8.0 {
        let duration = rng.random_range(10.0..20.0f64).min(to - t);
        let until = t + duration;
        let action = match rng.random_range(0..7) {
            0 => Action::PromKill { until },
            1 => Action::PromRefuse { until },
            n => {
                let fault = match n {
                    2 => PromFault::Tarpit,
                    3 => PromFault::Status([500, 502, 503][rng.random_range(0..3)]),
                    4 => PromFault::Status(429),
                    5 => PromFault::Garbage,
                    _ => PromFault::Oversized,
                };
                let scope = if rng.random_bool(0.3) {
                    None
                } else {
                    let a = namespaces[rng.random_range(0..namespaces.len())].clone();
                    let b = namespaces[rng.random_range(0..namespaces.len())].clone();
                    let mut both = vec![a, b];
                    both.dedup();
                    Some(both)
                };
                Action::PromFault { namespaces: scope, fault, until }
            }
        };
        plan.push((t, action));
        t = until + rng.random_range(3.0..8.0f64);
    }
    // API: a fault every few seconds.
    let mut t = from + rng.random_range(0.0..5.0f64);
    while t < to - 5.0 {
        let p = &policies[rng.random_range(0..policies.len())];
        let action = match rng.random_range(0..5) {
            0 | 1 => {
                let status = if rng.random_bool(0.5) { 409 } else { 500 };
                Action::ApiFault {
                    path: format!("/namespaces/{}/deployments/{}/scale", p.namespace, p.name),
                    status,
                    times: rng.random_range(1..=3),
                    kind: if status == 409 { "api_scale_409" } else { "api_scale_500" },
                }
            }
            2 | 3 => {
                let status = if rng.random_bool(0.5) { 409 } else { 500 };
                Action::ApiFault {
                    path: format!("/namespaces/{}/scalingpolicies/{}/status", p.namespace, p.name),
                    status,
                    times: rng.random_range(1..=3),
                    kind: if status == 409 { "api_status_409" } else { "api_status_500" },
                }
            }
            _ => Action::SeverApi,
        };
        plan.push((t, action));
        t += rng.random_range(5.0..12.0f64);
    }
    // The controller: SIGKILL every 25-45 s, never in the last 20 s of chaos.
    let mut t = from + rng.random_range(10.0..25.0f64);
    while t < to - 20.0 {
        plan.push((t, Action::KillController { restart_after: rng.random_range(1.0..3.0f64) }));
        t += rng.random_range(25.0..45.0f64);
    }
    // Hostile policies: created and deleted in turn.
    let mut t = from + rng.random_range(0.0..8.0f64);
    let mut alive = [false; 3];
    while t < to {
        let which = rng.random_range(0..3);
        plan.push((t, Action::Hostile { which, create: !alive[which] }));
        alive[which] = !alive[which];
        t += rng.random_range(6.0..15.0f64);
    }
    plan.sort_by(|a, b| a.0.total_cmp(&b.0));
    plan
}

fn hostile_policy(which: usize, attacker: &str) -> (String, Value) {
    let base = |spec: Value| {
        let mut s = json!({
            "targetRef": { "name": "victim" },
            "minReplicas": 1,
            "maxReplicas": 3,
            "interval": "3s",
            "metrics": [ { "name": "cpu", "cpu": {} } ],
            "policies": { "target": [ { "metric": "cpu", "value": 60 } ] }
        });
        if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        s
    };
    match which {
        0 => (
            "out-of-range".into(),
            base(json!({ "maxReplicas": 99_999_999_999i64, "interval": "99999999999999999999999s" })),
        ),
        1 => (
            "forbidden-address".into(),
            base(json!({ "prometheus": { "address": attacker, "headers": { "X-Scope-OrgID": "victim" } } })),
        ),
        _ => {
            // As long as the schema allows, and expensive: every series, regex-matched, over a day.
            let mut promql = String::from("count(count_over_time({__name__=~\".+\"}[1d]))");
            while promql.len() < 3900 {
                promql.push_str(" + count(count_over_time({__name__=~\".*\"}[1d]))");
            }
            (
                "huge-query".into(),
                base(json!({
                    "metrics": [ { "name": "q", "query": { "promql": promql } } ],
                    "policies": { "target": [ { "metric": "q", "value": 1 } ] }
                })),
            )
        }
    }
}

fn policy_object(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "autoscaling.foresight.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    })
}

fn bump(map: &mut BTreeMap<String, usize>, key: &str) {
    *map.entry(key.to_owned()).or_default() += 1;
}

/// Runs the soak; an `Err` is a setup failure, violations are in the report.
pub async fn run(config: SoakConfig) -> anyhow::Result<SoakReport> {
    // Built (or found up to date) before anything runs: a build must not eat into the soak's phases.
    crate::harness::foresight_binary()?;
    let setup = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let dir = tempfile::Builder::new().prefix("foresight-soak-").tempdir()?;
    let mut report = SoakReport { seed: config.seed, ..SoakReport::default() };

    // The API: the fake with the generated CRD, behind a TCP proxy that can cut the controller's connections.
    let server = FakeApiServer::builder().build();
    let api_addr = server.serve_tcp().await?;
    let client = server.client();
    crate::harness::apply_crd(&client).await?;
    let api_chaos = TcpChaos::start(api_addr).await?;
    let kubeconfig = dir.path().join("kubeconfig");
    crate::fakeapi::kubeconfig::write(api_chaos.addr(), &kubeconfig)?;

    // Namespaces, Deployments, policies and a simulator for each.
    let namespaces: Vec<String> = (0..config.namespaces).map(|i| format!("chaos-{i}")).collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces.iter().map(String::as_str).chain([HOSTILE_NS]) {
        let object = serde_json::from_value(json!({ "metadata": { "name": ns } }))?;
        ns_api.create(&PostParams::default(), &object).await?;
    }
    let victims: Api<Deployment> = Api::namespaced(client.clone(), HOSTILE_NS);
    victims.create(&PostParams::default(), &deployment("victim", 1)).await?;
    let mut policies = Vec::new();
    let mut simulators = Vec::new();
    for (k, ns) in namespaces.iter().enumerate() {
        // One interval per namespace, so that its grouped queries are shared by all its policies.
        let interval = 3 + (k % 3) as u64;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let sps: Api<foresight::api::ScalingPolicy> = Api::namespaced(client.clone(), ns);
        for j in 0..config.policies_per_namespace {
            let name = format!("app-{k}-{j}");
            let min = rng.random_range(1..=2i64);
            let max = rng.random_range(6..=9i64);
            let initial = rng.random_range(min..=max.min(4)) as i32;
            deployments.create(&PostParams::default(), &deployment(&name, initial)).await?;
            let spec = json!({
                "targetRef": { "name": name },
                "minReplicas": min,
                "maxReplicas": max,
                "interval": format!("{interval}s"),
                "historyLimit": 100,
                "metrics": [ { "name": "cpu", "cpu": { "window": "30s" } } ],
                "policies": { "target": [ { "metric": "cpu", "value": 60 } ] },
                "behavior": {
                    "scaleUp": { "cooldown": "0s", "stabilizationWindow": "0s" },
                    "scaleDown": { "cooldown": "0s", "stabilizationWindow": "0s",
                                   "policies": [ { "type": "Pods", "value": 1, "periodSeconds": 1 } ] }
                }
            });
            let sp: foresight::api::ScalingPolicy = serde_json::from_value(policy_object(ns, &name, spec))?;
            sps.create(&PostParams::default(), &sp).await?;
            let profile = LoadProfile::Cycle {
                base: rng.random_range(10.0..50.0),
                amplitude: rng.random_range(60.0..140.0),
                period: Duration::from_secs(rng.random_range(50..110)),
            };
            let mut sim = SimConfig::new(ns, &name, profile).startup_delay(Duration::from_secs(2));
            sim.tick = Duration::from_secs(1);
            simulators.push(Simulator::start(client.clone(), sim).await?);
            policies.push(PolicyInfo { namespace: ns.clone(), name, min, max, interval: interval as f64 });
        }
    }
    report.policies = policies.len();

    // Prometheus scraping every simulator, behind the fault proxy, behind a TCP proxy that can refuse.
    let targets: Vec<SocketAddr> = simulators.iter().map(Simulator::metrics_addr).collect();
    let prometheus =
        tokio::task::spawn_blocking(move || PromServer::start_with_scrape(&targets, Duration::from_secs(1))).await??;
    let prom_proxy = PromChaosProxy::start(prometheus.addr(), 2 * MAX_RESPONSE_BYTES).await?;
    let prom_chaos = TcpChaos::start(prom_proxy.addr()).await?;
    let prometheus = Arc::new(Mutex::new(prometheus));
    // The hostile policy's own listener: it must never be sent anything.
    let attacker = StaticHttpServer::start(
        "application/json",
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    )?;

    let started = Instant::now();
    report.setup_secs = setup.elapsed().as_secs_f64();
    let mut checker = Checker {
        started,
        started_wall: jiff::Timestamp::now(),
        by_target: policies.iter().enumerate().map(|(i, p)| ((p.namespace.clone(), p.name.clone()), i)).collect(),
        state: policies.iter().map(|_| PolicyState::default()).collect(),
        replicas: HashMap::new(),
        transitions: HashMap::new(),
        windows: Vec::new(),
        controller_started: 0.0,
        previous_take: 0.0,
        log_offset: 0,
        log_path: PathBuf::new(),
        checks: 0,
        evaluations: 0,
        violations: Vec::new(),
        policies: policies.clone(),
    };
    for p in &policies {
        let d = server.get_json(&Gvr::new("apps", "v1", "deployments"), Some(&p.namespace), &p.name);
        let replicas = d.and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_i64)).unwrap_or(1);
        checker.replicas.insert((p.namespace.clone(), p.name.clone()), replicas);
    }
    let _ = server.take_requests();

    let prom_url = prom_chaos.url();
    let allowed = "http://127.0.0.1:1/nothing-else";
    let mut controller = Controller { child: None, log: PathBuf::new(), starts: 0 };
    controller.start(dir.path(), &kubeconfig, &prom_url, allowed)?;
    checker.log_path = controller.log.clone();

    let total = config.duration.as_secs_f64();
    let final_phase = 40.0f64.max(total * 0.2);
    let warmup = 25.0;
    let chaos_end = total - final_phase;
    let plan = schedule(&mut rng, &policies, &namespaces, (warmup, chaos_end));
    let mut next = 0;
    let mut ends: Vec<(f64, &'static str, Option<Vec<String>>)> = Vec::new();
    let mut restart_at: Option<f64> = None;
    let mut kill_armed: Option<(f64, f64)> = None;
    let mut prom_restart: Option<tokio::task::JoinHandle<()>> = None;
    let mut hostile_alive = [false; 3];
    let mut faults_stopped: Option<f64> = None;
    let mut last_check = -1.0f64;
    let policies_gvr = Gvr::new("autoscaling.foresight.dev", "v1alpha1", "scalingpolicies");

    // The run ends at `total`, or later when a policy's recovery window after the faults stopped (which a
    // write that failed just before can push past `total`) has not passed yet; at most a minute later.
    let hard_end = total + 60.0;
    loop {
        let now = checker.now();
        let recovered = faults_stopped.is_some_and(|stopped| now >= checker.recovery_deadline(stopped));
        if now >= hard_end || (now >= total && recovered) {
            break;
        }
        // Due actions.
        while next < plan.len() && plan[next].0 <= now {
            let (_, action) = plan[next].clone();
            next += 1;
            match action {
                Action::PromFault { namespaces: scope, fault, until } => {
                    match &scope {
                        None => prom_proxy.set_fault(None, Some(fault)),
                        Some(list) => list.iter().for_each(|ns| prom_proxy.set_fault(Some(ns), Some(fault))),
                    }
                    let scoped = if scope.is_some() { "_namespaced" } else { "_global" };
                    bump(&mut report.faults, &format!("{}{scoped}", fault.kind()));
                    checker.windows.push(Window { what: "prom_fault", end: f64::INFINITY, namespaces: scope.clone() });
                    ends.push((until, "prom_fault", scope));
                }
                Action::PromKill { until } => {
                    let _ = prometheus.lock().unwrap_or_else(PoisonError::into_inner).stop();
                    bump(&mut report.faults, "prometheus_killed");
                    checker.windows.push(Window { what: "prom_kill", end: f64::INFINITY, namespaces: None });
                    ends.push((until, "prom_kill", None));
                }
                Action::PromRefuse { until } => {
                    prom_chaos.set_refusing(true).await;
                    bump(&mut report.faults, "prometheus_connection_refused");
                    checker.windows.push(Window { what: "prom_refuse", end: f64::INFINITY, namespaces: None });
                    ends.push((until, "prom_refuse", None));
                }
                Action::ApiFault { path, status, times, kind } => {
                    // Its shadow on the cadence starts when a write fails (see Checker::requests).
                    server.inject(Fault::new("PATCH", &path, status, times));
                    bump(&mut report.faults, kind);
                }
                Action::SeverApi => {
                    api_chaos.sever();
                    bump(&mut report.faults, "api_connections_cut_(watches_closed)");
                    checker.windows.push(Window { what: "api", end: now + 15.0, namespaces: None });
                }
                Action::KillController { restart_after } => {
                    if controller.running() && restart_at.is_none() {
                        kill_armed = Some((now + 8.0, restart_after));
                    }
                }
                Action::Hostile { which, create } => {
                    let (name, spec) = hostile_policy(which, &attacker.url());
                    let sps: Api<foresight::api::ScalingPolicy> = Api::namespaced(client.clone(), HOSTILE_NS);
                    if create && !hostile_alive[which] {
                        // Straight JSON: the out-of-range one does not fit the Rust types.
                        let object = policy_object(HOSTILE_NS, &name, spec);
                        let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
                            client.clone(),
                            HOSTILE_NS,
                            &kube::api::ApiResource::erase::<foresight::api::ScalingPolicy>(&()),
                        );
                        let object: kube::api::DynamicObject = serde_json::from_value(object)?;
                        match raw.create(&PostParams::default(), &object).await {
                            Ok(_) => {
                                hostile_alive[which] = true;
                                bump(&mut report.faults, &format!("hostile_created_{name}"));
                                if which == 0 {
                                    checker.violations.push(format!(
                                        "+{now:.1}s the out-of-range hostile policy was accepted at apply"
                                    ));
                                }
                            }
                            Err(kube::Error::Api(e)) if e.code == 422 => {
                                bump(&mut report.faults, &format!("hostile_refused_at_apply_{name}"));
                            }
                            Err(e) => return Err(e).context("create a hostile policy"),
                        }
                    } else if !create && hostile_alive[which] {
                        sps.delete(&name, &DeleteParams::default()).await?;
                        hostile_alive[which] = false;
                        bump(&mut report.faults, &format!("hostile_deleted_{name}"));
                    }
                }
            }
        }
        // Fault ends.
        let mut i = 0;
        while i < ends.len() {
            if ends[i].0 > now {
                i += 1;
                continue;
            }
            let (_, what, scope) = ends.remove(i);
            match what {
                "prom_fault" => match &scope {
                    None => prom_proxy.set_fault(None, None),
                    Some(list) => list.iter().for_each(|ns| prom_proxy.set_fault(Some(ns), None)),
                },
                "prom_refuse" => prom_chaos.set_refusing(false).await,
                _ => {
                    let prometheus = prometheus.clone();
                    prom_restart = Some(tokio::task::spawn_blocking(move || {
                        let mut p = prometheus.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Err(error) = p.restart() {
                            tracing::warn!(%error, "cannot restart Prometheus");
                        }
                    }));
                }
            }
            if what != "prom_kill" {
                close_window(&mut checker.windows, what, &scope, now);
            }
        }
        if prom_restart.as_ref().is_some_and(tokio::task::JoinHandle::is_finished) {
            prom_restart = None;
            close_window(&mut checker.windows, "prom_kill", &None, now);
        }
        // The armed kill: as soon as a scale is half-recorded, else at its deadline.
        if let Some((deadline, restart_after)) = kill_armed {
            let half_recorded = server
                .list_json(&policies_gvr, None)
                .iter()
                .any(|sp| sp.pointer("/status/pendingScale").is_some_and(|p| !p.is_null()));
            if half_recorded || now >= deadline {
                controller.kill();
                bump(
                    &mut report.faults,
                    if half_recorded { "controller_sigkill_mid_scale" } else { "controller_sigkill" },
                );
                checker.windows.push(Window { what: "controller", end: f64::INFINITY, namespaces: None });
                kill_armed = None;
                restart_at = Some(now + restart_after);
            }
        }
        if let Some(at) = restart_at
            && now >= at
        {
            // The previous log's last lines first.
            checker.log();
            controller.start(dir.path(), &kubeconfig, &prom_url, allowed)?;
            checker.log_path = controller.log.clone();
            checker.log_offset = 0;
            checker.controller_started = now;
            close_window(&mut checker.windows, "controller", &None, now);
            restart_at = None;
        }
        // The fault-free phase: everything cleared and running again.
        if faults_stopped.is_none()
            && now >= chaos_end
            && ends.is_empty()
            && prom_restart.is_none()
            && restart_at.is_none()
            && kill_armed.is_none()
        {
            prom_proxy.clear();
            prom_chaos.set_refusing(false).await;
            server.clear_faults();
            for w in checker.windows.iter_mut().filter(|w| w.end.is_infinite()) {
                w.end = now;
            }
            faults_stopped = Some(now);
        }
        // The invariants, every second.
        if now - last_check >= 1.0 {
            last_check = now;
            checker.requests(&server, &prom_proxy);
            checker.objects(&server);
            checker.log();
            checker.cadence(controller.running() && restart_at.is_none());
            checker.checks += 1;
            let sent = attacker.requests();
            if !sent.is_empty() {
                checker.violation(format!("the forbidden address received {} requests", sent.len()));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped first, so that the last objects and requests are read in a state nothing changes any more.
    controller.kill();
    checker.objects(&server);
    checker.requests(&server, &prom_proxy);
    checker.log();
    match faults_stopped {
        Some(stopped) => report.worst_recovery_intervals = checker.recovery(stopped),
        None => checker.violation("the faults never stopped (the soak is too short for its schedule)".into()),
    }
    checker.exactly_once(&server);

    for served in prom_proxy.served() {
        let key = match served.outcome {
            super::Outcome::Healthy => "healthy (Prometheus 200)".to_owned(),
            super::Outcome::Upstream(code) => format!("Prometheus {code}"),
            super::Outcome::Unreachable => "Prometheus unreachable (502)".to_owned(),
            super::Outcome::Fault(f) => f.kind().to_owned(),
        };
        bump(&mut report.served, &key);
    }
    report.checks = checker.checks;
    report.evaluations = checker.evaluations;
    for transitions in checker.transitions.values() {
        report.scale_ups += transitions.iter().filter(|(a, b)| b > a).count();
        report.scale_downs += transitions.iter().filter(|(a, b)| b < a).count();
    }
    report.violations = std::mem::take(&mut checker.violations);
    if !report.violations.is_empty() {
        // The controller's logs (one per start) stay for the post-mortem.
        report.kept_logs = Some(dir.keep());
    }
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    report.log_tail = lines[lines.len().saturating_sub(30)..].join("\n");
    let _ = writeln!(report.log_tail);
    controller.kill();
    drop(simulators);
    Ok(report)
}

/// Ends the open window of `what` with this scope.
fn close_window(windows: &mut [Window], what: &str, scope: &Option<Vec<String>>, now: f64) {
    if let Some(w) = windows.iter_mut().rev().find(|w| w.what == what && w.end.is_infinite() && &w.namespaces == scope)
    {
        w.end = now;
    }
}
