//! Behaviour of the forecaster on synthetic series with a known truth, and on a slice of a real trace.

use super::*;
use features::{DAY, WEEK};

const MIN: f64 = 60.0;
const HOUR: f64 = 3600.0;
/// Monday 2024-01-01 00:00:00 UTC: an arbitrary, realistic origin.
const T0: f64 = 1_704_067_200.0;

/// xorshift64* with Box–Muller: a fixed-seed noise source, so the tests are deterministic.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A web-like load: 200 requests/s at the level, growing 2/s per day, an evening peak and a smaller morning one,
/// quieter weekends.
fn truth(t: f64) -> f64 {
    let w = std::f64::consts::TAU * (t - T0).rem_euclid(WEEK) / WEEK;
    daily_truth(t) + 30.0 * w.cos()
}

/// `truth` without the weekly cycle: what a model fitted to less than two weeks (`Seasonality::Daily`) can learn.
fn daily_truth(t: f64) -> f64 {
    let d = std::f64::consts::TAU * (t - T0).rem_euclid(DAY) / DAY;
    200.0 + 2.0 * (t - T0) / DAY - 80.0 * d.cos() - 25.0 * (2.0 * d).sin()
}

/// Samples of `f` plus N(0, noise²) every `step` seconds over `[from, to)`.
fn series(f: impl Fn(f64) -> f64, from: f64, to: f64, step: f64, noise: f64, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = Rng(seed);
    let n = ((to - from) / step).ceil() as usize;
    (0..n).map(|i| from + i as f64 * step).map(|t| (t, f(t) + noise * rng.normal())).collect()
}

fn weekly_cfg(span: f64) -> ForecastConfig {
    ForecastConfig { seasonality: Seasonality::auto(span), ..ForecastConfig::default() }
}

fn relative_error(model: &Model, t: f64, truth: impl Fn(f64) -> f64) -> f64 {
    let forecast = model.predict(t).expect("finite time");
    (forecast - truth(t)).abs() / truth(t).abs()
}

#[test]
fn forecasts_trend_daily_and_weekly_cycles_within_3_percent() {
    let history = series(truth, T0, T0 + 21.0 * DAY, 5.0 * MIN, 6.0, 1);
    // Eight origins spread over the last day, each fitted on the 14 days before it.
    for origin in 0..8 {
        let now = T0 + 20.0 * DAY + origin as f64 * 3.0 * HOUR;
        let window: Vec<_> = history.iter().copied().filter(|(t, _)| *t <= now && *t > now - 14.0 * DAY).collect();
        let model = fit(&window, &weekly_cfg(14.0 * DAY)).expect("fits");
        assert_eq!(model.seasonality(), Seasonality::DailyWeekly);
        for ahead in [15.0 * MIN, HOUR] {
            let err = relative_error(&model, now + ahead, truth);
            assert!(err < 0.03, "origin {origin}, +{ahead}s: relative error {err:.4}");
        }
    }
}

#[test]
fn peak_over_the_lookahead_sees_a_rising_ramp() {
    // A daily cycle whose trough is at midnight: at 06:00 the load is climbing steeply.
    let now = T0 + 6.0 * DAY + 6.0 * HOUR;
    let history = series(daily_truth, T0, now + 1.0, 5.0 * MIN, 3.0, 2);
    let model = fit(&history, &ForecastConfig::default()).expect("fits");
    let peak = model.peak(now, now + 15.0 * MIN, MIN).expect("valid range");
    assert!(peak > daily_truth(now) + 5.0, "peak {peak:.1} should exceed the current load {:.1}", daily_truth(now));
    assert!((peak - daily_truth(now + 15.0 * MIN)).abs() < 6.0, "peak {peak:.1} vs daily_truth at +15 min");

    // A pure growth ramp (no cycle): the trend alone must carry the forecast above the last value.
    let ramp = |t: f64| 50.0 + 100.0 * (t - T0) / HOUR;
    let history = series(ramp, T0, T0 + 2.0 * HOUR, MIN, 1.0, 3);
    let now = history.last().expect("non-empty").0;
    let model = fit(&history, &ForecastConfig::default()).expect("fits");
    let peak = model.peak(now, now + 15.0 * MIN, MIN).expect("valid range");
    assert!((peak - ramp(now + 15.0 * MIN)).abs() < 2.0, "ramp peak {peak:.1} vs {:.1}", ramp(now + 15.0 * MIN));
}

