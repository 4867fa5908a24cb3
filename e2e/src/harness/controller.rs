//! The `foresight` binary as a separate process: built once per test run, started with `foresight run`, its log
//! captured to a file, killed (as a crash would) on request or on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::HarnessError;

/// Where the test binary's profile directory is (`target/<profile>`), from the running executable
/// (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(|source| HarnessError::Io { context: "current_exe".into(), source })?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| HarnessError::BuildController { output: format!("no target directory above {}", exe.display()) })
}

/// The `foresight` binary next to the test binary, built (or brought up to date) once per process with
/// `cargo build -p foresight --bin foresight` in the same target directory and profile. Cargo does not build
/// another package's binaries for a test, and a no-op build takes about a second, so this is cheaper than
/// comparing source timestamps and never runs a stale binary.
pub fn foresight_binary() -> Result<PathBuf, HarnessError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| e.to_string()))
        .clone()
        .map_err(|output| HarnessError::BuildController { output })
}

fn build() -> Result<PathBuf, HarnessError> {
    let profile = profile_dir()?;
    let binary = profile.join("foresight");
    let target_dir = profile.parent().map(Path::to_path_buf).unwrap_or_else(|| profile.clone());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace).args(["build", "--quiet", "-p", "foresight", "--bin", "foresight"]);
    command.arg("--target-dir").arg(&target_dir);
    if profile.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    let output = command
        .output()
        .map_err(|source| HarnessError::Io { context: "run cargo build -p foresight".into(), source })?;
    if !output.status.success() || !binary.is_file() {
        return Err(HarnessError::BuildController {
            output: format!("{}\n{}", output.status, String::from_utf8_lossy(&output.stderr)),
        });
    }
    // A private hard link (a copy where links fail): another checkout building into the same target directory
    // (CARGO_TARGET_DIR shared between worktrees) replaces the file, not the inode a running suite uses.
    let private = profile.join("e2e-bin");
    std::fs::create_dir_all(&private)
        .map_err(|source| HarnessError::Io { context: "create private binary dir".into(), source })?;
    remove_stale_links(&private);
    let link = private.join(format!("foresight-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    if std::fs::hard_link(&binary, &link).is_err() {
        std::fs::copy(&binary, &link)
            .map_err(|source| HarnessError::Io { context: "copy the foresight binary".into(), source })?;
    }
    Ok(link)
}

/// Removes the links of test processes that have exited (Linux: no `/proc/<pid>`).
fn remove_stale_links(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix("foresight-")).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// How to start one controller process.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// `--pod-name`: its identity in the Lease and in Events.
    pub identity: String,
    /// `--leader-election`.
    pub leader_election: bool,
}

/// A running `foresight run`.
#[derive(Debug)]
pub struct ControllerProcess {
    pub identity: String,
    child: Option<Child>,
    log: PathBuf,
    metrics: SocketAddr,
}

impl ControllerProcess {
    /// Starts `foresight run` against `kubeconfig` and `prometheus`, watching `namespace`, logging (JSON) to
    /// `<dir>/<identity>.log`.
    pub fn start(
        dir: &Path,
        kubeconfig: &Path,
        prometheus: &str,
        namespace: &str,
        options: &ControllerOptions,
    ) -> Result<Self, HarnessError> {
        let binary = foresight_binary()?;
        let port = crate::prometheus::free_port()
            .map_err(|e| HarnessError::Start { what: "controller", reason: e.to_string() })?;
        let metrics = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join(format!("{}.log", options.identity));
        let io = |context: &str| {
            let context = context.to_string();
            move |source| HarnessError::Io { context, source }
        };
        let out = std::fs::File::create(&log).map_err(io("create controller log"))?;
        let err = out.try_clone().map_err(io("create controller log"))?;
        let child = Command::new(binary)
            .arg("run")
            .args(["--prometheus-address", prometheus])
            .args(["--namespaces", namespace])
            .arg(format!("--leader-election={}", options.leader_election))
            .args(["--lease-name", "foresight-e2e", "--lease-namespace", namespace])
            .args(["--pod-name", &options.identity])
            .args(["--metrics-address", &metrics.to_string()])
            .args(["--log-format", "json", "--log-level", "info", "--query-timeout", "2s"])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io("spawn foresight"))?;
        Ok(Self { identity: options.identity.clone(), child: Some(child), log, metrics })
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its own `/metrics` (empty when it does not answer).
    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics").unwrap_or_default()
    }

    /// A sample of its `/metrics` whose line starts with `series` (e.g. `foresight_leader`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash or a lost node would: no lease release, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET path` over HTTP/1.0; the body of a 200, else `None`.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}
