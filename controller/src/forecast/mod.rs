//! The pure forecasting core of the predictive policy: history in, a model of offered load out.
//!
//! ```text
//!   samples (unix s, value) ──clean──▶ sorted finite series
//!        │                                   │
//!        │               ┌── all but the most recent slice ──▶ fit ──▶ error on the slice = holdout_error
//!        │               └── everything ──────────────────────▶ fit ──▶ Model ──▶ predict(t), peak(from, to)
//! ```
//!
//! Both the controller (history from a Prometheus range query) and the `foresight backtest` simulator (replayed
//! traces) call [`fit`], so what the backtest measures is what the controller does. No kube, tokio, HTTP or clock
//! in here: time is an `f64` of unix seconds passed in by the caller.
//!
//! # The model
//! `load(t) ≈ level + slope·days(t) + Σₖ daily Fourier pair k + Σₖ weekly Fourier pair k
//!            + Σₖ daily pair k × first weekly pair (+ level correction)`,
//! fitted by ordinary least squares (`linfa_linear::LinearRegression`), twice per [`fit`] (holdout and full), each
//! with one robust refit.
//! - **Fourier seasonal terms** describe a daily peak (and weekday/weekend shape) with a few smooth parameters;
//!   raw hour-of-day numbers cannot (see `features`).
//! - **Terms the data cannot identify are dropped** rather than regularised: daily terms need ~1 day of history,
//!   weekly terms ~1 week, each with the phase reasonably covered; at most n/2 coefficients. The trend is in days
//!   relative to the last sample, so every column is O(1) and the least-squares problem is well conditioned.
//! - **Robust**: non-finite samples are dropped (gaps need no special handling: the fit only sees the samples that
//!   exist); one winsorising refit bounds what a spike can do (`regression`).
//! - **Holdout error** is a WAPE (see [`Model::holdout_error`]).
//! - **Level correction**: real load stays above or below its usual shape for hours (residuals are
//!   autocorrelated). A smoothed recent residual is added to the forecast and decays to zero with a configurable
//!   time constant (see `level` and [`ForecastConfig::level_correction`]).
//! - **Non-negative**: if every sample is ≥ 0 (as loads are), forecasts are floored at 0; a Fourier curve may dip
//!   below zero at night, a load cannot.
//! - **Other periods** (`Seasonality::Auto`): the periods the history repeats, from 10 minutes to a week, are
//!   detected (`periods`: a periodogram tested against noise); a day or a week switches on the Fourier terms
//!   above, each shorter period adds a phase-bin profile fitted to the regression's residuals (why profiles and
//!   not more harmonics: see `periods`). The level correction then runs on what is left.
//! - **Calibrated margin**: the holdout fit is run forward over the holdout from every origin, its level
//!   correction updated sample by sample as the controller's refits would be; the errors of its look-ahead peaks
//!   give [`Model::headroom`], a split-conformal quantile (added to the peak, or as a factor of it, whichever
//!   provisioned less over the holdout), so "cover 95 % of look-aheads" is a measured statement about this
//!   forecast on this history rather than a normal-theory guess.

mod error;
mod features;
mod level;
mod periods;
mod predictor;
mod regression;
#[cfg(test)]
mod tests;

pub use error::{AbstainReason, ForecastError};
pub use predictor::{FitCache, MARGIN_SPREADS, Predictor, REDETECT_AFTER_SECS};
pub use regression::SolveError;

use features::Terms;

/// The fewest samples the training part of a holdout split keeps (intercept, trend, one degree of freedom).
const MIN_TRAINING: usize = 3;
/// Daily harmonics beyond 12 (2-hour wiggles) fit noise rather than shape.
const MAX_DAILY_HARMONICS: usize = 12;
/// Weekly harmonic 7 is the daily cycle; stop before it so the columns stay linearly independent.
const MAX_WEEKLY_HARMONICS: usize = 6;
/// `peak` evaluates at most this many points, so a tiny step cannot turn one call into minutes of work.
const MAX_PEAK_STEPS: f64 = 1_000_000.0;

/// Which seasonal cycles the model may use. Terms the history cannot identify are dropped regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seasonality {
    /// Level and trend only.
    None,
    /// A daily cycle.
    Daily,
    /// A weekly cycle (without a separate daily one).
    Weekly,
    /// Daily and weekly cycles.
    DailyWeekly,
    /// The periods the history shows (from 10 minutes to a week, see `periods`): daily and weekly Fourier terms
    /// for cycles of a day or a week, a phase-bin profile for each shorter one.
    Auto,
}

