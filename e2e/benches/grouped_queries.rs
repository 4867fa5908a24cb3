//! 10,000 policies on one controller against a real Prometheus: queries, Prometheus CPU, evaluations, logs,
//! controller CPU and memory per interval, with grouped queries on and off.
//!
//! `cargo bench -p foresight-e2e --bench grouped_queries [-- POLICIES NAMESPACES INTERVALS] [--grouped-only]`
//! (default 10,000 policies in 100 namespaces, 4 measured intervals per mode; `FORESIGHT_BENCH_BINARY` names an
//! already built `foresight`, else the harness builds it). Three separate processes, as in a cluster:
//!
//! ```text
//!   fake-apiserver (--simulate-workloads) ◄── foresight run (KUBECONFIG, JSON logs at info) ──► prometheus
//!        ▲ CRD, namespaces, Deployments, policies                                                │ scrapes 15 s
//!   this bench ── samples every 15 s: Prometheus' and the controller's /metrics, /proc/<pid> ──► exporter (here)
//! ```
//!
//! The exporter serves synthetic cAdvisor (`container_cpu_usage_seconds_total`, 0.3 cores per pod) and
//! kube-state-metrics (`kube_pod_container_resource_requests`, 0.5 cores) series for two pods of every
//! Deployment (`<name>-7c9f8d6b5-<pod>`), and a `queue_depth` gauge per namespace. Each policy has a `cpu` metric
//! (target 60 %, which it is on: every policy holds) and one raw query, `max(queue_depth{namespace=...})`,
//! identical for the policies of a namespace: the setup of issue #12.
//!
//! Per 15 s interval it prints: Prometheus queries (range and instant, from its own
//! `prometheus_http_requests_total`) and Prometheus CPU seconds (`process_cpu_seconds_total`), evaluations
//! (`foresight_reconciles_total{result="success"}`), log lines, controller CPU seconds and RSS (`/proc`), and the
//! reconcile p99 (interpolated in `foresight_reconcile_duration_seconds` as `histogram_quantile` does). The
//! Prometheus CPU of an interval with no controller (the scrapes alone) is printed first, so that the query cost
//! can be read net of ingestion. Then the same with `--grouped-queries=false` (one range query per metric per
//! policy). Finally, the memory one fitted predictive model keeps (a week at 5 min), counted by the allocator.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use foresight::{
    api::ScalingPolicy,
    engine::{Policy, Sample},
    forecast::Predictor,
};
use foresight_e2e::{
    fakeapi::fixtures::deployment,
    harness::foresight_binary,
    prometheus::{PromServer, free_port},
};
use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// Counts heap bytes for the fitted-model measurement (dhat passes allocations through until a profiler runs).
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const INTERVAL: Duration = Duration::from_secs(15);
const PODS: [&str; 2] = ["x2k4p", "q8m7z"];

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let policies = args.first().copied().unwrap_or(10_000);
    let namespaces = args.get(1).copied().unwrap_or(100).max(1);
    let intervals = args.get(2).copied().unwrap_or(4).max(1);
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "{policies} policies in {namespaces} namespaces (2 pods each; a cpu metric and a raw query), 15 s interval"
    );

    let exporter = Exporter::start(policies, namespaces)?;
    let prometheus = PromServer::start_with_scrape(&[exporter.addr], INTERVAL)?;
    let dir = tempfile::Builder::new().prefix("foresight-bench-").tempdir()?;
    let mut api = FakeApi::start(dir.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let setup = Instant::now();
    runtime.block_on(populate(&api.kubeconfig, policies, namespaces))?;
    println!("created {policies} Deployments and policies in {:.1} s", setup.elapsed().as_secs_f64());
    // Two scrapes at least, so that rate() over the cpu window has points.
    wait_for_data(&prometheus)?;

    let idle = prom_snapshot(&prometheus);
    std::thread::sleep(INTERVAL);
    let idle_cpu = prom_snapshot(&prometheus).cpu - idle.cpu;
    println!("Prometheus alone (scraping {} series every 15 s): {idle_cpu:.2} CPU s per interval", policies * 4);

    // FORESIGHT_BENCH_BINARY: an already built `foresight` (skips the cargo build of the harness).
    let binary = match std::env::var_os("FORESIGHT_BENCH_BINARY") {
        Some(path) => PathBuf::from(path),
        None => foresight_binary()?,
    };
    let modes: &[bool] = if std::env::args().any(|a| a == "--grouped-only") { &[true] } else { &[true, false] };
    for &grouped in modes {
        let mode = if grouped {
            "grouped queries (--grouped-queries=true)"
        } else {
            "per-policy queries (--grouped-queries=false)"
        };
        println!("\n{mode}");
        let mut controller = Controller::start(&binary, dir.path(), &api.kubeconfig, &prometheus.url(), grouped)?;
        // Warm-up: the initial list, the first status write of every policy, the first fits of the caches.
        let mut warm = 0;
        let mut last = snapshot(&prometheus, &controller, &api);
        sleep_to_boundary();
        loop {
            let now = snapshot(&prometheus, &controller, &api);
            let evaluated = now.evaluations - last.evaluations;
            last = now;
            if evaluated >= policies as f64 * 0.95 || warm >= 6 {
                break;
            }
            warm += 1;
            std::thread::sleep(INTERVAL);
        }
        println!("warm-up: {warm} intervals");
        println!(
            "{:>3} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>10}",
            "#",
            "range q",
            "instant q",
            "prom CPU",
            "evaluations",
            "log lines",
            "ctl CPU",
            "RSS MiB",
            "p99 ms",
            "q/ns/templ",
            "API reads",
            "API writes"
        );
        let mut rows = Vec::new();
        let mut previous = last.clone();
        for k in 0..intervals {
            std::thread::sleep(INTERVAL);
            let now = snapshot(&prometheus, &controller, &api);
            let row = Row::between(&previous, &now);
            println!(
                "{:>3} {:>9.0} {:>9.0} {:>9.2} {:>11.0} {:>9} {:>9.2} {:>9.1} {:>9.1} {:>11.2} {:>9.0} {:>10.0}",
                k + 1,
                row.range,
                row.instant,
                row.prom_cpu,
                row.evaluations,
                row.log_lines,
                row.controller_cpu,
                row.rss_mib,
                row.p99_ms,
                (row.range + row.instant) / (namespaces as f64 * 2.0),
                row.api_reads,
                row.api_writes
            );
            rows.push(row);
            previous = now;
        }
        let measured: Vec<String> = previous
            .api_requests
            .iter()
            .map(|(k, n)| (k, n - last.api_requests.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, n)| *n > 0.0)
            .map(|(k, n)| format!("{k} {:.0}", n / intervals as f64))
            .collect();
        println!("API requests per interval: {}", measured.join(", "));
        let mean = |f: fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
        let (prom_cpu, evaluations) = (mean(|r| r.prom_cpu), mean(|r| r.evaluations));
        println!(
            "mean: {:.0} queries, {prom_cpu:.2} Prometheus CPU s ({:.2} net of scraping), {evaluations:.0} evaluations, \
             {:.0} log lines, {:.2} controller CPU s, RSS {:.1} MiB, p99 {:.1} ms per interval; \
             Prometheus CPU per 10,000 evaluations {:.2} s ({:.2} net)",
            mean(|r| r.range + r.instant),
            (prom_cpu - idle_cpu).max(0.0),
            mean(|r| r.log_lines as f64),
            mean(|r| r.controller_cpu),
            mean(|r| r.rss_mib),
            mean(|r| r.p99_ms),
            prom_cpu * 10_000.0 / evaluations.max(1.0),
            (prom_cpu - idle_cpu).max(0.0) * 10_000.0 / evaluations.max(1.0),
        );
        if grouped {
            object_sizes(&api.kubeconfig);
        }
        controller.stop();
        if let Some(sample) = controller.log_sample() {
            println!("a log line: {sample}");
        }
    }
    api.stop();
    predictive_model_cost()?;
    Ok(())
}

