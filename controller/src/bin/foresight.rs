use clap::Parser;

fn main() -> anyhow::Result<()> {
    foresight::cli::main(foresight::cli::Cli::parse())
}
