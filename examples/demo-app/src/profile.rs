//! Request-rate profiles: what rate the load generator should offer at each moment of a run.
//!
//! A profile is parsed from one string (`constant:50`, `step:10,80@60`, `ramp:0,200@5m`, `cycle:5,120@10m`,
//! `trace:demand.csv@60`) into a [`ProfileSpec`]; a trace spec is then resolved into a [`Profile`] by reading its
//! file. [`rate_at`] is pure arithmetic over a resolved profile, so every shape is unit-tested without a clock.

use std::f64::consts::PI;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::trace::{Trace, TraceError};

/// A parsed profile string, before any file is read.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileSpec {
    /// A rate that never changes.
    Constant { rps: f64 },
    /// `before` until `at` seconds into the run, `after` from then on.
    Step { before: f64, after: f64, at: f64 },
    /// From `from` to `to` linearly over `over` seconds, then `to`.
    Ramp { from: f64, to: f64, over: f64 },
    /// A daily cycle compressed into `period` seconds: starts at `min` (night), peaks at `max` half a period
    /// later, back to `min` at the end of the period, and repeats.
    Cycle { min: f64, max: f64, period: f64 },
    /// Replay a `timestamp,value` CSV `speedup` times faster than real time.
    Trace { path: PathBuf, speedup: f64 },
}

/// A profile ready to be evaluated: the analytic shapes as parsed, a trace with its samples loaded and scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    /// One of the analytic shapes (never [`ProfileSpec::Trace`]).
    Shape(ProfileSpec),
    /// A loaded trace.
    Trace(Trace),
}