impl Seasonality {
    /// `DailyWeekly` when the history spans at least 14 days, else `Daily`. Two weeks, not one: with a single week
    /// each weekday is seen once, and the weekly terms would learn last Tuesday's accidents as "Tuesday".
    pub fn auto(history_span_secs: f64) -> Seasonality {
        if history_span_secs >= 14.0 * features::DAY { Seasonality::DailyWeekly } else { Seasonality::Daily }
    }

    fn daily(self) -> bool {
        matches!(self, Seasonality::Daily | Seasonality::DailyWeekly)
    }

    fn weekly(self) -> bool {
        matches!(self, Seasonality::Weekly | Seasonality::DailyWeekly)
    }

    fn of(daily: bool, weekly: bool) -> Seasonality {
        match (daily, weekly) {
            (false, false) => Seasonality::None,
            (true, false) => Seasonality::Daily,
            (false, true) => Seasonality::Weekly,
            (true, true) => Seasonality::DailyWeekly,
        }
    }
}

/// How much of the most recent history is held out to measure forecast error: `fraction` of the samples or
/// the samples in the last `max_span_secs`, whichever is fewer, but at least `min_points`.
#[derive(Debug, Clone, PartialEq)]
pub struct Holdout {
    /// Fraction of the samples, in (0, 0.5].
    pub fraction: f64,
    /// Upper bound on the held-out time span, seconds (> 0; may be infinite).
    pub max_span_secs: f64,
    /// Lower bound on the number of held-out samples (≥ 1).
    pub min_points: usize,
}

impl Default for Holdout {
    /// The last 10% or the last day, whichever is smaller, at least 3 samples.
    fn default() -> Self {
        Holdout { fraction: 0.1, max_span_secs: features::DAY, min_points: 3 }
    }
}

/// How to fit. `Default` suits 7 days of 5-minute history.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastConfig {
    /// Cycles to model. Default `Daily`; pass `Seasonality::auto(span)` to add the weekly cycle once the history
    /// is long enough.
    pub seasonality: Seasonality,
    /// Daily Fourier pairs k = 1..=n (≤ 12). Default 4: enough for a morning and an evening peak.
    pub daily_harmonics: usize,
    /// Weekly Fourier pairs k = 1..=n (≤ 6). Default 3: weekday/weekend shape.
    pub weekly_harmonics: usize,
    /// With `DailyWeekly`, how many of the daily harmonics (1..=n, ≤ `daily_harmonics`) may change amplitude and
    /// phase over the week (products with the first weekly pair, 4 columns each). Default 2. Plain daily + weekly
    /// terms only shift the day up or down by weekday; a Saturday whose peak is at midnight instead of at the
    /// evening rush needs this. On the NYC taxi trace (14-day window) it cut the day-ahead WAPE from 0.20 to 0.16
    /// and the holdout error from 0.22 to 0.17.
    pub interaction_harmonics: usize,
    /// The holdout used for [`Model::holdout_error`].
    pub holdout: Holdout,
    /// Targets further than `outlier_k` robust standard deviations from the first fit are clipped before the
    /// refit (> 0; `f64::INFINITY` disables). Default 3.5: clips about 1 in 2,000 normal samples.
    pub outlier_k: f64,
    /// Time constant τ, seconds, over which the recent level offset decays: `h` seconds ahead it counts
    /// `exp(−h/τ)` (`None` disables). The offset is an exponentially smoothed residual whose smoothing is fitted to
    /// the history (see `level`). Default 6 hours: on the NAB traces 3–12 h were all close, 1 h forgot a busy day
    /// too soon.
    pub level_correction: Option<f64>,
    /// Fewer usable samples than this abstains (≥ `holdout.min_points + 3`). Default 10.
    pub min_samples: usize,
    /// Abstain when the holdout error exceeds this (≥ 0). Default `None`: the caller decides.
    pub max_holdout_error: Option<f64>,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            seasonality: Seasonality::Daily,
            daily_harmonics: 4,
            weekly_harmonics: 3,
            interaction_harmonics: 2,
            holdout: Holdout::default(),
            outlier_k: 3.5,
            level_correction: Some(6.0 * 3600.0),
            min_samples: 10,
            max_holdout_error: None,
        }
    }
}