/// What one sample of every counter says.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    range: f64,
    instant: f64,
    cpu: f64,
    evaluations: f64,
    log_lines: usize,
    controller_cpu: f64,
    rss_kib: u64,
    /// `foresight_reconcile_duration_seconds_bucket` by upper bound.
    buckets: BTreeMap<u64, f64>,
    /// The API server's requests by `verb resource[/subresource]`.
    api_requests: BTreeMap<String, f64>,
}

struct Row {
    range: f64,
    instant: f64,
    prom_cpu: f64,
    evaluations: f64,
    log_lines: usize,
    controller_cpu: f64,
    rss_mib: f64,
    p99_ms: f64,
    api_reads: f64,
    api_writes: f64,
}

impl Row {
    fn between(a: &Snapshot, b: &Snapshot) -> Self {
        let buckets: Vec<(f64, f64)> = b
            .buckets
            .iter()
            .map(|(le, n)| (f64::from_bits(*le), n - a.buckets.get(le).copied().unwrap_or(0.0)))
            .collect();
        Row {
            range: b.range - a.range,
            instant: b.instant - a.instant,
            prom_cpu: b.cpu - a.cpu,
            evaluations: b.evaluations - a.evaluations,
            log_lines: b.log_lines.saturating_sub(a.log_lines),
            controller_cpu: b.controller_cpu - a.controller_cpu,
            rss_mib: b.rss_kib as f64 / 1024.0,
            p99_ms: quantile(0.99, &buckets) * 1000.0,
            api_reads: api_delta(a, b, |k| !is_write(k)),
            api_writes: api_delta(a, b, is_write),
        }
    }
}

