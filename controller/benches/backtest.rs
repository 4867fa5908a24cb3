//! `cargo bench --bench backtest`: every shared trace (../shared/traces, else examples/traces) with every
//! example policy and the baselines, printed as one table with run times.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/traces");
    let fallback = root.join("examples/traces");
    let traces = if shared.is_dir() { shared } else { fallback };
    let policies = root.join("examples/policies");
    eprintln!("traces from {}, policies from {}", traces.display(), policies.display());
    let started = std::time::Instant::now();
    let table = foresight::backtest::matrix(&traces, &policies, &foresight::backtest::Options::default(), false)?;
    print!("{table}");
    println!("all runs: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
