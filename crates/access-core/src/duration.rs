//! Access durations: `90s`, `30m`, `4h`, `2d`, or a bare integer meaning hours (the Cloud Connexa
//! document's `/vpn-access request dev-network 4 …`). An [`AccessDuration`] that exists is positive
//! and whole seconds; [`DurationBounds::check`] turns one into a duration a resource allows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A positive whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "DurationRepr", into = "String")]
pub struct AccessDuration(u64);

/// Accepts `"4h"` and `14400` alike in configuration and JSON.
#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Text(String),
    Seconds(u64),
}

impl TryFrom<DurationRepr> for AccessDuration {
    type Error = DurationError;
    fn try_from(r: DurationRepr) -> Result<Self, Self::Error> {
        match r {
            DurationRepr::Text(s) => s.parse(),
            DurationRepr::Seconds(s) => AccessDuration::from_secs(s),
        }
    }
}

impl From<AccessDuration> for String {
    fn from(d: AccessDuration) -> Self {
        d.to_string()
    }
}

/// Why a duration was refused. The messages are shown to people as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is not a duration.
    #[error(
        "'{0}' is not a duration. Use a number with a unit, like 90s, 30m, 4h or 2d (a bare number means hours)."
    )]
    Malformed(String),
    /// Zero length.
    #[error("A duration must be longer than zero.")]
    Zero,
    /// Outside the resource's bounds.
    #[error("Duration must be between {min} and {max} (you asked for {requested}).")]
    OutOfBounds {
        /// What was asked for.
        requested: AccessDuration,
        /// The shortest allowed.
        min: AccessDuration,
        /// The longest allowed.
        max: AccessDuration,
    },
}

const MAX_SECONDS: u64 = 366 * 24 * 3600;

impl AccessDuration {
    /// A duration of `secs` seconds (more than zero, at most a year).
    pub fn from_secs(secs: u64) -> Result<Self, DurationError> {
        if secs == 0 {
            Err(DurationError::Zero)
        } else if secs > MAX_SECONDS {
            Err(DurationError::Malformed(format!("{secs}s")))
        } else {
            Ok(Self(secs))
        }
    }

    /// For constants known to be valid (non-zero, under a year).
    pub(crate) const fn const_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// The length in seconds.
    pub const fn secs(self) -> u64 {
        self.0
    }

    /// As a `chrono` duration.
    pub fn as_chrono(self) -> chrono::Duration {
        // Bounded by MAX_SECONDS, so the cast cannot wrap.
        chrono::Duration::seconds(self.0 as i64)
    }

    /// As a `std` duration.
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }

    /// Human form used in messages: `4 hours`, `30 minutes`, `1 day 2 hours`.
    pub fn human(self) -> String {
        let mut parts = Vec::new();
        let mut rest = self.0;
        for (unit, size) in [
            ("day", 86_400),
            ("hour", 3_600),
            ("minute", 60),
            ("second", 1),
        ] {
            let n = rest / size;
            rest %= size;
            if n > 0 {
                parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
            }
        }
        parts.join(" ")
    }
}

impl fmt::Display for AccessDuration {
    /// Compact form that parses back: `90s`, `30m`, `4h`, `2d`, `1h30m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            let n = rest / size;
            rest %= size;
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for AccessDuration {
    type Err = DurationError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let s = raw.trim().to_ascii_lowercase();
        let malformed = || DurationError::Malformed(raw.trim().chars().take(40).collect());
        if s.is_empty() {
            return Err(malformed());
        }
        // A bare integer means hours, as in `/vpn-access request dev-network 4 …`.
        if s.chars().all(|c| c.is_ascii_digit()) {
            let hours: u64 = s.parse().map_err(|_| malformed())?;
            return Self::from_secs(hours.checked_mul(3_600).ok_or_else(malformed)?);
        }
        // One or more `<number><unit>` groups: `90s`, `1h30m`.
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut chars = s.chars().peekable();
        let mut groups = 0;
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if c.is_whitespace() {
                continue; // `2 hours`
            }
            let mut unit = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphabetic() {
                    unit.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            let size: u64 = match unit.as_str() {
                "s" | "sec" | "secs" | "second" | "seconds" => 1,
                "m" | "min" | "mins" | "minute" | "minutes" => 60,
                "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
                "d" | "day" | "days" => 86_400,
                "w" | "week" | "weeks" => 7 * 86_400,
                _ => return Err(malformed()),
            };
            if digits.is_empty() {
                return Err(malformed());
            }
            let n: u64 = digits.parse().map_err(|_| malformed())?;
            digits.clear();
            total = n
                .checked_mul(size)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(malformed)?;
            groups += 1;
        }
        if !digits.is_empty() || groups == 0 {
            return Err(malformed());
        }
        Self::from_secs(total)
    }
}