#[test]
fn too_few_usable_samples_abstains() {
    let cfg = ForecastConfig::default();
    let mut samples = series(truth, T0, T0 + 12.0 * 5.0 * MIN, 5.0 * MIN, 0.0, 4);
    assert_eq!(samples.len(), 12);
    samples[1].1 = f64::NAN;
    samples[4].1 = f64::INFINITY;
    samples[7].0 = f64::NAN;
    match fit(&samples, &cfg) {
        Err(ForecastError::Abstain { reason: AbstainReason::TooFewSamples { usable, required } }) => {
            assert_eq!((usable, required), (9, 10))
        }
        other => panic!("expected an abstention, got {other:?}"),
    }
    assert!(matches!(fit(&[], &cfg), Err(ForecastError::Abstain { .. })));
}

#[test]
fn constant_series_forecasts_exactly_that_constant() {
    let samples = series(|_| 42.5, T0, T0 + 8.0 * DAY, 5.0 * MIN, 0.0, 5);
    let model = fit(&samples, &weekly_cfg(8.0 * DAY)).expect("fits");
    for ahead in [0.0, 15.0 * MIN, DAY, 30.0 * DAY] {
        assert_eq!(model.predict(model.fitted_at() + ahead).expect("finite"), 42.5);
    }
    assert_eq!(model.holdout_error(), 0.0);
    assert_eq!(model.residual_spread(), 0.0);
}

#[test]
fn gappy_series_with_missing_days_still_fits() {
    let mut rng = Rng(6);
    let samples: Vec<_> = series(truth, T0, T0 + 15.0 * DAY, 5.0 * MIN, 4.0, 7)
        .into_iter()
        // Days 2, 3 and 9 missing entirely, and 20% of the rest lost at random.
        .filter(|(t, _)| ![2, 3, 9].contains(&(((t - T0) / DAY) as i64)))
        .filter(|_| rng.uniform() > 0.2)
        .collect();
    let model = fit(&samples, &weekly_cfg(15.0 * DAY)).expect("fits");
    let now = model.fitted_at();
    for ahead in [15.0 * MIN, HOUR, 6.0 * HOUR] {
        let err = relative_error(&model, now + ahead, truth);
        assert!(err < 0.04, "+{ahead}s: relative error {err:.4}");
    }
}

#[test]
fn one_huge_spike_does_not_dominate_the_forecast() {
    let mut samples = series(daily_truth, T0, T0 + 7.0 * DAY, 5.0 * MIN, 3.0, 8);
    let n = samples.len();
    // A 100x spike 2 hours before the end, where it has the most leverage on the trend and level.
    samples[n - 24].1 *= 100.0;
    let now = samples[n - 1].0;
    let robust = fit(&samples, &ForecastConfig::default()).expect("fits");
    let naive = fit(&samples, &ForecastConfig { outlier_k: f64::INFINITY, ..ForecastConfig::default() }).expect("fits");
    let robust_err = relative_error(&robust, now + 15.0 * MIN, daily_truth);
    let naive_err = relative_error(&naive, now + 15.0 * MIN, daily_truth);
    assert!(robust_err < 0.03, "robust fit is off by {robust_err:.4}");
    assert!(naive_err > 2.0 * robust_err, "the spike should hurt a plain OLS fit ({naive_err:.4})");
    // The spread reflects the noise (σ = 3), not the spike.
    assert!(robust.residual_spread() < 6.0, "spread {:.2}", robust.residual_spread());

    // A spike in the very last sample must not be taken as a level shift either.
    let mut samples = series(daily_truth, T0, T0 + 7.0 * DAY, 5.0 * MIN, 3.0, 9);
    if let Some(last) = samples.last_mut() {
        last.1 *= 100.0;
    }
    let model = fit(&samples, &ForecastConfig::default()).expect("fits");
    let err = relative_error(&model, model.fitted_at() + 15.0 * MIN, daily_truth);
    assert!(err < 0.03, "a spike in the last sample moved the forecast by {err:.4}");
}

