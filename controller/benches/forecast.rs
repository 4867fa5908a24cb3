//! Fit + forecast time of `foresight::forecast` on synthetic load histories.
//!
//! The backtest refits at every 5-minute step of a 215-day trace (~62,000 fits of ~2,016 points), so the figure
//! that matters is the per-fit time at 2,016 points; 10,080 points is one week of 1-minute samples.
//! `Auto` adds the period detection (a periodogram, and a profile per short period) to every fit; the `spiky`
//! histories add a 5-minute spike every hour, so detection finds and models a third period.
//! Run with `cargo bench --bench forecast`; prints a table, asserts nothing. Arguments select cases by their
//! points and seasonality: `cargo bench --bench forecast -- 10080` runs the 10,080-point cases, `-- 10080/Auto`
//! the ones with period detection (a case runs if its `points/seasonality[ spiky]` contains any argument).

use std::hint::black_box;
use std::time::{Duration, Instant};

use foresight::forecast::{ForecastConfig, Seasonality, fit};

const DAY: f64 = 86_400.0;
/// Monday 2024-01-01 00:00:00 UTC.
const T0: f64 = 1_704_067_200.0;

/// Daily and weekly cycles, a trend and deterministic pseudo-random noise (and, if `spiky`, a 5-minute spike
/// of +150 at the top of every hour).
fn history(points: usize, step: f64, spiky: bool) -> Vec<(f64, f64)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..points)
        .map(|i| {
            let t = T0 + i as f64 * step;
            let d = std::f64::consts::TAU * (t - T0) / DAY;
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let load = 200.0 + 2.0 * (t - T0) / DAY - 80.0 * d.cos() - 25.0 * (2.0 * d).sin()
                + 30.0 * (d / 7.0).cos()
                + 20.0 * noise;
            let spike = if spiky && (t - T0).rem_euclid(3600.0) < 300.0 { 150.0 } else { 0.0 };
            (t, load + spike)
        })
        .collect()
}

struct Case {
    points: usize,
    step: f64,
    seasonality: Seasonality,
    spiky: bool,
    runs: usize,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

fn main() {
    let cases = [
        Case { points: 2_016, step: 300.0, seasonality: Seasonality::Daily, spiky: false, runs: 2_000 },
        Case { points: 2_016, step: 300.0, seasonality: Seasonality::DailyWeekly, spiky: false, runs: 2_000 },
        Case { points: 2_016, step: 300.0, seasonality: Seasonality::Auto, spiky: false, runs: 2_000 },
        Case { points: 2_016, step: 600.0, seasonality: Seasonality::DailyWeekly, spiky: false, runs: 2_000 },
        Case { points: 4_032, step: 300.0, seasonality: Seasonality::DailyWeekly, spiky: false, runs: 500 },
        Case { points: 4_032, step: 300.0, seasonality: Seasonality::Auto, spiky: false, runs: 500 },
        Case { points: 10_080, step: 60.0, seasonality: Seasonality::Daily, spiky: false, runs: 200 },
        Case { points: 10_080, step: 60.0, seasonality: Seasonality::DailyWeekly, spiky: false, runs: 200 },
        Case { points: 10_080, step: 60.0, seasonality: Seasonality::Auto, spiky: false, runs: 200 },
        Case { points: 10_080, step: 60.0, seasonality: Seasonality::Auto, spiky: true, runs: 200 },
        Case { points: 20_160, step: 60.0, seasonality: Seasonality::DailyWeekly, spiky: false, runs: 100 },
        Case { points: 20_160, step: 60.0, seasonality: Seasonality::Auto, spiky: true, runs: 100 },
    ];
    println!("fit (holdout fit + full fit) + 15-minute peak, release build");
    println!(
        "{:>7} {:>6} {:>7} {:>18} {:>16} {:>10} {:>10} {:>10} {:>14}",
        "points", "step", "span", "seasonality", "periods (h)", "median", "p99", "mean", "62k fits"
    );
    // cargo bench passes --bench; every other argument selects cases.
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    for case in cases {
        let label = format!("{}/{:?}{}", case.points, case.seasonality, if case.spiky { " spiky" } else { "" });
        if !wanted.is_empty() && !wanted.iter().any(|w| label.contains(w.as_str())) {
            continue;
        }
        let samples = history(case.points, case.step, case.spiky);
        let now = samples.last().map_or(T0, |s| s.0);
        let cfg = ForecastConfig { seasonality: case.seasonality, ..ForecastConfig::default() };
        let mut times = Vec::with_capacity(case.runs);
        let mut fitted = Vec::new();
        for _ in 0..case.runs {
            let start = Instant::now();
            let model = fit(black_box(&samples), black_box(&cfg)).expect("synthetic history fits");
            let peak = model.peak(now, now + 900.0, 60.0).expect("valid range");
            times.push(start.elapsed());
            black_box(peak);
            fitted = model.periods();
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / case.runs as u32;
        println!(
            "{:>7} {:>5}s {:>6.1}d {:>18} {:>16} {:>10.3?} {:>10.3?} {:>10.3?} {:>13.1}s",
            case.points,
            case.step,
            case.points as f64 * case.step / DAY,
            format!("{:?}{}", case.seasonality, if case.spiky { " spiky" } else { "" }),
            fitted.iter().map(|p| format!("{:.4}", p / 3600.0)).collect::<Vec<_>>().join(","),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            mean,
            mean.as_secs_f64() * 62_000.0,
        );
    }
}
