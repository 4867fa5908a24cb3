//! The regression features: intercept, linear trend and Fourier seasonal terms, and the rules that decide
//! which of them a given history can identify.
//!
//! Column order (the coefficient order of every fitted model):
//! `[1, trend, sin(1·d), cos(1·d), …, sin(Kd·d), cos(Kd·d), sin(1·w), cos(1·w), …, sin(Kw·w), cos(Kw·w),
//!   sin(1·d)cos(w), sin(1·d)sin(w), cos(1·d)cos(w), cos(1·d)sin(w), … up to daily harmonic Ki]`
//! where `d` and `w` are the daily and weekly phase angles. The last group lets the daily shape change over the
//! week (weekend nights, weekday rush hours); it is the weekly harmonics 7k ± 1 in disguise, so it needs the same
//! week of history as the weekly terms.
//!
//! Why Fourier terms: a daily peak at 18:00 is a smooth bump in the hour of day. A linear term in "hour of day"
//! can only rise or fall across the whole day, and one dummy column per hour costs 24 parameters and is jagged.
//! A few sin/cos pairs of the phase describe any smooth periodic shape with few parameters, wrap around midnight
//! (and Sunday → Monday) without a jump, and are nearly orthogonal on evenly spaced data, so OLS stays well
//! conditioned.

use ndarray::{Array2, ShapeBuilder};

/// Seconds in a day: the period of the daily terms.
pub(crate) const DAY: f64 = 86_400.0;
/// Seconds in a week: the period of the weekly terms.
pub(crate) const WEEK: f64 = 7.0 * DAY;

/// A periodic term is identifiable only if the history covers nearly a whole period: a sinusoid seen over half its
/// period is confounded with the trend and extrapolates wildly. 95% leaves room for "7 days of 5-minute samples",
/// which spans 7 days minus one step.
const MIN_PERIOD_COVERAGE: f64 = 0.95;
/// Phase bins used to check that the samples are spread over the period (not, say, every day at 09:00 only):
/// hourly bins for the daily cycle, 6-hour bins for the weekly one.
const DAILY_BINS: usize = 24;
const WEEKLY_BINS: usize = 28;

/// Which features a model uses. Always has an intercept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Terms {
    pub trend: bool,
    /// Daily harmonics 1..=daily.
    pub daily: usize,
    /// Weekly harmonics 1..=weekly.
    pub weekly: usize,
    /// Daily harmonics 1..=interact (≤ daily) modulated by the first weekly pair.
    pub interact: usize,
}

impl Terms {
    /// The intercept-only model: the mean.
    pub const LEVEL: Terms = Terms {
        trend: false,
        daily: 0,
        weekly: 0,
        interact: 0,
    };

    /// Number of columns (coefficients).
    pub fn len(&self) -> usize {
        1 + usize::from(self.trend) + 2 * self.daily + 2 * self.weekly + 4 * self.interact
    }

    /// The next smaller model, dropping what is least likely to be identified first: the highest interaction,
    /// then the highest weekly harmonic, then the highest daily harmonic, then the trend. `None` for the intercept-only model.
    pub fn shrink(self) -> Option<Terms> {
        if self.interact > 0 {
            Some(Terms {
                interact: self.interact - 1,
                ..self
            })
        } else if self.weekly > 0 {
            Some(Terms {
                weekly: self.weekly - 1,
                ..self
            })
        } else if self.daily > 0 {
            Some(Terms {
                daily: self.daily - 1,
                ..self
            })
        } else if self.trend {
            Some(Terms {
                trend: false,
                ..self
            })
        } else {
            None
        }
    }

    /// Writes the feature row for time `t` (unix seconds) into `row` (length `self.len()`). The trend is in days
    /// relative to `t_ref` (the last training sample), so it is O(1)–O(10) like the other columns and the
    /// intercept means "the de-seasonalised level now".
    pub fn write_row(&self, t: f64, t_ref: f64, row: &mut [f64]) {
        let daily = phase(t, DAY).sin_cos();
        let weekly = phase(t, WEEK).sin_cos();
        self.write_row_from(t, t_ref, daily, weekly, row);
    }

    /// `write_row` given the (sin, cos) of the daily and weekly phase, from which every harmonic follows.
    fn write_row_from(
        &self,
        t: f64,
        t_ref: f64,
        daily: (f64, f64),
        weekly: (f64, f64),
        row: &mut [f64],
    ) {
        let mut j = 0;
        row[j] = 1.0;
        j += 1;
        if self.trend {
            row[j] = (t - t_ref) / DAY;
            j += 1;
        }
        let daily_start = j;
        j += harmonics(daily, self.daily, |k, s, c| {
            row[j + 2 * k] = s;
            row[j + 2 * k + 1] = c;
        });
        j += harmonics(weekly, self.weekly, |k, s, c| {
            row[j + 2 * k] = s;
            row[j + 2 * k + 1] = c;
        });
        let (sw, cw) = weekly;
        for k in 0..self.interact {
            let (s, c) = (row[daily_start + 2 * k], row[daily_start + 2 * k + 1]);
            row[j] = s * cw;
            row[j + 1] = s * sw;
            row[j + 2] = c * cw;
            row[j + 3] = c * sw;
            j += 4;
        }
    }