impl ForecastConfig {
    /// Checks every field's range, so a bad spec fails loudly instead of forecasting nonsense.
    pub fn validate(&self) -> Result<(), ForecastError> {
        let invalid = |field, reason| Err(ForecastError::InvalidConfig { field, reason });
        if self.daily_harmonics > MAX_DAILY_HARMONICS {
            return invalid("dailyHarmonics", "must be at most 12");
        }
        if self.weekly_harmonics > MAX_WEEKLY_HARMONICS {
            return invalid("weeklyHarmonics", "must be at most 6");
        }
        if self.interaction_harmonics > self.daily_harmonics {
            return invalid("interactionHarmonics", "must be at most dailyHarmonics");
        }
        if !(self.holdout.fraction > 0.0 && self.holdout.fraction <= 0.5) {
            return invalid("holdout.fraction", "must be in (0, 0.5]");
        }
        if self.holdout.max_span_secs.is_nan() || self.holdout.max_span_secs <= 0.0 {
            return invalid("holdout.maxSpan", "must be positive");
        }
        if self.holdout.min_points == 0 {
            return invalid("holdout.minPoints", "must be at least 1");
        }
        if self.outlier_k.is_nan() || self.outlier_k <= 0.0 {
            return invalid("outlierK", "must be positive");
        }
        if let Some(tau) = self.level_correction
            && !(tau > 0.0 && tau.is_finite())
        {
            return invalid("levelCorrection", "must be a positive, finite time constant");
        }
        if self.min_samples < self.holdout.min_points.saturating_add(MIN_TRAINING) {
            return invalid("minSamples", "must be at least holdout.minPoints + 3");
        }
        if let Some(bound) = self.max_holdout_error
            && (bound.is_nan() || bound < 0.0)
        {
            return invalid("maxHoldoutError", "must be non-negative");
        }
        Ok(())
    }

    /// The terms for `seasonality` (never `Auto`: resolved by `fit` first).
    fn wanted_terms(&self, seasonality: Seasonality) -> Terms {
        Terms {
            trend: true,
            daily: if seasonality.daily() { self.daily_harmonics } else { 0 },
            weekly: if seasonality.weekly() { self.weekly_harmonics } else { 0 },
            interact: if seasonality == Seasonality::DailyWeekly { self.interaction_harmonics } else { 0 },
        }
    }
}

/// A fitted forecast of load over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    curve: Curve,
    holdout_error: f64,
    spread: f64,
    samples: usize,
    /// The level correction's smoothing weight and one-step error spread, and the sample spacing.
    correction: Option<HorizonError>,
    /// Out-of-sample forecasts over the holdout from a rolling origin, for `margin`.
    calibration: Calibration,
    /// The cycles and periods it was fitted with, for [`refit`].
    structure: Structure,
}

/// The holdout as the model fitted without it saw it: for each held-out sample (and the last training sample),
/// its time and value, the seasonal forecast (`base`, without the level correction), and the level correction's
/// state right after that sample, run forward sample by sample (so a forecast from origin `i` uses `levels[i]`
/// and nothing later).
#[derive(Debug, Clone, Default, PartialEq)]
struct Calibration {
    times: Vec<f64>,
    values: Vec<f64>,
    base: Vec<f64>,
    levels: Vec<f64>,
    /// The level correction's time constant (`None`: no correction).
    tau: Option<f64>,
    floor: f64,
}

impl Calibration {
    /// For every origin whose look-ahead `(t, t + horizon]` lies in the holdout: the highest load that arrived in
    /// it and the highest forecast made for it at the origin.
    fn peak_windows(&self, horizon: f64) -> Vec<(f64, f64)> {
        self.windows(horizon).into_iter().map(|w| (w.actual, w.forecast)).collect()
    }

    /// [`Calibration::peak_windows`] with the load at each origin, what a forecast of "the load now" would have
    /// said for the window.
    fn windows(&self, horizon: f64) -> Vec<Window> {
        let n = self.times.len();
        let Some(&last) = self.times.last() else { return Vec::new() };
        let mut windows = Vec::new();
        for o in 0..n {
            let t0 = self.times[o];
            if t0 + horizon > last + 1e-9 {
                break;
            }
            let (mut actual, mut forecast) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            for j in o + 1..n {
                let h = self.times[j] - t0;
                if h > horizon + 1e-9 {
                    break;
                }
                let level = self.tau.map_or(0.0, |tau| self.levels[o] * (-h / tau).exp());
                actual = actual.max(self.values[j]);
                forecast = forecast.max((self.base[j] + level).max(self.floor));
            }
            if actual.is_finite() && forecast.is_finite() {
                windows.push(Window { actual, forecast, now: self.values[o] });
            }
        }
        windows
    }
}

/// One out-of-sample look-ahead of the holdout: its highest load, the highest forecast made for it at its origin,
/// and the load at the origin.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    actual: f64,
    forecast: f64,
    now: f64,
}

