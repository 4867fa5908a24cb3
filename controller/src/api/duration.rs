//! Durations as users write them in a policy: `15s`, `2m`, `1h30m`, `7d`.
//!
//! Kubernetes' own `metav1.Duration` has no day unit, but a forecast history of `7d` reads better than
//! `168h`, so policies use this type instead. It is a string in the schema, constrained by a pattern so that
//! the API server rejects a malformed duration at `kubectl apply`, and parsed with `humantime`.

use std::{borrow::Cow, fmt, str::FromStr, time};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The pattern the CRD schema enforces: one to four `<number><unit>` pairs, units ms, s, m, h, d, w, each number
/// of at most 6 digits (and 3 decimals), so that no duration the API server accepts overflows anything.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h|d|w)){1,4}$";

/// The longest string [`DURATION_PATTERN`] accepts.
pub const DURATION_MAX_LENGTH: usize = 4 * (6 + 4 + 2);

/// The longest duration a policy may give: ten years. Longer ones are rejected with a message (the pattern
/// alone would allow 4 x 999999w), because a time range that long is out of any Prometheus' and clock's reach.
pub const MAX_DURATION: time::Duration = time::Duration::from_secs(3650 * 86_400);

/// A non-negative duration written like `15s`, `2m`, `1h30m` or `7d`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(time::Duration::from_secs(secs))
    }

    pub const fn std(self) -> time::Duration {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
}

/// Why a duration string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: expected e.g. 15s, 2m, 1h30m or 7d (units ms, s, m, h, d, w), at most 3650d")]
pub struct ParseDurationError {
    pub input: String,
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError { input: s.to_owned() };
        // The same grammar as the schema pattern, so that what the API server accepts always parses here.
        if !valid_shape(s) {
            return Err(err());
        }
        let d = humantime::parse_duration(s).map_err(|_| err())?;
        if d > MAX_DURATION {
            return Err(err());
        }
        Ok(Duration(d))
    }
}

/// [`DURATION_PATTERN`], by hand: 1 to 4 pairs of a number (1-6 digits, optionally `.` and 1-3 digits) and a unit.
fn valid_shape(s: &str) -> bool {
    let mut rest = s;
    let mut pairs = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if !(1..=6).contains(&digits) {
            return false;
        }
        rest = &rest[digits..];
        if let Some(after) = rest.strip_prefix('.') {
            let decimals = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
            if !(1..=3).contains(&decimals) {
                return false;
            }
            rest = &after[decimals..];
        }
        let unit = ["ms", "s", "m", "h", "d", "w"].into_iter().find(|u| rest.starts_with(u));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
        pairs += 1;
    }
    (1..=4).contains(&pairs)
}

impl From<time::Duration> for Duration {
    fn from(d: time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl fmt::Display for Duration {
    /// Writes the shortest form a user would write: `15s`, `2m`, `1h30m`, `7d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::engine::format::duration(self.0))
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_users_write() {
        for (text, secs) in [("15s", 15), ("2m", 120), ("1h30m", 5400), ("7d", 604_800), ("2w", 1_209_600)] {
            assert_eq!(text.parse::<Duration>().unwrap(), Duration::from_secs(secs), "{text}");
        }
        assert_eq!("500ms".parse::<Duration>().unwrap().std(), time::Duration::from_millis(500));
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for bad in
            ["", "15", "m", "-5s", "1 h", "five minutes", "5min", "99999999999999999999999s", "1s1s1s1s1s", "1.5555s"]
        {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(err.to_string().contains("invalid duration"), "{bad}: {err}");
            assert!(!pattern.is_match(bad), "schema pattern would accept {bad:?}");
        }
    }

    #[test]
    fn schema_pattern_accepts_what_the_parser_accepts() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for good in ["15s", "2m", "1h30m", "7d", "2w", "500ms", "1.5h"] {
            assert!(pattern.is_match(good), "{good}");
            assert!(good.parse::<Duration>().is_ok(), "{good}");
        }
    }

    #[test]
    fn durations_beyond_ten_years_are_rejected_with_the_bound() {
        assert!("3650d".parse::<Duration>().is_ok());
        let err = "999999w".parse::<Duration>().unwrap_err();
        assert!(err.to_string().contains("at most 3650d"), "{err}");
        assert!(DURATION_MAX_LENGTH >= "999999.999ms".len() * 4);
    }

    #[test]
    fn displays_round_trip() {
        for text in ["15s", "2m", "1h30m", "7d", "500ms", "0s", "1d2h"] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
    }
}
