//! A real Prometheus for tests, with backfilled history, plus the loopback tools that make it misbehave.
//!
//! - [`PromServer`]: backfills OpenMetrics text with `promtool`, runs `prometheus` on a free loopback port in its
//!   own temporary directory (Prometheus compacts its data directory about a minute after start, so servers never
//!   share one), waits for `/-/ready`, and kills and cleans up on drop. [`PromServer::stop`] and
//!   [`PromServer::restart`] (same data, same port) simulate outages.
//! - [`OpenMetricsBuilder`]: writes history the way `promtool` needs it: seconds, each series in time order,
//!   `# EOF` at the end. `promtool` silently drops out-of-order and duplicate samples and reads millisecond
//!   timestamps as seconds (year 55969), so the builder refuses all three.
//! - [`DelayProxy`]: a loopback TCP proxy that delays every request or drops connections (a slow or flaky
//!   Prometheus).
//! - [`StaticHttpServer`]: answers every request with a fixed body and records the request heads (to check which
//!   headers reach "Prometheus", or to act as a scrape target).
//!
//! Needs `prometheus` and `promtool` on `PATH` (`apt-get install -y --no-install-recommends prometheus`); without
//! them [`PromServer::start`] fails with [`HarnessError::MissingBinary`] saying so.

use jiff::Timestamp;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The install command named when a binary is missing.
pub const INSTALL_HINT: &str = "apt-get install -y --no-install-recommends prometheus";

