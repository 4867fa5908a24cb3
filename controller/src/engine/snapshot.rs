//! Everything the engine decides from, gathered by the caller: the controller from `/scale`, Prometheus and
//! status; the backtest from its simulated cluster. The clock is part of the snapshot.

use std::collections::BTreeMap;

use jiff::Timestamp;

/// One sample of a metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub time: Timestamp,
    pub value: f64,
}

impl Sample {
    pub fn new(time: Timestamp, value: f64) -> Self {
        Sample { time, value }
    }
}

/// The samples of one metric over the lookback window, oldest first, or why they could not be read.
#[derive(Clone, Debug, PartialEq)]
pub enum Series {
    Samples(Vec<Sample>),
    /// The query failed (Prometheus down, timeout, bad PromQL...). The text says why, for status.
    Failed(String),
}

/// A change of the target's replicas, from status.history.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleEvent {
    pub time: Timestamp,
    pub from: u32,
    pub to: u32,
    /// Made by someone else (kubectl scale, a GitOps tool), not by Foresight.
    pub external: bool,
}

/// A past recommendation, for the stabilization windows. It held from `time` until the next record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecommendationRecord {
    pub time: Timestamp,
    pub replicas: u32,
}

/// The forecast the predictive policy acts on, computed by `forecast::Predictor` (or its abstention).
#[derive(Clone, Debug, PartialEq)]
pub enum Forecast {
    Ready {
        /// The highest forecast load in [now, now + lookahead], including the safety margin.
        peak: f64,
        /// Samples the model was fitted on.
        samples: usize,
        /// Error on held-out recent history (fraction).
        error: f64,
        /// What the forecast is made of and how its margin was set.
        detail: ForecastDetail,
    },
    Abstain {
        reason: String,
        samples: usize,
        /// The periods of a model that was fitted but is not used (it forecast worse than the load now), seconds,
        /// shortest first; empty when there is no model.
        periods: Vec<f64>,
    },
}

/// How a ready forecast was made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForecastDetail {
    /// The periods the model repeats, seconds, shortest first.
    pub periods: Vec<f64>,
    /// The headroom included in `peak` above the model's own highest forecast, load units.
    pub margin: f64,
    /// How the margin was set, e.g. "95% quantile of 180 out-of-sample errors".
    pub margin_basis: String,
}

/// The state of the world at one evaluation.
#[derive(Clone, Debug)]
pub struct Snapshot<'a> {
    pub now: Timestamp,
    /// The target's replicas (its `/scale` spec.replicas).
    pub current_replicas: u32,
    /// How many of them are ready, when per-pod averages are measured over ready pods only (as metrics-server
    /// reports them). `None` when the averages already cover every pod (a Prometheus average over the target's
    /// pods, where a starting pod has requests but no usage yet).
    pub ready_replicas: Option<u32>,
    /// Samples per metric name. A metric absent from the map counts as missing.
    pub metrics: &'a BTreeMap<String, Series>,
    /// Changes of replicas, newest first.
    pub history: &'a [ScaleEvent],
    /// Past recommendations, oldest first.
    pub recommendations: &'a [RecommendationRecord],
    /// Evaluations in a row with no usable metric, before this one.
    pub consecutive_failures: u32,
    /// The forecast, when the policy has a predictive rule.
    pub forecast: Option<&'a Forecast>,
}
