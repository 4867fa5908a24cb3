//! The predictive policy's forecaster: history of the load metric in, the engine's `Forecast` out.
//!
//! The controller (history from a Prometheus range query) and the backtest (the replayed trace's past) call the
//! same `Predictor`, so the backtest measures what the controller would do. The model is `forecast::fit`
//! (trend plus the periods the history shows, or the cycles the rule names); it is refitted at most once per
//! `step` (the resolution of its history, so a refit more often could only see the same samples) and
//! evaluated from the cache in between.
//!
//! With `seasonality: Auto` the periods the history repeats are detected at most once per
//! [`REDETECT_AFTER_SECS`] (and whenever the history has grown by a tenth since, as it does while it fills up);
//! the refits in between keep those periods and refit everything else (`forecast::refit`).
//!
//! The peak the engine provisions for is the model's highest forecast over `[now, now + lookahead]` (the rule's
//! look-ahead covers its start-up delay plus one interval) raised by a calibrated headroom: the rule's `coverage`
//! quantile of the forecast's own out-of-sample peak errors over that look-ahead, added to the peak or as a
//! factor of it, whichever provisioned less over the holdout (`Model::headroom`). Only when
//! the holdout is too short to measure any (it is shorter than the look-ahead) does the margin fall back to
//! `MARGIN_SPREADS` robust standard deviations of the forecast's error at the look-ahead.
//!
//! A forecast must also earn its place (`Model::skill`): if on the holdout's look-aheads it needed clearly more
//! capacity than "the load now" with its own calibrated headroom for the same coverage (what a reactive rule
//! provisions from), it abstains until the next refit and says so, and the reactive rules decide alone.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher, RandomState},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use jiff::Timestamp;

use crate::{
    engine::{
        Forecast, ForecastDetail, Sample,
        policy::{PredictiveRule, SeasonalitySpec},
    },
    forecast::{self, Calibrated, ForecastConfig, ForecastError, Headroom, Model, Seasonality, Structure},
};

/// The fallback margin when no out-of-sample error could be measured, in residual spreads (a robust standard deviation). The forecast is a mean; provisioning
/// for it would leave every point above the mean short, and under-provisioning costs dropped requests while
/// over-provisioning costs a few pods. Two spreads cover one point with about 97.7 % one-sided probability
/// for normal residuals; the look-ahead holds a few strongly correlated points, so the window's own maximum
/// is covered about 93-97 % of the time. Heavier-tailed surprises are left to the reactive rules, which the
/// forecast never lowers. (Not tuned on a trace.)
pub const MARGIN_SPREADS: f64 = 2.0;

/// How long the periods found by `seasonality: Auto` are kept before the history is searched again: a day.
/// The rhythms of a workload (its daily peak, an hourly job) change over days with deploys and seasons, not
/// between two refits minutes apart, while detection costs a periodogram and its tests, many times the
/// regression; once a day finds a new rhythm within a day, at 1/288 of the cost at a 5-minute step.
pub const REDETECT_AFTER_SECS: i64 = 86_400;

/// While the history is still filling up, each longer span can make more periods testable (a period needs two
/// cycles): detect again once the span has grown by this fraction since the last detection.
const REDETECT_GROWTH: f64 = 0.1;

/// Builds forecasts for one predictive rule, caching the fitted model between refits.
#[derive(Clone, Debug)]
pub struct Predictor {
    rule: PredictiveRule,
    config: ForecastConfig,
    /// The last fit, and when it was made.
    fitted: Option<(Timestamp, Fit)>,
    /// The last period detection: when, over how long a history (seconds), and what it found.
    detected: Option<(Timestamp, f64, Structure)>,
    /// How many period detections this predictor ran.
    detections: u64,
    /// Fits shared with other predictors (see [`FitCache`]), and what of this predictor's settings a fit depends
    /// on, as text.
    shared: Option<(FitCache, String)>,
}

/// The period detection a predictor remembers: when, over how long a history (seconds), and what it found.
type Detected = (Timestamp, f64, Structure);

#[derive(Clone, Debug)]
enum Fit {
    /// A model, and its calibrated headroom over the rule's look-ahead with the number of windows behind it (the
    /// same for every forecast from this model, so computed once per fit).
    Model { model: Arc<Model>, calibrated: Option<Calibrated> },
    Abstain {
        reason: String,
        samples: usize,
        /// The periods of a fitted model that is not used.
        periods: Vec<f64>,
    },
}

