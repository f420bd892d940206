use std::time::{Duration, SystemTime};

use crate::value::{DecodeError, InvalidReason, StoreValue};

/// An RFC 3339 time: the value of canaries and of the heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// How long ago this was (zero if it is in the future).
    pub fn age(&self) -> Duration {
        SystemTime::now().duration_since(self.0).unwrap_or_default()
    }

    /// Parses RFC 3339 (`2026-11-26T09:00:00Z`, fractions and offsets allowed).
    pub fn parse(s: &str) -> Option<Self> {
        humantime::parse_rfc3339_weak(s.trim())
            .ok()
            .map(Self)
            .or_else(|| parse_with_offset(s.trim()))
    }

    /// `2026-11-26T09:00:00Z` (UTC, whole seconds).
    pub fn to_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.0).to_string()
    }
}

/// `humantime` reads only `Z`; Go writes `+01:00` in non-UTC zones.
fn parse_with_offset(s: &str) -> Option<Timestamp> {
    let (main, sign, offset) = match s.rfind(['+', '-']) {
        Some(i) if i > 10 => (&s[..i], &s[i..i + 1], &s[i + 1..]),
        _ => return None,
    };
    let (h, m) = offset.split_once(':')?;
    let secs = h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60;
    let local = humantime::parse_rfc3339_weak(main).ok()?;
    let utc = if sign == "+" {
        local.checked_sub(Duration::from_secs(secs))?
    } else {
        local.checked_add(Duration::from_secs(secs))?
    };
    Some(Timestamp(utc))
}

impl StoreValue for Timestamp {
    const KIND: &'static str = "timestamp";

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(Self::parse)
            .ok_or_else(|| {
                DecodeError::new(
                    Self::KIND,
                    key,
                    InvalidReason::Malformed,
                    "not an RFC 3339 time",
                )
            })
    }

    fn encode(&self) -> Vec<u8> {
        self.to_rfc3339().into_bytes()
    }

    /// Timestamps live at fixed keys that the caller knows.
    fn key(&self) -> String {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_offsets() {
        let t = Timestamp::parse("2026-11-26T09:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-26T09:00:00Z");
        assert_eq!(Timestamp::parse("2026-11-26T10:00:00+01:00"), Some(t));
        assert_eq!(Timestamp::parse("2026-11-26T08:30:00-00:30"), Some(t));
        assert!(Timestamp::parse("2026-11-26T09:00:00.123456789Z").is_some());
        assert!(Timestamp::parse("yesterday").is_none());
        assert!(Timestamp::decode("k", b"nope").is_err());
    }
}
