//! The `foresight` command line: `run` (the controller), `crdgen` (print the CRD) and `backtest`.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backtest::{self, Baseline, Capacity, Options};

/// Foresight: a Kubernetes autoscaler that scales on the signals that matter, sees load coming, and explains
/// every decision it makes.
#[derive(Parser, Debug)]
#[command(name = "foresight", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the ScalingPolicy CustomResourceDefinition as YAML.
    Crdgen,
    /// Run the controller: watch ScalingPolicy objects, query Prometheus, scale their targets.
    Run(crate::run::RunArgs),
    /// Replay a policy against a recorded load trace and compare it with the HPA, a static count and a
    /// perfect-foresight oracle.
    Backtest(BacktestArgs),
}

/// Output format of `backtest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Arguments of `foresight backtest`.
#[derive(Args, Debug, Clone)]
pub struct BacktestArgs {
    /// The ScalingPolicy YAML to replay.
    #[arg(long, required_unless_present = "trace_dir")]
    pub policy: Option<PathBuf>,
    /// The load trace: CSV with the header `timestamp,value`.
    #[arg(long, required_unless_present_any = ["trace_dir", "prometheus"], conflicts_with = "prometheus")]
    pub trace: Option<PathBuf>,
    /// Read the trace from this Prometheus instead (with --query, --start, --end and --step).
    #[arg(long, requires_all = ["query", "start", "end"])]
    pub prometheus: Option<String>,
    /// The PromQL whose values are the offered load per --step (e.g. sum(increase(http_requests_total[5m]))).
    #[arg(long)]
    pub query: Option<String>,
    /// Start of the range: RFC 3339 (2026-11-01T00:00:00Z).
    #[arg(long)]
    pub start: Option<jiff::Timestamp>,
    /// End of the range: RFC 3339.
    #[arg(long)]
    pub end: Option<jiff::Timestamp>,
    /// Resolution of the range query.
    #[arg(long, default_value = "5m", value_parser = policy_duration)]
    pub step: Duration,
    /// Run every *.csv trace in this directory with every policy in --policy-dir and print one table.
    #[arg(long, conflicts_with_all = ["trace", "policy", "out"])]
    pub trace_dir: Option<PathBuf>,
    /// The policies for --trace-dir.
    #[arg(long, default_value = "examples/policies")]
    pub policy_dir: PathBuf,
    /// Load one replica serves at 100 % utilization, in the trace's units per trace step.
    #[arg(long, conflicts_with = "peak_replicas")]
    pub capacity_per_replica: Option<f64>,
    /// Size replicas so that the trace's 99th-percentile load needs this many at 100 % (default 20).
    #[arg(long)]
    pub peak_replicas: Option<u32>,
    /// Time a new replica takes to become ready.
    #[arg(long, default_value = "60s", value_parser = policy_duration)]
    pub startup_delay: Duration,
    /// Baselines to compare with: any of hpa, kpa, oracle, static (comma-separated).
    #[arg(long, default_value = "hpa,oracle,static", value_delimiter = ',')]
    pub compare: Vec<String>,
    /// The HPA baseline's CPU target, percent.
    #[arg(long, default_value_t = 70.0)]
    pub hpa_target: f64,
    /// The KPA baseline's target utilization, percent of a replica's capacity.
    #[arg(long, default_value_t = 70.0)]
    pub kpa_target: f64,
    /// Run the policy at headroom factors 0.6-1.4 and the HPA and KPA at targets 50-95 %, print each curve,
    /// and with --out plot replica-hours against violation minutes in frontier.svg and frontier.png.
    #[arg(long, conflicts_with = "trace_dir")]
    pub sweep: bool,
    /// Write timeline.csv, plot.svg and plot.png here (and worst-day.svg/png for traces over two days).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Let the policy see CPU and memory averaged over all requested pods with starting pods at 0 % (like a
    /// Prometheus average over the target's pods), instead of over ready pods only (like metrics-server).
    #[arg(long)]
    pub count_starting_pods: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A duration in the policy's grammar (`15s`, `2m`, `1h30m`, `7d`: see `api::duration`), so that the command
/// line accepts exactly what a policy does.
pub fn policy_duration(s: &str) -> Result<Duration, String> {
    s.parse::<crate::api::Duration>().map(|d| d.std()).map_err(|e| e.to_string())
}

/// Runs the command line and prints an error as one message (its causes joined by ": "), never a stack trace,
/// whatever RUST_BACKTRACE says; returns the process's exit code (1 on an error).
pub fn run_and_report(cli: Cli) -> std::process::ExitCode {
    match main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crdgen => {
            print!("{}", crate::crdgen::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => crate::run::main(args),
        Command::Backtest(args) => backtest_command(&args),
    }
}

impl BacktestArgs {
    fn options(&self, record: bool) -> anyhow::Result<Options> {
        let capacity = match (self.capacity_per_replica, self.peak_replicas) {
            (Some(c), _) => Capacity::PerReplica(c),
            (None, n) => Capacity::PeakReplicas(n.unwrap_or(20)),
        };
        let compare = self
            .compare
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<Baseline>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Options {
            capacity,
            startup_delay: self.startup_delay,
            compare,
            hpa_target: self.hpa_target,
            kpa_target: self.kpa_target,
            record,
            starting_pods_at_zero: self.count_starting_pods,
        })
    }
}

fn backtest_command(args: &BacktestArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.trace_dir {
        return backtest_matrix(args, dir, &args.policy_dir);
    }
    let Some(policy_path) = &args.policy else {
        anyhow::bail!("--policy is required (or --trace-dir)");
    };
    let named = backtest::read_policy(policy_path)?;
    let (trace, trace_path) = match (&args.trace, &args.prometheus) {
        (Some(path), _) => {
            (backtest::Trace::read(path).with_context(|| format!("trace {}", path.display()))?, path.clone())
        }
        (None, Some(url)) => (prometheus_trace(args, url)?, PathBuf::from(url)),
        (None, None) => anyhow::bail!("--trace or --prometheus is required (or --trace-dir)"),
    };
    let trace_path = &trace_path;
    if args.sweep {
        return backtest_sweep(args, &trace, trace_path, &named);
    }
    let plan = backtest::plan(&trace, &named, &args.options(args.out.is_some())?)?;
    for note in &plan.notes {
        eprintln!("note: {note}");
    }
    let trace_name = trace_path.display().to_string();
    let (report, outcomes) = with_progress(plan.setup.loads.len() as u64 * plan.strategies.len() as u64, |p| {
        backtest::run(&plan, &trace_name, &named.name, p)
    })?;
    match args.format {
        Format::Table => print!("{}", report.table()),
        Format::Json => println!("{}", report.to_json()),
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create output directory {}: {e}", dir.display()))?;
        backtest::output::write_timeline(&dir.join("timeline.csv"), &plan.setup, &trace.times, &outcomes)?;
        let title = format!("{} on {}", named.name, file_name(trace_path));
        let plots = backtest::plot::write(dir, &title, &plan.setup, &outcomes)?;
        eprintln!("wrote {}/timeline.csv, {}", dir.display(), plots.join(", "));
    }
    Ok(())
}

/// `--sweep`: every curve as a table, and the frontier plot with --out.
fn backtest_sweep(
    args: &BacktestArgs,
    trace: &backtest::Trace,
    trace_path: &Path,
    named: &backtest::NamedPolicy,
) -> anyhow::Result<()> {
    let plan = backtest::plan(trace, named, &args.options(false)?)?;
    for note in &plan.notes {
        eprintln!("note: {note}");
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let started = Instant::now();
    let sweep = backtest::sweep::sweep(&plan, threads)?;
    print!("{}", sweep.table());
    let shared = match sweep.shared_fits {
        Some((made, taken)) => format!(" (the policy's runs made {made} forecast fits and shared them {taken} times)"),
        None => String::new(),
    };
    eprintln!("swept in {:.1}s on {threads} threads{shared}", started.elapsed().as_secs_f64());
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create output directory {}: {e}", dir.display()))?;
        let title = format!("{} on {}: cost against violations", named.name, file_name(trace_path));
        let files = backtest::frontier::write(dir, &title, &sweep)?;
        eprintln!("wrote {}/{}", dir.display(), files.join(", "));
    }
    Ok(())
}

/// The trace from a range query against the user's Prometheus.
fn prometheus_trace(args: &BacktestArgs, url: &str) -> anyhow::Result<backtest::Trace> {
    let (Some(query), Some(start), Some(end)) = (&args.query, args.start, args.end) else {
        anyhow::bail!("--prometheus needs --query, --start and --end");
    };
    if end <= start {
        anyhow::bail!("--end ({end}) must be after --start ({start})");
    }
    let source = crate::source::PrometheusSource::new(&crate::source::PrometheusConfig::new(url))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Prometheus answers at most 11,000 points per query: read the range in chunks.
    let chunk = args.step * 10_000;
    let mut samples = Vec::new();
    let mut from = start;
    while from < end {
        let to = crate::engine::behavior::after(from, chunk).min(end);
        let part = runtime
            .block_on(crate::source::MetricsSource::range(&source, query, from, to, args.step))
            .with_context(|| format!("range query {query:?} from {from} to {to} against {url}"))?;
        samples.extend(part.into_iter().map(|s| (s.time, s.value)));
        from = to;
    }
    Ok(backtest::Trace::from_samples(&samples)?)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// Every trace in `trace_dir` × every policy in `policy_dir`, as one table (also what the bench prints).
fn backtest_matrix(args: &BacktestArgs, trace_dir: &Path, policy_dir: &Path) -> anyhow::Result<()> {
    let table = backtest::matrix(trace_dir, policy_dir, &args.options(false)?, args.format == Format::Json)?;
    print!("{table}");
    Ok(())
}

/// Runs `f` with a progress callback; the bar shows only on a terminal and only once the run passes 1 s.
fn with_progress<T>(total: u64, f: impl FnOnce(&mut dyn FnMut(u64)) -> T) -> T {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let out = f(&mut |done: u64| {
        if !terminal {
            return;
        }
        if bar.is_none() && started.elapsed() > Duration::from_secs(1) {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {percent}% eta {eta}")
            {
                b.set_style(style);
            }
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position(done);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out
}
