//! `Seasonality::Auto`: which periods the history repeats, and the phase-bin profiles that model the short ones.
//!
//! # Detection
//! ```text
//!   samples ─▶ regular grid (median step; gaps interpolated linearly) ─▶ detrend ─▶ clip outliers
//!           ─▶ periodogram (FFT) ─▶ ordinate / local noise level > ln(M / α) ?  ─▶ fundamentals ─▶ periods
//! ```
//! - **Candidates** are the Fourier frequencies whose period lies in [10 min, 1 week] and repeats at least twice
//!   in the history (a pattern seen once is not a period).
//! - **Test against noise**: for white noise each periodogram ordinate is `σ² × Exp(1)`, so the largest of `M`
//!   exceeds `σ² ln(M / α)` with probability about `α` (the Bonferroni form of Fisher's g test). Load is not
//!   white: it has far more power at low frequencies (level shifts, slow drifts), so `σ²` is estimated *locally*
//!   as the median of the neighbouring ordinates divided by ln 2 (the median of Exp(1)), which a few periodic
//!   peaks among them cannot move. α = 10⁻³: one history in a thousand of pure noise yields a spurious period.
//! - **Robust**: the series is detrended by least squares and clipped to `CLIP_SIGMAS` robust standard deviations
//!   (median absolute deviation) around it, so one outage or one spike of a thousand times the load cannot paint
//!   its own spectrum over the real one; a periodic spike survives clipping because it recurs. Gaps are bridged
//!   linearly on the grid, which only adds low-frequency power, and the local noise level absorbs that.
//! - **Fundamentals, not harmonics**: a spiky shape (a 5-minute spike every hour) has significant ordinates at
//!   1/h, 2/h, 3/h, …. Each significant peak is traced down to the lowest frequency `f/d` of which it is a
//!   harmonic such that `f/d` itself and at least half of `f/d × 1..d` are significant; that is the period. So
//!   harmonics of a daily shape (12 h, 8 h, …) are the daily cycle, while an hourly spike on top of a smooth
//!   daily cycle is its own period (the daily harmonics between 1/day and 24/day are not all there).
//! - **Greedy**: the strongest fundamental is taken, its contribution removed, and the periodogram recomputed,
//!   at most `MAX_PROFILES` short periods.
//!
//! # Model
//! Periods close to a day or a week switch on the regression's daily or weekly Fourier terms (smooth shapes
//! with few parameters; 7 samples per phase over a week could not estimate a per-minute daily profile). Shorter
//! periods are modelled by a **seasonal profile per phase bin** (one bin per sample step; the median residual of
//! each bin over all cycles) rather than by more harmonics: a 5-minute spike every hour at 1-minute samples
//! needs ~12 harmonic pairs (24 columns) to get its height right and still rings between spikes, while the
//! profile reproduces the spike's exact shape and each of its 60 bins is the median of 168 cycles in a week. The
//! median keeps one bad cycle (an outage, a one-off burst) out of the profile. A profile needs at least
//! `MIN_CYCLES` cycles in the history.

use rustfft::{FftPlanner, num_complex::Complex};

use super::{
    features::{DAY, WEEK},
    regression::{median_in_place, robust_sigma},
};

/// The shortest period looked for: shorter "periods" are sampling artefacts or too fast to scale for.
pub(crate) const MIN_PERIOD: f64 = 600.0;
/// The longest: a week, the longest cycle load is known to have.
pub(crate) const MAX_PERIOD: f64 = WEEK;
/// Family-wise false-alarm probability of the noise test.
const FALSE_ALARM: f64 = 1e-3;
/// At most this many grid points (the step is widened beyond), so a 15-second history of a month stays fast.
const MAX_GRID: usize = 1 << 16;
/// Clip the detrended series at this many robust standard deviations: far beyond normal noise (a normal sample
/// exceeds 5σ once in 3.5 million), so only real outliers are touched.
const CLIP_SIGMAS: f64 = 5.0;
/// Short periods modelled by profiles; each costs one parameter per phase bin.
pub(crate) const MAX_PROFILES: usize = 3;
/// A profile bin is the median over the cycles in the history; with fewer than 6 its error is over half the
/// noise's standard deviation and it adds more noise than shape.
const MIN_CYCLES: f64 = 6.0;
/// At most this many phase bins per profile.
const MAX_BINS: usize = 1440;
/// Half-width of the neighbourhood that estimates the local noise level: a quarter of the frequency, at least
/// 8 and at most 64 bins (so a handful of harmonics cannot be the majority, and it stays local).
const NOISE_MIN_HALF: usize = 8;
const NOISE_MAX_HALF: usize = 64;