    /// The design matrix for sorted `times`, in column-major (Fortran) order: the Householder QR inside
    /// linfa-linear works column by column, so contiguous columns make its dot products and axpys contiguous too.
    pub fn design_matrix(&self, times: &[f64], t_ref: f64) -> Array2<f64> {
        let n = times.len();
        let p = self.len();
        let mut data = vec![0.0; n * p];
        let mut row = vec![0.0; p];
        let (mut daily, mut weekly) = (Rotor::new(DAY), Rotor::new(WEEK));
        for (i, &t) in times.iter().enumerate() {
            self.write_row_from(t, t_ref, daily.at(t), weekly.at(t), &mut row);
            for (j, v) in row.iter().enumerate() {
                data[j * n + i] = *v;
            }
        }
        // The shape matches the buffer by construction, so this cannot fail; fall back to an empty matrix
        // rather than panic.
        Array2::from_shape_vec((n, p).f(), data).unwrap_or_else(|_| Array2::zeros((0, p)))
    }
}

/// The phase angle of `t` in a cycle of `period` seconds, in [0, 2π]. The origin (the unix epoch, a Thursday
/// 00:00 UTC) does not matter: sin/cos pairs can represent any phase shift. An integer quotient rather than
/// `rem_euclid`: the same result for whole seconds, and many times faster than `fmod` (and than a `floor` call on
/// baseline x86-64). Absurd times (beyond ±9e18 periods) saturate into the clamp instead of misbehaving.
fn phase(t: f64, period: f64) -> f64 {
    let mut within = t - (t / period) as i64 as f64 * period;
    if within < 0.0 {
        within += period;
    }
    std::f64::consts::TAU * within.clamp(0.0, period) / period
}

/// (sin, cos) of the phase of successive, sorted times. Samples usually come at a fixed step, so instead of a
/// `sin_cos` per sample the previous (sin, cos) is rotated by the step's angle (computed once per distinct step),
/// re-anchored exactly every `REANCHOR` samples so rounding cannot accumulate (drift stays below 1e-13).
struct Rotor {
    period: f64,
    last: Option<(f64, f64, f64)>,
    step: (f64, f64, f64),
    since_anchor: u32,
}

const REANCHOR: u32 = 256;

impl Rotor {
    fn new(period: f64) -> Rotor {
        Rotor {
            period,
            last: None,
            step: (f64::NAN, 0.0, 1.0),
            since_anchor: 0,
        }
    }

    fn at(&mut self, t: f64) -> (f64, f64) {
        let (s, c) = match self.last {
            Some((last_t, s, c)) if self.since_anchor < REANCHOR => {
                let dt = t - last_t;
                if dt != self.step.0 {
                    let (ss, sc) = (std::f64::consts::TAU * dt / self.period).sin_cos();
                    self.step = (dt, ss, sc);
                }
                let (_, ss, sc) = self.step;
                self.since_anchor += 1;
                (s * sc + c * ss, c * sc - s * ss)
            }
            _ => {
                self.since_anchor = 0;
                phase(t, self.period).sin_cos()
            }
        };
        self.last = Some((t, s, c));
        (s, c)
    }
}

/// Calls `out(k - 1, sin(kθ), cos(kθ))` for k = 1..=count given `(sin θ, cos θ)`, by the angle-addition
/// recurrence (sin((k+1)θ) = sin kθ cos θ + cos kθ sin θ) instead of 2·count transcendental calls. Returns
/// `2 * count`, the number of columns written. The recurrence loses ~1e-16 per step, negligible for k ≤ 12.
fn harmonics((s1, c1): (f64, f64), count: usize, mut out: impl FnMut(usize, f64, f64)) -> usize {
    let (mut s, mut c) = (s1, c1);
    for k in 0..count {
        out(k, s, c);
        (s, c) = (s * c1 + c * s1, c * c1 - s * s1);
    }
    2 * count
}

/// The terms out of `wanted` that the (sorted) `times` can identify:
/// - trend: the samples span more than an instant;
/// - periodic terms: the span covers ≥ 95% of the period and the samples fall into enough distinct phase bins;
///   harmonic k needs 2k + 1 occupied bins (a Nyquist-like bound), and at least half the bins must be occupied;
///   interactions need both the daily terms and a week;
/// - in total no more than n / 2 coefficients, so each has several samples behind it.
///
/// Dropping terms is preferred to ridge regularisation: a weekly sinusoid fitted to four days of data is not a
/// "shrunk" weekly cycle, it is noise that dominates the extrapolation.
pub(crate) fn identifiable(times: &[f64], wanted: Terms) -> Terms {
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return Terms::LEVEL;
    };
    let span = last - first;
    let wants_weekly = wanted.weekly.max(wanted.interact);
    let weekly_capacity = identifiable_harmonics(times, span, WEEK, WEEKLY_BINS, wants_weekly);
    let daily = identifiable_harmonics(times, span, DAY, DAILY_BINS, wanted.daily);
    let mut terms = Terms {
        trend: wanted.trend && span > 0.0,
        daily,
        weekly: wanted.weekly.min(weekly_capacity),
        interact: if weekly_capacity > 0 {
            wanted.interact.min(daily)
        } else {
            0
        },
    };
    while terms.len() > times.len() / 2 {
        match terms.shrink() {
            Some(smaller) => terms = smaller,
            None => break,
        }
    }
    terms
}