/// Of the additive and the multiplicative headroom that cover `coverage` of the `(actual, predicted)` windows,
/// the one that provisions less over them, with what it provisions for each window.
fn cheapest_headroom(windows: &[(f64, f64)], coverage: f64) -> Option<(Headroom, Vec<f64>)> {
    let added = Headroom::Add(added_margin(windows, coverage)?);
    // A factor can only cover a window whose prediction is positive; one that is not counts as uncovered.
    let ratios = windows.iter().map(|&(a, f)| if f > 0.0 { a / f } else { f64::INFINITY }).collect();
    let scaled = conformal_quantile(ratios, coverage).filter(|q| q.is_finite()).map(|q| Headroom::Scale(q.max(1.0)));
    let provisioned = |h: Headroom| windows.iter().map(|&(_, f)| h.apply(f)).collect::<Vec<f64>>();
    let with_added = provisioned(added);
    match scaled.map(|h| (h, provisioned(h))) {
        Some((h, p)) if p.iter().sum::<f64>() < with_added.iter().sum::<f64>() => Some((h, p)),
        _ => Some((added, with_added)),
    }
}

/// The standard errors by which the forecast must provision more than "the load now" before it is judged worse
/// (see [`Model::skill`]): two, a one-sided test at about 2.3 % for a normal mean, the same two-sigma rule the
/// fallback margin uses. A forecast no worse than that keeps acting.
pub const SKILL_SIGMAS: f64 = 2.0;

/// How the forecast compares with "the load now" on the holdout at the same coverage (see [`Model::skill`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Skill {
    /// The load the forecast provisioned over the windows, relative to the load now's: 1 − forecast / naive
    /// (0.1: the forecast provisioned 10 % less for the same coverage; negative: more).
    pub saving: f64,
    /// The look-ahead windows compared, and how many independent ones they amount to (they overlap).
    pub windows: usize,
    pub independent: f64,
    /// The forecast provisioned more, by more than [`SKILL_SIGMAS`] standard errors of the mean difference.
    pub worse: bool,
    /// The forecast's own calibrated headroom on these windows: what [`Model::headroom`] returns.
    pub calibrated: Calibrated,
}

/// [`Model::margin`] over `(actual, forecast)` peak windows: the conformal quantile of their errors, never negative.
fn added_margin(windows: &[(f64, f64)], coverage: f64) -> Option<f64> {
    conformal_quantile(windows.iter().map(|(actual, forecast)| actual - forecast).collect(), coverage)
        .map(|q| q.max(0.0))
}

/// The split-conformal quantile of `scores` at `coverage` in (0, 1): the ⌈(n + 1)·coverage⌉-th smallest (the
/// largest when there are too few for that rank). `None` without finite-or-infinite scores (NaN is dropped) or
/// with a coverage outside (0, 1).
fn conformal_quantile(mut scores: Vec<f64>, coverage: f64) -> Option<f64> {
    scores.retain(|s| !s.is_nan());
    if scores.is_empty() || !(coverage > 0.0 && coverage < 1.0) {
        return None;
    }
    scores.sort_by(f64::total_cmp);
    let n = scores.len();
    let rank = ((n + 1) as f64 * coverage).ceil() as usize;
    Some(scores[rank.clamp(1, n) - 1])
}

/// How a forecast peak is raised to cover the look-ahead (see [`Model::headroom`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Headroom {
    /// Load units added to the peak.
    Add(f64),
    /// A factor (≥ 1) the peak is multiplied by.
    Scale(f64),
}

impl Headroom {
    /// The load to provision for a forecast peak.
    pub fn apply(self, peak: f64) -> f64 {
        match self {
            Headroom::Add(margin) => peak + margin,
            Headroom::Scale(factor) => peak * factor,
        }
    }
}

/// A calibrated [`Headroom`] and the number of out-of-sample windows it was calibrated on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibrated {
    pub headroom: Headroom,
    pub windows: usize,
}

/// What the error of a level-corrected forecast `h` steps ahead is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HorizonError {
    alpha: f64,
    innovation_sigma: f64,
    step_secs: f64,
}

impl Model {
    /// The forecast at `t` (unix seconds), meant for `t ≥ fitted_at()`. Errors if `t` is not finite or so far
    /// away that the trend overflows.
    pub fn predict(&self, t: f64) -> Result<f64, ForecastError> {
        if !t.is_finite() {
            return Err(ForecastError::InvalidQuery { reason: "time is not finite" });
        }
        let value = self.curve.value(t);
        if value.is_finite() {
            Ok(value)
        } else {
            Err(ForecastError::InvalidQuery { reason: "forecast overflows at this time" })
        }
    }