/// The API requests between two snapshots whose `verb resource` key passes `keep`.
fn api_delta(a: &Snapshot, b: &Snapshot, keep: fn(&str) -> bool) -> f64 {
    b.api_requests.iter().filter(|(k, _)| keep(k)).map(|(k, n)| n - a.api_requests.get(k).copied().unwrap_or(0.0)).sum()
}

/// `histogram_quantile` over cumulative `(le, count)` buckets sorted by `le` (+Inf last): linear interpolation
/// within the bucket, the highest finite bound when the quantile falls in +Inf.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return f64::NAN };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = count - lower.1;
            return if within <= 0.0 { le } else { lower.0 + (le - lower.0) * (rank - lower.1) / within };
        }
        lower = (le, count);
    }
    lower.0
}

fn snapshot(prometheus: &PromServer, controller: &Controller, api: &FakeApi) -> Snapshot {
    let prom = prom_snapshot(prometheus);
    let api_requests = api_requests(api);
    let text = get(controller.metrics, "/metrics").unwrap_or_default();
    let mut evaluations = 0.0;
    let mut buckets = BTreeMap::new();
    for line in text.lines() {
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if line.starts_with("foresight_reconciles_total{") && line.contains(r#"result="success""#) {
            evaluations += value();
        } else if let Some(rest) = line.strip_prefix("foresight_reconcile_duration_seconds_bucket{le=\"") {
            let le = rest.split('"').next().unwrap_or("+Inf");
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
            buckets.insert(le.to_bits(), value());
        }
    }
    let (controller_cpu, rss_kib) = controller.usage();
    Snapshot { evaluations, buckets, log_lines: controller.log_lines(), controller_cpu, rss_kib, api_requests, ..prom }
}

/// The fake API server's `apiserver_request_total`, summed by verb, resource and subresource (e.g.
/// `patch scalingpolicies/status`), as an operator would read the load from kube-apiserver.
fn api_requests(api: &FakeApi) -> BTreeMap<String, f64> {
    let text = get(api.addr, "/metrics").unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            line.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default()
        };
        let (resource, sub) = (label("resource"), label("subresource"));
        let what = if sub.is_empty() { resource.to_string() } else { format!("{resource}/{sub}") };
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *out.entry(format!("{} {what}", label("verb"))).or_default() += value;
    }
    out
}

/// Whether a `verb resource` key of [`api_requests`] is a write (what kube-apiserver stores in etcd).
fn is_write(key: &str) -> bool {
    !["get ", "list ", "watch "].iter().any(|verb| key.starts_with(verb))
}

