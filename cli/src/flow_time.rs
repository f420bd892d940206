//! Times as `observe` reads and prints them, the way Hubble's CLI does:
//! `--since`/`--until` take a Go duration before now (`3s`, `4m`, `1h43m`,
//! `1.5h`) or a timestamp (`2006-01-02`, `2006-01-02T15Z07:00`,
//! `2006-01-02T15:04Z07:00`, RFC 3339 with any fraction, RFC 1123 with a
//! numeric zone); `--time-format` names one of Hubble's layouts, printed in
//! UTC as Hubble prints flow times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// A `--since`/`--until` value that is neither a duration nor a timestamp.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "cannot read {0:?} as a time: expected a duration before now (3s, 4m, 1h43m) or a \
     timestamp (2006-01-02, 2006-01-02T15:04:05Z07:00, Mon, 02 Jan 2006 15:04:05 -0700)"
)]
pub(crate) struct TimeParseError(String);

/// `input` as a point in time; relative durations count back from `now`.
pub(crate) fn parse_time(input: &str, now: SystemTime) -> Result<Timestamp, TimeParseError> {
    let err = || TimeParseError(input.to_owned());
    if let Some(nanos) = parse_go_duration(input) {
        let now = now.duration_since(UNIX_EPOCH).map_err(|_| err())?;
        let t = now.as_nanos() as i128 - nanos;
        return Ok(Timestamp {
            seconds: t.div_euclid(1_000_000_000) as i64,
            nanos: t.rem_euclid(1_000_000_000) as i32,
        });
    }
    parse_timestamp(input).ok_or_else(err)
}

/// Go's `time.ParseDuration`: `[-+]?(\d*(\.\d*)?unit)+` or `0`, in nanoseconds.
fn parse_go_duration(s: &str) -> Option<i128> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * unit;
    }
    let nanos = total.round() as i128;
    Some(if negative { -nanos } else { nanos })
}

fn digits(s: &str, n: usize) -> Option<(i64, &str)> {
    let head = s.get(..n)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &s[n..]))
}

fn expect<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.strip_prefix(prefix)
}

/// `Z`, `+07:00` or `-07:00` (the zone of Go's `Z07:00`), in seconds east.
fn zone_colon(s: &str) -> Option<(i64, &str)> {
    if let Some(rest) = s.strip_prefix('Z') {
        return Some((0, rest));
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, rest) = digits(&s[1..], 2)?;
    let rest = expect(rest, ":")?;
    let (m, rest) = digits(rest, 2)?;
    Some((sign * (h * 3600 + m * 60), rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    nanos: i64,
    /// Seconds east of UTC.
    offset: i64,
}

impl Civil {
    fn timestamp(&self) -> Option<Timestamp> {
        if !(1..=12).contains(&self.month)
            || self.day < 1
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 59
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let seconds =
            days * 86_400 + self.hour * 3600 + self.minute * 60 + self.second - self.offset;
        Some(Timestamp {
            seconds,
            nanos: self.nanos as i32,
        })
    }
}

fn parse_timestamp(s: &str) -> Option<Timestamp> {
    parse_iso(s).or_else(|| parse_rfc1123z(s))
}

/// `2006-01-02`, `2006-01-02T15Z07:00`, `2006-01-02T15:04Z07:00`,
/// `2006-01-02T15:04:05[.fraction]Z07:00`.
fn parse_iso(s: &str) -> Option<Timestamp> {
    let (year, rest) = digits(s, 4)?;
    let (month, rest) = digits(expect(rest, "-")?, 2)?;
    let (day, rest) = digits(expect(rest, "-")?, 2)?;
    let mut c = Civil {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        offset: 0,
    };
    if rest.is_empty() {
        return c.timestamp();
    }
    let (hour, mut rest) = digits(expect(rest, "T")?, 2)?;
    c.hour = hour;
    if let Some(r) = rest.strip_prefix(':') {
        let (minute, r) = digits(r, 2)?;
        c.minute = minute;
        rest = r;
        if let Some(r) = rest.strip_prefix(':') {
            let (second, r) = digits(r, 2)?;
            c.second = second;
            rest = r;
            if let Some(r) = rest.strip_prefix('.') {
                let n = r.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(r.len());
                if n == 0 || n > 9 {
                    return None;
                }
                let (frac, r) = digits(r, n)?;
                c.nanos = frac * 10_i64.pow(9 - n as u32);
                rest = r;
            }
        }
    }
    let (offset, rest) = zone_colon(rest)?;
    c.offset = offset;
    if !rest.is_empty() {
        return None;
    }
    c.timestamp()
}

/// `Mon, 02 Jan 2006 15:04:05 -0700`.
fn parse_rfc1123z(s: &str) -> Option<Timestamp> {
    let (_weekday, rest) = s.split_once(", ")?;
    let (day, rest) = digits(rest, 2)?;
    let rest = expect(rest, " ")?;
    let month = MONTHS.iter().position(|m| rest.starts_with(m))? as i64 + 1;
    let (year, rest) = digits(expect(&rest[3..], " ")?, 4)?;
    let (hour, rest) = digits(expect(rest, " ")?, 2)?;
    let (minute, rest) = digits(expect(rest, ":")?, 2)?;
    let (second, rest) = digits(expect(rest, ":")?, 2)?;
    let rest = expect(rest, " ")?;
    let sign = match rest.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hh, rest) = digits(&rest[1..], 2)?;
    let (mm, rest) = digits(rest, 2)?;
    if !rest.is_empty() {
        return None;
    }
    Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos: 0,
        offset: sign * (hh * 3600 + mm * 60),
    }
    .timestamp()
}