/// Why a profile string was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error(
        "unknown profile kind {kind:?}: expected constant:RPS, step:RPS1,RPS2@SECONDS, ramp:FROM,TO@SECONDS, \
         cycle:MIN,MAX@PERIOD or trace:FILE.csv[@SPEEDUP]"
    )]
    UnknownKind { kind: String },
    #[error("profile {profile:?} has no ':' (expected e.g. constant:50)")]
    MissingKind { profile: String },
    #[error("profile {kind}:{args} is malformed: expected {expected}")]
    Shape { kind: &'static str, args: String, expected: &'static str },
    #[error("{what} {value:?} is not a number")]
    ParseNumber { what: &'static str, value: String },
    #[error("{what} must be a finite number >= 0, got {value}")]
    NegativeRate { what: &'static str, value: f64 },
    #[error("{what} {value:?} is not a duration (use seconds, e.g. 90, or 90s, 10m, 1h)")]
    ParseDuration { what: &'static str, value: String },
    #[error("{what} must be greater than zero")]
    ZeroDuration { what: &'static str },
    #[error("cycle minimum {min} is above its maximum {max}")]
    CycleBounds { min: f64, max: f64 },
    #[error("trace speedup must be a finite number > 0, got {value}")]
    Speedup { value: f64 },
}

impl FromStr for ProfileSpec {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (kind, args) = s.split_once(':').ok_or_else(|| ProfileError::MissingKind { profile: s.to_owned() })?;
        match kind.trim() {
            "constant" => Ok(ProfileSpec::Constant { rps: rate("RPS", args)? }),
            "step" => {
                let (a, b, at) = pair_at("step", args, "step:RPS1,RPS2@SECONDS, e.g. step:10,80@60")?;
                Ok(ProfileSpec::Step {
                    before: rate("RPS1", a)?,
                    after: rate("RPS2", b)?,
                    at: duration("step time", at, true)?,
                })
            }
            "ramp" => {
                let (a, b, over) = pair_at("ramp", args, "ramp:FROM,TO@SECONDS, e.g. ramp:0,200@300")?;
                Ok(ProfileSpec::Ramp {
                    from: rate("FROM", a)?,
                    to: rate("TO", b)?,
                    over: duration("ramp time", over, false)?,
                })
            }
            "cycle" => {
                let (a, b, period) = pair_at("cycle", args, "cycle:MIN,MAX@PERIOD, e.g. cycle:5,120@10m")?;
                let (min, max) = (rate("MIN", a)?, rate("MAX", b)?);
                if min > max {
                    return Err(ProfileError::CycleBounds { min, max });
                }
                Ok(ProfileSpec::Cycle { min, max, period: duration("cycle period", period, false)? })
            }
            "trace" => {
                let (path, speedup) = match args.rsplit_once('@') {
                    Some((path, speedup)) => (path, number("trace speedup", speedup)?),
                    None => (args, 1.0),
                };
                if !(speedup.is_finite() && speedup > 0.0) {
                    return Err(ProfileError::Speedup { value: speedup });
                }
                if path.trim().is_empty() {
                    return Err(ProfileError::Shape {
                        kind: "trace",
                        args: args.to_owned(),
                        expected: "trace:FILE.csv[@SPEEDUP], e.g. trace:demand.csv@60",
                    });
                }
                Ok(ProfileSpec::Trace { path: PathBuf::from(path.trim()), speedup })
            }
            other => Err(ProfileError::UnknownKind { kind: other.to_owned() }),
        }
    }
}

impl ProfileSpec {
    /// Reads a trace's file (scaling its maximum to `max_rps`); the analytic shapes pass through unchanged.
    pub fn resolve(self, max_rps: f64) -> Result<Profile, TraceError> {
        match self {
            ProfileSpec::Trace { path, speedup } => Ok(Profile::Trace(Trace::load(&path, speedup, max_rps)?)),
            shape => Ok(Profile::Shape(shape)),
        }
    }
}

/// The rate, in requests per second, that `profile` asks for `t_seconds` after the start of the run.
/// Always finite and >= 0; a negative `t_seconds` is treated as 0.
pub fn rate_at(profile: &Profile, t_seconds: f64) -> f64 {
    let t = if t_seconds.is_finite() { t_seconds.max(0.0) } else { 0.0 };
    match profile {
        Profile::Trace(trace) => trace.rate_at(t),
        Profile::Shape(ProfileSpec::Constant { rps }) => *rps,
        Profile::Shape(ProfileSpec::Step { before, after, at }) => {
            if t < *at {
                *before
            } else {
                *after
            }
        }
        Profile::Shape(ProfileSpec::Ramp { from, to, over }) => {
            let progress = (t / over).min(1.0);
            from + (to - from) * progress
        }
        Profile::Shape(ProfileSpec::Cycle { min, max, period }) => {
            // A raised cosine: 0 at the start of each period, 1 in its middle.
            let phase = (t % period) / period;
            min + (max - min) * (1.0 - (2.0 * PI * phase).cos()) / 2.0
        }
        // `resolve` never produces this; offering nothing is the safe answer.
        Profile::Shape(ProfileSpec::Trace { .. }) => 0.0,
    }
}

/// Splits `A,B@T` into its three parts.
fn pair_at<'a>(
    kind: &'static str,
    args: &'a str,
    expected: &'static str,
) -> Result<(&'a str, &'a str, &'a str), ProfileError> {
    let malformed = || ProfileError::Shape { kind, args: args.to_owned(), expected };
    let (pair, at) = args.split_once('@').ok_or_else(malformed)?;
    let (a, b) = pair.split_once(',').ok_or_else(malformed)?;
    Ok((a, b, at))
}

fn number(what: &'static str, value: &str) -> Result<f64, ProfileError> {
    value.trim().parse::<f64>().map_err(|_| ProfileError::ParseNumber { what, value: value.trim().to_owned() })
}

fn rate(what: &'static str, value: &str) -> Result<f64, ProfileError> {
    let v = number(what, value)?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(ProfileError::NegativeRate { what, value: v });
    }
    Ok(v)
}