#[test]
fn weekly_terms_are_not_fitted_to_less_than_a_week() {
    let daily = daily_truth;
    let samples = series(daily, T0, T0 + 4.0 * DAY, 5.0 * MIN, 3.0, 10);
    let asked =
        ForecastConfig { seasonality: Seasonality::DailyWeekly, weekly_harmonics: 6, ..ForecastConfig::default() };
    let model = fit(&samples, &asked).expect("fits");
    assert_eq!(model.seasonality(), Seasonality::Daily);
    let now = model.fitted_at();
    for ahead in [15.0 * MIN, 6.0 * HOUR, DAY] {
        let err = relative_error(&model, now + ahead, daily);
        assert!(err < 0.03, "+{ahead}s: relative error {err:.4}");
    }
}

#[test]
fn holdout_error_is_small_on_clean_data_and_large_on_noise() {
    let clean =
        fit(&series(daily_truth, T0, T0 + 7.0 * DAY, 5.0 * MIN, 2.0, 11), &ForecastConfig::default()).expect("fits");
    assert!(clean.holdout_error() < 0.03, "clean: {:.4}", clean.holdout_error());

    // White noise around 100 with σ = 50: E|e| ≈ 40, so the WAPE should be near 0.4.
    let noise =
        fit(&series(|_| 100.0, T0, T0 + 7.0 * DAY, 5.0 * MIN, 50.0, 12), &ForecastConfig::default()).expect("fits");
    assert!(noise.holdout_error() > 0.3, "noise: {:.4}", noise.holdout_error());

    // And a caller's quality bound turns that into an abstention.
    let strict = ForecastConfig { max_holdout_error: Some(0.2), ..ForecastConfig::default() };
    let noisy = series(|_| 100.0, T0, T0 + 7.0 * DAY, 5.0 * MIN, 50.0, 12);
    assert!(matches!(fit(&noisy, &strict), Err(ForecastError::Abstain { reason: AbstainReason::PoorFit { .. } })));
}

#[test]
fn level_correction_follows_a_level_shift() {
    // The load jumps 25% above its usual shape 3 hours before "now" and stays there.
    let now = T0 + 7.0 * DAY;
    let shifted = |t: f64| {
        if t >= now - 3.0 * HOUR { 1.25 * daily_truth(t) } else { daily_truth(t) }
    };
    let samples = series(shifted, T0, now + 1.0, 5.0 * MIN, 3.0, 13);
    let with = fit(&samples, &ForecastConfig::default()).expect("fits");
    let without = fit(&samples, &ForecastConfig { level_correction: None, ..ForecastConfig::default() }).expect("fits");
    for ahead in [15.0 * MIN, 30.0 * MIN] {
        let err_with = relative_error(&with, now + ahead, shifted);
        let err_without = relative_error(&without, now + ahead, shifted);
        assert!(err_with < 0.5 * err_without, "+{ahead}s: with correction {err_with:.4}, without {err_without:.4}");
    }
    // The correction decays with the configured time constant: after a day (4τ) exp(−4) of it is left.
    let correction = |t: f64| with.predict(t).expect("finite") - without.predict(t).expect("finite");
    let (now_gap, later_gap) = (correction(now), correction(now + DAY));
    assert!(now_gap > 0.1 * daily_truth(now), "correction {now_gap:.2} should be about the 25% shift");
    assert!((later_gap / now_gap - (-4.0f64).exp()).abs() < 1e-9, "decayed to {later_gap:.4} of {now_gap:.4}");
}