/// How long [`PromServer`] waits for `/-/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the harness could not give a test its Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("`{name}` not found on PATH; install it with `{INSTALL_HINT}`")]
    MissingBinary { name: &'static str },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("promtool backfill failed ({status}): {stderr}")]
    Backfill { status: String, stderr: String },
    #[error("prometheus exited before it was ready ({status}); log:\n{log}")]
    Exited { status: String, log: String },
    #[error("prometheus not ready after {waited:?}; log:\n{log}")]
    NotReady { waited: Duration, log: String },
    #[error(transparent)]
    OpenMetrics(#[from] OpenMetricsError),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// Finds `name` on `PATH`.
pub fn find_binary(name: &'static str) -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(HarnessError::MissingBinary { name })
}

/// What a [`PromServer`] scrapes, if anything.
#[derive(Debug, Clone, Default)]
pub struct ScrapeConfig {
    pub targets: Vec<SocketAddr>,
    pub interval: Duration,
}

impl ScrapeConfig {
    fn to_yaml(&self) -> String {
        if self.targets.is_empty() {
            return "scrape_configs: []\n".to_owned();
        }
        let seconds = self.interval.as_secs().max(1);
        let targets: Vec<String> = self.targets.iter().map(|t| format!("'{t}'")).collect();
        format!(
            "global:\n  scrape_interval: {seconds}s\n  scrape_timeout: {seconds}s\n  evaluation_interval: {seconds}s\n\
             scrape_configs:\n  - job_name: targets\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        )
    }
}

/// A `prometheus` process with its own data directory on a loopback port.
#[derive(Debug)]
pub struct PromServer {
    dir: tempfile::TempDir,
    port: u16,
    binary: PathBuf,
    child: Option<Child>,
}

impl PromServer {
    /// Backfills `openmetrics` (see [`OpenMetricsBuilder`]) and starts a server with no scrape targets.
    pub fn start(openmetrics: &str) -> Result<Self, HarnessError> {
        Self::start_full(openmetrics, &ScrapeConfig::default())
    }

    /// Starts a server with no history that scrapes `targets` every `interval` (whole seconds, at least 1 s).
    /// The first sample lands a few seconds after start.
    pub fn start_with_scrape(targets: &[SocketAddr], interval: Duration) -> Result<Self, HarnessError> {
        Self::start_full("", &ScrapeConfig { targets: targets.to_vec(), interval })
    }

    /// Backfills `openmetrics` (may be empty) and scrapes as `scrape` says.
    pub fn start_full(openmetrics: &str, scrape: &ScrapeConfig) -> Result<Self, HarnessError> {
        let binary = find_binary("prometheus")?;
        let dir = tempfile::Builder::new().prefix("foresight-prom-").tempdir().map_err(io_error("temp dir"))?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(io_error("create data dir"))?;
        if !openmetrics.trim().is_empty() {
            backfill(openmetrics, dir.path(), &data)?;
        }
        std::fs::write(dir.path().join("prometheus.yml"), scrape.to_yaml()).map_err(io_error("write config"))?;
        let port = free_port()?;
        let mut server = Self { dir, port, binary, child: None };
        server.launch()?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`, for the Prometheus client.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything Prometheus logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server (an outage); the data directory and port stay reserved for [`restart`](Self::restart).
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().map_err(io_error("wait for prometheus"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same data and port and waits until it is ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop()?;
        self.launch()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    fn launch(&mut self) -> Result<(), HarnessError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_error("open prometheus log"))?;
        let log_err = log.try_clone().map_err(io_error("open prometheus log"))?;
        let child = Command::new(&self.binary)
            .arg(format!("--config.file={}", self.dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", self.data_dir().display()))
            .arg("--storage.tsdb.retention.time=3650d")
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_error("spawn prometheus"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(HarnessError::Exited { status: status.to_string(), log: self.log() });
            }
            if http_get_status(self.addr(), "/-/ready") == Some(200) {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = self.stop();
                return Err(HarnessError::NotReady { waited: READY_TIMEOUT, log: self.log() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn backfill(openmetrics: &str, dir: &Path, data: &Path) -> Result<(), HarnessError> {
    let promtool = find_binary("promtool")?;
    let input = dir.join("data.om");
    std::fs::write(&input, openmetrics).map_err(io_error("write data.om"))?;
    let output = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "-q", "--max-block-duration=24h"])
        .arg(&input)
        .arg(data)
        .output()
        .map_err(io_error("run promtool"))?;
    if !output.status.success() {
        return Err(HarnessError::Backfill {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_error("find a free port"))?;
    Ok(listener.local_addr().map_err(io_error("find a free port"))?.port())
}

/// `GET path` over HTTP/1.0; the status code, or `None` if nothing answered.
pub fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 32];
    let read = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..read]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------------------------
// OpenMetrics

/// Why an [`OpenMetricsBuilder`] refused its series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenMetricsError {
    #[error("invalid metric name {name:?}")]
    InvalidMetricName { name: String },
    #[error("invalid label name {label:?} on {series}")]
    InvalidLabelName { series: String, label: String },
    #[error("{series}: sample {index} at {at} is not after the previous one (promtool would drop it silently)")]
    OutOfOrder { series: String, index: usize, at: Timestamp },
    #[error("{series}: timestamp {at} is implausible (milliseconds read as seconds?); use 1990..2200")]
    ImplausibleTimestamp { series: String, at: Timestamp },
    #[error("{series} was added twice")]
    DuplicateSeries { series: String },
    #[error("metric {name:?} added both as a gauge and as a counter")]
    ConflictingType { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricKind {
    Gauge,
    Counter,
}

type Labels = Vec<(String, String)>;
type Points = Vec<(Timestamp, f64)>;

#[derive(Debug, Clone)]
struct Family {
    kind: MetricKind,
    /// Label sets (sorted) to points, in insertion order of series.
    series: Vec<(Labels, Points)>,
}

/// Builds OpenMetrics text for [`PromServer::start`].
///
/// ```
/// use foresight_e2e::prometheus::{OpenMetricsBuilder, every};
/// let start = jiff::Timestamp::from_second(1_704_067_200).unwrap();
/// let text = OpenMetricsBuilder::new()
///     .gauge("queue_depth", &[("queue", "orders")], every(start, std::time::Duration::from_secs(15), 4, |i, _| i as f64))
///     .build()
///     .unwrap();
/// assert!(text.contains("queue_depth{queue=\"orders\"} 3 1704067245\n"));
/// assert!(text.ends_with("# EOF\n"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct OpenMetricsBuilder {
    families: BTreeMap<String, Family>,
    errors: Vec<OpenMetricsError>,
}

impl OpenMetricsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a gauge series; `points` must be in strictly increasing time order.
    pub fn gauge(
        self,
        name: &str,
        labels: &[(&str, &str)],
        points: impl IntoIterator<Item = (Timestamp, f64)>,
    ) -> Self {
        self.add(MetricKind::Gauge, name, labels, points)
    }

    /// Adds a counter series. In PromQL it is called `<name>_total` (OpenMetrics appends the suffix); `name`
    /// may be given with or without it.
    pub fn counter(
        self,
        name: &str,
        labels: &[(&str, &str)],
        points: impl IntoIterator<Item = (Timestamp, f64)>,
    ) -> Self {
        self.add(MetricKind::Counter, name.strip_suffix("_total").unwrap_or(name), labels, points)
    }

    fn add(
        mut self,
        kind: MetricKind,
        name: &str,
        labels: &[(&str, &str)],
        points: impl IntoIterator<Item = (Timestamp, f64)>,
    ) -> Self {
        let mut labels: Vec<(String, String)> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        labels.sort();
        let points: Vec<_> = points.into_iter().collect();
        let id = series_id(name, &labels);
        let family = self.families.entry(name.to_owned()).or_insert_with(|| Family { kind, series: Vec::new() });
        if family.kind != kind {
            self.errors.push(OpenMetricsError::ConflictingType { name: name.to_owned() });
        } else if family.series.iter().any(|(existing, _)| *existing == labels) {
            self.errors.push(OpenMetricsError::DuplicateSeries { series: id });
        } else {
            family.series.push((labels, points));
        }
        self
    }

    /// The OpenMetrics text, or the first problem found.
    pub fn build(&self) -> Result<String, OpenMetricsError> {
        if let Some(error) = self.errors.first() {
            return Err(error.clone());
        }
        let earliest = Timestamp::from_second(631_152_000).unwrap_or(Timestamp::UNIX_EPOCH); // 1990-01-01
        let latest = Timestamp::from_second(7_258_118_400).unwrap_or(Timestamp::MAX); // 2200-01-01
        let mut out = String::new();
        for (name, family) in &self.families {
            if !valid_name(name, true) {
                return Err(OpenMetricsError::InvalidMetricName { name: name.clone() });
            }
            let (kind, sample_name) = match family.kind {
                MetricKind::Gauge => ("gauge", name.clone()),
                MetricKind::Counter => ("counter", format!("{name}_total")),
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, points) in &family.series {
                let id = series_id(&sample_name, labels);
                if let Some((label, _)) =
                    labels.iter().find(|(label, _)| !valid_name(label, false) || label.starts_with("__"))
                {
                    return Err(OpenMetricsError::InvalidLabelName { series: id, label: label.clone() });
                }
                let rendered_labels = render_labels(labels);
                let mut previous: Option<Timestamp> = None;
                for (index, &(at, value)) in points.iter().enumerate() {
                    if at < earliest || at > latest {
                        return Err(OpenMetricsError::ImplausibleTimestamp { series: id, at });
                    }
                    if previous.is_some_and(|p| at.as_millisecond() <= p.as_millisecond()) {
                        return Err(OpenMetricsError::OutOfOrder { series: id, index, at });
                    }
                    previous = Some(at);
                    let _ = writeln!(out, "{sample_name}{rendered_labels} {} {}", format_value(value), format_time(at));
                }
            }
        }
        out.push_str("# EOF\n");
        Ok(out)
    }
}

/// `count` points `step` apart from `start`, valued by `value(index, time)`.
pub fn every(
    start: Timestamp,
    step: Duration,
    count: usize,
    mut value: impl FnMut(usize, Timestamp) -> f64,
) -> Vec<(Timestamp, f64)> {
    (0..count)
        .map_while(|i| {
            let offset = step.checked_mul(u32::try_from(i).ok()?)?;
            let at = start.checked_add(offset).ok()?;
            Some((at, value(i, at)))
        })
        .collect()
}

fn series_id(name: &str, labels: &[(String, String)]) -> String {
    format!("{name}{}", render_labels(labels))
}

fn render_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn valid_name(name: &str, allow_colon: bool) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (allow_colon && c == ':');
    chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// Seconds, with milliseconds when there are any.
fn format_time(at: Timestamp) -> String {
    let millis = at.as_millisecond();
    let (seconds, rest) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    if rest == 0 { seconds.to_string() } else { format!("{seconds}.{rest:03}") }
}

// ---------------------------------------------------------------------------------------------------------------
// DelayProxy

#[derive(Debug, Default)]
struct ProxyState {
    delay_ms: AtomicU64,
    drop_connections: AtomicBool,
    stopping: AtomicBool,
    accepted: AtomicUsize,
    open: Mutex<Vec<TcpStream>>,
}

/// A loopback TCP proxy in front of `upstream` that can delay every request or drop connections.
///
/// The delay applies to each chunk the client sends, so it slows every request, including ones on kept-alive
/// connections. In drop mode new connections are closed at once and existing ones close on their next request.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    acceptor: Option<JoinHandle<()>>,
}

impl DelayProxy {
    pub fn start(upstream: SocketAddr) -> Result<Self, HarnessError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_error("bind proxy"))?;
        let addr = listener.local_addr().map_err(io_error("bind proxy"))?;
        listener.set_nonblocking(true).map_err(io_error("bind proxy"))?;
        let state = Arc::new(ProxyState::default());
        let acceptor = {
            let state = state.clone();
            std::thread::spawn(move || accept_loop(&listener, upstream, &state))
        };
        Ok(Self { addr, state, acceptor: Some(acceptor) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds every request back by `delay` before forwarding it (zero: forward at once).
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis().try_into().unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Closes connections instead of forwarding.
    pub fn set_drop_connections(&self, drop: bool) {
        self.state.drop_connections.store(drop, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        if let Ok(open) = self.state.open.lock() {
            for stream in open.iter() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, state: &Arc<ProxyState>) {
    while !state.stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                state.accepted.fetch_add(1, Ordering::SeqCst);
                if state.drop_connections.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let state = state.clone();
                std::thread::spawn(move || proxy_connection(client, upstream, &state));
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn proxy_connection(client: TcpStream, upstream: SocketAddr, state: &Arc<ProxyState>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client_reader), Ok(server_writer), Ok(server_reader), Ok(client_writer)) =
        (client.try_clone(), server.try_clone(), server.try_clone(), client.try_clone())
    else {
        return;
    };
    if let Ok(mut open) = state.open.lock() {
        open.extend([client, server]);
    }
    let upstream_state = state.clone();
    let to_server = std::thread::spawn(move || forward_requests(client_reader, server_writer, &upstream_state));
    copy_until_closed(server_reader, client_writer);
    let _ = to_server.join();
}

/// Client to server, one chunk at a time, applying the current delay or drop mode to each.
fn forward_requests(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if state.drop_connections.load(Ordering::SeqCst) {
            break;
        }
        let delay = Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn copy_until_closed(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------------------------
// StaticHttpServer

/// One request as a [`StaticHttpServer`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub target: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct StaticState {
    content_type: String,
    body: Mutex<String>,
    requests: Mutex<Vec<RecordedRequest>>,
    stopping: AtomicBool,
}

/// A loopback HTTP/1.1 server that answers every request with one fixed body and records what it was asked.
#[derive(Debug)]
pub struct StaticHttpServer {
    addr: SocketAddr,
    state: Arc<StaticState>,
    acceptor: Option<JoinHandle<()>>,
}

impl StaticHttpServer {
    pub fn start(content_type: &str, body: &str) -> Result<Self, HarnessError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_error("bind http server"))?;
        let addr = listener.local_addr().map_err(io_error("bind http server"))?;
        listener.set_nonblocking(true).map_err(io_error("bind http server"))?;
        let state = Arc::new(StaticState {
            content_type: content_type.to_owned(),
            body: Mutex::new(body.to_owned()),
            requests: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let state = state.clone();
            std::thread::spawn(move || {
                while !state.stopping.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let state = state.clone();
                            std::thread::spawn(move || serve_static(stream, &state));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(Self { addr, state, acceptor: Some(acceptor) })
    }

    /// A server that answers like Prometheus with one instant-vector sample `value` at `at`.
    pub fn prometheus_vector(at: Timestamp, value: f64) -> Result<Self, HarnessError> {
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{},"{}"]}}]}}}}"#,
            format_time(at),
            format_value(value)
        );
        Self::start("application/json", &body)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the body served from now on (e.g. an exporter's next value).
    pub fn set_body(&self, body: &str) {
        if let Ok(mut current) = self.state.body.lock() {
            body.clone_into(&mut *current);
        }
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for StaticHttpServer {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve_static(mut stream: TcpStream, state: &StaticState) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    // Read the head, then as much body as Content-Length announces.
    let head_end = loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(read) => data.extend_from_slice(&buffer[..read]),
        }
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => data.extend_from_slice(&buffer[..read]),
        }
    }
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(RecordedRequest { method, target, headers });
    }
    let body = state.body.lock().map(|b| b.clone()).unwrap_or_default();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        state.content_type,
        body.len()
    );
    let _ = stream.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_704_067_200 + seconds).expect("valid")
    }

    #[test]
    fn writes_families_in_seconds_with_eof() {
        let text = OpenMetricsBuilder::new()
            .gauge("cpu", &[("pod", "b"), ("app", "web")], [(t(0), 0.5), (t(15), 1.0)])
            .counter(
                "requests_total",
                &[],
                [(t(0), 1.0), (Timestamp::from_millisecond(1_704_067_215_250).expect("valid"), 2.0)],
            )
            .gauge("ratio", &[("q", "a\"b\\c")], [(t(0), f64::NAN), (t(1), f64::INFINITY), (t(2), f64::NEG_INFINITY)])
            .build()
            .expect("valid");
        let expected = "# TYPE cpu gauge\n\
            cpu{app=\"web\",pod=\"b\"} 0.5 1704067200\n\
            cpu{app=\"web\",pod=\"b\"} 1 1704067215\n\
            # TYPE ratio gauge\n\
            ratio{q=\"a\\\"b\\\\c\"} NaN 1704067200\n\
            ratio{q=\"a\\\"b\\\\c\"} +Inf 1704067201\n\
            ratio{q=\"a\\\"b\\\\c\"} -Inf 1704067202\n\
            # TYPE requests counter\n\
            requests_total 1 1704067200\n\
            requests_total 2 1704067215.250\n\
            # EOF\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn refuses_what_promtool_would_silently_drop_or_misread() {
        let cases: Vec<(OpenMetricsBuilder, &str)> = vec![
            (OpenMetricsBuilder::new().gauge("x", &[], [(t(15), 1.0), (t(0), 2.0)]), "not after the previous"),
            (OpenMetricsBuilder::new().gauge("x", &[], [(t(0), 1.0), (t(0), 2.0)]), "not after the previous"),
            (
                OpenMetricsBuilder::new().gauge(
                    "x",
                    &[],
                    [(Timestamp::from_second(7_300_000_000).expect("valid"), 1.0)],
                ),
                "milliseconds read as seconds",
            ),
            (OpenMetricsBuilder::new().gauge("x", &[], []).gauge("x", &[], []), "added twice"),
            (OpenMetricsBuilder::new().gauge("x", &[], []).counter("x", &[("a", "b")], []), "both as a gauge"),
            (OpenMetricsBuilder::new().gauge("1x", &[], []), "invalid metric name"),
            (OpenMetricsBuilder::new().gauge("x", &[("a-b", "v")], []), "invalid label name"),
            (OpenMetricsBuilder::new().gauge("x", &[("__name__", "v")], []), "invalid label name"),
        ];
        for (builder, expected) in cases {
            let error = builder.build().expect_err(expected).to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_missing_binary_names_the_install_command() {
        let error = find_binary("foresight-no-such-binary").expect_err("not installed").to_string();
        assert!(error.contains("apt-get install -y --no-install-recommends prometheus"), "{error}");
    }

    #[test]
    fn every_spaces_points_by_step() {
        let points = every(t(0), Duration::from_secs(15), 3, |i, _| i as f64 * 2.0);
        assert_eq!(points, [(t(0), 0.0), (t(15), 2.0), (t(30), 4.0)]);
    }

    #[test]
    fn scrape_config_lists_targets() {
        let config =
            ScrapeConfig { targets: vec![SocketAddr::from(([127, 0, 0, 1], 9100))], interval: Duration::from_secs(1) };
        let yaml = config.to_yaml();
        assert!(yaml.contains("scrape_interval: 1s") && yaml.contains("targets: ['127.0.0.1:9100']"), "{yaml}");
        assert_eq!(ScrapeConfig::default().to_yaml(), "scrape_configs: []\n");
    }

    #[test]
    fn proxy_forwards_and_drops() {
        let server = StaticHttpServer::start("text/plain", "hello").expect("server");
        let proxy = DelayProxy::start(server.addr()).expect("proxy");
        assert_eq!(http_get_status(proxy.addr(), "/x"), Some(200));
        assert_eq!(server.requests()[0].target, "/x");
        proxy.set_drop_connections(true);
        assert_eq!(http_get_status(proxy.addr(), "/y"), None);
        assert_eq!(server.requests().len(), 1, "a dropped connection reached the server");
        assert_eq!(proxy.connections(), 2);
    }
}
