//! A recorded load trace: `timestamp,value` rows, checked strictly, with linear interpolation between points.
//!
//! Timestamps may be naive `YYYY-MM-DD HH:MM:SS` (read as UTC, as the NAB traces are written), RFC 3339, or
//! Unix seconds. A malformed row, a timestamp out of order or a repeated one is an error naming its line: a
//! backtest over a silently repaired trace would score a load nobody recorded.

use std::path::Path;

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};

/// Why a trace cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("cannot read trace {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("trace is empty: expected the header `timestamp,value` and at least two rows")]
    Empty,
    #[error("line 1: expected the header `timestamp,value`, found {found:?}")]
    Header { found: String },
    #[error("line {line}: expected two fields `timestamp,value`, found {found}")]
    FieldCount { line: usize, found: usize },
    #[error("line {line}: cannot read timestamp {text:?} (expected `YYYY-MM-DD HH:MM:SS`, RFC 3339 or Unix seconds)")]
    Timestamp { line: usize, text: String },
    #[error("line {line}: value {text:?} is not a finite number >= 0")]
    Value { line: usize, text: String },
    #[error("line {line}: timestamp {time} is earlier than the previous row's {previous}")]
    Unsorted { line: usize, time: Timestamp, previous: Timestamp },
    #[error("line {line}: timestamp {time} repeats the previous row's")]
    Duplicate { line: usize, time: Timestamp },
    #[error("trace has only {rows} row(s); a backtest needs at least two")]
    TooShort { rows: usize },
    #[error("Prometheus query returned a sample at {time} with value {value}, not a finite number >= 0")]
    SampleValue { time: Timestamp, value: f64 },
}

/// A parsed trace: points in time order, at least two of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Unix seconds, strictly increasing.
    pub times: Vec<i64>,
    /// Offered load per `step`, in the trace's unit.
    pub values: Vec<f64>,
    /// The trace's step: the most common spacing of its rows, in seconds.
    pub step: i64,
    /// Spacings longer than one and a half steps: missing rows, bridged by interpolation.
    pub gaps: usize,
}

impl Trace {
    /// Reads and parses a CSV file.
    pub fn read(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TraceError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Trace::parse(&text)
    }

    /// Parses CSV text with the header `timestamp,value`.
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty());
        let Some((_, header)) = lines.next() else { return Err(TraceError::Empty) };
        let fields: Vec<String> = header.split(',').map(|f| unquote(f).to_ascii_lowercase()).collect();
        if fields != ["timestamp", "value"] {
            return Err(TraceError::Header { found: header.to_string() });
        }
        let mut times: Vec<i64> = Vec::new();
        let mut values: Vec<f64> = Vec::new();
        for (line, row) in lines {
            let fields: Vec<&str> = row.split(',').map(unquote).collect();
            let [ts, value] = fields[..] else {
                return Err(TraceError::FieldCount { line, found: fields.len() });
            };
            let time = parse_time(ts).ok_or_else(|| TraceError::Timestamp { line, text: ts.to_string() })?;
            let value = value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| TraceError::Value { line, text: value.to_string() })?;
            if let Some(&previous) = times.last() {
                let stamp = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
                if time == previous {
                    return Err(TraceError::Duplicate { line, time: stamp(time) });
                }
                if time < previous {
                    return Err(TraceError::Unsorted { line, time: stamp(time), previous: stamp(previous) });
                }
            }
            times.push(time);
            values.push(value);
        }
        Trace::new(times, values)
    }

    /// A trace from samples of a Prometheus range query (whose values are already load per `step`). NaN and
    /// missing points are gaps; negative or infinite values are errors.
    pub fn from_samples(samples: &[(Timestamp, f64)]) -> Result<Trace, TraceError> {
        let mut times: Vec<i64> = Vec::with_capacity(samples.len());
        let mut values: Vec<f64> = Vec::with_capacity(samples.len());
        for &(time, value) in samples {
            if value.is_nan() {
                continue;
            }
            if !value.is_finite() || value < 0.0 {
                return Err(TraceError::SampleValue { time, value });
            }
            let t = time.as_second();
            if times.last().is_some_and(|&last| t <= last) {
                continue;
            }
            times.push(t);
            values.push(value);
        }
        Trace::new(times, values)
    }

    /// A trace from strictly increasing `times` and their values: at least two points; the step is the most
    /// common spacing and longer spacings are counted as gaps.
    fn new(times: Vec<i64>, values: Vec<f64>) -> Result<Trace, TraceError> {
        if times.is_empty() {
            return Err(TraceError::Empty);
        }
        if times.len() < 2 {
            return Err(TraceError::TooShort { rows: times.len() });
        }
        let step = most_common_spacing(&times);
        let gaps = times.windows(2).filter(|w| (w[1] - w[0]) * 2 > step * 3).count();
        Ok(Trace { times, values, step, gaps })
    }

    pub fn start(&self) -> i64 {
        self.times[0]
    }

    pub fn end(&self) -> i64 {
        self.times[self.times.len() - 1]
    }

    /// The `q`-quantile (0..=1) of the values, by nearest rank.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    pub fn max(&self) -> f64 {
        self.values.iter().copied().fold(0.0, f64::max)
    }

    /// The load at every `tick` seconds from the start through the end, linearly interpolated.
    pub fn resample(&self, tick: i64) -> Vec<f64> {
        let n = ((self.end() - self.start()) / tick.max(1)) as usize + 1;
        let mut out = Vec::with_capacity(n);
        let mut i = 0;
        for k in 0..n {
            let t = self.start() + k as i64 * tick;
            while i + 2 < self.times.len() && self.times[i + 1] <= t {
                i += 1;
            }
            let (t0, t1) = (self.times[i], self.times[i + 1]);
            let (v0, v1) = (self.values[i], self.values[i + 1]);
            let f = ((t - t0) as f64 / (t1 - t0) as f64).clamp(0.0, 1.0);
            out.push(v0 + (v1 - v0) * f);
        }
        out
    }
}

