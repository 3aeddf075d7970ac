//! Wall-clock time as the protocols and the logs count it, on the `time` crate: Unix seconds, and
//! the few ways portvakt writes and reads a date (RFC 3339, a certificate's, a key id's). Every
//! date portvakt writes or reads is made here. A leaf module.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// Seconds since the Unix epoch (0 if the clock is set before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A UTC date and time of the proleptic Gregorian calendar as Unix seconds; `None` when there is
/// no such moment (a 30th of February, an hour 24).
pub fn from_civil(year: i64, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Option<i64> {
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, Month::try_from(month).ok()?, day)
            .ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// An RFC 3339 date-time (`2027-01-15T10:00:00Z`, `2027-01-15T11:00:00.5+01:00`) as Unix seconds,
/// fractions dropped; `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// `YYYY-MM-DD`, for `check`, key names and messages.
pub fn date(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => format!("@{unix}"),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, for the status page and messages.
pub fn datetime(unix: i64) -> String {
    format!("{} UTC", iso(unix).replacen('T', " ", 1))
}

/// `YYYY-MM-DDTHH:MM:SS.000000Z`: RFC 3339 with microseconds, as Kubernetes' MicroTime is written.
pub fn micro_time(unix: i64) -> String {
    format!("{}.000000Z", iso(unix))
}

/// `YYYY-MM-DDTHH:MM:SS`, in UTC: the part every written date-time starts with.
pub fn iso(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{}T{:02}:{:02}:{:02}",
            date(unix),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

/// Serde helpers for a point in time written as Unix seconds or as an RFC 3339 date-time.
pub mod unix_or_rfc3339 {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum When {
        Unix(i64),
        Text(String),
    }

    fn read<E: serde::de::Error>(w: When) -> Result<i64, E> {
        match w {
            When::Unix(t) => Ok(t),
            When::Text(s) => crate::support::time::parse_rfc3339(&s).ok_or_else(|| {
                E::custom(format!(
                    "`{s}` is neither Unix seconds nor an RFC 3339 date-time"
                ))
            }),
        }
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        read(When::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<When>::deserialize(d)?.map(read).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_and_read_back() {
        assert_eq!(from_civil(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(from_civil(2000, 3, 1, 0, 0, 0), Some(11_017 * 86_400));
        assert_eq!(from_civil(2026, 2, 29, 0, 0, 0), None);
        assert_eq!(from_civil(2026, 13, 1, 0, 0, 0), None);
        let t = from_civil(2024, 2, 29, 5, 20, 7).unwrap();
        assert_eq!(date(t), "2024-02-29");
        assert_eq!(datetime(t), "2024-02-29 05:20:07 UTC");
        assert_eq!(micro_time(t), "2024-02-29T05:20:07.000000Z");
        assert_eq!(parse_rfc3339(&micro_time(t)), Some(t));
        assert_eq!(date(-86_400), "1969-12-31");
        assert_eq!(date(i64::MAX), format!("@{}", i64::MAX));
    }

    #[test]
    fn rfc3339_date_times_read_as_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-30T05:20:00Z"), Some(1_796_016_000));
        assert_eq!(
            parse_rfc3339("2026-11-30T05:20:00.000000Z"),
            Some(1_796_016_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T06:20:00+01:00"),
            Some(1_796_016_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T04:20:00.5-01:00"),
            Some(1_796_016_000)
        );
        for bad in [
            "2026-11-30",
            "2026-13-01T00:00:00Z",
            "2026-11-30T05:20:00",
            "2026-11-30T05:20:00.Z",
            "2026-11-30T05:20:00+0100",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
