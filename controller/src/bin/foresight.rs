use clap::Parser;

fn main() -> std::process::ExitCode {
    foresight::cli::run_and_report(foresight::cli::Cli::parse())
}
