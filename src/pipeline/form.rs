//! The request's form, judged before anything else looks at it. hyper frames the message (it
//! refuses conflicting lengths, bare CR, obs-fold and codings that do not end in chunked); these
//! are the rules of RFC 9112 it leaves to the server: the target's grammar, the Host line, the
//! transfer codings, and what a proxy that is not a forward proxy refuses.

use crate::request::error::ProxyError;
use http::header::{HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Method, Version};

/// Every rule on the request's form, in the order a reader would check them.
pub fn check(head: &Parts) -> Result<(), ProxyError> {
    if head.method == Method::CONNECT {
        return Err(ProxyError::Connect);
    }
    // HTTP/2 always carries scheme and authority; in HTTP/1 a full URL means the caller takes
    // portvakt for a forward proxy, and the URL's host must never choose where a call goes.
    if head.version <= Version::HTTP_11 && head.uri.authority().is_some() {
        return Err(ProxyError::AbsoluteForm);
    }
    let target = head.uri.path_and_query().map_or("", |pq| pq.as_str());
    if !is_origin_form(target.as_bytes()) {
        return Err(ProxyError::InvalidTarget);
    }
    host(head)?;
    transfer_codings(&head.headers)
}

/// RFC 9112 3.2.1: `absolute-path [ "?" query ]`, every byte a pchar (unreserved, sub-delims,
/// `:`, `@`, or a whole `%HH` escape), `/` between segments, and `/` or `?` in the query. The
/// http crate drops a `#fragment` before portvakt sees the target, so what remains is what goes
/// upstream; anything else (raw quotes, braces, `\`, non-ASCII bytes) could be read differently
/// by the upstream and is refused.
pub fn is_origin_form(target: &[u8]) -> bool {
    // `?` starts the query, and the query may hold more of both.
    target.first() == Some(&b'/') && is_escaped(target, |b| matches!(b, b'?' | b'/') || is_pchar(b))
}

/// Every byte of `text` is one `allowed` lets through, or part of a whole `%HH` escape
/// (RFC 3986 2.1).
fn is_escaped(text: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut rest = text;
    while let Some((&b, after)) = rest.split_first() {
        rest = match b {
            b'%' if after.len() >= 2 && after[..2].iter().all(u8::is_ascii_hexdigit) => &after[2..],
            b'%' => return false,
            _ if allowed(b) => after,
            _ => return false,
        };
    }
    true
}

/// unreserved / sub-delims / ":" / "@" (RFC 3986 3.3), escapes aside.
fn is_pchar(b: u8) -> bool {
    URI_BYTES[usize::from(b)] >= PCHAR
}

/// unreserved / sub-delims (RFC 3986 2.2, 2.3).
fn is_unreserved_or_sub_delim(b: u8) -> bool {
    URI_BYTES[usize::from(b)] == UNRESERVED_OR_SUB_DELIM
}

/// `:` and `@`: pchars beyond the reg-name's bytes.
const PCHAR: u8 = 1;
const UNRESERVED_OR_SUB_DELIM: u8 = 2;

/// What each byte is in a URI, looked up once per byte: the targets' and hosts' checks run on
/// every request, over every byte of the target.
const URI_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
            // sub-delims
            || matches!(c, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
        {
            UNRESERVED_OR_SUB_DELIM
        } else if matches!(c, b':' | b'@') {
            PCHAR
        } else {
            0
        };
        b += 1;
    }
    table
};