    /// The highest forecast at `from, from + step, …` and at `to` itself: what to provision for over a look-ahead
    /// window. Errors on a reversed or non-finite range, a non-positive step, or more than a million steps.
    pub fn peak(&self, from: f64, to: f64, step: f64) -> Result<f64, ForecastError> {
        if !(from.is_finite() && to.is_finite() && from <= to) {
            return Err(ForecastError::InvalidQuery { reason: "range must be finite with from <= to" });
        }
        if !(step > 0.0 && step.is_finite()) {
            return Err(ForecastError::InvalidQuery { reason: "step must be positive and finite" });
        }
        let steps = ((to - from) / step).floor();
        if steps > MAX_PEAK_STEPS {
            return Err(ForecastError::InvalidQuery { reason: "more than a million steps" });
        }
        let mut peak = self.predict(to)?;
        for i in 0..=(steps as u64) {
            peak = peak.max(self.predict(from + i as f64 * step)?);
        }
        Ok(peak)
    }

    /// Forecast error on the held-out recent slice, as a WAPE: Σ|actual − forecast| / Σ|actual| (the mean
    /// absolute error divided by the mean load). Unlike a per-point MAPE it does not explode when some loads are
    /// near zero; 0.1 reads as "off by 10% of the typical load". If the holdout's loads are all zero, the
    /// whole history's mean |load| normalises instead. 0 for a constant series.
    pub fn holdout_error(&self) -> f64 {
        self.holdout_error
    }

    /// Robust standard deviation of the full fit's residuals (1.4826 × median absolute deviation), in load units.
    /// Spikes do not inflate it; provision `forecast + z × spread` for roughly the normal-quantile coverage of z
    /// (real residuals have heavier tails, so check z in the backtest).
    pub fn residual_spread(&self) -> f64 {
        self.spread
    }

    /// The expected spread (a robust standard deviation, load units) of the forecast's error `horizon_secs` ahead
    /// of the last sample. With a level correction, a forecast a few steps ahead is much better than the seasonal
    /// curve alone: its one-step errors are the smoothing's innovations, and for exponential smoothing the error
    /// `k` steps ahead grows as `σ · sqrt(1 + (k − 1)·α²)`. It never exceeds `residual_spread`, the error of the
    /// uncorrected curve, towards which the correction decays. Without a correction, `residual_spread`.
    pub fn spread_at(&self, horizon_secs: f64) -> f64 {
        match self.correction {
            Some(HorizonError { alpha, innovation_sigma, step_secs }) if step_secs > 0.0 => {
                let k = (horizon_secs / step_secs).max(1.0);
                (innovation_sigma * (1.0 + (k - 1.0) * alpha * alpha).sqrt()).min(self.spread)
            }
            _ => self.spread,
        }
    }

    /// The headroom to add to `peak` over a look-ahead of `horizon_secs` so that the highest load of the window
    /// stays at or below `peak + margin` with probability `coverage` (in (0, 1)): the split-conformal quantile
    /// (the ⌈(n + 1)·coverage⌉-th smallest) of the holdout's out-of-sample peak errors, each from a rolling
    /// origin (see `Calibration`). With too few errors for that rank, the largest error. Never negative: the
    /// margin is headroom above the model's own forecast. `None` when the holdout is shorter than the look-ahead.
    pub fn margin(&self, horizon_secs: f64, coverage: f64) -> Option<f64> {
        added_margin(&self.calibration.peak_windows(horizon_secs.max(0.0)), coverage)
    }

    /// The headroom that covers the look-ahead's highest load with probability `coverage`, calibrated on the
    /// holdout two ways from the same out-of-sample windows: added to the forecast peak ([`Model::margin`]), or
    /// multiplying it (the conformal quantile of actual over forecast peak). Both cover the same fraction of the
    /// holdout's windows; the one that provisioned less over them is returned, so the choice is made on the
    /// history's own cost at equal coverage. Errors that grow with the load (bursts a busy hour multiplies) make
    /// a constant margin too large when the load is low; errors that do not (noise of a fixed size) make a
    /// factor too large when it is high. `None` when the holdout is shorter than the look-ahead.
    pub fn headroom(&self, horizon_secs: f64, coverage: f64) -> Option<Calibrated> {
        let windows = self.calibration.peak_windows(horizon_secs.max(0.0));
        let (headroom, _) = cheapest_headroom(&windows, coverage)?;
        Some(Calibrated { headroom, windows: windows.len() })
    }

