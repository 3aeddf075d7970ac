//! Time as Maskinporten sees it: its `Date` header (RFC 9110 IMF-fixdate) tells how far this
//! machine's clock is off, and Maskinporten refuses grants more than 10 s off (MP-130).

/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate) for Unix seconds; times before 1970 as 1970.
pub fn http_date(unix: i64) -> String {
    let secs = u64::try_from(unix).unwrap_or(0);
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
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

/// Unix seconds of an HTTP date in any of RFC 9110's three forms (IMF-fixdate, the obsolete
/// RFC 850 form and asctime), as a recipient must accept them (RFC 9110 5.6.7).
pub fn parse_http_date(text: &str) -> Option<i64> {
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    let secs = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
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
        // The two obsolete forms a recipient must accept (RFC 9110 5.6.7).
        for obsolete in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(parse_http_date(obsolete), Some(784_111_777), "{obsolete}");
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