/// The durations one resource allows, and the one it uses when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationBounds {
    /// Used when none is asked for.
    pub default: AccessDuration,
    /// The shortest allowed.
    pub min: AccessDuration,
    /// The longest allowed.
    pub max: AccessDuration,
}

/// Why a resource's duration settings are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    /// `min_duration` is longer than `max_duration`.
    #[error("min_duration ({min}) is longer than max_duration ({max})")]
    MinAboveMax {
        /// The configured minimum.
        min: AccessDuration,
        /// The configured maximum.
        max: AccessDuration,
    },
    /// `default_duration` is outside `min_duration..max_duration`.
    #[error("default_duration ({default}) is outside {min}..{max}")]
    DefaultOutside {
        /// The configured default.
        default: AccessDuration,
        /// The configured minimum.
        min: AccessDuration,
        /// The configured maximum.
        max: AccessDuration,
    },
}

impl DurationBounds {
    /// The default minimum: one minute (may be configured as low as one second).
    pub const DEFAULT_MIN: AccessDuration = AccessDuration(60);

    /// Bounds with `default` between `min` and `max`.
    pub fn new(
        default: AccessDuration,
        min: AccessDuration,
        max: AccessDuration,
    ) -> Result<Self, BoundsError> {
        if min > max {
            return Err(BoundsError::MinAboveMax { min, max });
        }
        if default < min || default > max {
            return Err(BoundsError::DefaultOutside { default, min, max });
        }
        Ok(Self { default, min, max })
    }

    /// The duration to grant for what the person typed (or the default when they typed nothing).
    pub fn check(
        &self,
        requested: Option<AccessDuration>,
    ) -> Result<AccessDuration, DurationError> {
        let d = requested.unwrap_or(self.default);
        if d < self.min || d > self.max {
            return Err(DurationError::OutOfBounds {
                requested: d,
                min: self.min,
                max: self.max,
            });
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> AccessDuration {
        s.parse().unwrap()
    }

    #[test]
    fn parses_units_and_bare_hours() {
        assert_eq!(d("90s").secs(), 90);
        assert_eq!(d("30m").secs(), 1_800);
        assert_eq!(d("4h").secs(), 14_400);
        assert_eq!(d("2d").secs(), 172_800);
        assert_eq!(d("4").secs(), 14_400);
        assert_eq!(d("1h30m").secs(), 5_400);
        assert_eq!(d(" 4H ").secs(), 14_400);
        assert_eq!(d("2 hours").secs(), 7_200);
    }

    #[test]
    fn rejects_garbage_with_a_message() {
        for bad in ["", "h", "4x", "abc", "4h5", "-3h", "1.5h"] {
            let e = bad.parse::<AccessDuration>().unwrap_err();
            assert!(matches!(e, DurationError::Malformed(_)), "{bad}: {e:?}");
        }
        assert_eq!(
            "0".parse::<AccessDuration>().unwrap_err(),
            DurationError::Zero
        );
        assert_eq!(
            "0s".parse::<AccessDuration>().unwrap_err(),
            DurationError::Zero
        );
        assert!("99999999999999999999h".parse::<AccessDuration>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["30m", "4h", "2d", "1h30m", "1d2h3m4s"] {
            assert_eq!(d(s).to_string(), s);
            assert_eq!(d(&d(s).to_string()), d(s));
        }
        assert_eq!(d("90s").to_string(), "1m30s");
        assert_eq!(d("1m30s"), d("90s"));
        assert_eq!(d("1h30m").human(), "1 hour 30 minutes");
        assert_eq!(d("2d").human(), "2 days");
    }

    #[test]
    fn bounds_name_themselves() {
        let b = DurationBounds::new(d("4h"), d("1m"), d("24h")).unwrap();
        assert_eq!(b.check(None).unwrap(), d("4h"));
        assert_eq!(b.check(Some(d("2h"))).unwrap(), d("2h"));
        let e = b.check(Some(d("2d"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Duration must be between 1m and 1d (you asked for 2d)."
        );
        assert!(b.check(Some(d("30s"))).is_err());
        assert!(DurationBounds::new(d("1h"), d("2h"), d("1h")).is_err());
        assert!(DurationBounds::new(d("5h"), d("1h"), d("4h")).is_err());
        // one second is a legal minimum
        let tight = DurationBounds::new(d("2s"), d("1s"), d("10s")).unwrap();
        assert_eq!(tight.check(Some(d("1s"))).unwrap().secs(), 1);
    }

    #[test]
    fn serde_accepts_text_and_seconds() {
        let a: AccessDuration = serde_json::from_str("\"4h\"").unwrap();
        let b: AccessDuration = serde_json::from_str("14400").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"4h\"");
        assert!(serde_json::from_str::<AccessDuration>("\"nope\"").is_err());
    }
}