/// Seconds from either a bare number (`90`, `1.5`) or a humantime duration (`90s`, `10m`, `1h30m`).
fn duration(what: &'static str, value: &str, zero_ok: bool) -> Result<f64, ProfileError> {
    let v = value.trim();
    let secs = match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => n,
        Ok(_) => return Err(ProfileError::ParseDuration { what, value: v.to_owned() }),
        Err(_) => humantime::parse_duration(v)
            .map(|d: Duration| d.as_secs_f64())
            .map_err(|_| ProfileError::ParseDuration { what, value: v.to_owned() })?,
    };
    if secs == 0.0 && !zero_ok {
        return Err(ProfileError::ZeroDuration { what });
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(s: &str) -> Profile {
        Profile::Shape(s.parse().expect("valid profile"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn parses_every_kind() {
        assert_eq!("constant:50".parse(), Ok(ProfileSpec::Constant { rps: 50.0 }));
        assert_eq!("step:10,80@60".parse(), Ok(ProfileSpec::Step { before: 10.0, after: 80.0, at: 60.0 }));
        assert_eq!("ramp:0,200@5m".parse(), Ok(ProfileSpec::Ramp { from: 0.0, to: 200.0, over: 300.0 }));
        assert_eq!("cycle:5,120@10m".parse(), Ok(ProfileSpec::Cycle { min: 5.0, max: 120.0, period: 600.0 }));
        assert_eq!(
            "trace:data/taxi.csv@60".parse(),
            Ok(ProfileSpec::Trace { path: "data/taxi.csv".into(), speedup: 60.0 })
        );
        assert_eq!("trace:taxi.csv".parse(), Ok(ProfileSpec::Trace { path: "taxi.csv".into(), speedup: 1.0 }));
    }

    #[test]
    fn rejects_malformed_profiles_with_a_clear_message() {
        let err = |s: &str| s.parse::<ProfileSpec>().expect_err(s).to_string();
        assert!(err("sine:1,2@3").contains("unknown profile kind \"sine\""));
        assert!(err("50").contains("has no ':'"));
        assert!(err("constant:fast").contains("RPS \"fast\" is not a number"));
        assert!(err("constant:-5").contains(">= 0"));
        assert!(err("constant:NaN").contains(">= 0"));
        assert!(err("step:10,80").contains("step:RPS1,RPS2@SECONDS"));
        assert!(err("ramp:10@60").contains("ramp:FROM,TO@SECONDS"));
        assert!(err("ramp:0,10@soon").contains("not a duration"));
        assert!(err("cycle:10,5@10m").contains("above its maximum"));
        assert!(err("cycle:1,5@0").contains("greater than zero"));
        assert!(err("trace:x.csv@0").contains("speedup"));
        assert!(err("trace:@5").contains("trace:FILE.csv"));
    }

    #[test]
    fn constant_is_flat() {
        let p = shape("constant:50");
        for t in [0.0, 1.0, 3600.0] {
            assert_eq!(rate_at(&p, t), 50.0);
        }
    }

    #[test]
    fn step_switches_at_its_time() {
        let p = shape("step:10,80@60");
        assert_eq!(rate_at(&p, 0.0), 10.0);
        assert_eq!(rate_at(&p, 59.9), 10.0);
        assert_eq!(rate_at(&p, 60.0), 80.0);
        assert_eq!(rate_at(&p, 1000.0), 80.0);
    }

    #[test]
    fn ramp_is_linear_then_holds() {
        let p = shape("ramp:0,200@100");
        assert_eq!(rate_at(&p, 0.0), 0.0);
        assert!(close(rate_at(&p, 25.0), 50.0));
        assert!(close(rate_at(&p, 100.0), 200.0));
        assert_eq!(rate_at(&p, 500.0), 200.0);
        let down = shape("ramp:100,20@40");
        assert!(close(rate_at(&down, 20.0), 60.0));
        assert_eq!(rate_at(&down, 41.0), 20.0);
    }

    #[test]
    fn cycle_runs_from_min_to_max_and_back_each_period() {
        let p = shape("cycle:10,110@600");
        assert!(close(rate_at(&p, 0.0), 10.0));
        assert!(close(rate_at(&p, 150.0), 60.0));
        assert!(close(rate_at(&p, 300.0), 110.0));
        assert!(close(rate_at(&p, 450.0), 60.0));
        assert!(close(rate_at(&p, 600.0), 10.0));
        assert!(close(rate_at(&p, 900.0), 110.0));
        for t in 0..1200 {
            let r = rate_at(&p, f64::from(t));
            assert!((10.0 - 1e-9..=110.0 + 1e-9).contains(&r), "t={t} r={r}");
        }
    }

    #[test]
    fn negative_or_nan_time_counts_as_the_start() {
        let p = shape("step:1,2@10");
        assert_eq!(rate_at(&p, -5.0), 1.0);
        assert_eq!(rate_at(&p, f64::NAN), 1.0);
    }

    #[test]
    fn analytic_shapes_resolve_without_io() {
        let spec: ProfileSpec = "cycle:1,2@60".parse().expect("valid");
        assert_eq!(spec.clone().resolve(100.0), Ok(Profile::Shape(spec)));
    }
}
