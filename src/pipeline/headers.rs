//! The one header policy, both ways. Upstream: nothing of the caller's connection (hop-by-hop
//! headers and the ones its `Connection` names), nothing of the caller's credentials (its
//! `Authorization`, cookies, API keys, portvakt's party headers and any `Portvakt-` header), the
//! route's own
//! headers, and the token once. Framing is never copied from the caller's head: the length or
//! chunking sent upstream is that of the body portvakt sends.

use crate::config::CallerAddress;
use crate::request::route::Route;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, EXPECT,
    HOST, TRANSFER_ENCODING, UPGRADE,
};
use hyper::body::SizeHint;
use std::net::IpAddr;

/// Hop-by-hop headers (RFC 9110 7.6.1), and `Upgrade`: they belong to one connection.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Headers that tell an upstream another path, method or caller than the request's own: an
/// upstream that honours `X-Original-URL` (IIS), a method override (Symfony, ASP.NET) or
/// `X-Forwarded-Prefix` (Spring) would route outside the route's base, and a caller's own address
/// headers would fake its address in a partner's audit log or pass internal addresses on. The
/// caller's are never sent; `forward_caller_address` has portvakt write its own.
const REWRITING: [&str; 13] = [
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "cf-connecting-ip",
];

/// Whether `name` is one of [`REWRITING`], or any `X-Forwarded-*` (`-For`, `-Host`, `-Proto`,
/// `-Prefix`, `-Port`, `-Server`, ...).
fn rewrites(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-forwarded-") || REWRITING.contains(&name)
}

/// What the body portvakt sends upstream looks like, for its framing headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all: no framing header (a caller's `Content-Length: 0` keeps its zero).
    None { declared_zero: bool },
    /// This many bytes: `Content-Length`.
    Length(u64),
    /// Of unknown length: chunked.
    Chunked,
}

impl Framing {
    /// From the body's own account of itself, and whether the caller's head declared a length.
    pub fn of(hint: &SizeHint, end_stream: bool, declared: bool) -> Framing {
        match hint.exact() {
            Some(len) if len > 0 && !end_stream => Framing::Length(len),
            None if !end_stream => Framing::Chunked,
            _ => Framing::None {
                declared_zero: declared,
            },
        }
    }
}

/// The request's headers as they go upstream, before the token is added with [`with_token`].
/// `peer` is the caller's address, written only where the route asks for it.
pub fn to_upstream(headers: &mut HeaderMap, route: &Route, framing: Framing, peer: IpAddr) {
    // One pass over the names the caller sent, rather than a removal (a hash) per rule: a
    // request carries a handful of headers, the rules name a dozen and more.
    remove_where(headers, |name| {
        // The client sets Host from the upstream URI; the caller's expectation was met by hyper.
        [HOST, CONTENT_LENGTH, EXPECT, AUTHORIZATION, COOKIE].contains(name)
            // Headers for portvakt itself (an API key, a party) never travel on: its configured
            // names, and anything in its own `Portvakt-` namespace, whether this route asks for
            // them or not.
            || route.parties.headers().any(|h| h == name)
            || route.consent.headers().contains(&name)
            || *name == route.api_key_header
            || name.as_str().starts_with("portvakt-")
            || rewrites(name)
    });
    if let Some((name, value)) = route
        .forward_caller_address
        .and_then(|how| address(how, peer))
    {
        headers.insert(name, value);
    }
    for (name, value) in &route.headers {
        headers.insert(name.clone(), value.clone());
    }
    match framing {
        Framing::None { declared_zero } => {
            if declared_zero {
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            }
        }
        Framing::Length(len) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        // hyper would send a GET of unknown length without its body unless told.
        Framing::Chunked => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
    }
}

/// The header that tells the upstream the caller's address (an IPv4 caller on a dual-stack
/// socket as its IPv4 address): RFC 7239's `Forwarded: for=192.0.2.7` (`for="[2001:db8::1]"` for
/// IPv6, quoted as section 4 asks), or `X-Forwarded-For: 192.0.2.7`.
fn address(how: CallerAddress, peer: IpAddr) -> Option<(HeaderName, HeaderValue)> {
    let peer = peer.to_canonical();
    let (name, text) = match (how, peer) {
        (CallerAddress::Forwarded, IpAddr::V4(v4)) => {
            (http::header::FORWARDED, format!("for={v4}"))
        }
        (CallerAddress::Forwarded, IpAddr::V6(v6)) => {
            (http::header::FORWARDED, format!("for=\"[{v6}]\""))
        }
        (CallerAddress::XForwardedFor, _) => {
            (HeaderName::from_static("x-forwarded-for"), peer.to_string())
        }
    };
    Some((name, HeaderValue::try_from(text).ok()?))
}

