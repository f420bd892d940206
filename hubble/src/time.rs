//! Conversions between protobuf timestamps and [`SystemTime`].

use std::time::{Duration, SystemTime};

use prost_types::Timestamp;

/// `t` as a protobuf timestamp (times before 1970 become 1970).
pub fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// `t` as a [`SystemTime`] (negative or malformed parts are clamped).
pub fn system_time(t: Timestamp) -> SystemTime {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0).min(999_999_999);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(system_time(timestamp(t)), t);
        assert_eq!(
            system_time(Timestamp {
                seconds: -5,
                nanos: -1
            }),
            SystemTime::UNIX_EPOCH
        );
    }
}
