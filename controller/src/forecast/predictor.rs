//! The predictive policy's forecaster: history of the load metric in, the engine's `Forecast` out.
//!
//! The controller (history from a Prometheus range query) and the backtest (the replayed trace's past) call the
//! same `Predictor`, so the backtest measures what the controller would do. The model is `forecast::fit`
//! (trend plus the periods the history shows, or the cycles the rule names); it is refitted at most once per
//! `step` (the resolution of its history, so a refit more often could only see the same samples) and
//! evaluated from the cache in between.
//!
//! The peak the engine provisions for is the model's highest forecast over `[now, now + lookahead]` (the rule's
//! look-ahead covers its start-up delay plus one interval) plus a calibrated margin: the rule's `coverage`
//! quantile of the forecast's own out-of-sample peak errors over that look-ahead (`Model::margin`). Only when
//! the holdout is too short to measure any (it is shorter than the look-ahead) does the margin fall back to
//! `MARGIN_SPREADS` robust standard deviations of the forecast's error at the look-ahead.

use std::time::Duration;

use jiff::Timestamp;

use crate::{
    engine::{
        Forecast, ForecastDetail, Sample,
        policy::{PredictiveRule, SeasonalitySpec},
    },
    forecast::{self, ForecastConfig, ForecastError, Model, Seasonality},
};

/// The fallback margin when no out-of-sample error could be measured, in residual spreads (a robust standard deviation). The forecast is a mean; provisioning
/// for it would leave every point above the mean short, and under-provisioning costs dropped requests while
/// over-provisioning costs a few pods. Two spreads cover one point with about 97.7 % one-sided probability
/// for normal residuals; the look-ahead holds a few strongly correlated points, so the window's own maximum
/// is covered about 93-97 % of the time. Heavier-tailed surprises are left to the reactive rules, which the
/// forecast never lowers. (Not tuned on a trace.)
pub const MARGIN_SPREADS: f64 = 2.0;

/// Builds forecasts for one predictive rule, caching the fitted model between refits.
#[derive(Clone, Debug)]
pub struct Predictor {
    rule: PredictiveRule,
    config: ForecastConfig,
    /// The last fit, and when it was made.
    fitted: Option<(Timestamp, Fit)>,
    /// Reused buffer of (unix seconds, value) for the fit.
    buffer: Vec<(f64, f64)>,
}

#[derive(Clone, Debug)]
enum Fit {
    Model(Box<Model>),
    Abstain { reason: String, samples: usize },
}

impl Predictor {
    pub fn new(rule: &PredictiveRule) -> Self {
        let defaults = ForecastConfig::default();
        // forecast::fit needs a few samples beyond its holdout; the rule's floor (at least 3) may be lower.
        let min_samples = rule.min_samples.max(defaults.holdout.min_points + 3);
        Predictor {
            rule: rule.clone(),
            config: ForecastConfig { min_samples, ..defaults },
            fitted: None,
            buffer: Vec::new(),
        }
    }

    /// The rule this predictor forecasts for.
    pub fn rule(&self) -> &PredictiveRule {
        &self.rule
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
            let fit = self.fit(history, now);
            self.fitted = Some((now, fit));
        }
        match &self.fitted {
            Some((_, Fit::Model(model))) => self.peak(model, now),
            Some((_, Fit::Abstain { reason, samples })) => {
                Forecast::Abstain { reason: reason.clone(), samples: *samples }
            }
            None => Forecast::Abstain { reason: "no forecast yet".into(), samples: 0 },
        }
    }

    fn fit(&mut self, history: &[Sample], now: Timestamp) -> Fit {
        let since = now.as_second().saturating_sub(self.rule.history.as_secs() as i64);
        self.buffer.clear();
        self.buffer.extend(
            history
                .iter()
                .filter(|s| s.time <= now && s.time.as_second() >= since && s.value.is_finite())
                .map(|s| (seconds(s.time), s.value)),
        );
        let samples = self.buffer.len();
        if samples < self.config.min_samples {
            return Fit::Abstain {
                reason: format!(
                    "{samples} samples of {} in the history, {} needed to forecast",
                    self.rule.metric, self.config.min_samples
                ),
                samples,
            };
        }
        self.config.seasonality = match self.rule.seasonality {
            SeasonalitySpec::Auto => Seasonality::Auto,
            SeasonalitySpec::None => Seasonality::None,
            SeasonalitySpec::Daily => Seasonality::Daily,
            SeasonalitySpec::Weekly => Seasonality::Weekly,
            SeasonalitySpec::DailyWeekly => Seasonality::DailyWeekly,
        };
        match forecast::fit(&self.buffer, &self.config) {
            Ok(model) => Fit::Model(Box::new(model)),
            Err(ForecastError::Abstain { reason }) => Fit::Abstain { reason: reason.to_string(), samples },
            Err(e) => Fit::Abstain { reason: e.to_string(), samples },
        }
    }

    fn peak(&self, model: &Model, now: Timestamp) -> Forecast {
        let from = seconds(now);
        let to = from + self.rule.lookahead.as_secs_f64();
        let step = self.rule.step.as_secs_f64().max(1.0);
        let horizon = to - from;
        let coverage = self.rule.coverage;
        let (margin, margin_basis) = match model.margin(horizon, coverage) {
            Some(margin) => (
                margin,
                format!(
                    "{:.1}% quantile of {} out-of-sample peak errors",
                    coverage * 100.0,
                    model.calibration_size(horizon)
                ),
            ),
            None => (
                MARGIN_SPREADS * model.spread_at(to - model.fitted_at()),
                format!("{MARGIN_SPREADS} spreads (holdout shorter than the look-ahead)"),
            ),
        };
        match model.peak(from, to, step) {
            Ok(peak) => Forecast::Ready {
                peak: peak + margin,
                samples: model.samples(),
                error: model.holdout_error(),
                detail: ForecastDetail { periods: model.periods(), margin, margin_basis },
            },
            Err(e) => Forecast::Abstain { reason: e.to_string(), samples: model.samples() },
        }
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

    fn rule() -> PredictiveRule {
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

    fn t(secs: i64) -> Timestamp {
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
    fn abstains_with_too_few_samples_and_says_why() {
        let mut p = Predictor::new(&rule());
        match p.forecast(&daily(0, 4 * STEP), t(4 * STEP)) {
            Forecast::Abstain { reason, samples } => {
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
