//! RFC 3339 instants used in the document header.

use std::fmt;
use std::str::FromStr;

/// An instant with a UTC offset, written in RFC 3339 (`2026-11-22T10:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(jiff::Timestamp);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: Self = Self(jiff::Timestamp::UNIX_EPOCH);
    /// The latest representable instant.
    pub const MAX: Self = Self(jiff::Timestamp::MAX);

    /// The current time of the system clock.
    pub fn now() -> Self {
        Self(jiff::Timestamp::now())
    }

    /// Seconds since the Unix epoch.
    pub fn as_unix_seconds(self) -> i64 {
        self.0.as_second()
    }

    /// The instant `seconds` after the Unix epoch, if representable.
    pub fn from_unix_seconds(seconds: i64) -> Option<Self> {
        jiff::Timestamp::from_second(seconds).ok().map(Self)
    }
}

impl FromStr for Timestamp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        jiff::Timestamp::from_str(text)
            .map(Self)
            .map_err(|e| format!("{text:?} is not an RFC 3339 time with a UTC offset ({e})"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_offset() {
        let t: Timestamp = "2026-11-22T10:00:00+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-22T09:00:00Z");
    }

    #[test]
    fn rejects_local_time_without_offset() {
        let err = "2026-11-22T10:00:00".parse::<Timestamp>().unwrap_err();
        assert!(err.contains("UTC offset"), "{err}");
    }
}