#[test]
fn unsorted_input_gives_the_same_model_as_sorted() {
    let sorted = series(truth, T0, T0 + 3.0 * DAY, 5.0 * MIN, 3.0, 14);
    let mut shuffled = sorted.clone();
    let mut rng = Rng(15);
    for i in (1..shuffled.len()).rev() {
        let j = (rng.uniform() * (i + 1) as f64) as usize;
        shuffled.swap(i, j.min(i));
    }
    assert_ne!(shuffled, sorted);
    let a = fit(&sorted, &ForecastConfig::default()).expect("fits");
    let b = fit(&shuffled, &ForecastConfig::default()).expect("fits");
    assert_eq!(a, b);
}

#[test]
fn forecasts_of_a_non_negative_load_are_never_negative() {
    // A spiky night-time-zero load that a smooth curve undershoots.
    let bursty = |t: f64| {
        let hour = (t - T0).rem_euclid(DAY) / HOUR;
        if (18.0..20.0).contains(&hour) { 500.0 } else { 0.0 }
    };
    let samples = series(bursty, T0, T0 + 5.0 * DAY, 5.0 * MIN, 0.0, 16);
    let model = fit(&samples, &ForecastConfig::default()).expect("fits");
    let now = model.fitted_at();
    for i in 0..288 {
        assert!(model.predict(now + i as f64 * 5.0 * MIN).expect("finite") >= 0.0);
    }
}

#[test]
fn bad_configuration_and_queries_are_typed_errors() {
    let samples = series(truth, T0, T0 + DAY, 5.0 * MIN, 3.0, 17);
    let bad = [
        ForecastConfig { daily_harmonics: 13, ..ForecastConfig::default() },
        ForecastConfig { weekly_harmonics: 7, ..ForecastConfig::default() },
        ForecastConfig { outlier_k: f64::NAN, ..ForecastConfig::default() },
        ForecastConfig { level_correction: Some(0.0), ..ForecastConfig::default() },
        ForecastConfig { min_samples: 5, ..ForecastConfig::default() },
        ForecastConfig { max_holdout_error: Some(-1.0), ..ForecastConfig::default() },
        ForecastConfig { holdout: Holdout { fraction: 0.9, ..Holdout::default() }, ..ForecastConfig::default() },
    ];
    for cfg in bad {
        assert!(matches!(fit(&samples, &cfg), Err(ForecastError::InvalidConfig { .. })), "{cfg:?} should be rejected");
    }
    let model = fit(&samples, &ForecastConfig::default()).expect("fits");
    let now = model.fitted_at();
    for query in [
        model.predict(f64::NAN),
        model.peak(now + 10.0, now, 1.0),
        model.peak(now, now + 10.0, 0.0),
        model.peak(now, now + 1e9, 1e-3),
    ] {
        assert!(matches!(query, Err(ForecastError::InvalidQuery { .. })), "{query:?}");
    }
}

/// `2014-09-08 00:00:00` (naive) as unix seconds, reading the naive time as UTC (only the phase matters).
fn parse_time(text: &str) -> Option<f64> {
    let dt: jiff::civil::DateTime = text.parse().ok()?;
    Some(dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_second() as f64)
}

/// Three weeks (2014-09-08 Mon .. 2014-09-28 Sun) of NYC taxi passengers per 30 minutes, from the NAB trace.
fn nyc_taxi() -> Vec<(f64, f64)> {
    include_str!("testdata/nyc_taxi_3w.csv")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (t, v) = line.split_once(',')?;
            Some((parse_time(t)?, v.trim().parse().ok()?))
        })
        .collect()
}

