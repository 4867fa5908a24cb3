//! What can go wrong while fitting or querying a forecast.

/// Why the forecaster declined to forecast. Abstaining is a normal outcome (a new workload has no history yet),
/// so the caller falls back to its reactive policy and says why.
#[derive(Debug, Clone, PartialEq)]
pub enum AbstainReason {
    /// Fewer usable (finite) samples than `ForecastConfig::min_samples`.
    TooFewSamples { usable: usize, required: usize },
    /// The holdout error exceeded the caller's `ForecastConfig::max_holdout_error`.
    PoorFit { holdout_error: f64, bound: f64 },
}

impl std::fmt::Display for AbstainReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbstainReason::TooFewSamples { usable, required } => {
                write!(f, "{usable} usable samples, {required} required")
            }
            AbstainReason::PoorFit {
                holdout_error,
                bound,
            } => {
                write!(
                    f,
                    "holdout error {holdout_error:.3} exceeds the bound {bound:.3}"
                )
            }
        }
    }
}

/// Errors of the forecasting core.
#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    /// The data do not support a forecast; not a fault.
    #[error("forecast abstained: {reason}")]
    Abstain { reason: AbstainReason },
    /// A configuration value is out of range.
    #[error("invalid forecast configuration: {field} {reason}")]
    InvalidConfig {
        field: &'static str,
        reason: &'static str,
    },
    /// A time or range passed to `predict` / `peak` is not finite, reversed, or has too many steps.
    #[error("invalid forecast query: {reason}")]
    InvalidQuery { reason: &'static str },
    /// Even the intercept-only least-squares solve failed (should not happen with finite data).
    #[error("least-squares fit failed: {source}")]
    Solve {
        #[source]
        source: super::SolveError,
    },
}

impl ForecastError {
    /// A short, fixed label for metrics and Kubernetes Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ForecastError::Abstain {
                reason: AbstainReason::TooFewSamples { .. },
            } => "TooFewSamples",
            ForecastError::Abstain {
                reason: AbstainReason::PoorFit { .. },
            } => "PoorFit",
            ForecastError::InvalidConfig { .. } => "InvalidConfig",
            ForecastError::InvalidQuery { .. } => "InvalidQuery",
            ForecastError::Solve { .. } => "SolveFailed",
        }
    }
}