/// The token, the one `Authorization` the upstream sees.
pub fn with_token(headers: &mut HeaderMap, bearer: &HeaderValue) {
    headers.insert(AUTHORIZATION, bearer.clone());
}

/// The upstream's answer as it goes back: nothing of the upstream's connection, and one length at
/// most. A length sent beside a transfer coding is dropped (RFC 9112 6.3): hyper read the body by
/// the coding, and frames it anew for the caller. Lengths that disagree or are not numbers are an
/// invalid answer (hyper checks them where it reads a body by them, not on HEAD, 204 or 304).
pub fn from_upstream(headers: &mut HeaderMap) -> Result<(), &'static str> {
    // One look at every line first: most answers carry one plain length, and need no more.
    let (mut lengths, mut plain, mut coded) = (0, true, false);
    for (name, value) in headers.iter() {
        if *name == CONTENT_LENGTH {
            lengths += 1;
            let digits = value.as_bytes();
            // Digits only, without a leading zero: the form it is sent on in.
            plain &= digits.iter().all(u8::is_ascii_digit)
                && (digits.len() == 1 || digits.first().is_some_and(|d| *d != b'0'));
        } else if *name == TRANSFER_ENCODING {
            coded = true;
        }
    }
    if coded && lengths > 0 {
        headers.remove(CONTENT_LENGTH);
    } else if lengths > 1 || !plain {
        one_length(headers)?;
    }
    strip_hop_by_hop(headers);
    Ok(())
}

/// Several `Content-Length` values, or one list: one length if they all agree.
fn one_length(headers: &mut HeaderMap) -> Result<(), &'static str> {
    let mut lengths = headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii);
    if let Some(first) = lengths.next() {
        let number = |v: &[u8]| -> Option<u64> {
            let text = std::str::from_utf8(v).ok()?;
            text.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse().ok())?
        };
        let length = number(first).ok_or("the answer's Content-Length is not a number")?;
        if lengths.any(|other| number(other) != Some(length)) {
            return Err("the answer carries conflicting Content-Length values");
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(())
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, |_| false);
}

/// Removes every header that belongs to one connection (the hop-by-hop ones, and those the
/// `Connection` header names, RFC 9110 7.6.1) and every header `drop` says, all their values.
/// The names are found in one pass, then removed: a hash for each name removed, none for the
/// rules.
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let named: Vec<&str> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect();
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            HOP_BY_HOP.contains(name)
                || named.iter().any(|t| t.eq_ignore_ascii_case(name.as_str()))
                || drop(name)
        })
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop, Content-Length"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ] {
            h.insert(HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn framing_comes_from_the_body_sent() {
        let exact = |n| SizeHint::with_exact(n);
        assert_eq!(
            Framing::of(&exact(0), true, false),
            Framing::None {
                declared_zero: false
            }
        );
        assert_eq!(
            Framing::of(&exact(0), true, true),
            Framing::None {
                declared_zero: true
            }
        );
        assert_eq!(Framing::of(&exact(38), false, true), Framing::Length(38));
        assert_eq!(
            Framing::of(&SizeHint::new(), false, false),
            Framing::Chunked
        );
        assert_eq!(
            Framing::of(&SizeHint::new(), true, false),
            Framing::None {
                declared_zero: false
            }
        );
    }

    #[test]
    fn an_answer_framed_twice_keeps_only_its_coding() {
        let mut h = HeaderMap::new();
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        from_upstream(&mut h).unwrap();
        assert!(h.is_empty());
        let mut h = HeaderMap::new();
        h.append(CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(CONTENT_LENGTH, HeaderValue::from_static("05, 5"));
        from_upstream(&mut h).unwrap();
        assert_eq!(h.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"]);
        for (sent, kept) in [("5", "5"), ("0", "0"), ("007", "7"), (" 12 ", "12")] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_LENGTH, HeaderValue::from_static(sent));
            h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
            from_upstream(&mut h).unwrap();
            assert_eq!(h.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), [kept]);
            assert_eq!(h.len(), 1, "{sent}: Connection removed");
        }
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static(""));
        assert!(from_upstream(&mut h).is_err());
        for bad in [["5", "6"], ["5", "x"], ["-1", "-1"]] {
            let mut h = HeaderMap::new();
            for v in bad {
                h.append(CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            assert!(from_upstream(&mut h).is_err(), "{bad:?}");
        }
    }
}