/// Hubble's `--time-format` layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum TimeFormat {
    /// Jan _2 15:04:05.000
    #[default]
    #[value(name = "StampMilli", alias = "stampmilli")]
    StampMilli,
    /// 2006-01-02
    #[value(name = "YearMonthDay", alias = "yearmonthday")]
    YearMonthDay,
    /// 2006-01-02T15Z07:00
    #[value(name = "YearMonthDayHour", alias = "yearmonthdayhour")]
    YearMonthDayHour,
    /// 2006-01-02T15:04Z07:00
    #[value(name = "YearMonthDayHourMinute", alias = "yearmonthdayhourminute")]
    YearMonthDayHourMinute,
    /// 2006-01-02T15:04:05Z07:00
    #[value(name = "RFC3339", alias = "rfc3339")]
    Rfc3339,
    /// 2006-01-02T15:04:05.999Z07:00
    #[value(name = "RFC3339Milli", alias = "rfc3339milli")]
    Rfc3339Milli,
    /// 2006-01-02T15:04:05.999999Z07:00
    #[value(name = "RFC3339Micro", alias = "rfc3339micro")]
    Rfc3339Micro,
    /// 2006-01-02T15:04:05.999999999Z07:00
    #[value(name = "RFC3339Nano", alias = "rfc3339nano")]
    Rfc3339Nano,
    /// Mon, 02 Jan 2006 15:04:05 -0700
    #[value(name = "RFC1123Z", alias = "rfc1123z")]
    Rfc1123Z,
}

/// A fraction of `digits` digits with trailing zeros cut, dot included
/// (Go's `.999`), or nothing when it is zero.
fn trimmed_fraction(nanos: i64, digits: u32) -> String {
    let value = nanos / 10_i64.pow(9 - digits);
    let s = format!("{value:0width$}", width = digits as usize);
    let s = s.trim_end_matches('0');
    if s.is_empty() {
        String::new()
    } else {
        format!(".{s}")
    }
}

/// `ts` in UTC in `format`, or `N/A` for a missing or invalid timestamp (as
/// Hubble prints it).
pub(crate) fn format_time(ts: Option<&Timestamp>, format: TimeFormat) -> String {
    let Some(ts) = ts else {
        return "N/A".to_owned();
    };
    // protobuf's valid range: 0001-01-01 to 9999-12-31.
    if !(-62_135_596_800..=253_402_300_799).contains(&ts.seconds)
        || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return "N/A".to_owned();
    }
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let nanos = i64::from(ts.nanos);
    let month = MONTHS[(m - 1) as usize];
    match format {
        TimeFormat::StampMilli => {
            format!(
                "{month} {d:>2} {hh:02}:{mm:02}:{ss:02}.{:03}",
                nanos / 1_000_000
            )
        }
        TimeFormat::YearMonthDay => format!("{y:04}-{m:02}-{d:02}"),
        TimeFormat::YearMonthDayHour => format!("{y:04}-{m:02}-{d:02}T{hh:02}Z"),
        TimeFormat::YearMonthDayHourMinute => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}Z"),
        TimeFormat::Rfc3339 => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
        TimeFormat::Rfc3339Milli | TimeFormat::Rfc3339Micro | TimeFormat::Rfc3339Nano => {
            let digits = match format {
                TimeFormat::Rfc3339Milli => 3,
                TimeFormat::Rfc3339Micro => 6,
                _ => 9,
            };
            format!(
                "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{}Z",
                trimmed_fraction(nanos, digits)
            )
        }
        TimeFormat::Rfc1123Z => format!(
            "{}, {d:02} {month} {y:04} {hh:02}:{mm:02}:{ss:02} +0000",
            WEEKDAYS[days.rem_euclid(7) as usize]
        ),
    }
}