    /// Whether the forecast earns its place: on the holdout's out-of-sample look-aheads, the load it provisions
    /// for at `coverage` (its peak raised by its own calibrated headroom) against what "the load now" raised by
    /// *its* calibrated headroom provisions for the same coverage. That naive forecast is what a reactive rule
    /// provisions from, so a forecast that needs more capacity than it to cover the same share of peaks adds
    /// cost and no protection. The windows overlap (one starts every sample), so the mean difference is judged
    /// against its standard error over the independent windows they amount to (one per look-ahead's worth of
    /// samples), and the forecast is `worse` only beyond [`SKILL_SIGMAS`] of it: a short holdout or a small
    /// difference keeps the forecast. `None` when the holdout is shorter than the look-ahead.
    pub fn skill(&self, horizon_secs: f64, coverage: f64) -> Option<Skill> {
        let horizon = horizon_secs.max(0.0);
        let windows = self.calibration.windows(horizon);
        let pairs = |f: fn(&Window) -> f64| windows.iter().map(|w| (w.actual, f(w))).collect::<Vec<_>>();
        let (headroom, forecast) = cheapest_headroom(&pairs(|w| w.forecast), coverage)?;
        let (_, naive) = cheapest_headroom(&pairs(|w| w.now), coverage)?;
        let n = windows.len();
        let (sum_forecast, sum_naive) = (forecast.iter().sum::<f64>(), naive.iter().sum::<f64>());
        let differences: Vec<f64> = forecast.iter().zip(&naive).map(|(f, n)| f - n).collect();
        let mean = differences.iter().sum::<f64>() / n as f64;
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        let spacing = median_spacing(&self.calibration.times);
        let per_window = if spacing > 0.0 { (horizon / spacing).max(1.0) } else { 1.0 };
        let independent = (n as f64 / per_window).max(1.0);
        let standard_error = (variance / independent).sqrt();
        Some(Skill {
            saving: if sum_naive > 0.0 { 1.0 - sum_forecast / sum_naive } else { 0.0 },
            windows: n,
            independent,
            worse: independent >= 2.0 && mean > SKILL_SIGMAS * standard_error,
            calibrated: Calibrated { headroom, windows: n },
        })
    }

    /// Every period the model repeats, in seconds, shortest first: a day and a week when their Fourier terms were
    /// fitted, and each short period `Seasonality::Auto` found.
    pub fn periods(&self) -> Vec<f64> {
        let mut periods: Vec<f64> = self.curve.profiles.iter().map(|p| p.period).collect();
        let terms = self.curve.terms;
        if terms.daily > 0 {
            periods.push(features::DAY);
        }
        if terms.weekly > 0 || terms.interact > 0 {
            periods.push(features::WEEK);
        }
        periods.sort_by(f64::total_cmp);
        periods
    }

    /// The cycles and short periods this model was fitted with (before dropping terms the history could not
    /// identify): what [`refit`] reuses instead of detecting periods again.
    pub fn structure(&self) -> &Structure {
        &self.structure
    }

    /// Number of usable (finite) samples the model was fitted on.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Time of the last usable sample (unix seconds): "now" as far as the model knows.
    pub fn fitted_at(&self) -> f64 {
        self.curve.t_ref
    }

    /// The cycles actually fitted, after dropping those the history could not identify.
    pub fn seasonality(&self) -> Seasonality {
        let terms = self.curve.terms;
        Seasonality::of(terms.daily > 0, terms.weekly > 0 || terms.interact > 0)
    }
}

/// The fitted function of time.
#[derive(Debug, Clone, PartialEq)]
struct Curve {
    terms: Terms,
    coef: Vec<f64>,
    /// The last training sample's time; the trend's origin and the level correction's start.
    t_ref: f64,
    /// Recent level offset and its decay time constant.
    level: Option<(f64, f64)>,
    /// Lowest value a forecast may take (0 for non-negative histories).
    floor: f64,
    /// Short periods' phase-bin profiles, added to the regression.
    profiles: Vec<periods::Profile>,
}

impl Curve {
    fn value(&self, t: f64) -> f64 {
        let mut value = self.seasonal(t);
        if let Some((offset, tau)) = self.level {
            value += offset * (-(t - self.t_ref).max(0.0) / tau).exp();
        }
        value.max(self.floor)
    }

    /// The regression and the profiles, without the level correction and the floor.
    fn seasonal(&self, t: f64) -> f64 {
        let mut row = [0.0; 2 + 2 * (MAX_DAILY_HARMONICS + MAX_WEEKLY_HARMONICS) + 4 * MAX_DAILY_HARMONICS];
        let row = &mut row[..self.terms.len()];
        self.terms.write_row(t, self.t_ref, row);
        let value: f64 = row.iter().zip(&self.coef).map(|(x, c)| x * c).sum();
        value + self.profiles.iter().map(|p| p.value(t)).sum::<f64>()
    }
}

