//! Ordinary least squares through `linfa_linear`, made robust to outliers by one winsorising pass.
//!
//! Why winsorise-and-refit rather than a full M-estimator (IRLS): one extra least-squares solve bounds the
//! influence of any single sample, which is what a load spike needs, and costs a fixed 2× instead of an
//! iteration count that depends on the data.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_linear::{LinearError, LinearRegression};
use ndarray::{Array1, Array2, ArrayView1};

/// Converts a median absolute deviation into a standard deviation for normally distributed residuals.
const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

/// A robust least-squares fit.
#[derive(Debug, Clone)]
pub(crate) struct RobustFit {
    /// Coefficients, in the column order of the design matrix.
    pub coef: Vec<f64>,
    /// `y - fitted` for the original (unclipped) targets.
    pub residuals: Vec<f64>,
    /// Robust residual scale: 1.4826 × the median absolute deviation of `residuals`.
    pub sigma: f64,
}

/// Why a least-squares solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error("least-squares solve failed: {0}")]
    Linear(#[from] LinearError<f64>),
    #[error("least-squares solve produced non-finite coefficients")]
    NonFinite,
}

/// Fits `y ≈ x · coef` by OLS; then, unless `outlier_k` is infinite, clips each target to within
/// `outlier_k × sigma` of the first fit (sigma the robust residual scale) and refits. The second solve is skipped
/// when nothing was clipped.
pub(crate) fn robust_fit(
    x: &Array2<f64>,
    y: &[f64],
    outlier_k: f64,
) -> Result<RobustFit, SolveError> {
    let mut coef = solve(x, y)?;
    let mut fitted = predict_all(x, &coef);
    let mut residuals: Vec<f64> = y.iter().zip(fitted.iter()).map(|(y, f)| y - f).collect();
    let mut sigma = robust_sigma(&residuals);

    if outlier_k.is_finite() {
        let bound = outlier_k * sigma;
        let mut clipped = 0usize;
        let winsorised: Vec<f64> = y
            .iter()
            .zip(fitted.iter())
            .map(|(&y, &f)| {
                if (y - f).abs() > bound {
                    clipped += 1;
                    f + bound.copysign(y - f)
                } else {
                    y
                }
            })
            .collect();
        if clipped > 0 {
            coef = solve(x, &winsorised)?;
            fitted = predict_all(x, &coef);
            residuals = y.iter().zip(fitted.iter()).map(|(y, f)| y - f).collect();
            sigma = robust_sigma(&residuals);
        }
    }
    Ok(RobustFit {
        coef,
        residuals,
        sigma,
    })
}

/// One OLS solve with `LinearRegression` (QR least squares). The design matrix already has its intercept column,
/// so linfa is asked not to add one (which would copy the matrix into row-major order).
fn solve(x: &Array2<f64>, y: &[f64]) -> Result<Vec<f64>, SolveError> {
    let dataset = DatasetBase::new(x.view(), ArrayView1::from(y));
    let fitted = LinearRegression::new()
        .with_intercept(false)
        .fit(&dataset)?;
    let coef = fitted.params().to_vec();
    if coef.iter().all(|c| c.is_finite()) {
        Ok(coef)
    } else {
        Err(SolveError::NonFinite)
    }
}

/// `x · coef` as a sum of scaled columns, which are contiguous in the column-major design matrix.
fn predict_all(x: &Array2<f64>, coef: &[f64]) -> Array1<f64> {
    let mut fitted = Array1::zeros(x.nrows());
    for (column, &c) in x.columns().into_iter().zip(coef) {
        fitted.scaled_add(c, &column);
    }
    fitted
}

/// 1.4826 × median(|r − median(r)|); 0 for an empty slice.
pub(crate) fn robust_sigma(residuals: &[f64]) -> f64 {
    let mut buf = residuals.to_vec();
    let Some(center) = median_in_place(&mut buf) else {
        return 0.0;
    };
    for v in buf.iter_mut() {
        *v = (*v - center).abs();
    }
    median_in_place(&mut buf).map_or(0.0, |mad| MAD_TO_SIGMA * mad)
}

/// The median (upper median for even lengths, which is enough for a scale estimate); reorders `values`.
pub(crate) fn median_in_place(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    Some(*m)
}
