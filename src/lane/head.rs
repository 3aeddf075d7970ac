//! The caller's request head as the fast lane reads it, and the head the lane sends upstream.
//! A head the lane does not take (a chunked body, an upgrade, HTTP/1.0, anything malformed) goes
//! to hyper untouched, so every unusual request meets the general path's rules and answers.

use crate::request_id;
use crate::route::Route;
use crate::upstream::is_hop_by_hop;

/// Headers read per request: hyper's default, so a head too big here is too big for hyper too.
pub const MAX_HEADERS: usize = 100;

/// A request head the lane may serve: HTTP/1.1, origin form, a body of known length if any, no
/// upgrade.
pub struct Head<'b> {
    pub method: &'b str,
    pub path: &'b str,
    pub query: Option<&'b str>,
    pub headers: &'b [httparse::Header<'b>],
    /// The head's length in bytes, blank line included.
    pub len: usize,
    /// The body's length (`Content-Length`; 0 without one).
    pub body_len: u64,
    /// The caller keeps the connection open after this request.
    pub keep_alive: bool,
    /// A `Connection` header may name more headers that must not travel on.
    has_connection: bool,
}

pub enum Parsed<'b> {
    /// More bytes are needed.
    Partial,
    Lane(Head<'b>),
    /// Not the lane's to serve: hand the connection to hyper.
    Hyper,
}

/// Reads one request head from `buf`.
pub fn parse<'b>(buf: &'b [u8], headers: &'b mut [httparse::Header<'b>]) -> Parsed<'b> {
    let mut request = httparse::Request::new(headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Hyper;
    };
    if method == "CONNECT" || !target.starts_with('/') {
        return Parsed::Hyper;
    }
    let headers: &'b [httparse::Header<'b>] = request.headers;
    let mut keep_alive = true;
    let mut has_connection = false;
    let mut body_len = None;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // One plain length, however often repeated; anything else is hyper's to refuse.
            match (decimal(h.value), body_len) {
                (Some(n), None) => body_len = Some(n),
                (Some(n), Some(seen)) if n == seen => {}
                _ => return Parsed::Hyper,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Parsed::Hyper;
        } else if name.eq_ignore_ascii_case("connection") {
            has_connection = true;
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Hyper;
                }
            }
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    Parsed::Lane(Head {
        method,
        path,
        query,
        headers,
        len,
        body_len: body_len.unwrap_or(0),
        keep_alive,
        has_connection,
    })
}

/// Whether `buf` holds the blank line that ends a head, looking only at what came after the
/// first `from` bytes (and the two before, where the line may have started).
pub fn ends(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(2).min(buf.len())..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// The comma-separated tokens of a header value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: digits only, within u64.
pub fn decimal(value: &[u8]) -> Option<u64> {
    let value = std::str::from_utf8(value.trim_ascii()).ok()?;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Whether a `Connection` header among `headers` names `name`, which then stays on this hop.
pub fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

impl Head<'_> {
    /// The caller's header `name`, if it sent one (the first, as `HeaderMap::get` reads it).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Whether the caller's header `name` travels upstream. What portvakt sets itself (`Host`,
    /// `Authorization`, the request id, the route's headers) replaces the caller's; hop-by-hop
    /// headers, party and API key headers never leave.
    fn forwards(&self, name: &str, route: &Route) -> bool {
        !(is_hop_by_hop(name)
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case(request_id::HEADER.as_str())
            || route
                .parties
                .headers()
                .any(|h| h.as_str().eq_ignore_ascii_case(name))
            || (!route.api_keys.is_empty()
                && route.api_key_header.as_str().eq_ignore_ascii_case(name))
            || route
                .headers
                .iter()
                .any(|(h, _)| h.as_str().eq_ignore_ascii_case(name))
            || (self.has_connection && named_by_connection(self.headers, name)))
    }
}

/// What the lane adds to a request on its way upstream.
pub struct Outgoing<'a> {
    pub route: &'a Route,
    /// The path after the route's prefix.
    pub remainder: &'a str,
    pub host: &'a [u8],
}

/// Writes the upstream request head into `out`, but for its last lines ([`finish_upstream`]):
/// origin form on the route's base path, the upstream's `Host`, the caller's end-to-end headers
/// byte for byte, and the route's headers.
pub fn write_upstream(out: &mut Vec<u8>, head: &Head<'_>, to: &Outgoing<'_>) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    let base = to.route.upstream.base_path.as_bytes();
    out.extend_from_slice(base);
    out.extend_from_slice(to.remainder.as_bytes());
    if base.is_empty() && to.remainder.is_empty() {
        out.push(b'/');
    }
    if let Some(query) = head.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(to.host);
    out.extend_from_slice(b"\r\n");
    for h in head.headers {
        if head.forwards(h.name, to.route) {
            line(out, h.name.as_bytes(), h.value);
        }
    }
    for (name, value) in &to.route.headers {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Ends the upstream head with the token and the request id. Written last, so a retry after a
/// 401 replaces only these lines.
pub fn finish_upstream(out: &mut Vec<u8>, bearer: &[u8], request_id: &[u8]) {
    line(out, b"authorization", bearer);
    line(out, request_id::HEADER.as_str().as_bytes(), request_id);
    out.extend_from_slice(b"\r\n");
}

pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(raw: &str) -> Option<(String, Option<String>, bool, usize)> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse(raw.as_bytes(), &mut headers) {
            Parsed::Lane(h) => Some((
                h.path.to_string(),
                h.query.map(str::to_string),
                h.keep_alive,
                h.len,
            )),
            _ => None,
        }
    }

    #[test]
    fn takes_plain_requests_without_a_body() {
        let raw = "GET /nav/a?x=1 HTTP/1.1\r\nHost: p\r\n\r\nGET /next";
        assert_eq!(
            lane(raw),
            Some(("/nav/a".into(), Some("x=1".into()), true, raw.len() - 9))
        );
        let close = "DELETE /nav/a HTTP/1.1\r\nConnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(lane(close).map(|l| l.2), Some(false));
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let post = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
        match parse(post, &mut headers) {
            Parsed::Lane(h) => assert_eq!((h.body_len, h.len), (3, post.len() - 3)),
            _ => panic!("a body of known length is the lane's"),
        }
    }

    #[test]
    fn finds_the_end_of_a_head_sent_in_pieces() {
        let raw = b"GET / HTTP/1.1\r\nHost: p\r\n\r\n";
        for split in 0..raw.len() {
            assert!(!ends(&raw[..split], 0), "{split}");
            assert!(ends(raw, split), "{split}");
        }
        assert!(ends(b"GET / HTTP/1.1\nHost: p\n\n", 20));
    }

    #[test]
    fn leaves_everything_else_to_hyper() {
        for raw in [
            "GET /a HTTP/1.0\r\n\r\n",
            "POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            "POST /a HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
            "POST /a HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /a HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            "PUT /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://evil/ HTTP/1.1\r\n\r\n",
            "CONNECT evil:443 HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /a HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            assert!(
                matches!(parse(raw.as_bytes(), &mut headers), Parsed::Hyper),
                "{raw:?}"
            );
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(matches!(
            parse(b"GET /a HTTP/1.1\r\nHost:", &mut headers),
            Parsed::Partial
        ));
    }
}
