//! Recorded demand replayed as a rate profile.
//!
//! A trace is a CSV of `timestamp,value` rows (`YYYY-MM-DD HH:MM:SS`, an optional header line), such as the
//! NYC taxi demand trace the backtester uses. Values are scaled so the trace's maximum becomes `max_rps`, time is
//! compressed by a speedup (60 replays an hour of trace in a minute), the rate between two samples is linearly
//! interpolated, and a run longer than the trace starts it over.

use std::path::{Path, PathBuf};

use jiff::civil::DateTime;

/// A loaded trace: offsets in (sped-up) seconds from the first sample, and rates in requests per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    points: Vec<(f64, f64)>,
    /// The replay length before it starts over: the last offset plus one sample interval.
    period: f64,
}

/// Why a trace could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("cannot read trace {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}:{line}: expected `YYYY-MM-DD HH:MM:SS,value`, got {text:?}")]
    ParseRow { path: PathBuf, line: usize, text: String },
    #[error("{path}:{line}: timestamp {timestamp} is not after the previous row's")]
    NotIncreasing { path: PathBuf, line: usize, timestamp: String },
    #[error("{path}:{line}: value {value} is negative or not finite")]
    BadValue { path: PathBuf, line: usize, value: f64 },
    #[error("{path} has no positive value to scale to --max-rps")]
    NoDemand { path: PathBuf },
    #[error("--max-rps must be a finite number > 0, got {value}")]
    MaxRps { value: f64 },
}