impl Predictor {
    pub fn new(rule: &PredictiveRule) -> Self {
        let defaults = ForecastConfig::default();
        // forecast::fit needs a few samples beyond its holdout; the rule's floor (at least 3) may be lower.
        let min_samples = rule.min_samples.max(defaults.holdout.min_points + 3);
        let seasonality = match rule.seasonality {
            SeasonalitySpec::Auto => Seasonality::Auto,
            SeasonalitySpec::None => Seasonality::None,
            SeasonalitySpec::Daily => Seasonality::Daily,
            SeasonalitySpec::Weekly => Seasonality::Weekly,
            SeasonalitySpec::DailyWeekly => Seasonality::DailyWeekly,
        };
        Predictor {
            rule: rule.clone(),
            config: ForecastConfig { min_samples, seasonality, ..defaults },
            fitted: None,
            detected: None,
            detections: 0,
            shared: None,
        }
    }

    /// This predictor with its fits shared through `cache`: a fit another predictor of the cache already made
    /// from the same inputs (the same history up to `now`, the same settings, the same remembered period
    /// detection) is taken from it instead of being made again. Forecasts are exactly those of a predictor
    /// without the cache. The backtest's sweep shares the fits of a policy's runs at every headroom: the forecast
    /// metric is the offered load, which does not depend on the replicas each run chose.
    pub fn shared(mut self, cache: FitCache) -> Self {
        // Every setting a fit reads, as text (Debug prints every field, and f64s exactly): the rule except
        // capacityPerReplica, which turns the forecast into replicas afterwards (engine::predictive), never
        // enters the fit, and is what a sweep varies.
        let rule = PredictiveRule { capacity_per_replica: 0.0, ..self.rule.clone() };
        let settings = format!("{rule:?} {:?}", self.config);
        self.shared = Some((cache, settings));
        self
    }

    /// The rule this predictor forecasts for.
    pub fn rule(&self) -> &PredictiveRule {
        &self.rule
    }

    /// How many times this predictor searched its history for periods (`seasonality: Auto` only).
    pub fn detections(&self) -> u64 {
        self.detections
    }

    /// Whether the next `forecast` at `now` refits, i.e. needs the history. Between refits the cached model
    /// answers and the caller can skip reading history (a week of samples) altogether.
    pub fn due(&self, now: Timestamp) -> bool {
        match &self.fitted {
            None => true,
            Some((at, _)) => now < *at || duration(*at, now) >= self.rule.step,
        }
    }

    /// The forecast at `now` from `history` (the forecast metric at the rule's step, oldest first). Samples
    /// after `now` or older than the rule's history are ignored.
    pub fn forecast(&mut self, history: &[Sample], now: Timestamp) -> Forecast {
        if self.due(now) {
            let fit = self.refit(history, now);
            self.fitted = Some((now, fit));
        }
        match &self.fitted {
            Some((_, Fit::Model { model, calibrated })) => self.peak(model, *calibrated, now),
            Some((_, Fit::Abstain { reason, samples, periods })) => {
                Forecast::Abstain { reason: reason.clone(), samples: *samples, periods: periods.clone() }
            }
            None => Forecast::Abstain { reason: "no forecast yet".into(), samples: 0, periods: Vec::new() },
        }
    }

    /// A new fit at `now`, made here or taken from the shared cache; updates the remembered period detection.
    fn refit(&mut self, history: &[Sample], now: Timestamp) -> Fit {
        let since = now.as_second().saturating_sub(self.rule.history.as_secs() as i64);
        // Built per refit, not kept: a week at 5 minutes is 32 KiB, more than three times what the fitted model keeps,
        // and the fit allocates more than that anyway.
        let points: Vec<(f64, f64)> = history
            .iter()
            .filter(|s| s.time <= now && s.time.as_second() >= since && s.value.is_finite())
            .map(|s| (seconds(s.time), s.value))
            .collect();
        let outcome = match &self.shared {
            Some((cache, settings)) => {
                let key = cache.key(settings, now, self.detected.as_ref(), &points);
                cache.get_or_fit(key, || fit(&self.rule, &self.config, self.detected.as_ref(), &points, now))
            }
            None => Arc::new(fit(&self.rule, &self.config, self.detected.as_ref(), &points, now)),
        };
        if outcome.detected {
            self.detections += 1;
        }
        if let Some(detected) = &outcome.detection {
            self.detected = Some(detected.clone());
        }
        outcome.fit.clone()
    }

