//! The `foresight` command line: `run` (the controller), `crdgen` (print the CRD) and `backtest`.

use clap::{Parser, Subcommand};

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
}

/// Runs the parsed command; returns the process exit code.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crdgen => {
            print!("{}", crate::crdgen::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => crate::run::main(args),
    }
}