/// Measured (2014-09-22, a Monday, fitted on the two weeks before): day-ahead WAPE 0.142 (copying last week: 0.083;
/// the taxi trace is unusually regular); 30 minutes ahead, refitting every step: 0.056, against 0.079 for "same
/// as now" and 0.083 for "same as last week".
#[test]
fn real_trace_forecasts_the_next_day() {
    let trace = nyc_taxi();
    assert_eq!(trace.len(), 21 * 48);
    let (history, next) = (&trace[..14 * 48], &trace[14 * 48..15 * 48]);
    let model = fit(history, &weekly_cfg(14.0 * DAY)).expect("fits");
    assert_eq!(model.seasonality(), Seasonality::DailyWeekly);

    let actual: f64 = next.iter().map(|(_, v)| v).sum();
    let wape = |errors: f64| errors / actual;
    let day_ahead = wape(next.iter().map(|&(t, v)| (model.predict(t).expect("finite") - v).abs()).sum());

    // Rolling 30-minute-ahead forecasts over the same day, refitting at every step as the controller does,
    // against the two naive forecasts a predictive policy has to beat.
    let (mut rolling, mut persistence, mut last_week) = (0.0, 0.0, 0.0);
    for i in 14 * 48..15 * 48 {
        let model = fit(&trace[i - 14 * 48..i], &weekly_cfg(14.0 * DAY)).expect("fits");
        let (t, v) = trace[i];
        rolling += (model.predict(t).expect("finite") - v).abs();
        persistence += (trace[i - 1].1 - v).abs();
        last_week += (trace[i - 7 * 48].1 - v).abs();
    }
    let (rolling, persistence, last_week) = (wape(rolling), wape(persistence), wape(last_week));
    eprintln!(
        "day-ahead {day_ahead:.4}; 30 min ahead {rolling:.4}, persistence {persistence:.4}, last week {last_week:.4}"
    );
    assert!(day_ahead < 0.2, "day-ahead WAPE {day_ahead:.4}");
    assert!(rolling < 0.08, "30-min-ahead WAPE {rolling:.4}");
    assert!(rolling < persistence.min(last_week), "30-min-ahead {rolling:.4} vs {persistence:.4} / {last_week:.4}");
}