    fn peak(&self, model: &Model, calibrated: Option<Calibrated>, now: Timestamp) -> Forecast {
        let from = seconds(now);
        let to = from + self.rule.lookahead.as_secs_f64();
        let step = self.rule.step.as_secs_f64().max(1.0);
        let coverage = self.rule.coverage * 100.0;
        let (headroom, margin_basis) = match calibrated {
            Some(Calibrated { headroom: headroom @ Headroom::Add(_), windows }) => {
                (headroom, format!("{coverage:.1}% quantile of {windows} out-of-sample peak errors"))
            }
            Some(Calibrated { headroom: headroom @ Headroom::Scale(factor), windows }) => {
                (headroom, format!("×{factor:.2}, the {coverage:.1}% quantile of {windows} out-of-sample peak ratios"))
            }
            // No out-of-sample look-ahead to calibrate on: the holdout is shorter than the look-ahead, or the
            // look-ahead is shorter than the history's step, so none fits between two samples.
            None => {
                let why = if self.rule.lookahead < self.rule.step {
                    format!(
                        "the look-ahead is shorter than the {} step: no holdout window to calibrate on",
                        crate::engine::format::duration(self.rule.step)
                    )
                } else {
                    "holdout shorter than the look-ahead".to_string()
                };
                (
                    Headroom::Add(MARGIN_SPREADS * model.spread_at(to - model.fitted_at())),
                    format!("{MARGIN_SPREADS} spreads ({why})"),
                )
            }
        };
        match model.peak(from, to, step) {
            Ok(peak) => {
                let provisioned = headroom.apply(peak);
                Forecast::Ready {
                    peak: provisioned,
                    samples: model.samples(),
                    error: model.holdout_error(),
                    detail: ForecastDetail { periods: model.periods(), margin: provisioned - peak, margin_basis },
                }
            }
            Err(e) => Forecast::Abstain { reason: e.to_string(), samples: model.samples(), periods: model.periods() },
        }
    }
}

/// What one refit produced: the fit, and the period detection to remember from it.
#[derive(Debug)]
struct Outcome {
    fit: Fit,
    /// Whether the periods were searched for (`seasonality: Auto`, none remembered or too old).
    detected: bool,
    /// The detection to remember from now on (`None`: keep the one remembered).
    detection: Option<Detected>,
}

/// The fit at `now` to `points` (the history's usable samples, oldest first) for a rule and its configuration,
/// given the period detection remembered so far. Depends on nothing else, which is what lets [`FitCache`]
/// share it.
fn fit(
    rule: &PredictiveRule,
    config: &ForecastConfig,
    remembered: Option<&Detected>,
    points: &[(f64, f64)],
    now: Timestamp,
) -> Outcome {
    let samples = points.len();
    let abstain = |reason: String| Outcome {
        fit: Fit::Abstain { reason, samples, periods: Vec::new() },
        detected: false,
        detection: None,
    };
    if samples < config.min_samples {
        return abstain(format!(
            "{samples} samples of {} in the history, {} needed to forecast",
            rule.metric, config.min_samples
        ));
    }
    let span = match (points.first(), points.last()) {
        (Some(first), Some(last)) => last.0 - first.0,
        _ => 0.0,
    };
    let known = match remembered {
        Some((at, detected_span, structure))
            if config.seasonality == Seasonality::Auto
                && *at <= now
                && now.as_second() - at.as_second() < REDETECT_AFTER_SECS
                && span <= detected_span * (1.0 + REDETECT_GROWTH) =>
        {
            Some(structure)
        }
        _ => None,
    };
    let (result, detected) = match known {
        Some(structure) => (forecast::refit(points, config, structure), false),
        None => (forecast::fit(points, config), config.seasonality == Seasonality::Auto),
    };
    let detection = match (&result, known) {
        (Ok(model), None) => Some((now, span, model.structure().clone())),
        _ => None,
    };
    let fit = match result {
        Ok(model) => {
            let lookahead = rule.lookahead.as_secs_f64();
            // The skill test calibrates the forecast's headroom on the same windows: used as it is.
            match model.skill(lookahead, rule.coverage) {
                Some(skill) if skill.worse => Fit::Abstain {
                    reason: format!(
                        "on {} recent look-aheads the forecast needed {:.0}% more capacity than the load at the time \
                         for the same {:.1}% coverage: the reactive rules decide",
                        skill.windows,
                        -100.0 * skill.saving,
                        rule.coverage * 100.0
                    ),
                    samples,
                    periods: model.periods(),
                },
                skill => Fit::Model { calibrated: skill.map(|s| s.calibrated), model: Arc::new(model) },
            }
        }
        Err(ForecastError::Abstain { reason }) => {
            Fit::Abstain { reason: reason.to_string(), samples, periods: Vec::new() }
        }
        Err(e) => Fit::Abstain { reason: e.to_string(), samples, periods: Vec::new() },
    };
    Outcome { fit, detected, detection }
}