fn prom_snapshot(prometheus: &PromServer) -> Snapshot {
    let text = get(prometheus.addr(), "/metrics").unwrap_or_default();
    let handler = |h: &str| {
        text.lines()
            .filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains(&format!("handler=\"{h}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let cpu = text
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total ")?.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    Snapshot { range: handler("/api/v1/query_range"), instant: handler("/api/v1/query"), cpu, ..Snapshot::default() }
}

/// Waits until Prometheus has two scrapes of the cpu counters (rate() needs two points).
fn wait_for_data(prometheus: &PromServer) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let query = "/api/v1/query?query=count(rate(container_cpu_usage_seconds_total%5B2m%5D))";
    loop {
        if get(prometheus.addr(), query).is_some_and(|body| body.contains("\"value\"")) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "Prometheus has no cpu data after 2 minutes: {}", prometheus.log());
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Sleeps until just after the next whole 15 s of the wall clock (where grouped intervals begin).
fn sleep_to_boundary() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let step = INTERVAL.as_millis() as u64;
    let into = now.as_millis() as u64 % step;
    std::thread::sleep(Duration::from_millis(step - into + 200));
}

/// Serves every pod's cAdvisor and kube-state-metrics series, the counters growing with the wall clock.
struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Exporter {
    fn start(policies: usize, namespaces: usize) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let started = Instant::now();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let body = exposition(policies, namespaces, started.elapsed().as_secs_f64());
                        std::thread::spawn(move || respond(stream, &body));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { addr, stop })
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn exposition(policies: usize, namespaces: usize, elapsed: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(policies * 2 * 240);
    out.push_str("# TYPE container_cpu_usage_seconds_total counter\n");
    for i in 0..policies {
        for p in PODS {
            let _ = writeln!(
                out,
                "container_cpu_usage_seconds_total{{namespace=\"ns{}\",pod=\"app{i}-7c9f8d6b5-{p}\",container=\"app\"}} {}",
                i % namespaces,
                1000.0 + 0.3 * elapsed
            );
        }
    }
    out.push_str("# TYPE kube_pod_container_resource_requests gauge\n");
    for i in 0..policies {
        for p in PODS {
            let _ = writeln!(
                out,
                "kube_pod_container_resource_requests{{namespace=\"ns{}\",pod=\"app{i}-7c9f8d6b5-{p}\",container=\"app\",resource=\"cpu\",unit=\"core\"}} 0.5",
                i % namespaces
            );
        }
    }
    out.push_str("# TYPE queue_depth gauge\n");
    for n in 0..namespaces {
        let _ = writeln!(out, "queue_depth{{namespace=\"ns{n}\"}} 3");
    }
    out
}

fn respond(mut stream: TcpStream, body: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        line.clear();
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

/// `GET path` over HTTP/1.0: the body of a 200.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// The bytes of one policy as the API server serves it (what the controller's watch receives), and of the parts
/// the controller keeps of it.
fn object_sizes(kubeconfig: &Path) {
    let text = std::fs::read_to_string(kubeconfig).unwrap_or_default();
    let Some(addr) = text
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c == '"' || c.is_whitespace()).next())
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        return;
    };
    let path = "/apis/autoscaling.foresight.dev/v1alpha1/namespaces/ns0/scalingpolicies/app0";
    let Some(body) = get(addr, path) else { return };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&body) else { return };
    let size = |v: Option<&serde_json::Value>| v.map_or(0, |v| v.to_string().len());
    println!(
        "one policy as served: {} bytes (metadata.managedFields {}, spec {}, status {})",
        value.to_string().len(),
        size(value.pointer("/metadata/managedFields")),
        size(value.get("spec")),
        size(value.get("status"))
    );
}

/// The `fake-apiserver` binary as its own process.
struct FakeApi {
    child: Child,
    kubeconfig: PathBuf,
    addr: SocketAddr,
}