#[test]
fn horizon_spread_is_tighter_than_the_residuals_and_still_covers_the_load() {
    // Rolling 30-minute-ahead forecasts over a day of the taxi trace: `forecast + 2 x spread_at(30 min)` covers
    // the load that then arrives nearly always, although the corrected spread is well below the curve's
    // residual spread (which is what makes provisioning on it cheaper).
    let trace = nyc_taxi();
    let (mut covered, mut tighter, mut n) = (0, 0, 0);
    for i in 14 * 48..15 * 48 {
        let model = fit(&trace[i - 14 * 48..i], &weekly_cfg(14.0 * DAY)).expect("fits");
        let (t, v) = trace[i];
        let horizon = t - model.fitted_at();
        let spread = model.spread_at(horizon);
        assert!(spread <= model.residual_spread() + 1e-9);
        if spread < 0.8 * model.residual_spread() {
            tighter += 1;
        }
        if v <= model.predict(t).expect("finite") + 2.0 * spread {
            covered += 1;
        }
        n += 1;
    }
    eprintln!("covered {covered}/{n}, tighter {tighter}/{n}");
    assert!(covered as f64 >= 0.9 * n as f64, "covered only {covered} of {n}");
    assert!(tighter as f64 >= 0.5 * n as f64, "the correction tightened the spread only {tighter} of {n} times");
    // Far beyond the correction's reach, the spread is the residual spread again.
    let model = fit(&trace[..14 * 48], &weekly_cfg(14.0 * DAY)).expect("fits");
    assert_eq!(model.spread_at(365.0 * DAY), model.residual_spread());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> impl Strategy<Value = (f64, f64)> {
        (
            prop_oneof![8 => 1.6e9..1.6e9 + 30.0 * DAY, 1 => Just(f64::NAN), 1 => any::<f64>()],
            prop_oneof![8 => -1e3..1e6f64, 1 => Just(f64::INFINITY), 1 => any::<f64>(), 1 => 1e300..1e308f64],
        )
    }

    proptest! {
        #[test]
        fn any_input_fits_or_fails_cleanly_and_forecasts_are_finite(samples in prop::collection::vec(sample(), 0..400)) {
            match fit(&samples, &ForecastConfig { seasonality: Seasonality::DailyWeekly, ..ForecastConfig::default() }) {
                Ok(model) => {
                    let now = model.fitted_at();
                    for ahead in [0.0, 900.0, DAY] {
                        let forecast = model.predict(now + ahead);
                        prop_assert!(forecast.as_ref().is_ok_and(|f| f.is_finite()), "{forecast:?}");
                    }
                    prop_assert!(model.holdout_error() >= 0.0 && !model.holdout_error().is_nan());
                    prop_assert!(model.residual_spread().is_finite());
                }
                // Abstaining is fine, and so is a typed solve failure on absurd magnitudes (sums beyond f64::MAX).
                Err(ForecastError::Abstain { .. } | ForecastError::Solve { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}

/// `daily_truth` plus a 5-minute spike of +`height` at the top of every hour (a cron job, a bot).
fn hourly_spiky(height: f64) -> impl Fn(f64) -> f64 {
    move |t: f64| daily_truth(t) + if (t - T0).rem_euclid(HOUR) < 5.0 * MIN { height } else { 0.0 }
}

fn auto_cfg() -> ForecastConfig {
    ForecastConfig { seasonality: Seasonality::Auto, ..ForecastConfig::default() }
}

/// Asserts `periods` are, in order, within 0.5% of `expected`.
fn assert_periods(periods: &[f64], expected: &[f64], what: &str) {
    assert_eq!(periods.len(), expected.len(), "{what}: periods {periods:?}, expected {expected:?}");
    for (p, e) in periods.iter().zip(expected) {
        assert!((p - e).abs() < 0.005 * e, "{what}: period {p} s, expected {e} s (all: {periods:?})");
    }
}

#[test]
fn auto_finds_an_hourly_spike_and_the_daily_cycle() {
    let samples = series(hourly_spiky(100.0), T0, T0 + 7.0 * DAY, MIN, 5.0, 30);
    let model = fit(&samples, &auto_cfg()).expect("fits");
    assert_periods(&model.periods(), &[HOUR, DAY], "1-minute samples");
    // The same at 5-minute resolution, where a spike is a single sample.
    let samples = series(hourly_spiky(100.0), T0, T0 + 7.0 * DAY, 5.0 * MIN, 5.0, 31);
    let model = fit(&samples, &auto_cfg()).expect("fits");
    assert_periods(&model.periods(), &[HOUR, DAY], "5-minute samples");
    // Two weeks of a weekly cycle: the week too.
    let weekly_spiky = |t: f64| truth(t) + if (t - T0).rem_euclid(HOUR) < 5.0 * MIN { 100.0 } else { 0.0 };
    let samples = series(weekly_spiky, T0, T0 + 14.0 * DAY, 5.0 * MIN, 5.0, 32);
    let model = fit(&samples, &auto_cfg()).expect("fits");
    assert_periods(&model.periods(), &[HOUR, DAY, WEEK], "two weeks");
}

#[test]
fn auto_finds_no_period_in_white_noise() {
    for seed in 40..46 {
        let samples = series(|_| 100.0, T0, T0 + 7.0 * DAY, if seed % 2 == 0 { MIN } else { 5.0 * MIN }, 20.0, seed);
        let model = fit(&samples, &auto_cfg()).expect("fits");
        assert_eq!(model.periods(), Vec::<f64>::new(), "seed {seed}");
    }
}

/// Drops days 2 and 4 and 20% of the rest, and puts a 50x outlier on one sample in 500.
fn with_gaps_and_outliers(samples: Vec<(f64, f64)>, seed: u64) -> Vec<(f64, f64)> {
    let (mut keep, mut spike) = (Rng(seed), Rng(seed + 1000));
    samples
        .into_iter()
        .filter(|(t, _)| ![2, 4].contains(&(((t - T0) / DAY) as i64)))
        .filter(|_| keep.uniform() > 0.2)
        .map(|(t, v)| if spike.uniform() < 0.002 { (t, 50.0 * v) } else { (t, v) })
        .collect()
}

#[test]
fn gaps_and_outliers_neither_hide_periods_nor_invent_them() {
    for seed in 50..53 {
        let noise = with_gaps_and_outliers(series(|_| 100.0, T0, T0 + 7.0 * DAY, MIN, 20.0, seed), seed);
        let model = fit(&noise, &auto_cfg()).expect("fits");
        assert_eq!(model.periods(), Vec::<f64>::new(), "noise, seed {seed}");

        let spiky = with_gaps_and_outliers(series(hourly_spiky(100.0), T0, T0 + 7.0 * DAY, MIN, 5.0, seed), seed);
        let model = fit(&spiky, &auto_cfg()).expect("fits");
        assert_periods(&model.periods(), &[HOUR, DAY], &format!("spiky, seed {seed}"));
    }
}

#[test]
fn the_forecast_provisions_for_the_next_hourly_spike() {
    // Ten minutes before the top of the hour: the next 15 minutes hold a spike of +100 over ~220.
    let now = T0 + 6.0 * DAY + 13.0 * HOUR - 10.0 * MIN;
    let truth = hourly_spiky(100.0);
    let samples = series(&truth, T0, now + 1.0, MIN, 5.0, 60);
    let coming = (0..=15).map(|m| truth(now + m as f64 * MIN)).fold(f64::MIN, f64::max);
    let auto = fit(&samples, &auto_cfg()).expect("fits");
    let peak = auto.peak(now, now + 15.0 * MIN, MIN).expect("valid range");
    assert!((peak - coming).abs() < 10.0, "Auto provisions {peak:.1} for a coming peak of {coming:.1}");
    // Just after the spike has passed, the next one is 55 minutes away: no spike in the next 15 minutes.
    let after = now + 20.0 * MIN;
    let samples = series(&truth, T0, after + 1.0, MIN, 5.0, 61);
    let model = fit(&samples, &auto_cfg()).expect("fits");
    let quiet = model.peak(after, after + 15.0 * MIN, MIN).expect("valid range");
    assert!(quiet < coming - 60.0, "{quiet:.1} provisioned for a quiet quarter hour");
    // A daily-only model smears the spikes into its level and misses the coming one.
    let daily = fit(&series(&truth, T0, now + 1.0, MIN, 5.0, 60), &ForecastConfig::default()).expect("fits");
    let daily_peak = daily.peak(now, now + 15.0 * MIN, MIN).expect("valid range");
    assert!(daily_peak < coming - 50.0, "the daily-only model provisions {daily_peak:.1}");
}

/// Checks each fit's calibrated headroom over a 15-minute look-ahead against the windows of the following 12
/// hours, at eight origins: the fraction covered, the headroom kind chosen each time, and the load provisioned per
/// window on average.
fn achieved_coverage(samples: &[(f64, f64)], coverage: f64) -> (f64, Vec<Headroom>, f64) {
    let horizon = 15.0 * MIN;
    let (mut covered, mut windows, mut provisioned, mut chosen) = (0usize, 0usize, 0.0, Vec::new());
    for origin in 0..8 {
        let now = T0 + 7.0 * DAY + origin as f64 * 12.0 * HOUR;
        let (history, future): (Vec<_>, Vec<_>) = samples.iter().partition(|(t, _)| *t <= now);
        let history: Vec<_> = history.into_iter().filter(|(t, _)| *t > now - 7.0 * DAY).collect();
        let model = fit(&history, &ForecastConfig::default()).expect("fits");
        let calibrated = model.headroom(horizon, coverage).expect("a holdout longer than the look-ahead");
        chosen.push(calibrated.headroom);
        let future: Vec<_> = future.into_iter().take_while(|(t, _)| *t <= now + 12.0 * HOUR).collect();
        for w in future.windows(3) {
            let start = w[0].0 - 5.0 * MIN;
            let forecast = model.peak(start + 5.0 * MIN, start + horizon, 5.0 * MIN).expect("valid range");
            let actual = w.iter().map(|s| s.1).fold(f64::MIN, f64::max);
            let capacity = calibrated.headroom.apply(forecast);
            covered += usize::from(actual <= capacity);
            provisioned += capacity;
            windows += 1;
        }
    }
    (covered as f64 / windows as f64, chosen, provisioned / windows as f64)
}

#[test]
fn calibrated_headroom_covers_the_requested_fraction_of_windows() {
    // A daily cycle with N(0, 10²) noise (errors of one size at every load), and one whose noise is 8 % of the
    // load (errors that grow with it, as bursts on a busy hour do).
    let additive = series(daily_truth, T0, T0 + 12.0 * DAY, 5.0 * MIN, 10.0, 70);
    let mut rng = Rng(71);
    let relative: Vec<_> = (0..12 * 288)
        .map(|i| T0 + i as f64 * 5.0 * MIN)
        .map(|t| (t, daily_truth(t) * (1.0 + 0.08 * rng.normal())))
        .collect();
    for (name, samples) in [("additive", &additive), ("relative", &relative)] {
        for coverage in [0.8, 0.95] {
            let (achieved, _, _) = achieved_coverage(samples, coverage);
            eprintln!("{name} noise, coverage {coverage}: achieved {achieved:.3}");
            assert!((achieved - coverage).abs() < 0.05, "{name} noise: asked {coverage}, achieved {achieved:.3}");
        }
    }
}

#[test]
fn headroom_grows_with_the_load_when_the_errors_do() {
    // Noise 8 % of a load that swings 120-280 over the day: a constant margin big enough for the busy hours is
    // twice what the quiet ones need, a factor is not. And for noise of one size, the other way round.
    let mut rng = Rng(72);
    let relative: Vec<_> = (0..12 * 288)
        .map(|i| T0 + i as f64 * 5.0 * MIN)
        .map(|t| (t, daily_truth(t) * (1.0 + 0.08 * rng.normal())))
        .collect();
    let (_, chosen, per_window) = achieved_coverage(&relative, 0.95);
    // Each origin's holdout is its last 17 hours, which may hold too little of the day to tell: most, not all.
    let scaled = chosen.iter().filter(|h| matches!(h, Headroom::Scale(f) if *f > 1.0)).count();
    assert!(scaled >= 6, "{chosen:?}");
    // The constant margin at the same coverage, over the same windows, provisions more.
    let model = fit(&relative[..7 * 288], &ForecastConfig::default()).expect("fits");
    let margin = model.margin(15.0 * MIN, 0.95).expect("calibrated");
    let factor = match model.headroom(15.0 * MIN, 0.95).expect("calibrated").headroom {
        Headroom::Scale(f) => f,
        other => panic!("{other:?}"),
    };
    let mean_load = relative.iter().map(|s| s.1).sum::<f64>() / relative.len() as f64;
    assert!(
        mean_load * factor < mean_load + margin,
        "factor {factor:.3} and margin {margin:.1} at a mean load of {mean_load:.0} (provisioned {per_window:.0})"
    );

    let additive = series(daily_truth, T0, T0 + 12.0 * DAY, 5.0 * MIN, 10.0, 70);
    let (_, chosen, _) = achieved_coverage(&additive, 0.95);
    let added = chosen.iter().filter(|h| matches!(h, Headroom::Add(m) if *m > 0.0)).count();
    assert!(added >= 6, "{chosen:?}");
}

#[test]
fn a_noiseless_hourly_spike_is_one_period() {
    // A flat base of 10 and +90 for 5 minutes every hour, seen through a 2-minute rate window at 1-minute steps,
    // as a simulator or a quantised counter shows it: nearly no noise, so what the hourly profile leaves of the
    // spike's edges stands far above the noise; it must not become periods of its own.
    let pulse = |t: f64| if (t - T0 - 600.0).rem_euclid(HOUR) < 5.0 * MIN { 100.0 } else { 10.0 };
    let rate = |t: f64| (0..120).map(|s| pulse(t - s as f64)).sum::<f64>() / 120.0;
    for noise in [0.0, 0.5] {
        let samples = series(rate, T0, T0 + DAY, MIN, noise, 7);
        let model = fit(&samples, &auto_cfg()).expect("fits");
        // A day of history cannot test a daily cycle; it is assumed, as `Daily` would.
        assert_periods(&model.periods(), &[HOUR, DAY], &format!("noise {noise}"));
    }
}
