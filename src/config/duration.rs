//! Prometheus' duration grammar (`1d`, `5m30s`, `0`), which rule and test files
//! use. It differs from humantime: no fractions or spaces, `y` is 365 days.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A non-negative duration in milliseconds, written the Prometheus way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PromDuration(pub i64);

const UNITS: [(&str, i64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

impl PromDuration {
    /// Milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses `[0-9]+` + unit groups in descending order (`1h30m`), or `0`.
    pub fn parse(text: &str) -> Result<PromDuration, String> {
        match text {
            "0" => return Ok(PromDuration(0)),
            "" => return Err("empty duration string".into()),
            _ => {}
        }
        let invalid = || format!("not a valid duration string: {text:?}");
        let bytes = text.as_bytes();
        let (mut i, mut total, mut next_unit) = (0usize, 0i64, 0usize);
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(invalid());
            }
            let n: i64 = text[start..i].parse().map_err(|_| invalid())?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &text[unit_start..i];
            let position = UNITS[next_unit..]
                .iter()
                .position(|(u, _)| *u == unit)
                .ok_or_else(invalid)?;
            let (_, ms) = UNITS[next_unit + position];
            next_unit += position + 1;
            total = n
                .checked_mul(ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration out of range: {text:?}"))?;
        }
        Ok(PromDuration(total))
    }
}

impl fmt::Display for PromDuration {
    /// Prometheus' `model.Duration.String()`: years and weeks only when exact.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (i, (unit, size)) in UNITS.iter().enumerate() {
            if i < 2 && ms % size != 0 {
                continue;
            }
            let v = ms / size;
            if v > 0 {
                write!(f, "{v}{unit}")?;
                ms -= v * size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Text(t) => t,
            Raw::Number(n) => n.to_string(),
        };
        PromDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_like_prometheus() {
        for (text, ms, shown) in [
            ("0", 0, "0s"),
            ("5m", 300_000, "5m"),
            ("2m59s999ms", 179_999, "2m59s999ms"),
            ("100d", 8_640_000_000, "100d"),
            ("14d", 1_209_600_000, "2w"),
            ("1y", 31_536_000_000, "1y"),
            ("90s", 90_000, "1m30s"),
        ] {
            let d = PromDuration::parse(text).unwrap();
            assert_eq!(d.millis(), ms, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
        }
        for bad in ["", "1.5h", "1h 30m", "m", "5m1h", "1M", "-1s"] {
            assert!(
                PromDuration::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }
}
