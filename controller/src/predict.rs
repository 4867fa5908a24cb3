//! Interim: the predictive policy's forecaster, until the `forecast` module lands.

use jiff::Timestamp;

use crate::engine::{Forecast, Sample, policy::PredictiveRule};

/// Builds the engine's forecast for a predictive rule.
#[derive(Clone, Debug)]
pub struct Predictor {
    min_samples: usize,
}

impl Predictor {
    pub fn new(rule: &PredictiveRule) -> Self {
        Predictor { min_samples: rule.min_samples }
    }

    pub fn forecast(&mut self, history: &[Sample], _now: Timestamp) -> Forecast {
        let _ = self.min_samples;
        Forecast::Abstain { reason: "forecasting is not available in this build".into(), samples: history.len() }
    }
}