/// What the history repeats.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Detected {
    pub daily: bool,
    pub weekly: bool,
    /// Periods shorter than a day, in seconds, strongest first.
    pub short: Vec<f64>,
}

/// The periods of sorted, finite samples (see the module doc). Empty with too little history to test anything.
pub(crate) fn detect(times: &[f64], values: &[f64]) -> Detected {
    let mut found = Detected::default();
    let Some(grid) = Grid::new(times, values) else { return found };
    let m = grid.values.len();
    let span = grid.step * m as f64;
    // Frequencies k / span (cycles per second); k ≥ 2 (two cycles seen), period within [MIN, MAX].
    let k_lo = ((span / MAX_PERIOD).ceil() as usize).max(2);
    let k_hi = ((span / MIN_PERIOD).floor() as usize).min(m / 2);
    if k_hi < k_lo + 2 * NOISE_MIN_HALF {
        return found;
    }
    let threshold = ((k_hi - k_lo + 1) as f64 / FALSE_ALARM).ln();
    let mut planner = FftPlanner::new();
    let fft = planner.plan_fft_forward(m);
    // A Hann taper: without it a strong daily cycle leaks power into its neighbours (sidelobes falling only as
    // 1/Δk²) and they pass the noise test as periods of their own.
    let taper: Vec<f64> =
        (0..m).map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / (m - 1).max(1) as f64).cos()).collect();
    let periodogram = |series: &[f64]| -> Vec<f64> {
        let mut buffer: Vec<Complex<f64>> =
            series.iter().zip(&taper).map(|(&v, &w)| Complex::new(v * w, 0.0)).collect();
        fft.process(&mut buffer);
        buffer[..=m / 2].iter().map(|c| c.norm_sqr()).collect()
    };
    let original = significance(&periodogram(&grid.values), k_lo, k_hi);
    // A significant local maximum within a bin of `k` (a neighbour on the flank of another peak does not count).
    let significant = |k: f64| -> bool {
        let k = k.round() as usize;
        (k.saturating_sub(1)..=k + 1).any(|j| {
            let z = |i: usize| original.get(i).copied().unwrap_or(0.0);
            z(j) > threshold && z(j) >= z(j.saturating_sub(1)) && z(j) >= z(j + 1)
        })
    };
    let k_day = span / DAY;
    let k_week = span / WEEK;
    // The taper widens a peak to about ±2 bins.
    let near = |k: f64, target: f64| (k - target).abs() <= 2.0;

    let mut working = grid.values.clone();
    // The daily and weekly cycles first, each by a test of all its Fourier terms at once (`cycle_test`), then
    // removed from the grid, so that neither their harmonics nor the sidebands a gap puts around them are taken
    // for short periods.
    let mut residuals = grid.sample_residuals(times, values);
    for (period, harmonics, wanted) in
        [(DAY, super::MAX_DAILY_HARMONICS, &mut found.daily), (WEEK, super::MAX_WEEKLY_HARMONICS, &mut found.weekly)]
    {
        if span < 2.0 * period {
            continue;
        }
        if let Some(cycle) = cycle_test(times, &mut residuals, period, harmonics) {
            *wanted = true;
            for (i, v) in working.iter_mut().enumerate() {
                if grid.observed[i] {
                    *v -= cycle.value(grid.start + i as f64 * grid.step);
                }
            }
        }
    }
    // Bins already explained (by the daily/weekly Fourier terms or by a profile), left out of later rounds.
    let mut explained = vec![false; m / 2 + 1];
    let explain = |explained: &mut Vec<bool>, k0: f64, harmonics: usize| {
        for j in 1..=harmonics {
            let k = (k0 * j as f64).round() as usize;
            for i in k.saturating_sub(2)..=k + 2 {
                if let Some(e) = explained.get_mut(i) {
                    *e = true;
                }
            }
        }
    };
    for _round in 0..(MAX_PROFILES + 2) {
        let z = significance(&periodogram(&working), k_lo, k_hi);
        let Some(top) =
            (k_lo..=k_hi).filter(|&k| !explained[k] && z[k] > threshold).max_by(|&a, &b| z[a].total_cmp(&z[b]))
        else {
            break;
        };
        // The lowest frequency of which `top` is a harmonic and which is there itself, with half its harmonics.
        let mut k0 = top as f64;
        for d in (2..=top / k_lo.max(1)).rev() {
            let f = top as f64 / d as f64;
            if f < k_lo as f64 - 0.5 || !significant(f) {
                continue;
            }
            let present = (1..=d).filter(|&j| significant(f * j as f64)).count();
            if 2 * present >= d {
                k0 = f;
                break;
            }
        }
        if explained[(k0.round() as usize).min(m / 2)] && k0.round() as usize != top {
            // A harmonic of a period already taken (or of the daily or weekly shape): what is left of it is
            // that period's misfit, not a period of its own.
            explain(&mut explained, top as f64, 1);
        } else if near(k0, k_day) || near(k0, k_week) {
            // A harmonic of the daily or weekly shape beyond the Fourier terms' reach: the shape is theirs.
            explain(&mut explained, top as f64, 1);
        } else if span / k0 < DAY && found.short.len() < MAX_PROFILES && span / k0 * MIN_CYCLES <= span {
            let period = grid.refine(&working, span / k0);
            let (times, observed): (Vec<f64>, Vec<f64>) = grid
                .times()
                .into_iter()
                .zip(&working)
                .zip(&grid.observed)
                .filter(|(_, o)| **o)
                .map(|(tv, _)| (tv.0, *tv.1))
                .unzip();
            let profile = Profile::fit(&times, &observed, period, grid.step);
            let before: f64 = observed.iter().map(|v| v * v).sum();
            let after: f64 = times.iter().zip(&observed).map(|(&t, v)| (v - profile.value(t)).powi(2)).sum();
            explain(&mut explained, span / period, m / 2);
            if !worth_a_profile(before, after, observed.len(), profile.bins()) {
                continue;
            }
            for (i, v) in working.iter_mut().enumerate() {
                if grid.observed[i] {
                    *v -= profile.value(grid.start + i as f64 * grid.step);
                }
            }
            found.short.push(period);
        } else {
            // Between a day and a week, or too few cycles for a profile: not modelled.
            explain(&mut explained, k0, 1);
            explain(&mut explained, top as f64, 1);
        }
    }
    found
}

