//! The route table: which route serves a path (longest prefix, on whole segments), and whether a
//! path's remainder stays under the route's base however the upstream decodes it. Pure functions,
//! tested by table.

use crate::config::{AllowList, ApiKey};
use crate::consent::ConsentRule;
use crate::request::body::UpstreamBody;
use crate::request::party::Parties;
use crate::token::ConsentSlots;
use crate::upstream::{Pool, Target};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;

/// A configured route, ready to serve.
pub struct Route {
    pub name: Arc<String>,
    pub prefix: String,
    pub upstream: Target,
    pub client: Arc<String>,
    /// The token slot for each party the route may act for.
    pub parties: Parties,
    /// Static headers, values marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    /// After an upstream 401, the largest body kept to send the request again with a fresh token;
    /// `None` when the route never retries.
    pub retry_body_max: Option<u64>,
    /// The connections to this route's upstream (shared by routes that go there with the same TLS
    /// trust, connect timeout, proxy and HTTP/2 setting).
    pub http: Arc<Pool<UpstreamBody>>,
    /// Caller networks let in on this route, besides `inbound.allow`.
    pub allow: Option<AllowList>,
    /// Keys a caller must present in `api_key_header`; empty when none is asked for.
    pub api_keys: Vec<ApiKey>,
    pub api_key_header: HeaderName,
    pub max_body_bytes: Option<u64>,
    /// Longest pause inside a body, either way.
    pub idle_timeout: Duration,
    /// How the caller's body must keep coming: that pause, a minimum rate, a deadline.
    pub pace: crate::request::body::Pace,
    /// Whether the upstream is told the caller's address, and how.
    pub forward_caller_address: Option<crate::config::CallerAddress>,
    /// Whether the route takes an Altinn consent per call, and its headers.
    pub consent: ConsentRule,
    /// The consent tokens, on a route that takes a consent per call.
    pub consent_slots: Option<Arc<ConsentSlots>>,
}

impl Route {
    /// Whether the caller's key (if the route asks for one) is right: `Err(true)` when missing,
    /// `Err(false)` when wrong. Every configured key is compared, so timing tells nothing.
    pub fn check_api_key(&self, presented: Option<&HeaderValue>) -> Result<(), bool> {
        if self.api_keys.is_empty() {
            return Ok(());
        }
        let presented = presented.ok_or(true)?.as_bytes();
        let matched = self
            .api_keys
            .iter()
            .fold(false, |found, key| key.matches(presented) | found);
        if matched {
            Ok(())
        } else {
            Err(false)
        }
    }
}

/// Routes ordered longest prefix first, so the first match is the most specific.
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Arc<Route>>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        RouteTable { routes }
    }

    /// The route for `path` and the path's remainder after the prefix.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&Arc<Route>, &'p str)> {
        self.routes
            .iter()
            .find_map(|r| remainder(&r.prefix, path).map(|rest| (r, rest)))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    pub fn prefixes(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.prefix.as_str()).collect()
    }
}

/// The rest of `path` after `prefix` when the prefix matches whole segments: `/nav` matches
/// `/nav` and `/nav/x`, never `/navx`. The prefix is normalised (no trailing `/` except the root).
pub fn remainder<'p>(prefix: &str, path: &'p str) -> Option<&'p str> {
    if prefix == "/" {
        return path.starts_with('/').then_some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// True when a remainder could climb out of the route's base path once the upstream (or anything
/// between) decodes or normalises it: `.` or `..` segments (also percent-encoded, or with a
/// `;parameter` as servlet containers read them), empty segments (`//`), encoded slashes or
/// backslashes, NUL, control characters, overlong UTF-8 dots and slashes (`%c0%ae`), and any of
/// these hidden under a second layer of encoding (`%252e`, `%%32%65`).
pub fn escapes_prefix(remainder: &str) -> bool {
    let bytes = remainder.as_bytes();
    if unsafe_as_sent(bytes) {
        return true;
    }
    // Runs on every request: only a path with escapes is decoded, into a copy.
    if !bytes.contains(&b'%') {
        return false;
    }
    let once = percent_decode(bytes);
    unsafe_as_sent(&once) || once.windows(3).any(is_escape)
}

/// The checks on the path as it is, before any decoding.
fn unsafe_as_sent(bytes: &[u8]) -> bool {
    let lower = |b: u8| b.to_ascii_lowercase();
    // %2f / %5c / %00, and overlong UTF-8 lead bytes %c0 / %c1.
    let escaped = |w: &[u8]| {
        w[0] == b'%'
            && matches!(
                (lower(w[1]), lower(w[2])),
                (b'2', b'f') | (b'5', b'c') | (b'0', b'0') | (b'c', b'0' | b'1')
            )
    };
    bytes.iter().any(|b| *b == b'\\' || *b < 0x20 || *b == 0x7f)
        || bytes.windows(3).any(escaped)
        || bytes.windows(2).any(|w| w == b"//")
        || bytes.split(|b| *b == b'/').any(is_dot_segment)
}

fn is_escape(w: &[u8]) -> bool {
    w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit()
}

/// One layer of percent-decoding; malformed escapes stay as they are.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(w) = bytes.get(i..i + 3).filter(|w| is_escape(w)) {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push((hex(w[1]) << 4) | hex(w[2]));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// `.` or `..`, with any dot possibly written `%2e` / `%2E`, and anything after a `;` ignored.
fn is_dot_segment(segment: &[u8]) -> bool {
    let segment = segment.split(|b| *b == b';').next().unwrap_or(segment);
    let (mut rest, mut dots) = (segment, 0);
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2] | 0x20 == b'e' {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        let cases = [
            ("/nav", "/nav", Some("")),
            ("/nav", "/nav/", Some("/")),
            ("/nav", "/nav/a/b", Some("/a/b")),
            ("/nav", "/navx", None),
            ("/nav", "/na", None),
            ("/", "/anything", Some("/anything")),
            ("/nav/v1", "/nav/v1/x", Some("/x")),
        ];
        for (prefix, path, want) in cases {
            assert_eq!(remainder(prefix, path), want, "{prefix} {path}");
        }
    }

    #[test]
    fn traversal_is_detected() {
        for bad in [
            "/../x",
            "/a/..",
            "/%2e%2E/x",
            "/.%2e",
            "/a%2Fb",
            "/a\\b",
            "/./x",
            "/a%00",
            "/a%5Cb",
            "/a//b",
            "//x",
            "/..;/x",
            "/.;x/y",
            "/%252e%252e/x",
            "/a%252fb",
            "/%c0%ae%c0%ae/x",
            "/%C0%AF",
            "/a\tb",
            "/%%32%65%%32%65/x",
            "/%2525",
        ] {
            assert!(escapes_prefix(bad), "{bad}");
        }
        for good in [
            "/a/b",
            "/a..b",
            "/.well-known/x",
            "",
            "/%C3%A6",
            "/...",
            "/%2e%2e%2e",
            "/a%2",
            "/a;b=1/c",
            "/%25",
            "/100%25",
            "/a%20b",
            "/%C3%A6",
        ] {
            assert!(!escapes_prefix(good), "{good}");
        }
    }
}