/// Fits shared by several predictors that see the same history, such as a policy's runs at every headroom in a
/// backtest sweep (the forecast metric is the offered load, whichever replicas a run chose). A fit is keyed by
/// everything it depends on: the predictor's settings (the rule but for `capacityPerReplica`, and the fit's
/// configuration), `now`, the period detection the predictor remembers, and every sample's time and value
/// (128 bits of two independently keyed SipHashes; a collision is as likely as guessing a random 128-bit
/// number). The first predictor to need a fit makes it while the others that need it wait, so it is made
/// once; once `sharers` predictors have taken it, it is dropped, so the cache holds only the fits some sharer
/// has still to reach.
///
/// Clones share one cache. A predictor whose inputs differ from the others' (a metric that depends on the
/// replicas, such as CPU) gets its own fits, correctly, but they stay in the cache until the end: share only
/// what the sharers will all see.
#[derive(Clone, Debug)]
pub struct FitCache {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    sharers: usize,
    hashers: (RandomState, RandomState),
    slots: Mutex<HashMap<u128, Slot>>,
    made: std::sync::atomic::AtomicU64,
    taken: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Slot {
    outcome: Arc<OnceLock<Arc<Outcome>>>,
    /// Sharers that have not taken it yet.
    remaining: usize,
}

impl FitCache {
    /// A cache for `sharers` predictors (each fit is dropped once that many have taken it).
    pub fn new(sharers: usize) -> Self {
        FitCache {
            inner: Arc::new(Shared {
                sharers: sharers.max(1),
                hashers: (RandomState::new(), RandomState::new()),
                slots: Mutex::new(HashMap::new()),
                made: 0.into(),
                taken: 0.into(),
            }),
        }
    }

    /// How many fits were made, and how many times one was taken (made or reused).
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.inner.made.load(Relaxed), self.inner.taken.load(Relaxed))
    }

    fn key(&self, settings: &str, now: Timestamp, remembered: Option<&Detected>, points: &[(f64, f64)]) -> u128 {
        let hash = |state: &RandomState| {
            let mut h = state.build_hasher();
            h.write(settings.as_bytes());
            h.write_i64(now.as_second());
            h.write_i32(now.subsec_nanosecond());
            match remembered {
                Some((at, span, structure)) => {
                    h.write_u8(1);
                    h.write_i64(at.as_second());
                    h.write_i32(at.subsec_nanosecond());
                    h.write_u64(span.to_bits());
                    h.write(format!("{structure:?}").as_bytes());
                }
                None => h.write_u8(0),
            }
            h.write_usize(points.len());
            for (t, v) in points {
                h.write_u64(t.to_bits());
                h.write_u64(v.to_bits());
            }
            h.finish()
        };
        (u128::from(hash(&self.inner.hashers.0)) << 64) | u128::from(hash(&self.inner.hashers.1))
    }

    /// The fit under `key`, made by `make` if no sharer has made it yet.
    fn get_or_fit(&self, key: u128, make: impl FnOnce() -> Outcome) -> Arc<Outcome> {
        use std::sync::atomic::Ordering::Relaxed;
        let cell = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots
                .entry(key)
                .or_insert_with(|| Slot { outcome: Arc::new(OnceLock::new()), remaining: self.inner.sharers });
            slot.remaining = slot.remaining.saturating_sub(1);
            let cell = Arc::clone(&slot.outcome);
            if slot.remaining == 0 {
                slots.remove(&key);
            }
            cell
        };
        self.inner.taken.fetch_add(1, Relaxed);
        Arc::clone(cell.get_or_init(|| {
            self.inner.made.fetch_add(1, Relaxed);
            Arc::new(make())
        }))
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_second() as f64 + f64::from(t.subsec_nanosecond()) * 1e-9
}