/// Fits a forecast model to `samples` of `(unix seconds, value)`.
///
/// Samples with a non-finite time or value are dropped. Samples need not be sorted (they are sorted by time
/// here, stably, so duplicates keep their order); duplicate times are kept, each as an observation. Returns
/// `Abstain` with fewer than `cfg.min_samples` usable samples or a holdout error above `cfg.max_holdout_error`,
/// `InvalidConfig` for an out-of-range configuration. A constant series yields exactly that constant.
pub fn fit(samples: &[(f64, f64)], cfg: &ForecastConfig) -> Result<Model, ForecastError> {
    fit_with(samples, cfg, None)
}

/// [`fit`] with the structure (the cycles and short periods to model) of an earlier model, typically
/// [`Model::structure`] of the previous fit: the coefficients, the level correction and the calibration are
/// fitted afresh on `samples`, but the periods are not detected again. Detection (a periodogram and its tests)
/// costs far more than the regression, and the periods a workload repeats change over days, not between two
/// refits minutes apart; the caller decides when to detect again (see `Predictor`).
pub fn refit(samples: &[(f64, f64)], cfg: &ForecastConfig, structure: &Structure) -> Result<Model, ForecastError> {
    fit_with(samples, cfg, Some(structure))
}

fn fit_with(samples: &[(f64, f64)], cfg: &ForecastConfig, known: Option<&Structure>) -> Result<Model, ForecastError> {
    cfg.validate()?;
    let mut clean: Vec<(f64, f64)> = samples.iter().copied().filter(|(t, v)| t.is_finite() && v.is_finite()).collect();
    if clean.len() < cfg.min_samples {
        return Err(ForecastError::Abstain {
            reason: AbstainReason::TooFewSamples { usable: clean.len(), required: cfg.min_samples },
        });
    }
    if !clean.is_sorted_by(|a, b| a.0 <= b.0) {
        clean.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let (times, values): (Vec<f64>, Vec<f64>) = clean.into_iter().unzip();
    let n = times.len();
    let floor = if values.iter().all(|&v| v >= 0.0) { 0.0 } else { f64::NEG_INFINITY };
    let mean_abs = values.iter().map(|v| v.abs()).sum::<f64>() / n as f64;

    let structure = match known {
        Some(known) => known.clone(),
        None => Structure::resolve(&times, &values, cfg),
    };
    let train = n - holdout_len(&times, &cfg.holdout);
    let (probe, _, probe_correction) = fit_curve(&times[..train], &values[..train], cfg, &structure, floor)?;
    let holdout_error = wape(&probe, &times[train..], &values[train..], mean_abs);

    if let Some(bound) = cfg.max_holdout_error
        && holdout_error > bound
    {
        return Err(ForecastError::Abstain { reason: AbstainReason::PoorFit { holdout_error, bound } });
    }
    let calibration = calibrate(&probe, probe_correction, &times[train - 1..], &values[train - 1..]);
    let (curve, spread, correction) = fit_curve(&times, &values, cfg, &structure, floor)?;
    Ok(Model { curve, holdout_error, spread, samples: n, correction, calibration, structure })
}

/// The model's structure: which cycles and short periods it models. Decided once per [`fit`] from the whole
/// history, so the holdout fit and the full fit have the same shape; [`refit`] reuses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Structure {
    seasonality: Seasonality,
    /// Short periods (seconds) for phase-bin profiles.
    short: Vec<f64>,
}

impl Structure {
    fn resolve(times: &[f64], values: &[f64], cfg: &ForecastConfig) -> Structure {
        if cfg.seasonality != Seasonality::Auto {
            return Structure { seasonality: cfg.seasonality, short: Vec::new() };
        }
        let found = periods::detect(times, values);
        let span = times.last().copied().unwrap_or(0.0) - times.first().copied().unwrap_or(0.0);
        // A daily cycle needs two days to be tested; until then assume it, as a fixed `Daily` would (its terms
        // are still dropped when the history cannot identify them).
        let daily = found.daily || span < 2.0 * features::DAY;
        Structure { seasonality: Seasonality::of(daily, found.weekly), short: found.short }
    }
}