/// RFC 9112 3.2: an HTTP/1.1 request has exactly one Host line, any request at most one, and its
/// value is empty or a valid `host[:port]`. Where the call goes never depends on it.
fn host(head: &Parts) -> Result<(), ProxyError> {
    let mut lines = head.headers.get_all(HOST).iter();
    let (first, count) = (lines.next(), 1 + lines.count());
    let Some(value) = first else {
        return match head.version {
            Version::HTTP_11 => Err(ProxyError::InvalidHost(0)),
            _ => Ok(()),
        };
    };
    if count > 1 {
        return Err(ProxyError::InvalidHost(count));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || is_host_and_port(bytes) {
        Ok(())
    } else {
        Err(ProxyError::InvalidHost(1))
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 7.2, RFC 3986 3.2.2): an IP literal in brackets or a
/// reg-name (which takes in IPv4 addresses), then a port of digits. No user info, no path. Checked
/// byte by byte here rather than by parsing an `http::uri::Authority`, which copies the value, is
/// looser (any `%`, any text as port) and cost 3 % of a request's instructions.
fn is_host_and_port(bytes: &[u8]) -> bool {
    let host_end = match bytes.first() {
        Some(b'[') => bytes.iter().position(|b| *b == b']').map(|end| end + 1),
        _ => Some(bytes.iter().position(|b| *b == b':').unwrap_or(bytes.len())),
    };
    let Some((host, port)) = host_end.map(|end| bytes.split_at(end)) else {
        return false;
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(b":")
            .is_some_and(|digits| digits.iter().all(u8::is_ascii_digit));
    port_ok && is_host(host)
}

/// `IP-literal / IPv4address / reg-name`, not empty.
fn is_host(host: &[u8]) -> bool {
    if let Some(literal) = host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        return is_ip_literal(literal);
    }
    !host.is_empty() && is_escaped(host, is_unreserved_or_sub_delim)
}

/// `IPv6address / IPvFuture` (RFC 3986 3.2.2), the inside of the brackets.
fn is_ip_literal(literal: &[u8]) -> bool {
    if let Some(future) = literal.strip_prefix(b"v").or(literal.strip_prefix(b"V")) {
        let Some(dot) = future.iter().position(|b| *b == b'.') else {
            return false;
        };
        let (version, rest) = (&future[..dot], &future[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !rest.is_empty()
            && rest
                .iter()
                .all(|b| *b == b':' || is_unreserved_or_sub_delim(*b));
    }
    std::str::from_utf8(literal).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok())
}

/// RFC 9112 6.1: chunked is the only transfer coding portvakt reads, and it is applied once. hyper
/// frames by the last coding; a coding before it (`gzip, chunked`) would otherwise reach the
/// upstream as plain chunked data, silently changed.
fn transfer_codings(headers: &HeaderMap) -> Result<(), ProxyError> {
    let lines: Vec<&[u8]> = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    let codings: Vec<&[u8]> = lines
        .iter()
        .flat_map(|line| line.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
        .collect();
    if codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked") {
        return Ok(());
    }
    let named = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    Err(ProxyError::UnsupportedTransferCoding(named))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[(&str, &str)], target: &str, version: Version) -> Parts {
        let mut request = http::Request::builder()
            .method("POST")
            .uri(target)
            .version(version);
        for (name, value) in raw {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn targets_follow_the_origin_form_grammar() {
        for good in [
            "/",
            "/nav/a/b?x=1&y=%2F",
            "/nav/%C3%A6?q=a/b?c",
            "/nav/a;b=c,d:e@f!$'()*+~-._",
            "/nav?",
        ] {
            assert!(is_origin_form(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "*",
            "nav/x",
            "/nav/a b",
            "/nav/\"x\"",
            "/nav/{x}",
            "/nav/a|b",
            "/nav/a\\b",
            "/nav/a^b",
            "/nav/a`b",
            "/nav/[x]",
            "/nav/%",
            "/nav/%2",
            "/nav/%zz",
            "/nav/x#y",
            "/nav/æ",
            "/nav/x?q=æ",
            "/nav/x?q=<>",
        ] {
            assert!(!is_origin_form(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn the_byte_table_is_rfc_3986s_classes() {
        let unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
        let sub_delims = "!$&'()*+,;=";
        for b in 0..=255u8 {
            let c = char::from(b);
            let class = unreserved.contains(c) || sub_delims.contains(c);
            assert_eq!(is_unreserved_or_sub_delim(b), class, "{b:#04x}");
            assert_eq!(is_pchar(b), class || c == ':' || c == '@', "{b:#04x}");
        }
    }

    #[test]
    fn host_lines_are_counted_and_checked() {
        let one = [("host", "api.example:8080")];
        assert!(host(&head(&one, "/x", Version::HTTP_11)).is_ok());
        assert!(host(&head(&[("host", "")], "/x", Version::HTTP_11)).is_ok());
        for good in [
            "[::1]:80",
            "[::ffff:10.0.0.1]",
            "[v1.fe80::a+en1]:443",
            "10.0.0.1:",
            "ex%41mple.no",
            "a-b_c~d!$&'()*+,;=",
        ] {
            assert!(
                host(&head(&[("host", good)], "/x", Version::HTTP_11)).is_ok(),
                "{good}"
            );
        }
        assert!(host(&head(&[], "/x", Version::HTTP_10)).is_ok());
        for (lines, version) in [
            (&[][..], Version::HTTP_11),
            (&[("host", "a"), ("host", "a")][..], Version::HTTP_11),
            (&[("host", "a"), ("host", "b")][..], Version::HTTP_10),
            (&[("host", "user@a")][..], Version::HTTP_11),
            (&[("host", "a/b")][..], Version::HTTP_11),
            (&[("host", "a:port")][..], Version::HTTP_11),
            (&[("host", ":80")][..], Version::HTTP_11),
            (&[("host", "a b")][..], Version::HTTP_11),
            (&[("host", "ex%4")][..], Version::HTTP_11),
            (&[("host", "a%zz")][..], Version::HTTP_11),
            (&[("host", "[::1")][..], Version::HTTP_11),
            (&[("host", "[::1]x")][..], Version::HTTP_11),
            (&[("host", "[::1]:8a")][..], Version::HTTP_11),
            (&[("host", "[zz::1]")][..], Version::HTTP_11),
            (&[("host", "[127.0.0.1]")][..], Version::HTTP_11),
            (&[("host", "[v.x]")][..], Version::HTTP_11),
            (&[("host", "[v1.]")][..], Version::HTTP_11),
            (&[("host", "a]")][..], Version::HTTP_11),
            (&[("host", "a:1:2")][..], Version::HTTP_11),
            (&[("host", "a?b")][..], Version::HTTP_11),
            (&[("host", "a#b")][..], Version::HTTP_11),
        ] {
            assert!(host(&head(lines, "/x", version)).is_err(), "{lines:?}");
        }
    }

    #[test]
    fn chunked_alone_is_the_only_transfer_coding() {
        let check =
            |lines: &[(&str, &str)]| transfer_codings(&head(lines, "/", Version::HTTP_11).headers);
        assert!(check(&[]).is_ok());
        assert!(check(&[("transfer-encoding", "chunked")]).is_ok());
        assert!(check(&[("transfer-encoding", "Chunked")]).is_ok());
        assert!(check(&[("transfer-encoding", " , chunked")]).is_ok());
        for lines in [
            &[("transfer-encoding", "gzip, chunked")][..],
            &[("transfer-encoding", "identity")],
            &[("transfer-encoding", "chunked, chunked")],
            &[("transfer-encoding", "xchunked")],
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "")],
        ] {
            let e = check(lines).unwrap_err();
            assert_eq!(e.status(), 501, "{lines:?}");
        }
    }
}