/// Whether a profile of `bins` parameters that takes the residual sum of squares of `n` points from `before` to
/// `after` earns its parameters, by the Bayesian information criterion: `n ln(before / after) > bins ln n`.
/// Significance against noise alone is not enough: on a nearly noiseless series (a simulator, a quantised
/// counter) the few percent an earlier profile left of a spike's edges are far above the noise and would be
/// taken for periods of their own, each costing a profile's worth of parameters for nothing.
fn worth_a_profile(before: f64, after: f64, n: usize, bins: usize) -> bool {
    if before.is_nan() || before <= 0.0 || n < 2 {
        return false;
    }
    let n = n as f64;
    after <= 0.0 || n * (before / after).ln() > bins as f64 * n.ln()
}

/// Each ordinate over its local noise level, `I_k / (median of the neighbours / ln 2)`; 0 outside [lo, hi].
fn significance(ordinates: &[f64], lo: usize, hi: usize) -> Vec<f64> {
    let mut z = vec![0.0; ordinates.len()];
    let mut buf = Vec::with_capacity(2 * NOISE_MAX_HALF + 1);
    for k in lo..=hi.min(ordinates.len() - 1) {
        let half = (k / 4).clamp(NOISE_MIN_HALF, NOISE_MAX_HALF);
        let (a, b) = (k.saturating_sub(half).max(1), (k + half).min(ordinates.len() - 1));
        buf.clear();
        // The neighbours, without the peak's own main lobe (±2 bins with the taper).
        buf.extend(ordinates[a..=b].iter().enumerate().filter(|(i, _)| (a + i).abs_diff(k) > 2).map(|(_, v)| *v));
        let noise = median_in_place(&mut buf).unwrap_or(0.0) / std::f64::consts::LN_2;
        z[k] = if noise > 0.0 {
            ordinates[k] / noise
        } else if ordinates[k] > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
    }
    z
}