/// Runs the probe's level correction forward over the holdout (`times[0]` is the last training sample), one
/// sample at a time, with the smoothing weight the probe chose on its training data: what a forecaster fitted at
/// the start of the holdout and fed each new sample as it arrived would have forecast from each origin.
fn calibrate(probe: &Curve, correction: Option<HorizonError>, times: &[f64], values: &[f64]) -> Calibration {
    let base: Vec<f64> = times.iter().map(|&t| probe.seasonal(t)).collect();
    let tau = probe.level.map(|(_, tau)| tau);
    let mut levels = Vec::with_capacity(times.len());
    let mut level = probe.level.map_or(0.0, |(offset, _)| offset);
    levels.push(level);
    for i in 1..times.len() {
        match (tau, correction) {
            (Some(tau), Some(c)) => {
                let decay = (-(times[i] - times[i - 1]) / tau).exp();
                let innovation = (values[i] - base[i]) - decay * level;
                level = decay * level + c.alpha * innovation;
            }
            _ => level = 0.0,
        }
        levels.push(level);
    }
    Calibration { times: times.to_vec(), values: values.to_vec(), base, levels, tau, floor: probe.floor }
}

/// Number of most recent samples to hold out; leaves at least `MIN_TRAINING` (guaranteed by `validate`).
fn holdout_len(times: &[f64], holdout: &Holdout) -> usize {
    let n = times.len();
    let Some(&last) = times.last() else { return 0 };
    let by_fraction = (holdout.fraction * n as f64).ceil() as usize;
    let by_span = times.iter().rev().take_while(|&&t| t > last - holdout.max_span_secs).count();
    by_fraction.min(by_span).max(holdout.min_points).min(n.saturating_sub(MIN_TRAINING))
}

/// Fits the curve to sorted, finite, non-empty samples; returns it with the residual spread. Drops terms until
/// the solve succeeds (a rank-deficient design that slipped past `identifiable`).
fn fit_curve(
    times: &[f64],
    values: &[f64],
    cfg: &ForecastConfig,
    structure: &Structure,
    floor: f64,
) -> Result<(Curve, f64, Option<HorizonError>), ForecastError> {
    let t_ref = times.last().copied().unwrap_or(0.0);
    let first = values.first().copied().unwrap_or(0.0);
    if values.iter().all(|&v| v == first) {
        let curve = Curve { terms: Terms::LEVEL, coef: vec![first], t_ref, level: None, floor, profiles: Vec::new() };
        return Ok((curve, 0.0, None));
    }
    let mut terms = features::identifiable(times, cfg.wanted_terms(structure.seasonality));
    let fit = loop {
        let x = terms.design_matrix(times, t_ref);
        match regression::robust_fit(&x, values, cfg.outlier_k) {
            Ok(fit) => break fit,
            Err(source) => match terms.shrink() {
                Some(smaller) => terms = smaller,
                None => return Err(ForecastError::Solve { source }),
            },
        }
    };
    let step_secs = median_spacing(times);
    // Each short period's profile is fitted to what the regression (and the profiles before it) left.
    let mut residuals = fit.residuals;
    let mut profiles = Vec::with_capacity(structure.short.len());
    for &period in &structure.short {
        let profile = periods::Profile::fit(times, &residuals, period, step_secs);
        for (r, &t) in residuals.iter_mut().zip(times) {
            *r -= profile.value(t);
        }
        profiles.push(profile);
    }
    let sigma = if profiles.is_empty() { fit.sigma } else { regression::robust_sigma(&residuals) };
    let correction =
        cfg.level_correction.and_then(|tau| level::correction(times, &residuals, tau, cfg.outlier_k).map(|c| (c, tau)));
    let level = cfg.level_correction.map(|tau| (correction.map_or(0.0, |(c, _)| c.offset), tau));
    let horizon =
        correction.map(|(c, _)| HorizonError { alpha: c.alpha, innovation_sigma: c.innovation_sigma, step_secs });
    let curve = Curve { terms, coef: fit.coef, t_ref, level, floor, profiles };
    Ok((curve, sigma, horizon))
}

/// The median spacing of sorted times (0 with fewer than two).
fn median_spacing(times: &[f64]) -> f64 {
    let mut gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    if gaps.is_empty() {
        return 0.0;
    }
    let mid = gaps.len() / 2;
    *gaps.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// Σ|actual − forecast| / Σ|actual|, falling back to `fallback_level` per point when the actuals are all zero.
fn wape(curve: &Curve, times: &[f64], values: &[f64], fallback_level: f64) -> f64 {
    let abs_error: f64 = times.iter().zip(values).map(|(&t, &v)| (v - curve.value(t)).abs()).sum();
    let mut scale: f64 = values.iter().map(|v| v.abs()).sum();
    if scale == 0.0 {
        scale = fallback_level * values.len() as f64;
    }
    if abs_error == 0.0 {
        0.0
    } else if scale > 0.0 && (abs_error / scale).is_finite() {
        abs_error / scale
    } else {
        f64::INFINITY
    }
}