fn duration(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::policy::{PredictiveMode, PredictiveRule, SeasonalitySpec};

    const DAY: i64 = 86_400;
    const STEP: i64 = 300;

    pub(super) fn rule() -> PredictiveRule {
        PredictiveRule {
            metric: "rps".into(),
            capacity_per_replica: 100.0,
            lookahead: Duration::from_secs(900),
            history: Duration::from_secs(7 * DAY as u64),
            step: Duration::from_secs(STEP as u64),
            seasonality: SeasonalitySpec::Daily,
            min_samples: 10,
            max_error: 0.5,
            mode: PredictiveMode::Scale,
            coverage: 0.95,
            startup_delay: None,
        }
    }

    /// Pseudo-random noise in [-0.5, 0.5), a fixed function of the second `s` (a splitmix-style hash).
    pub(super) fn noise(s: i64) -> f64 {
        let mut x = (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    pub(super) fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_006_400 + secs).unwrap()
    }

    /// 100 + 50 sin(2π t / day), every 5 minutes over [from, to].
    fn daily(from: i64, to: i64) -> Vec<Sample> {
        (from / STEP..=to / STEP)
            .map(|i| {
                let s = i * STEP;
                let phase = std::f64::consts::TAU * s as f64 / DAY as f64;
                Sample::new(t(s), 100.0 + 50.0 * phase.sin())
            })
            .collect()
    }

    #[test]
    fn a_look_ahead_shorter_than_the_step_says_why_its_margin_is_not_calibrated() {
        // A week of a daily cycle at 5-minute samples: a 15-minute look-ahead is calibrated on the holdout, a
        // 75-second one cannot be (no window fits between two samples) and says so instead of blaming the holdout.
        let history = daily(0, 7 * DAY);
        let basis = |lookahead: u64| {
            let mut p = Predictor::new(&PredictiveRule { lookahead: Duration::from_secs(lookahead), ..rule() });
            match p.forecast(&history, t(7 * DAY)) {
                Forecast::Ready { detail, .. } => detail.margin_basis,
                other => panic!("{other:?}"),
            }
        };
        assert!(basis(900).contains("out-of-sample peak"), "{}", basis(900));
        let short = basis(75);
        assert!(short.contains("the look-ahead is shorter than the 5m step"), "{short}");
        assert!(!short.contains("holdout shorter"), "{short}");
    }

    #[test]
    fn abstains_with_too_few_samples_and_says_why() {
        let mut p = Predictor::new(&rule());
        match p.forecast(&daily(0, 4 * STEP), t(4 * STEP)) {
            Forecast::Abstain { reason, samples, .. } => {
                assert_eq!(samples, 5);
                assert!(reason.contains("5 samples") && reason.contains("10 needed"), "{reason}");
            }
            other => panic!("expected an abstention, got {other:?}"),
        }
    }

    #[test]
    fn forecasts_the_coming_peak_of_a_daily_cycle() {
        // Three days of history; at 05:00 the load is rising towards its 06:00 peak of 150 (sin peaks at a
        // quarter day). The look-ahead (15 min) ends at 05:15: the peak to provision for is the value there.
        let now = 3 * DAY + 5 * 3600;
        let history = daily(0, now);
        let Forecast::Ready { peak, samples, error, .. } = Predictor::new(&rule()).forecast(&history, t(now)) else {
            panic!("expected a forecast")
        };
        let truth = 100.0 + 50.0 * (std::f64::consts::TAU * (now + 900) as f64 / DAY as f64).sin();
        assert!(peak >= truth - 1e-6, "peak {peak} below the coming load {truth}");
        assert!(peak <= truth + 5.0, "peak {peak} far above {truth} on a noiseless cycle");
        assert_eq!(samples, history.len());
        assert!(error < 0.05, "holdout error {error}");
    }

    /// A week of a daily cycle with noise; with `stops`, the cycle stops for the last 17 hours (a holiday, a
    /// migration): the load stays at its mean.
    fn cycle_that_stops(stops: bool) -> Vec<Sample> {
        let end = 7 * DAY;
        (0..=end / STEP)
            .map(|i| {
                let s = i * STEP;
                let phase = std::f64::consts::TAU * s as f64 / DAY as f64;
                let noise = 3.0 * ((s as f64 * 0.731).sin() + (s as f64 * 1.37).cos());
                let cycle = if stops && s > end - 17 * 3600 { 0.0 } else { 80.0 * phase.sin() };
                Sample::new(t(s), 200.0 + cycle + noise)
            })
            .collect()
    }

    #[test]
    fn a_forecast_worse_than_the_load_now_stands_aside_and_says_why() {
        let now = t(7 * DAY);
        // The cycle goes on: the forecast beats "the load now" and acts.
        let going_on = Predictor::new(&rule()).forecast(&cycle_that_stops(false), now);
        assert!(matches!(going_on, Forecast::Ready { .. }), "{going_on:?}");
        // The cycle stopped: on the recent look-aheads the model's shape is wrong and needs more headroom than the
        // flat load now does to cover the same 95 %. The reactive rules decide; the model's period is still shown.
        match Predictor::new(&rule()).forecast(&cycle_that_stops(true), now) {
            Forecast::Abstain { reason, periods, .. } => {
                assert!(reason.contains("more capacity than the load at the time"), "{reason}");
                assert!(reason.contains("95.0% coverage"), "{reason}");
                assert_eq!(periods, [DAY as f64]);
            }
            other => panic!("expected the forecast to stand aside, got {other:?}"),
        }
    }

    #[test]
    fn never_sees_the_future() {
        let now = 2 * DAY;
        let past = daily(0, now);
        let mut with_future = past.clone();
        with_future.extend(daily(now + STEP, now + DAY).into_iter().map(|s| Sample::new(s.time, 1e6)));
        let a = Predictor::new(&rule()).forecast(&past, t(now));
        let b = Predictor::new(&rule()).forecast(&with_future, t(now));
        assert_eq!(a, b);
    }

    #[test]
    fn refits_at_most_once_per_step() {
        let now = 2 * DAY;
        let mut p = Predictor::new(&rule());
        let first = p.forecast(&daily(0, now), t(now));
        // A level shift appended within the step is not seen until the next refit.
        let mut shifted = daily(0, now);
        shifted.push(Sample::new(t(now + 60), 1000.0));
        let cached = p.forecast(&shifted, t(now + 60));
        let Forecast::Ready { samples, .. } = cached else { panic!("expected a forecast") };
        assert_eq!(
            Some(samples),
            match first {
                Forecast::Ready { samples, .. } => Some(samples),
                _ => None,
            }
        );
        let refitted = p.forecast(&shifted, t(now + STEP));
        let Forecast::Ready { samples: n, .. } = refitted else { panic!("expected a forecast") };
        assert_eq!(n, samples + 1, "the refit sees the new sample");
    }
}

