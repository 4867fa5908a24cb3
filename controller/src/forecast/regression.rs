//! Ordinary least squares through `linfa_linear`, made robust to outliers by one winsorising pass.
//!
//! Why winsorise-and-refit rather than a full M-estimator (IRLS): one extra least-squares solve bounds the
//! influence of any single sample, which is what a load spike needs, and costs a fixed 2× instead of an
//! iteration count that depends on the data.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_linalg::qr::QRInto;
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
pub(crate) fn robust_fit(x: &Array2<f64>, y: &[f64], outlier_k: f64) -> Result<RobustFit, SolveError> {
    // Both solves share the design matrix, so it is factored once (the factorization is most of a solve).
    let qr = Factored::new(x)?;
    let mut coef = qr.solve(y)?;
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
            coef = qr.solve(&winsorised)?;
            fitted = predict_all(x, &coef);
            residuals = y.iter().zip(fitted.iter()).map(|(y, f)| y - f).collect();
            sigma = robust_sigma(&residuals);
        }
    }
    Ok(RobustFit { coef, residuals, sigma })
}

/// A design matrix's QR factorization, for several least-squares solves: exactly what `LinearRegression`
/// without an intercept does per solve (linfa_linalg's `least_squares_into`: `qr_into`, then `solve_into`), with
/// the factorization made once. `LinearRegression` itself for a matrix wider than tall, which QR cannot factor.
enum Factored<'a> {
    Qr(linfa_linalg::qr::QRDecomp<f64, ndarray::OwnedRepr<f64>>),
    Wide(&'a Array2<f64>),
}

impl<'a> Factored<'a> {
    fn new(x: &'a Array2<f64>) -> Result<Self, SolveError> {
        if x.nrows() < x.ncols() {
            return Ok(Factored::Wide(x));
        }
        // As LinearRegression copies it (to_owned keeps the column-major layout, so every column stays contiguous).
        let qr = x.to_owned().qr_into().map_err(|e| SolveError::Linear(LinearError::LinalgError(e)))?;
        Ok(Factored::Qr(qr))
    }

    fn solve(&self, y: &[f64]) -> Result<Vec<f64>, SolveError> {
        match self {
            Factored::Wide(x) => solve(x, y),
            Factored::Qr(qr) => {
                let b = Array1::from(y.to_vec()).insert_axis(ndarray::Axis(1));
                let out = qr.solve_into(b).map_err(|e| SolveError::Linear(LinearError::LinalgError(e)))?;
                let coef = out.column(0).to_vec();
                if coef.iter().all(|c| c.is_finite()) { Ok(coef) } else { Err(SolveError::NonFinite) }
            }
        }
    }
}

/// One OLS solve with `LinearRegression` (QR least squares). The design matrix already has its intercept column,
/// so linfa is asked not to add one (which would copy the matrix into row-major order).
fn solve(x: &Array2<f64>, y: &[f64]) -> Result<Vec<f64>, SolveError> {
    let dataset = DatasetBase::new(x.view(), ArrayView1::from(y));
    let fitted = LinearRegression::new().with_intercept(false).fit(&dataset)?;
    let coef = fitted.params().to_vec();
    if coef.iter().all(|c| c.is_finite()) { Ok(coef) } else { Err(SolveError::NonFinite) }
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

#[cfg(test)]
mod tests {
    use ndarray::ShapeBuilder;

    use super::*;

    #[test]
    fn one_factorization_solves_exactly_as_linear_regression_does() {
        // Column-major like the design matrices, with columns of different scales; a few targets.
        let (n, p) = (500, 9);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let x = Array2::from_shape_fn((n, p).f(), |(i, j)| {
            if j == 0 { 1.0 } else { (i as f64 * 0.01 * j as f64).sin() + 0.1 * next() }
        });
        let qr = Factored::new(&x).expect("factors");
        for _ in 0..3 {
            let y: Vec<f64> = (0..n).map(|_| 100.0 * next()).collect();
            let bits = |c: Vec<f64>| c.iter().map(|c| c.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(qr.solve(&y).expect("solves")), bits(solve(&x, &y).expect("solves")));
        }
    }
}
