//! The command line: `demo-app serve` and `demo-app load`, and the signal handling both share.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use reqwest::Url;

use crate::load::{self, LoadConfig, LoadError};
use crate::profile::ProfileSpec;
use crate::server::{self, ErrorRate, ServeConfig, ServeError};
use crate::trace::TraceError;

/// Foresight's demo workload: a server with tunable CPU cost, latency and errors, and a load generator.
#[derive(Debug, Parser)]
#[command(name = "demo-app", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve GET / (CPU work, injected errors), /metrics, /healthz, /readyz and POST /admin/errors?rate=R.
    Serve(ServeArgs),
    /// Send GET requests to one URL at a rate that follows a profile, then print what was achieved.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// CPU time each GET / burns in a busy loop (e.g. 5ms).
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub cpu_per_request: Duration,
    /// Probability (0 to 1) that a GET / fails with 500.
    #[arg(long, default_value = "0.0")]
    pub error_rate: ErrorRate,
    /// Time each GET / waits before its CPU work, like a call to a backend (e.g. 10ms).
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub latency_base: Duration,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The URL to request, e.g. http://demo-app.foresight-demo/.
    #[arg(long)]
    pub target: Url,
    /// constant:RPS | step:RPS1,RPS2@SECONDS | ramp:FROM,TO@SECONDS | cycle:MIN,MAX@PERIOD |
    /// trace:FILE.csv[@SPEEDUP]. Times are seconds or durations such as 90s, 10m.
    #[arg(long)]
    pub profile: ProfileSpec,
    /// How long to run.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Most requests in flight at once; a request due beyond it is skipped and counted.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// For trace profiles: the request rate the trace's largest value becomes.
    #[arg(long, default_value_t = 100.0)]
    pub max_rps: f64,
    /// Timeout of each request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => {
            let listener = server::bind(&args.listen.to_string()).await?;
            let config = ServeConfig {
                cpu_per_request: args.cpu_per_request,
                error_rate: args.error_rate,
                latency_base: args.latency_base,
            };
            tracing::info!(listen = %args.listen, ?config, "serving");
            server::serve(listener, config, shutdown_signal()).await?;
        }
        Command::Load(args) => {
            let profile = args.profile.resolve(args.max_rps)?;
            let config = LoadConfig {
                target: args.target,
                profile,
                duration: args.duration,
                concurrency: args.concurrency,
                timeout: args.timeout,
            };
            tracing::info!(target = %config.target, duration = ?config.duration, "load starting");
            let report = load::run(config, shutdown_signal()).await?;
            println!("{report}");
        }
    }
    Ok(())
}

/// Completes on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