impl Trace {
    /// Reads and scales a trace file.
    pub fn load(path: &Path, speedup: f64, max_rps: f64) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TraceError::Read { path: path.to_owned(), message: e.to_string() })?;
        Trace::parse(&text, path, speedup, max_rps)
    }

    /// Parses CSV text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path, speedup: f64, max_rps: f64) -> Result<Trace, TraceError> {
        if !(max_rps.is_finite() && max_rps > 0.0) {
            return Err(TraceError::MaxRps { value: max_rps });
        }
        let mut rows: Vec<(DateTime, f64)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let row = raw.trim();
            if row.is_empty() {
                continue;
            }
            let bad_row = || TraceError::ParseRow { path: path.to_owned(), line, text: row.to_owned() };
            let parsed = row.split_once(',').and_then(|(ts, value)| {
                let ts = DateTime::strptime("%Y-%m-%d %H:%M:%S", ts.trim()).ok()?;
                let value = value.trim().parse::<f64>().ok()?;
                Some((ts, value))
            });
            let (ts, value) = match parsed {
                Some(p) => p,
                // The first non-empty line may be a header such as `timestamp,value`.
                None if rows.is_empty() && !row.starts_with(|c: char| c.is_ascii_digit()) => continue,
                None => return Err(bad_row()),
            };
            if !(value.is_finite() && value >= 0.0) {
                return Err(TraceError::BadValue { path: path.to_owned(), line, value });
            }
            if rows.last().is_some_and(|(prev, _)| ts <= *prev) {
                return Err(TraceError::NotIncreasing { path: path.to_owned(), line, timestamp: ts.to_string() });
            }
            rows.push((ts, value));
        }
        let max = rows.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        let Some(&(first, _)) = rows.first() else {
            return Err(TraceError::NoDemand { path: path.to_owned() });
        };
        if max <= 0.0 {
            return Err(TraceError::NoDemand { path: path.to_owned() });
        }
        let points: Vec<(f64, f64)> =
            rows.iter().map(|(ts, v)| (ts.duration_since(first).as_secs_f64() / speedup, v / max * max_rps)).collect();
        let last = points.last().map_or(0.0, |p| p.0);
        let step = match points.len() {
            0 | 1 => 1.0,
            n => points[n - 1].0 - points[n - 2].0,
        };
        Ok(Trace { points, period: last + step })
    }

    /// The replay length in seconds before the trace starts over.
    pub fn period(&self) -> f64 {
        self.period
    }

    /// The interpolated rate `t` seconds into the replay.
    pub fn rate_at(&self, t: f64) -> f64 {
        let t = t % self.period;
        // Index of the first point after t.
        let after = self.points.partition_point(|(offset, _)| *offset <= t);
        match (after.checked_sub(1).and_then(|i| self.points.get(i)), self.points.get(after)) {
            (Some(&(t0, r0)), Some(&(t1, r1))) => r0 + (r1 - r0) * (t - t0) / (t1 - t0),
            (Some(&(_, r)), None) | (None, Some(&(_, r))) => r,
            (None, None) => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Profile, ProfileSpec, rate_at};

    const HOURLY: &str = "timestamp,value\n\
        2014-07-01 00:00:00,100\n\
        2014-07-01 01:00:00,400\n\
        2014-07-01 02:00:00,200\n";

    fn parse(text: &str, speedup: f64, max_rps: f64) -> Result<Trace, TraceError> {
        Trace::parse(text, Path::new("t.csv"), speedup, max_rps)
    }

    #[test]
    fn scales_the_maximum_to_max_rps_and_compresses_time() {
        // An hour of trace per minute: samples at 0 s, 60 s and 120 s; 400 becomes 80 rps.
        let trace = parse(HOURLY, 60.0, 80.0).expect("valid trace");
        assert_eq!(trace.rate_at(0.0), 20.0);
        assert_eq!(trace.rate_at(60.0), 80.0);
        assert_eq!(trace.rate_at(120.0), 40.0);
        assert_eq!(trace.period(), 180.0);
    }

    #[test]
    fn interpolates_between_samples_and_starts_over_after_the_end() {
        let trace = parse(HOURLY, 60.0, 80.0).expect("valid trace");
        assert!((trace.rate_at(30.0) - 50.0).abs() < 1e-9);
        assert_eq!(trace.rate_at(150.0), 40.0, "holds the last sample until the period ends");
        assert_eq!(trace.rate_at(180.0), 20.0, "then replays from the start");
        assert!((trace.rate_at(210.0) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn trace_profile_loads_from_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("demand.csv");
        std::fs::write(&path, HOURLY).expect("write");
        let spec: ProfileSpec = format!("trace:{}@3600", path.display()).parse().expect("valid profile");
        let profile = spec.resolve(100.0).expect("loads");
        assert!(matches!(profile, Profile::Trace(_)));
        // 3600x: an hour of trace per second.
        assert_eq!(rate_at(&profile, 0.0), 25.0);
        assert_eq!(rate_at(&profile, 1.0), 100.0);
        assert!((rate_at(&profile, 1.5) - 75.0).abs() < 1e-9);
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let spec: ProfileSpec = "trace:/nonexistent/demand.csv".parse().expect("valid profile");
        let err = spec.resolve(10.0).expect_err("no such file");
        assert!(err.to_string().starts_with("cannot read trace /nonexistent/demand.csv"), "{err}");
    }

    #[test]
    fn rejects_bad_rows_with_their_line_number() {
        let bad_ts = "2014-07-01 00:00:00,1\n01/07/2014 01:00,2\n";
        assert_eq!(
            parse(bad_ts, 1.0, 10.0),
            Err(TraceError::ParseRow { path: "t.csv".into(), line: 2, text: "01/07/2014 01:00,2".into() })
        );
        let backwards = "2014-07-01 01:00:00,1\n2014-07-01 00:00:00,2\n";
        assert!(matches!(parse(backwards, 1.0, 10.0), Err(TraceError::NotIncreasing { line: 2, .. })));
        let negative = "2014-07-01 00:00:00,-1\n";
        assert!(matches!(parse(negative, 1.0, 10.0), Err(TraceError::BadValue { line: 1, .. })));
        assert!(matches!(parse("timestamp,value\n", 1.0, 10.0), Err(TraceError::NoDemand { .. })));
        assert!(matches!(parse("2014-07-01 00:00:00,0\n", 1.0, 10.0), Err(TraceError::NoDemand { .. })));
        assert!(matches!(parse(HOURLY, 1.0, 0.0), Err(TraceError::MaxRps { .. })));
    }
}
