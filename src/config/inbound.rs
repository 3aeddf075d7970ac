//! Who may call portvakt: the `inbound` section (address allow-list, TLS with client certificates,
//! limits) and the per-route `allow` and `api_keys`.

use super::inbound_tls::{inbound_tls, InboundTls};
use super::reader::{index, join, Reader};
use crate::support::secret::Secret;
use ipnet::IpNet;
use serde_json::Value;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// hyper will not read headers into less than this.
const MIN_HEADER_BYTES: u64 = 8192;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4096;
/// Kestrel's default minimum request body rate, after its grace period.
pub const DEFAULT_MIN_BODY_RATE: u64 = 240;
pub const DEFAULT_BODY_RATE_GRACE: Duration = Duration::from_secs(5);
/// A 1 GB upload at 1 MB/s takes 1,000 s.
pub const DEFAULT_BODY_DEADLINE: Duration = Duration::from_secs(3600);
pub const DEFAULT_ANSWER_STALL: Duration = Duration::from_secs(60);

/// The `inbound` section, checked.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Caller addresses let in; `None` lets in every address (a loopback listener, or `allow_any`).
    pub allow: Option<AllowList>,
    pub tls: Option<InboundTls>,
    /// The largest request head (request line and headers) read; larger gets 431.
    pub max_header_bytes: usize,
    /// Requests served at once; more get 503.
    pub max_concurrent_requests: usize,
    /// Requests served at once for one caller address; more get 429. Half of
    /// `max_concurrent_requests` unless set.
    pub max_concurrent_per_address: usize,
    /// How a caller's body must keep coming, unless a route says otherwise.
    pub body: BodyPace,
    /// How long an answer may wait for the caller to read it before its connection is closed.
    pub answer_stall: Duration,
}

/// The minimum average rate of a caller's body (0: none) once its grace period is over, and the
/// time it must be whole within (zero: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    pub min_rate: u64,
    pub grace: Duration,
    pub deadline: Duration,
}

/// The body pace keys, read where they stand (`inbound` or a route), each `None` when absent.
pub(super) fn body_pace(
    r: &mut Reader,
    m: &serde_json::Map<String, Value>,
    path: &str,
) -> (Option<u64>, Option<Duration>, Option<Duration>) {
    let min_rate = r.u64_or_zero(
        m.get("min_body_rate_bytes_per_second"),
        &join(path, "min_body_rate_bytes_per_second"),
    );
    let grace = r
        .u64_or_zero(
            m.get("body_rate_grace_seconds"),
            &join(path, "body_rate_grace_seconds"),
        )
        .map(Duration::from_secs);
    let deadline = r
        .u64_or_zero(
            m.get("body_deadline_seconds"),
            &join(path, "body_deadline_seconds"),
        )
        .map(Duration::from_secs);
    (min_rate, grace, deadline)
}

/// Networks a caller's address must be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Vec<IpNet>);

impl AllowList {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 caller on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> = self.0.iter().map(IpNet::to_string).collect();
        f.write_str(&nets.join(", "))
    }
}

/// A caller key a route accepts, kept as its SHA-256 so comparing takes the same time whatever
/// the caller sends.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Secret<[u8; 32]>);

impl ApiKey {
    pub fn new(value: &[u8]) -> Self {
        ApiKey(Secret::new(digest(value)))
    }