/// The history on a regular grid, detrended and clipped.
struct Grid {
    start: f64,
    step: f64,
    /// The detrending line (`offset + slope × grid index`) and the clipping bounds around it.
    line: (f64, f64),
    clip: (f64, f64),
    values: Vec<f64>,
    /// Whether each grid point is bracketed by samples at most `MAX_BRIDGE` steps apart. Longer gaps hold the
    /// series' mean (0): a line drawn across a missing day would be a day without the cycles, and removing a
    /// fitted cycle there would paint its negative into the gap; either would put the gap's own pattern into
    /// the spectrum.
    observed: Vec<bool>,
}

/// Gaps of up to this many steps are bridged by linear interpolation.
const MAX_BRIDGE: f64 = 3.0;

impl Grid {
    fn new(times: &[f64], values: &[f64]) -> Option<Grid> {
        let (&start, &end) = (times.first()?, times.last()?);
        let mut gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).filter(|&d| d > 0.0).collect();
        let mut step = median_in_place(&mut gaps)?;
        let span = end - start;
        if !(step > 0.0 && span > 0.0) {
            return None;
        }
        step = step.max(span / MAX_GRID as f64);
        let m = (span / step).floor() as usize + 1;
        // Linear interpolation at each grid time between the samples around it.
        let mut grid = Vec::with_capacity(m);
        let mut observed = Vec::with_capacity(m);
        let mut j = 0;
        for i in 0..m {
            let t = start + i as f64 * step;
            while j + 1 < times.len() && times[j + 1] <= t {
                j += 1;
            }
            let (v, seen) = match times.get(j + 1) {
                Some(&t1) if t1 > times[j] => {
                    let w = (t - times[j]) / (t1 - times[j]);
                    (values[j] + w * (values[j + 1] - values[j]), t1 - times[j] <= MAX_BRIDGE * step || w == 0.0)
                }
                _ => (values[j], true),
            };
            grid.push(v);
            observed.push(seen);
        }
        // Least-squares line, then clip what lies beyond CLIP_SIGMAS robust standard deviations of it.
        let n = m as f64;
        let mean_i = (n - 1.0) / 2.0;
        let mean_v = grid.iter().sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, v) in grid.iter().enumerate() {
            let di = i as f64 - mean_i;
            sxy += di * (v - mean_v);
            sxx += di * di;
        }
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        for (i, v) in grid.iter_mut().enumerate() {
            *v -= mean_v + slope * (i as f64 - mean_i);
        }
        let sigma = robust_sigma(&grid);
        let mut center = grid.clone();
        let center = median_in_place(&mut center).unwrap_or(0.0);
        let bound = if sigma > 0.0 { CLIP_SIGMAS * sigma } else { f64::INFINITY };
        let clip = (center - bound, center + bound);
        for v in grid.iter_mut() {
            *v = v.clamp(clip.0, clip.1);
        }
        let seen = observed.iter().filter(|&&o| o).count().max(1) as f64;
        let mean = grid.iter().zip(&observed).filter(|(_, o)| **o).map(|(v, _)| v).sum::<f64>() / seen;
        for (v, &o) in grid.iter_mut().zip(&observed) {
            *v = if o { *v - mean } else { 0.0 };
        }
        let line = (mean_v - slope * mean_i + mean, slope);
        Some(Grid { start, step, line, clip: (clip.0 - mean, clip.1 - mean), values: grid, observed })
    }

    /// The samples detrended, clipped and centred like the grid.
    fn sample_residuals(&self, times: &[f64], values: &[f64]) -> Vec<f64> {
        times
            .iter()
            .zip(values)
            .map(|(&t, &v)| {
                (v - self.line.0 - self.line.1 * (t - self.start) / self.step).clamp(self.clip.0, self.clip.1)
            })
            .collect()
    }

    fn times(&self) -> Vec<f64> {
        (0..self.values.len()).map(|i| self.start + i as f64 * self.step).collect()
    }

    /// The period near `rough` (within a frequency bin) whose folded profile explains the most variance: a
    /// tapered periodogram peak is only about a bin (`1 / span`) precise, and a profile drifts out of phase over
    /// many cycles unless its period is right to a fraction of that.
    fn refine(&self, series: &[f64], rough: f64) -> f64 {
        let span = self.step * series.len() as f64;
        let k = span / rough;
        let (lo, hi) = (span / (k + 1.0), span / (k - 1.0).max(0.5));
        const CANDIDATES: usize = 81;
        // The between-bin sum of squares; the bin count is the same for all candidates (within half a bin), so no
        // penalty for it is needed.
        let mut best = (f64::NEG_INFINITY, rough);
        for c in 0..CANDIDATES {
            let period = lo + (hi - lo) * c as f64 / (CANDIDATES - 1) as f64;
            let bins = bins_for(period, self.step);
            let (mut sum, mut count) = (vec![0.0; bins], vec![0usize; bins]);
            for (i, &v) in series.iter().enumerate() {
                let b = bin(self.start + i as f64 * self.step, period, bins);
                sum[b] += v;
                count[b] += 1;
            }
            let explained: f64 = sum.iter().zip(&count).filter(|(_, n)| **n > 0).map(|(s, &n)| s * s / n as f64).sum();
            if explained > best.0 {
                best = (explained, period);
            }
        }
        best.1
    }
}