#[cfg(test)]
mod redetection {
    use std::time::Duration;

    use super::tests::t;
    use super::*;
    use crate::engine::policy::{PredictiveRule, SeasonalitySpec};

    const DAY: i64 = 86_400;
    const STEP: i64 = 900;
    const JOB: f64 = 3.0 * 3600.0;

    /// The other tests' rule with `seasonality: Auto`, 15-minute steps and `history_days` of history.
    fn auto_rule(history_days: u64) -> PredictiveRule {
        PredictiveRule {
            history: Duration::from_secs(history_days * DAY as u64),
            step: Duration::from_secs(STEP as u64),
            seasonality: SeasonalitySpec::Auto,
            ..super::tests::rule()
        }
    }

    /// A daily cycle, small pseudo-random noise, and from `spikes_from` on a 30-minute spike of +120 at the top
    /// of every 3 hours (a batch job).
    fn load(s: i64, spikes_from: i64) -> f64 {
        let phase = std::f64::consts::TAU * s as f64 / DAY as f64;
        let noise = super::tests::noise(s);
        let spike = if s >= spikes_from && s.rem_euclid(3 * 3600) < 1800 { 120.0 } else { 0.0 };
        200.0 + 80.0 * phase.sin() + 4.0 * noise + spike
    }

    /// Whether `periods` has one within 1 % of `period` (detected periods fall on the periodogram's frequencies).
    fn has(periods: &[f64], period: f64) -> bool {
        periods.iter().any(|p| (p / period - 1.0).abs() < 0.01)
    }

    fn history(to: i64, spikes_from: i64) -> Vec<Sample> {
        (0..=to / STEP).map(|i| Sample::new(t(i * STEP), load(i * STEP, spikes_from))).collect()
    }

    fn periods(f: &Forecast) -> Vec<f64> {
        match f {
            Forecast::Ready { detail, .. } => detail.periods.clone(),
            // A model fitted but not used (it forecast worse than the load now) still says what it found.
            Forecast::Abstain { periods, .. } if !periods.is_empty() => periods.clone(),
            other => panic!("expected a fitted model, got {other:?}"),
        }
    }

    #[test]
    fn periods_are_detected_once_a_day_and_kept_in_between() {
        let spikes = 0;
        let start = 7 * DAY;
        let mut p = Predictor::new(&auto_rule(7));
        let mut detected = Vec::new();
        for k in 0..=(DAY + 2 * 3600) / STEP {
            let now = start + k * STEP;
            let f = p.forecast(&history(now, spikes), t(now));
            detected.push(periods(&f));
        }
        // A full week of history: one detection at the start and one a day later, none in between.
        assert_eq!(p.detections(), 2, "detections over a day and two hours of 5-minute refits");
        assert!(detected.iter().all(|ps| has(ps, JOB)), "the 3-hour job kept: {:?}", detected[1]);
        assert!(detected.iter().all(|ps| has(ps, DAY as f64)), "the daily cycle kept");
    }