fn unquote(field: &str) -> &str {
    let f = field.trim();
    f.strip_prefix('"').and_then(|f| f.strip_suffix('"')).unwrap_or(f).trim()
}

/// Naive `YYYY-MM-DD HH:MM:SS` (UTC), RFC 3339, or Unix seconds (fractions rounded).
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs.abs() < 1e12).then(|| secs.round() as i64);
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts.as_second());
    }
    let dt: DateTime = text.parse().ok()?;
    dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp().as_second())
}

/// The most common spacing of consecutive rows (the smallest on a tie), robust to a few gaps.
fn most_common_spacing(times: &[i64]) -> i64 {
    let mut diffs: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    diffs.sort_unstable();
    let mut best = (diffs[0], 0usize);
    let mut run = (diffs[0], 0usize);
    for &d in &diffs {
        if d == run.0 {
            run.1 += 1;
        } else {
            run = (d, 1);
        }
        if run.1 > best.1 {
            best = run;
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_timestamp_forms() {
        let naive = Trace::parse("timestamp,value\n2014-07-01 00:00:00,10\n2014-07-01 00:30:00,20\n").unwrap();
        assert_eq!(naive.times, vec![1_404_172_800, 1_404_174_600]);
        assert_eq!(naive.step, 1800);
        let rfc = Trace::parse("timestamp,value\n2014-07-01T00:00:00Z,10\n2014-07-01T02:00:01+02:00,20\n").unwrap();
        assert_eq!(rfc.times, vec![1_404_172_800, 1_404_172_800 + 1]);
        let unix = Trace::parse("timestamp,value\n1404172800,1.5\n1404172860,2\n").unwrap();
        assert_eq!(unix.times, vec![1_404_172_800, 1_404_172_860]);
        assert_eq!(unix.values, vec![1.5, 2.0]);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: [(&str, TraceError); 8] = [
            ("", TraceError::Empty),
            ("timestamp,value\n", TraceError::Empty),
            ("time,load\n1,2\n", TraceError::Header { found: "time,load".into() }),
            ("timestamp,value\n1,2\n2,3,4\n", TraceError::FieldCount { line: 3, found: 3 }),
            ("timestamp,value\n1,2\nyesterday,3\n", TraceError::Timestamp { line: 3, text: "yesterday".into() }),
            ("timestamp,value\n1,2\n2,-3\n", TraceError::Value { line: 3, text: "-3".into() }),
            ("timestamp,value\n1,2\n", TraceError::TooShort { rows: 1 }),
            ("timestamp,value\n10,2\n20,NaN\n", TraceError::Value { line: 3, text: "NaN".into() }),
        ];
        for (text, want) in cases {
            assert_eq!(Trace::parse(text), Err(want), "{text:?}");
        }
        let unsorted = Trace::parse("timestamp,value\n100,1\n200,1\n150,1\n").unwrap_err();
        assert!(matches!(unsorted, TraceError::Unsorted { line: 4, .. }), "{unsorted:?}");
        assert!(unsorted.to_string().starts_with("line 4:"), "{unsorted}");
        let duplicate = Trace::parse("timestamp,value\n100,1\n\n100,1\n").unwrap_err();
        assert!(matches!(duplicate, TraceError::Duplicate { line: 4, .. }), "blank lines still count: {duplicate:?}");
    }

    #[test]
    fn gaps_are_counted_and_bridged() {
        let t = Trace::parse("timestamp,value\n0,0\n60,60\n120,120\n300,300\n360,0\n").unwrap();
        assert_eq!(t.step, 60);
        assert_eq!(t.gaps, 1);
        // Linear between 120 and 300 across the gap.
        let loads = t.resample(30);
        assert_eq!(loads.len(), 13);
        assert_eq!(loads[5], 150.0);
        assert_eq!(loads[8], 240.0);
        assert_eq!(loads[11], 150.0);
        assert_eq!(loads[12], 0.0);
    }

    #[test]
    fn quantile_by_nearest_rank() {
        let rows: String = (1..=100).map(|i| format!("{i},{i}\n")).collect();
        let t = Trace::parse(&format!("timestamp,value\n{rows}")).unwrap();
        assert_eq!(t.quantile(0.99), 99.0);
        assert_eq!(t.quantile(1.0), 100.0);
        assert_eq!(t.max(), 100.0);
    }
}