/// Fourier pairs `(a_k, b_k)`, k = 1..=K, of one period.
struct Cycle {
    period: f64,
    coef: Vec<(f64, f64)>,
}

impl Cycle {
    /// Least squares of the first `harmonics` pairs of `period` on irregular samples, by projection repeated twice
    /// (on a span that is not a whole number of periods, or with gaps, the pairs are not quite orthogonal, and
    /// the second pass takes what the first left). `values` is left holding the residuals.
    fn fit(times: &[f64], values: &mut [f64], period: f64, harmonics: usize) -> Cycle {
        let base: Vec<(f64, f64)> = times.iter().map(|&t| angle(t, period).sin_cos()).collect();
        let n = times.len().max(1) as f64;
        let mut coef = vec![(0.0, 0.0); harmonics];
        for _pass in 0..2 {
            for (k, c) in coef.iter_mut().enumerate() {
                let (mut a, mut b) = (0.0, 0.0);
                for (&v, &b1) in values.iter().zip(&base) {
                    let (s, co) = harmonic(b1, k + 1);
                    a += v * s;
                    b += v * co;
                }
                let (a, b) = (2.0 * a / n, 2.0 * b / n);
                for (v, &b1) in values.iter_mut().zip(&base) {
                    let (s, co) = harmonic(b1, k + 1);
                    *v -= a * s + b * co;
                }
                c.0 += a;
                c.1 += b;
            }
        }
        Cycle { period, coef }
    }