    /// Constant-time equality of digests; the digest hides the length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.expose(), &digest(presented))
            .is_ok()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

fn digest(value: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `inbound.allow` (or `allow_any`), required when portvakt listens beyond loopback.
fn who_may_call(
    r: &mut Reader,
    m: &serde_json::Map<String, Value>,
    path: &str,
    listen: Option<SocketAddr>,
) -> Option<AllowList> {
    let allow = allow_list(r, m.get("allow"), &join(path, "allow"));
    let allow_any = r
        .boolean(m.get("allow_any"), &join(path, "allow_any"))
        .unwrap_or(false);
    if allow_any && allow.is_some() {
        r.issue(
            path,
            "has both allow and allow_any: keep allow to let in only those networks, or allow_any to let in everyone",
        );
    }
    let public = listen.is_some_and(|l| !l.ip().is_loopback());
    if public && allow.is_none() && !allow_any {
        let listen = listen.map(|l| l.to_string()).unwrap_or_default();
        r.issue(
            "inbound.allow",
            format!(
                "is required because listen ({listen}) is not a loopback address: anyone who reaches portvakt acts as your organisation toward NAV, KS and Altinn. List the callers' networks (allow: [10.0.0.0/8]), or set allow_any: true if a firewall or NetworkPolicy already limits who connects"
            ),
        );
    }
    allow
}

/// The requests served at once, and one caller address's share of them.
fn places(r: &mut Reader, m: &serde_json::Map<String, Value>, path: &str) -> (usize, usize) {
    let max_concurrent_requests = r
        .positive_u64(
            m.get("max_concurrent_requests"),
            &join(path, "max_concurrent_requests"),
        )
        .map_or(DEFAULT_MAX_CONCURRENT_REQUESTS, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let max_concurrent_per_address = r
        .positive_u64(
            m.get("max_concurrent_per_address"),
            &join(path, "max_concurrent_per_address"),
        )
        .map_or((max_concurrent_requests / 2).max(1), |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    if max_concurrent_per_address > max_concurrent_requests {
        r.issue(
            &join(path, "max_concurrent_per_address"),
            format!("is more than max_concurrent_requests ({max_concurrent_requests})"),
        );
    }
    (max_concurrent_requests, max_concurrent_per_address)
}

pub(super) fn inbound(
    r: &mut Reader,
    v: Option<&Value>,
    listen: Option<SocketAddr>,
    base: &Path,
) -> Inbound {
    let path = "inbound";
    let empty = serde_json::Map::new();
    let m = match v {
        Some(v) => r
            .mapping(v, path, &super::schema::INBOUND.keys())
            .unwrap_or(&empty),
        None => &empty,
    };
    let allow = who_may_call(r, m, path, listen);
    let tls = m
        .get("tls")
        .and_then(|t| inbound_tls(r, t, &join(path, "tls"), base));
    let max_header_bytes = r
        .positive_u64(m.get("max_header_bytes"), &join(path, "max_header_bytes"))
        .map_or(DEFAULT_MAX_HEADER_BYTES, |n| {
            if n < MIN_HEADER_BYTES {
                r.issue(
                    &join(path, "max_header_bytes"),
                    format!("must be at least {MIN_HEADER_BYTES}"),
                );
            }
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let (max_concurrent_requests, max_concurrent_per_address) = places(r, m, path);
    let (min_rate, grace, deadline) = body_pace(r, m, path);
    let answer_stall = r
        .positive_u64(
            m.get("answer_stall_seconds"),
            &join(path, "answer_stall_seconds"),
        )
        .map_or(DEFAULT_ANSWER_STALL, Duration::from_secs);
    Inbound {
        allow,
        tls,
        max_header_bytes,
        max_concurrent_requests,
        max_concurrent_per_address,
        body: BodyPace {
            min_rate: min_rate.unwrap_or(DEFAULT_MIN_BODY_RATE),
            grace: grace.unwrap_or(DEFAULT_BODY_RATE_GRACE),
            deadline: deadline.unwrap_or(DEFAULT_BODY_DEADLINE),
        },
        answer_stall,
    }
}

/// A list of networks (`10.0.0.0/8`) or single addresses (`10.1.2.3`, taken as /32 or /128).
pub(super) fn allow_list(r: &mut Reader, v: Option<&Value>, path: &str) -> Option<AllowList> {
    let items = r.string_list(v, path)?;
    if items.is_empty() {
        r.issue(
            path,
            "is empty: list at least one network, such as 10.0.0.0/8",
        );
        return None;
    }
    let mut nets = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let parsed = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => r.issue(
                &index(path, i),
                format!(
                    "`{item}` is not a network: write it as 10.0.0.0/8, 192.168.1.10 or fd00::/8"
                ),
            ),
        }
    }
    Some(AllowList(nets))
}
/// `api_keys`: strings (`${ENV}` expanded) or `{value_file: path}` entries.
pub(super) fn api_keys(r: &mut Reader, v: Option<&Value>, path: &str, base: &Path) -> Vec<ApiKey> {
    let Some(v) = v else { return Vec::new() };
    let items: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    if items.is_empty() {
        r.issue(
            path,
            "is empty: list at least one key, or leave api_keys out",
        );
    }
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let p = index(path, i);
        // Problems name the entry, never the key.
        let text = match item {
            Value::Object(_) => super::headers::value_file(r, item, &p, base),
            _ => r.required_string(Some(item), &p),
        };
        let Some(text) = text else { continue };
        if text.len() < 16 {
            r.issue(
                &p,
                "is shorter than 16 characters: use a long random key (openssl rand -base64 32)",
            );
            continue;
        }
        out.push(ApiKey::new(text.as_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_match_networks_and_mapped_ipv4() {
        let mut r = Reader::new(&|_| None);
        let list = allow_list(
            &mut r,
            Some(&serde_json::json!([
                "10.0.0.0/8",
                "192.168.1.7",
                "fd00::/8"
            ])),
            "a",
        )
        .unwrap();
        assert!(r.issues.is_empty());
        for ok in ["10.1.2.3", "192.168.1.7", "::ffff:10.9.9.9", "fd00::1"] {
            assert!(list.contains(ok.parse().unwrap()), "{ok}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "127.0.0.1", "fe80::1"] {
            assert!(!list.contains(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn api_keys_compare_by_digest() {
        let key = ApiKey::new(b"0123456789abcdef-long-key");
        assert!(key.matches(b"0123456789abcdef-long-key"));
        assert!(!key.matches(b"0123456789abcdef-long-kez"));
        assert!(!key.matches(b""));
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
    }
}