fn identifiable_harmonics(
    times: &[f64],
    span: f64,
    period: f64,
    bins: usize,
    wanted: usize,
) -> usize {
    if wanted == 0 || span < MIN_PERIOD_COVERAGE * period {
        return 0;
    }
    let mut seen = vec![false; bins];
    let mut occupied = 0;
    for &t in times {
        // `phase` is in [0, 2π], so the index is in [0, bins]; `min` guards the upper edge.
        let bin = ((phase(t, period) / std::f64::consts::TAU * bins as f64) as usize).min(bins - 1);
        if !seen[bin] {
            seen[bin] = true;
            occupied += 1;
            if occupied == bins {
                break;
            }
        }
    }
    if occupied * 2 < bins {
        return 0;
    }
    wanted.min((occupied - 1) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recurrence_matches_direct_sin_cos() {
        let terms = Terms {
            trend: true,
            daily: 12,
            weekly: 6,
            interact: 0,
        };
        let mut row = vec![0.0; terms.len()];
        let t = 1_700_000_123.0;
        terms.write_row(t, t + 3600.0, &mut row);
        assert_eq!(row[0], 1.0);
        assert!((row[1] + 1.0 / 24.0).abs() < 1e-12);
        for k in 1..=12 {
            let theta = k as f64 * phase(t, DAY);
            assert!((row[2 * k] - theta.sin()).abs() < 1e-12, "daily sin k={k}");
            assert!(
                (row[2 * k + 1] - theta.cos()).abs() < 1e-12,
                "daily cos k={k}"
            );
        }
        for k in 1..=6 {
            let theta = k as f64 * phase(t, WEEK);
            assert!(
                (row[24 + 2 * k] - theta.sin()).abs() < 1e-12,
                "weekly sin k={k}"
            );
            assert!(
                (row[24 + 2 * k + 1] - theta.cos()).abs() < 1e-12,
                "weekly cos k={k}"
            );
        }
    }

    #[test]
    fn design_matrix_rows_match_direct_evaluation() {
        let terms = Terms {
            trend: true,
            daily: 4,
            weekly: 3,
            interact: 2,
        };
        // Regular 5-minute steps, a gap, a duplicate time and an odd step: past several re-anchorings.
        let mut times: Vec<f64> = (0..700)
            .map(|i| 1_700_000_000.0 + 300.0 * i as f64)
            .collect();
        times.extend((0..300).map(|i| 1_700_400_000.0 + 61.5 * i as f64));
        times.push(1_700_400_000.0 + 61.5 * 299.0);
        let t_ref = times[times.len() - 1];
        let x = terms.design_matrix(&times, t_ref);
        assert_eq!(x.dim(), (times.len(), terms.len()));
        let mut row = vec![0.0; terms.len()];
        for (i, &t) in times.iter().enumerate() {
            terms.write_row(t, t_ref, &mut row);
            for (j, &v) in row.iter().enumerate() {
                assert!(
                    (x[[i, j]] - v).abs() < 1e-11,
                    "sample {i}, column {j}: {} vs {v}",
                    x[[i, j]]
                );
            }
        }
    }

    #[test]
    fn periodic_terms_need_a_whole_period_and_phase_coverage() {
        let wanted = Terms {
            trend: true,
            daily: 3,
            weekly: 2,
            interact: 2,
        };
        let every = |step: f64, span: f64| -> Vec<f64> {
            (0..=((span / step) as usize))
                .map(|i| i as f64 * step)
                .collect()
        };
        // Four days of 5-minute data: daily yes, weekly no.
        let four_days = identifiable(&every(300.0, 4.0 * DAY), wanted);
        assert_eq!(
            (four_days.daily, four_days.weekly, four_days.interact),
            (3, 0, 0)
        );
        // 7 days minus one step of 5-minute data: all.
        let week = identifiable(&every(300.0, WEEK - 300.0), wanted);
        assert_eq!((week.daily, week.weekly, week.interact), (3, 2, 2));
        // Twenty days, but always at the same hour: no daily cycle can be seen.
        let same_hour = identifiable(&every(DAY, 20.0 * DAY), wanted);
        assert_eq!(same_hour.daily, 0);
        // Ten hours: trend only.
        assert_eq!(
            identifiable(&every(300.0, 36_000.0), wanted),
            Terms {
                daily: 0,
                weekly: 0,
                interact: 0,
                ..wanted
            }
        );
    }
}
