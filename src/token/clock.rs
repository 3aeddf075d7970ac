//! Time as Maskinporten sees it: its `Date` header (RFC 9110 IMF-fixdate) tells how far this
//! machine's clock is off, and Maskinporten refuses grants more than 10 s off (MP-130).

use crate::keys::x509::{civil_from_days, days_from_civil};

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Sun, 06 Nov 1994 08:49:37 GMT` for Unix seconds.
pub fn http_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A `Retry-After` value: delay seconds, or an HTTP date (against `now_unix`). Capped at an hour,
/// so a wild value cannot stop token requests for longer.
pub fn retry_after(value: &http::HeaderValue, now_unix: i64) -> Option<std::time::Duration> {
    let text = value.to_str().ok()?.trim();
    let secs = match text.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => u64::try_from(parse_http_date(text)? - now_unix).unwrap_or(0),
    };
    Some(std::time::Duration::from_secs(secs.min(3600)))
}

/// Unix seconds of an IMF-fixdate (the only form a server may send).
pub fn parse_http_date(text: &str) -> Option<i64> {
    let mut parts = text.split_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let mut hms = time.split(':').map(|n| n.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// How many seconds the server's clock is ahead of ours (negative: behind), from its `Date`
/// header and the local time the answer arrived. The header has whole seconds, so ±1 is noise.
pub fn skew(server_date: Option<&http::HeaderValue>, local_unix: i64) -> Option<i64> {
    let server = parse_http_date(server_date?.to_str().ok()?)?;
    Some(server - local_unix)
}

/// "this machine's clock is 42 s behind Maskinporten's", for hints.
pub fn describe_skew(skew: i64) -> String {
    match skew {
        0 => "this machine's clock agrees with Maskinporten's".into(),
        s if s > 0 => format!("this machine's clock is {s} s behind Maskinporten's"),
        s => format!("this machine's clock is {} s ahead of Maskinporten's", -s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        for t in [0, 1_700_000_000, 1_795_000_000, 4_102_444_799] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t), "{t}");
        }
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "yesterday",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn skew_is_server_minus_local() {
        let date = http::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(skew(Some(&date), 784_111_777 - 42), Some(42));
        assert!(describe_skew(42).contains("42 s behind"));
        assert!(describe_skew(-7).contains("7 s ahead"));
    }
}
