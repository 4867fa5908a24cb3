//! `cargo bench --bench backtest`: every shared trace (../shared/traces, else examples/traces) with every
//! example policy and the baselines, printed as one table with run times. `FORESIGHT_TRACES=DIR` overrides the
//! trace directory (a git worktree has no ../shared beside it).

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/traces");
    let fallback = root.join("examples/traces");
    let traces = match std::env::var_os("FORESIGHT_TRACES") {
        Some(dir) => dir.into(),
        None if shared.is_dir() => shared,
        None => fallback,
    };
    let policies = root.join("examples/policies");
    eprintln!("traces from {}, policies from {}", traces.display(), policies.display());
    let started = std::time::Instant::now();
    let table = foresight::backtest::matrix(&traces, &policies, &foresight::backtest::Options::default(), false)?;
    print!("{table}");
    println!("all runs: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