impl FakeApi {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--simulate-workloads")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        anyhow::ensure!(first.contains("listening"), "fake-apiserver did not start: {first:?}");
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no address in {first:?}"))?;
        Ok(Self { child, kubeconfig, addr })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CRD, the namespaces, and a two-replica Deployment with a policy for each of `policies`.
async fn populate(kubeconfig: &Path, policies: usize, namespaces: usize) -> anyhow::Result<()> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let crd_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/scalingpolicy.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&std::fs::read_to_string(crd_path)?)?;
    Api::<CustomResourceDefinition>::all(client.clone()).create(&PostParams::default(), &crd).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Api::<ScalingPolicy>::all(client.clone()).list(&ListParams::default().limit(1)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the ScalingPolicy kind is not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 0..namespaces {
        let namespace: Namespace = serde_json::from_value(json!({ "metadata": { "name": format!("ns{n}") } }))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
    }
    let created: Vec<anyhow::Result<()>> = stream::iter(0..policies)
        .map(|i| {
            let client = client.clone();
            async move {
                let (ns, name) = (format!("ns{}", i % namespaces), format!("app{i}"));
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                deployments.create(&PostParams::default(), &deployment(&name, 2)).await?;
                let policy: ScalingPolicy = serde_json::from_value(json!({
                    "apiVersion": "autoscaling.foresight.dev/v1alpha1",
                    "kind": "ScalingPolicy",
                    "metadata": { "name": name, "namespace": ns },
                    "spec": {
                        "targetRef": { "name": name },
                        "minReplicas": 2,
                        "maxReplicas": 10,
                        "interval": "15s",
                        "metrics": [
                            { "name": "cpu", "cpu": {} },
                            { "name": "queue", "query": { "promql": "max(queue_depth{namespace=\"{namespace}\"})" } }
                        ],
                        "policies": { "target": [ { "metric": "cpu", "value": 60 } ] }
                    }
                }))?;
                Api::<ScalingPolicy>::namespaced(client, &ns).create(&PostParams::default(), &policy).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect()
}

/// `foresight run` as its own process, logging JSON at info to a file.
struct Controller {
    child: Child,
    log: PathBuf,
    metrics: SocketAddr,
}

impl Controller {
    fn start(binary: &Path, dir: &Path, kubeconfig: &Path, prometheus: &str, grouped: bool) -> anyhow::Result<Self> {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = dir.join(format!("foresight-grouped-{grouped}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .arg("run")
            .args(["--prometheus-address", prometheus])
            .args(["--leader-election=false", "--log-format=json", "--log-level=info"])
            .arg(format!("--grouped-queries={grouped}"))
            .args(["--metrics-address", &metrics.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(metrics, "/metrics").is_none() {
            anyhow::ensure!(Instant::now() < deadline, "foresight run did not serve /metrics");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self { child, log, metrics })
    }

    fn log_lines(&self) -> usize {
        std::fs::read(&self.log).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0)
    }

    fn log_sample(&self) -> Option<String> {
        std::fs::read_to_string(&self.log).ok()?.lines().last().map(str::to_owned)
    }

    /// CPU seconds used so far (user + system) and resident KiB, from /proc.
    fn usage(&self) -> (f64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        let cpu = (ticks(11) + ticks(12)) / 100.0;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss =
            status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok()).unwrap_or(0);
        (cpu, rss)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bytes one fitted predictive model keeps between refits: 20 predictors of the example predictive policy,
/// each fitted on a week of a daily cycle at its step, counted by dhat's heap statistics.
fn predictive_model_cost() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/web-predictive.yaml");
    let sp: ScalingPolicy = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
    let policy = Policy::try_from(&sp.spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rule = policy.predictive.ok_or_else(|| anyhow::anyhow!("the example has no predictive rule"))?;
    let now = Timestamp::from_second(1_704_067_200 + 7 * 86_400)?;
    let step = rule.step.as_secs().max(1) as i64;
    let points = rule.history.as_secs() as i64 / step;
    let history: Vec<Sample> = (0..points)
        .map(|i| {
            let t = now.as_second() - (points - i) * step;
            let day = (t % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
            Sample::new(Timestamp::from_second(t).unwrap_or(now), 500.0 + 300.0 * day.sin())
        })
        .collect();
    const MODELS: usize = 20;
    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get().curr_bytes;
    let mut predictors = Vec::with_capacity(MODELS);
    for _ in 0..MODELS {
        let mut predictor = Predictor::new(&rule);
        let _ = predictor.forecast(&history, now);
        predictors.push(predictor);
    }
    let kept = dhat::HeapStats::get().curr_bytes.saturating_sub(before) as f64 / MODELS as f64;
    println!(
        "\none fitted predictive model (web-predictive: {} points of history at {} s) keeps {:.1} KiB between refits \
         ({:.1} MiB for 10,000 predictive policies)",
        history.len(),
        step,
        kept / 1024.0,
        kept * 10_000.0 / 1024.0 / 1024.0
    );
    drop(predictors);
    Ok(())
}