/// Now, for relative times.
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

/// A `Duration` as Go's `time.Duration.String()` prints whole seconds
/// (`1h2m3s`, `4m0s`, `45s`, `0s`).
pub(crate) fn go_duration_seconds(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    /// 2024-05-01T10:11:12Z.
    const T: i64 = 1_714_558_272;

    #[test]
    fn relative_times_count_back_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(T as u64);
        assert_eq!(parse_time("3s", now), Ok(ts(T - 3, 0)));
        assert_eq!(parse_time("4m", now), Ok(ts(T - 240, 0)));
        assert_eq!(parse_time("1h43m", now), Ok(ts(T - 6180, 0)));
        assert_eq!(parse_time("1.5h", now), Ok(ts(T - 5400, 0)));
        assert_eq!(parse_time("250ms", now), Ok(ts(T - 1, 750_000_000)));
        assert_eq!(parse_time("0", now), Ok(ts(T, 0)));
        assert!(parse_time("3", now).is_err());
        assert!(parse_time("3d", now).is_err());
        assert!(parse_time("", now).is_err());
    }

    #[test]
    fn timestamps_in_hubble_layouts() {
        let now = SystemTime::now();
        let p = |s: &str| parse_time(s, now);
        assert_eq!(p("2024-05-01"), Ok(ts(1_714_521_600, 0)));
        assert_eq!(p("2024-05-01T10Z"), Ok(ts(T - 11 * 60 - 12, 0)));
        assert_eq!(p("2024-05-01T10:11Z"), Ok(ts(T - 12, 0)));
        assert_eq!(p("2024-05-01T10:11:12Z"), Ok(ts(T, 0)));
        assert_eq!(p("2024-05-01T12:11:12+02:00"), Ok(ts(T, 0)));
        assert_eq!(p("2024-05-01T10:11:12.5Z"), Ok(ts(T, 500_000_000)));
        assert_eq!(p("2024-05-01T10:11:12.123456789Z"), Ok(ts(T, 123_456_789)));
        assert_eq!(p("Wed, 01 May 2024 05:11:12 -0500"), Ok(ts(T, 0)));
        assert!(p("2024-02-30").is_err());
        assert!(p("2024-05-01T25:00Z").is_err());
        assert!(p("yesterday").is_err());
        assert_eq!(
            p("x").unwrap_err().to_string(),
            "cannot read \"x\" as a time: expected a duration before now (3s, 4m, 1h43m) or a \
             timestamp (2006-01-02, 2006-01-02T15:04:05Z07:00, Mon, 02 Jan 2006 15:04:05 -0700)"
        );
    }

    #[test]
    fn formats_in_utc_like_hubble() {
        let t = ts(T, 123_400_000);
        let f = |format| format_time(Some(&t), format);
        assert_eq!(f(TimeFormat::StampMilli), "May  1 10:11:12.123");
        assert_eq!(f(TimeFormat::YearMonthDay), "2024-05-01");
        assert_eq!(f(TimeFormat::YearMonthDayHour), "2024-05-01T10Z");
        assert_eq!(f(TimeFormat::YearMonthDayHourMinute), "2024-05-01T10:11Z");
        assert_eq!(f(TimeFormat::Rfc3339), "2024-05-01T10:11:12Z");
        assert_eq!(f(TimeFormat::Rfc3339Milli), "2024-05-01T10:11:12.123Z");
        assert_eq!(f(TimeFormat::Rfc3339Micro), "2024-05-01T10:11:12.1234Z");
        assert_eq!(f(TimeFormat::Rfc3339Nano), "2024-05-01T10:11:12.1234Z");
        assert_eq!(f(TimeFormat::Rfc1123Z), "Wed, 01 May 2024 10:11:12 +0000");
        assert_eq!(
            format_time(Some(&ts(T, 0)), TimeFormat::Rfc3339Nano),
            "2024-05-01T10:11:12Z"
        );
        assert_eq!(format_time(None, TimeFormat::StampMilli), "N/A");
        assert_eq!(format_time(Some(&ts(0, -1)), TimeFormat::StampMilli), "N/A");
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_seconds(Duration::from_secs(0)), "0s");
        assert_eq!(go_duration_seconds(Duration::from_secs(45)), "45s");
        assert_eq!(go_duration_seconds(Duration::from_secs(240)), "4m0s");
        assert_eq!(go_duration_seconds(Duration::from_secs(3723)), "1h2m3s");
    }
}