    fn value(&self, t: f64) -> f64 {
        let b1 = angle(t, self.period).sin_cos();
        self.coef
            .iter()
            .enumerate()
            .map(|(k, (a, b))| {
                let (s, c) = harmonic(b1, k + 1);
                a * s + b * c
            })
            .sum()
    }
}

fn angle(t: f64, period: f64) -> f64 {
    std::f64::consts::TAU * (t - (t / period).floor() * period) / period
}

/// (sin kθ, cos kθ) from (sin θ, cos θ) by the angle-addition recurrence.
fn harmonic((s1, c1): (f64, f64), k: usize) -> (f64, f64) {
    let (mut s, mut c) = (s1, c1);
    for _ in 1..k {
        (s, c) = (s * c1 + c * s1, c * c1 - s * s1);
    }
    (s, c)
}

/// Whether a cycle of `period` is in the (detrended, clipped) samples: its first `harmonics` Fourier pairs
/// together explain more than noise would. For white noise of variance σ², the sum of squares 2K least-squares
/// terms explain is σ² χ²(2K); the test compares it with the `1 − FALSE_ALARM` quantile, σ² the robust variance
/// of what is left. Run on the samples themselves, not the grid: interpolated points are averages of their
/// neighbours, have less variance, and would make noise look like a cycle. A significant cycle is removed from
/// `values` (which then hold its residuals) and returned.
fn cycle_test(times: &[f64], values: &mut [f64], period: f64, harmonics: usize) -> Option<Cycle> {
    let before = values.to_vec();
    let cycle = Cycle::fit(times, values, period, harmonics);
    let explained: f64 = before.iter().zip(values.iter()).map(|(b, a)| (b - a).powi(2)).sum();
    let sigma = robust_sigma(values);
    let significant =
        if sigma > 0.0 { explained / (sigma * sigma) > chi2_quantile(2.0 * harmonics as f64) } else { explained > 0.0 };
    if significant {
        Some(cycle)
    } else {
        values.copy_from_slice(&before);
        None
    }
}

/// The `1 − FALSE_ALARM` quantile of χ²(dof), by the Wilson–Hilferty approximation (within 1% for dof ≥ 2).
fn chi2_quantile(dof: f64) -> f64 {
    // The standard normal's 1 − 10⁻³ quantile.
    const Z: f64 = 3.090_232;
    let a = 2.0 / (9.0 * dof);
    dof * (1.0 - a + Z * a.sqrt()).powi(3)
}

fn bins_for(period: f64, step: f64) -> usize {
    ((period / step).round() as usize).clamp(2, MAX_BINS)
}

/// The phase bin of `t` in a cycle of `period` seconds (origin: the unix epoch).
fn bin(t: f64, period: f64, bins: usize) -> usize {
    let within = t - (t / period).floor() * period;
    ((within / period * bins as f64) as usize).min(bins - 1)
}

/// A periodic shape: the median of each phase bin over every cycle.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Profile {
    pub period: f64,
    values: Vec<f64>,
}

impl Profile {
    /// The median of `residuals` per phase bin of `period` (bins one `step` wide). A bin with fewer than 3
    /// samples stays 0.
    pub fn fit(times: &[f64], residuals: &[f64], period: f64, step: f64) -> Profile {
        let bins = bins_for(period, step);
        let mut members: Vec<Vec<f64>> = vec![Vec::new(); bins];
        for (&t, &r) in times.iter().zip(residuals) {
            members[bin(t, period, bins)].push(r);
        }
        let values =
            members.iter_mut().map(|m| if m.len() >= 3 { median_in_place(m).unwrap_or(0.0) } else { 0.0 }).collect();
        Profile { period, values }
    }

    pub fn value(&self, t: f64) -> f64 {
        self.values[bin(t, self.period, self.values.len())]
    }

    /// The number of phase bins (the profile's parameters).
    pub fn bins(&self) -> usize {
        self.values.len()
    }
}