    #[test]
    fn a_cached_structure_refits_to_the_model_a_full_fit_makes() {
        let now = 7 * DAY;
        let samples: Vec<(f64, f64)> = history(now, 0).iter().map(|s| (s.time.as_second() as f64, s.value)).collect();
        let config = ForecastConfig { seasonality: Seasonality::Auto, ..ForecastConfig::default() };
        let full = forecast::fit(&samples, &config).expect("a model");
        let refitted = forecast::refit(&samples, &config, full.structure()).expect("a model");
        assert_eq!(refitted, full);
        // The next step's refit keeps the periods and sees the new sample.
        let mut later = samples.clone();
        later.push(((now + STEP) as f64, load(now + STEP, 0)));
        let next = forecast::refit(&later, &config, full.structure()).expect("a model");
        assert_eq!(next.periods(), full.periods());
        assert_eq!(next.samples(), full.samples() + 1);
    }

    #[test]
    fn a_rhythm_that_starts_is_found_within_a_day_of_when_detection_can_see_it() {
        // Two days of daily load; then a 3-hourly job starts. The detector needs the job in enough of the
        // history to tell it from noise; the cached predictor must find it at most a day (and a step) after a
        // fresh detection at every refit would.
        let starts = 2 * DAY;
        let rule = auto_rule(2);
        let fresh_finds = |now: i64| has(&periods(&Predictor::new(&rule).forecast(&history(now, starts), t(now))), JOB);
        assert!(!fresh_finds(starts), "no 3-hour period before the job starts");
        let visible = (1..=4 * 24)
            .map(|h| starts + h * 3600)
            .find(|&now| fresh_finds(now))
            .expect("a fresh detection finds the job within four days");
        let mut p = Predictor::new(&rule);
        let mut found = None;
        for k in 0..=(visible - starts + DAY + 3600) / STEP {
            let now = starts + k * STEP;
            if has(&periods(&p.forecast(&history(now, starts), t(now))), JOB) {
                found = Some(now);
                break;
            }
        }
        let found = found.expect("the cached predictor finds the job");
        assert!(found >= visible - 3600, "found at {found} before detection could see it at {visible}");
        assert!(found <= visible + DAY + STEP, "found {} s after detection could see it", found - visible);
    }
}

#[cfg(test)]
mod startup_delay {
    use super::*;
    use crate::{api::ScalingPolicySpec, engine::Policy, engine::predictive::required_replicas};

    fn rule(predictive_extra: &str) -> PredictiveRule {
        let yaml = format!(
            "targetRef: {{name: web}}\nmaxReplicas: 20\ninterval: 1m\nmetrics: [{{name: rps, requestRate: {{}}}}]\n\
             policies:\n  predictive: {{metric: rps, capacityPerReplica: 100, history: 3d, step: 1m{predictive_extra}}}\n"
        );
        let spec: ScalingPolicySpec = serde_saphyr::from_str(&yaml).expect("valid spec");
        Policy::try_from(&spec).expect("valid policy").predictive.expect("a predictive rule")
    }

    #[test]
    fn a_start_up_delay_provisions_for_the_spike_that_arrives_within_it() {
        let delayed = rule(", startupDelay: 25m");
        assert_eq!(delayed.lookahead, Duration::from_secs(26 * 60), "startupDelay + interval");
        assert_eq!(rule(", startupDelay: 25m, lookahead: 1h").lookahead, Duration::from_secs(3600));
        assert_eq!(rule(", startupDelay: 25m, lookahead: 5m").lookahead, Duration::from_secs(26 * 60));
        let plain = rule("");
        assert_eq!(plain.lookahead, Duration::from_secs(15 * 60));

        // 150 requests/s, and 450 for the first 5 minutes of every hour; "now" is 22 minutes before the next
        // spike: pods requested now are ready in 25 minutes, when the spike is on.
        let t = |s: i64| Timestamp::from_second(1_700_006_400 + s).expect("valid time");
        let load = |s: i64| if s.rem_euclid(3600) < 300 { 450.0 } else { 150.0 };
        let now = 3 * 86_400 - 22 * 60;
        let history: Vec<Sample> = (0..=now / 60).map(|i| Sample::new(t(i * 60), load(i * 60))).collect();
        let replicas = |rule: &PredictiveRule| match Predictor::new(rule).forecast(&history, t(now)) {
            Forecast::Ready { peak, .. } => required_replicas(rule, peak),
            other => panic!("expected a forecast, got {other:?}"),
        };
        assert!(replicas(&delayed) >= 5, "with startupDelay: {} replicas for a spike needing 5", replicas(&delayed));
        assert!(replicas(&plain) <= 2, "a 15-minute look-ahead does not see it: {}", replicas(&plain));
    }
}

#[cfg(test)]
mod sharing {
    use std::time::Duration;

    use super::tests::t;
    use super::*;
    use crate::engine::policy::{PredictiveRule, SeasonalitySpec};

    const DAY: i64 = 86_400;
    const STEP: i64 = 300;

    /// A daily cycle, pseudo-random noise and a 10-minute burst every 2 hours, scaled by `scale`.
    fn load(s: i64, scale: f64) -> f64 {
        let phase = std::f64::consts::TAU * s as f64 / DAY as f64;
        let noise = super::tests::noise(s);
        let burst = if s.rem_euclid(2 * 3600) < 600 { 60.0 } else { 0.0 };
        scale * (200.0 + 80.0 * phase.sin() + 30.0 * noise + burst)
    }

    fn history(to: i64, scale: f64) -> Vec<Sample> {
        (0..=to / STEP).map(|i| Sample::new(t(i * STEP), load(i * STEP, scale))).collect()
    }

    /// Two days of 5-minute history with `seasonality: Auto`, refitted at every step.
    fn rule() -> PredictiveRule {
        PredictiveRule {
            history: Duration::from_secs(2 * DAY as u64),
            seasonality: SeasonalitySpec::Auto,
            ..super::tests::rule()
        }
    }

    /// Each predictor's forecasts at every step over `steps` steps from day 2 (all predictors forecast at a
    /// step before any moves to the next, as runs side by side do), each seeing `history(now, scales[i])`.
    fn forecasts(rules: &[PredictiveRule], scales: &[f64], cache: Option<&FitCache>, steps: i64) -> Vec<Vec<Forecast>> {
        let mut predictors: Vec<Predictor> = rules
            .iter()
            .map(|r| match cache {
                Some(c) => Predictor::new(r).shared(c.clone()),
                None => Predictor::new(r),
            })
            .collect();
        let mut out = vec![Vec::new(); rules.len()];
        // Two hours past a day: one detection more (REDETECT_AFTER_SECS) is remembered state the key must see.
        for k in 0..steps {
            let now = 2 * DAY + k * STEP;
            for (i, p) in predictors.iter_mut().enumerate() {
                out[i].push(p.forecast(&history(now, scales[i]), t(now)));
            }
        }
        out
    }

    const STEPS: i64 = (DAY + 2 * 3600) / STEP;

    #[test]
    fn predictors_that_differ_only_in_capacity_share_every_fit_and_forecast_as_alone() {
        let rules = [rule(), PredictiveRule { capacity_per_replica: 250.0, ..rule() }, rule()];
        let cache = FitCache::new(rules.len());
        let shared = forecasts(&rules, &[1.0; 3], Some(&cache), STEPS);
        let alone = forecasts(&rules, &[1.0; 3], None, STEPS);
        assert_eq!(shared, alone);
        assert!(shared[0].iter().all(|f| matches!(f, Forecast::Ready { .. })), "forecasts, not abstentions");
        // One fit per step, taken by all three.
        assert_eq!(cache.stats(), (STEPS as u64, 3 * STEPS as u64));
        assert!(cache.inner.slots.lock().unwrap().is_empty(), "every fit dropped once all sharers took it");
    }

    #[test]
    fn a_setting_that_changes_the_forecast_is_never_shared() {
        let variants = [
            PredictiveRule { coverage: 0.6, ..rule() },
            PredictiveRule { lookahead: Duration::from_secs(3600), ..rule() },
            PredictiveRule { seasonality: SeasonalitySpec::Daily, ..rule() },
            PredictiveRule { history: Duration::from_secs(DAY as u64 + 7200), ..rule() },
            PredictiveRule { min_samples: 600, ..rule() },
        ];
        for variant in variants {
            let rules = [rule(), variant.clone()];
            let cache = FitCache::new(2);
            let shared = forecasts(&rules, &[1.0; 2], Some(&cache), 30);
            let alone = forecasts(&rules, &[1.0; 2], None, 30);
            assert_ne!(alone[0], alone[1], "{variant:?} changes the forecast");
            assert_eq!(shared, alone, "{variant:?}");
            assert_eq!(cache.stats().0, 60, "{variant:?}: nothing shared");
        }
    }

    #[test]
    fn a_different_history_is_never_shared() {
        // The same rule on different loads (as a forecast of CPU would see at different replica counts).
        let rules = [rule(), rule()];
        let cache = FitCache::new(2);
        let shared = forecasts(&rules, &[1.0, 1.5], Some(&cache), 30);
        let alone = forecasts(&rules, &[1.0, 1.5], None, 30);
        assert_ne!(alone[0], alone[1]);
        assert_eq!(shared, alone);
        assert_eq!(cache.stats().0, 60);
    }
}
